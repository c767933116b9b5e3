//! Intake: `POST /v1/leads` and `POST /v1/leads/batch`.
//!
//! A 2xx here means the outcome is durable (the engine answers only after its group
//! commit), so a client that got one never needs to resend.

use axum::extract::State;
use axum::http::StatusCode;
use leadroute_engine::RouteStatus;
use leadroute_engine::domain::LeadInput;
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouterExt};
use utoipa_axum::routes;

use super::{body_limit, uncancelled};
use crate::dto::{BatchBody, BatchItem, BatchResults, LeadBody, RouteOutcomeView};
use crate::error::{AppError, ErrorBody};
use crate::extract::{Json, parse_at};
use crate::state::AppState;

/// Most leads in one batch.
pub const MAX_BATCH: usize = 1000;

/// Returns the intake routes; the batch route gets the larger batch body limit.
pub fn routes(state: &AppState) -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_lead))
        .routes(routes!(create_batch).layer(body_limit(state.limits.batch_body_bytes)))
}

/// The HTTP status for an outcome: 201 assigned, 202 queued, 200 duplicate.
fn status_of(status: RouteStatus) -> StatusCode {
    match status {
        RouteStatus::Assigned => StatusCode::CREATED,
        RouteStatus::Queued => StatusCode::ACCEPTED,
        RouteStatus::Duplicate => StatusCode::OK,
    }
}

/// Routes one lead.
#[utoipa::path(
    post, path = "/v1/leads", tag = "intake",
    request_body = LeadBody,
    responses(
        (status = 201, description = "Assigned to a rep. Durable.", body = RouteOutcomeView),
        (status = 202, description = "Queued: no rep has capacity. Durable.", body = RouteOutcomeView),
        (status = 200, description = "Duplicate of an open lead (same normalized phone, email or \
            external_id): `lead_id`, `rep_id` and `duplicate_of` are the existing lead's. \
            No new load is taken.", body = RouteOutcomeView),
        (status = 400, description = "Malformed JSON or wrong content type.", body = ErrorBody),
        (status = 401, description = "Missing or unknown token.", body = ErrorBody),
        (status = 413, description = "Body over the JSON limit.", body = ErrorBody),
        (status = 422, description = "Invalid lead: `missing_contact`, `unknown_field`, \
            `invalid_field`, `invalid_region`, or `no_territory`.", body = ErrorBody),
        (status = 503, description = "`overloaded` (too many leads in flight), \
            `store_unavailable` or `shutting_down`; nothing stored. `Retry-After: 1`.", body = ErrorBody),
    ),
    security(("intake_token" = []), ("admin_token" = []))
)]
pub async fn create_lead(
    State(state): State<AppState>,
    Json(body): Json<LeadBody>,
) -> Result<(StatusCode, Json<RouteOutcomeView>), AppError> {
    let engine = state.engine.clone();
    let outcome = uncancelled(async move { engine.route(body.into()).await }).await??;
    Ok((status_of(outcome.status), Json(outcome.into())))
}

/// Routes up to 1000 leads; their commits share flushes. Always 200 when the body
/// parses: each result is an outcome or `{"error": {...}}` for its lead alone.
#[utoipa::path(
    post, path = "/v1/leads/batch", tag = "intake",
    request_body = BatchBody,
    responses(
        (status = 200, description = "One result per lead, in order.", body = BatchResults),
        (status = 400, description = "Malformed JSON or wrong content type.", body = ErrorBody),
        (status = 401, description = "Missing or unknown token.", body = ErrorBody),
        (status = 413, description = "Body over the batch limit (8 MiB by default).", body = ErrorBody),
        (status = 422, description = "`too_many_leads` (over 1000) or a malformed envelope.", body = ErrorBody),
        (status = 503, description = "Never for the batch as a whole: an overloaded engine \
            answers every lead `{\"error\": {\"code\": \"overloaded\"}}` inside a 200.", body = ErrorBody),
    ),
    security(("intake_token" = []), ("admin_token" = []))
)]
pub async fn create_batch(
    State(state): State<AppState>,
    Json(body): Json<BatchBody>,
) -> Result<Json<BatchResults>, AppError> {
    if body.leads.total > MAX_BATCH {
        return Err(AppError::invalid(
            "too_many_leads",
            "leads",
            format!(
                "a batch holds at most {MAX_BATCH} leads; this one has {}",
                body.leads.total
            ),
        ));
    }
    // Each lead is parsed alone, so one bad lead costs only its own slot.
    let parsed: Vec<Result<LeadInput, AppError>> = body
        .leads
        .kept
        .iter()
        .enumerate()
        .map(|(i, raw)| parse_at::<LeadBody>(raw.get(), &format!("leads[{i}]")).map(Into::into))
        .collect();
    let inputs: Vec<LeadInput> = parsed
        .iter()
        .filter_map(|p| p.as_ref().ok().cloned())
        .collect();
    let engine = state.engine.clone();
    let mut outcomes = uncancelled(async move { engine.route_batch(&inputs).await })
        .await?
        .into_iter();
    let results = parsed
        .into_iter()
        .enumerate()
        .map(|(i, p)| {
            let routed = match p {
                Ok(_) => outcomes
                    .next()
                    .unwrap_or_else(|| {
                        Err(leadroute_engine::EngineError::Internal(
                            "route_batch returned fewer results than leads".into(),
                        ))
                    })
                    .map_err(|e| AppError::from(e).prefixed(&format!("leads[{i}]"))),
                Err(e) => Err(e),
            };
            match routed {
                Ok(outcome) => BatchItem::Outcome(outcome.into()),
                Err(e) => BatchItem::Error(e.body()),
            }
        })
        .collect();
    Ok(Json(BatchResults { results }))
}
