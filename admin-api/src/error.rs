//! [`AppError`]: the one error type of the HTTP surface.
//!
//! Every rejection — engine errors, bad JSON, auth, unknown routes, panics — leaves
//! the server as `{"error": {"code", "message", "field"?}}` with its status. Engine
//! errors get their status in exactly one place, [`engine_status`].

use std::borrow::Cow;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use leadroute_engine::EngineError;
use serde::Serialize;
use utoipa::ToSchema;

/// A rejected request: the status and the JSON error body.
#[derive(Debug, Clone, PartialEq)]
pub struct AppError {
    /// The HTTP status.
    pub status: StatusCode,
    /// A stable snake_case code clients can match on.
    pub code: Cow<'static, str>,
    /// What went wrong, for humans.
    pub message: String,
    /// The offending input field, when one is to blame (`phone`, `leads[3].email`).
    pub field: Option<String>,
}

/// The error body: `{"error": {...}}`.
#[derive(Clone, Debug, Serialize, serde::Deserialize, ToSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// What is inside `"error"`.
#[derive(Clone, Debug, Serialize, serde::Deserialize, ToSchema)]
pub struct ErrorDetail {
    /// A stable snake_case code, e.g. `stage_order`, `missing_contact`.
    #[schema(example = "missing_contact")]
    pub code: String,
    /// Human-readable explanation.
    pub message: String,
    /// The offending input field, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

impl AppError {
    /// Builds an error with `status`, `code` and `message`.
    pub fn new(
        status: StatusCode,
        code: impl Into<Cow<'static, str>>,
        message: impl Into<String>,
    ) -> Self {
        AppError {
            status,
            code: code.into(),
            message: message.into(),
            field: None,
        }
    }

    /// Names the input field to blame.
    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    /// Puts the field under `prefix`: `phone` → `leads[3].phone`, for input nested in
    /// a larger body.
    pub fn prefixed(mut self, prefix: &str) -> Self {
        self.field = self.field.map(|f| format!("{prefix}.{f}"));
        self
    }

    /// Builds a 400 for input that is not even well-formed.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// Builds a 422 for well-formed input that is invalid, naming the field.
    pub fn invalid(
        code: impl Into<Cow<'static, str>>,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, code, message).with_field(field)
    }

    /// Builds a 404 for a resource that does not exist.
    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, message)
    }

    /// Builds a 500 whose body says nothing; `detail` goes to the log only.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        // Internal details (paths, store errors, invariants) help an attacker more
        // than a client; the operator finds them in the log.
        tracing::error!(detail = %detail, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; the server log has the details",
        )
    }

    /// Returns the body this error is sent with.
    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            error: ErrorDetail {
                code: self.code.to_string(),
                message: self.message.clone(),
                field: self.field.clone(),
            },
        }
    }
}

