//! Replays: `POST /admin/plugins/{name}/versions/{version}/replay`.

use axum::extract::State;
use leadroute_engine::domain::TerritoryId;
use leadroute_engine::{EngineError, ReplayOptions};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::dto::{ReplayBody, ReplayView};
use crate::error::{AppError, ErrorBody};
use crate::extract::{Json, Path};
use crate::state::AppState;

/// Returns the replay route.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(replay))
}

fn unknown_territory(t: impl std::fmt::Display) -> AppError {
    AppError::invalid(
        "unknown_territory",
        "territory_id",
        format!("territory {t} does not exist"),
    )
}

/// Runs the stored routing decisions of the newest leads through a plugin version and
/// reports what would have changed. Each decision's input is rebuilt from its `routed`
/// history entry (candidates with their load and capacity then), the reps' current
/// skills and tier, and the territory's current `plugin_config`. Nothing is stored, no
/// load is taken, and plugin statistics are left alone.
///
/// One replay runs at a time; another is refused with 409 `replay_in_progress`. A
/// client that hangs up stops its replay at the next lead or decision, which frees the
/// place for the next one.
#[utoipa::path(
    post, path = "/admin/plugins/{name}/versions/{version}/replay", tag = "plugins",
    params(
        ("name" = String, Path, description = "The plugin's name."),
        ("version" = u32, Path, description = "The version to replay."),
    ),
    request_body = ReplayBody,
    responses(
        (status = 200, description = "The report.", body = ReplayView),
        (status = 400, description = "Malformed JSON, wrong content type or a bad path.", body = ErrorBody),
        (status = 401, description = "Missing or unknown token.", body = ErrorBody),
        (status = 403, description = "Not the admin token.", body = ErrorBody),
        (status = 413, description = "Body over the JSON limit (64 KiB by default).", body = ErrorBody),
        (status = 404, description = "`plugin_not_found`: no such plugin or version.", body = ErrorBody),
        (status = 409, description = "`replay_in_progress`: another replay is running; only \
            one runs at a time. Retry once it has answered.", body = ErrorBody),
        (status = 422, description = "`invalid_field` (`limit` out of 1–100000), \
            `unknown_field`, or `unknown_territory` (`territory_id`).", body = ErrorBody),
        (status = 503, description = "`shutting_down`: the server is draining. \
            `Retry-After: 1`.", body = ErrorBody),
    ),
    security(("admin_token" = []))
)]
pub async fn replay(
    State(state): State<AppState>,
    Path((name, version)): Path<(String, u32)>,
    Json(body): Json<ReplayBody>,
) -> Result<Json<ReplayView>, AppError> {
    let territory = body
        .territory_id
        .as_deref()
        .map(|t| TerritoryId::new(t).map_err(|_| unknown_territory(t)))
        .transpose()?;
    let options = ReplayOptions {
        territory,
        limit: body.limit,
    };
    let report = state
        .engine
        .replay(&name, version, options)
        .await
        .map_err(|e| match e {
            // The territory is named in the body: bad input, not a missing resource.
            EngineError::TerritoryNotFound(t) => unknown_territory(t),
            e => e.into(),
        })?;
    Ok(Json(report.into()))
}