impl std::fmt::Display for AppError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.code,
            self.message
        )
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let status = self.status;
        let mut response = (status, axum::Json(self.body())).into_response();
        let headers = response.headers_mut();
        if status == StatusCode::UNAUTHORIZED {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if status == StatusCode::SERVICE_UNAVAILABLE {
            headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

/// Returns the HTTP status for an engine error: the single place this mapping lives.
///
/// Context-dependent cases (an unknown territory named inside a rep's body is bad
/// input, not a missing resource) are re-mapped by the handler before this is used.
pub fn engine_status(e: &EngineError) -> StatusCode {
    match e {
        EngineError::Invalid(_)
        | EngineError::NoTerritory { .. }
        | EngineError::UnknownPlugin(_)
        | EngineError::PluginInvalid { .. } => StatusCode::UNPROCESSABLE_ENTITY,
        EngineError::LeadNotFound(_)
        | EngineError::RepNotFound(_)
        | EngineError::TerritoryNotFound(_)
        | EngineError::WebhookNotFound(_)
        | EngineError::PluginNotFound { .. } => StatusCode::NOT_FOUND,
        EngineError::StageOrder { .. }
        | EngineError::LeadClosed(_)
        | EngineError::LeadNotAssigned(_)
        | EngineError::RepHasOpenLeads { .. }
        | EngineError::TerritoryConflict(_)
        | EngineError::SlaNotBreached(_)
        | EngineError::PluginInUse { .. }
        | EngineError::ReplayInProgress
        | EngineError::BackupInProgress => StatusCode::CONFLICT,
        // Overload is the server's state, not one client's excess (that would be 429):
        // every client is refused alike until work drains, so 503 with Retry-After.
        // Compile slots likewise: held by the server's own threads, whoever uploaded.
        EngineError::StoreUnavailable(_)
        | EngineError::Overloaded { .. }
        | EngineError::CompileBusy { .. }
        | EngineError::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
        // The server's own failure, told in full: only the admin token reaches it, and
        // the operator needs the path and the I/O error to fix it.
        EngineError::Internal(_) | EngineError::BackupFailed(_) => {
            StatusCode::INTERNAL_SERVER_ERROR
        }
    }
}

impl From<EngineError> for AppError {
    fn from(e: EngineError) -> Self {
        let status = engine_status(&e);
        match e {
            EngineError::Internal(detail) => AppError::internal(detail),
            EngineError::StoreUnavailable(detail) => {
                tracing::error!(detail = %detail, "store unavailable");
                AppError::new(
                    status,
                    "store_unavailable",
                    "the store could not persist the change; nothing was acknowledged",
                )
            }
            EngineError::Invalid(v) => AppError::new(status, v.code, v.message).with_field(v.field),
            EngineError::NoTerritory { .. } => {
                AppError::new(status, e.code(), e.to_string()).with_field("region")
            }
            e => AppError::new(status, e.code(), e.to_string()),
        }
    }
}

/// The README's error table, shared with the integration tests.
#[cfg(test)]
#[path = "../tests/common/catalogue.rs"]
mod catalogue;

#[cfg(test)]
mod tests {
    use super::*;
    use leadroute_engine::ValidationError;
    use leadroute_engine::domain::{LeadId, RepId, Stage, TerritoryId, WebhookId};

    #[test]
    fn engine_errors_map_to_the_documented_statuses() {
        let lead: LeadId = "01ARZ3NDEKTSV4RRFFQ69G5FAV".parse().unwrap();
        let rep = RepId::new("r").unwrap();
        let cases = [
            (
                EngineError::Invalid(ValidationError::field("phone", "bad")),
                422,
                "invalid_field",
            ),
            (
                EngineError::Invalid(
                    ValidationError::field("external_id", "need one").with_code("missing_contact"),
                ),
                422,
                "missing_contact",
            ),
            (
                EngineError::Invalid(ValidationError::field("id", "bad").with_code("invalid_id")),
                422,
                "invalid_id",
            ),
            (
                EngineError::Invalid(
                    ValidationError::field("regions", "bad").with_code("invalid_region"),
                ),
                422,
                "invalid_region",
            ),
            (
                EngineError::NoTerritory { region: None },
                422,
                "no_territory",
            ),
            (
                EngineError::UnknownPlugin("p".into()),
                422,
                "unknown_plugin",
            ),
            (
                EngineError::PluginInvalid {
                    name: "p".into(),
                    message: "missing export `route`".into(),
                },
                422,
                "plugin_invalid",
            ),
            (
                EngineError::PluginNotFound {
                    name: "p".into(),
                    version: None,
                },
                404,
                "plugin_not_found",
            ),
            (
                EngineError::PluginInUse {
                    name: "p".into(),
                    territories: vec![TerritoryId::new("t").unwrap()],
                },
                409,
                "plugin_in_use",
            ),
            (EngineError::LeadNotFound(lead), 404, "lead_not_found"),
            (
                EngineError::WebhookNotFound(WebhookId::new("w").unwrap()),
                404,
                "webhook_not_found",
            ),
            (EngineError::RepNotFound(rep.clone()), 404, "rep_not_found"),
            (
                EngineError::TerritoryNotFound(TerritoryId::new("t").unwrap()),
                404,
                "territory_not_found",
            ),
            (
                EngineError::StageOrder {
                    got: Stage::Demo,
                    expected: Stage::NeedsDiagnosis,
                },
                409,
                "stage_order",
            ),
            (EngineError::LeadClosed(lead), 409, "lead_closed"),
            (EngineError::LeadNotAssigned(lead), 409, "lead_not_assigned"),
            (
                EngineError::RepHasOpenLeads { rep, open: 2 },
                409,
                "rep_has_open_leads",
            ),
            (
                EngineError::TerritoryConflict("x".into()),
                409,
                "territory_conflict",
            ),
            (
                EngineError::StoreUnavailable("disk".into()),
                503,
                "store_unavailable",
            ),
            (
                EngineError::Overloaded {
                    what: "leads",
                    in_flight: 256,
                    limit: 256,
                },
                503,
                "overloaded",
            ),
            (EngineError::ReplayInProgress, 409, "replay_in_progress"),
            (EngineError::BackupInProgress, 409, "backup_in_progress"),
            (
                EngineError::BackupFailed("/backups: Permission denied".into()),
                500,
                "backup_failed",
            ),
            (
                EngineError::CompileBusy {
                    running: 2,
                    limit: 2,
                },
                503,
                "compile_busy",
            ),
            (EngineError::ShuttingDown, 503, "shutting_down"),
            (EngineError::Internal("bug".into()), 500, "internal"),
        ];
        for (e, status, code) in cases {
            let app = AppError::from(e);
            assert_eq!(app.status.as_u16(), status, "{app}");
            assert_eq!(app.code, code);
            catalogue::assert_documented(status, &serde_json::to_vec(&app.body()).unwrap());
        }
    }

    #[test]
    fn internal_detail_stays_out_of_the_body() {
        let app = AppError::from(EngineError::Internal("secret /var/lib path".into()));
        assert!(!app.message.contains("secret"));
        let app = AppError::from(EngineError::StoreUnavailable("io at /x".into()));
        assert!(!app.message.contains("/x"));
    }

    #[test]
    fn validation_errors_name_their_field() {
        let app = AppError::from(EngineError::Invalid(
            ValidationError::field("external_id", "need one").with_code("missing_contact"),
        ));
        assert_eq!(app.code, "missing_contact");
        assert_eq!(app.field.as_deref(), Some("external_id"));
    }
}
