//! Leads after intake: `GET /v1/leads/{lead_id}` and
//! `POST /v1/leads/{lead_id}/events`.

use axum::extract::State;
use leadroute_engine::domain::LeadId;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::uncancelled;
use crate::dto::{EventBody, LeadView};
use crate::error::{AppError, ErrorBody};
use crate::extract::{Json, Path};
use crate::state::AppState;

/// Returns the lead routes.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_lead))
        .routes(routes!(post_event))
}

/// Parses a lead id from the path. A malformed id names no lead, so it is a 404
/// like any other unknown lead.
fn lead_id(raw: &str) -> Result<LeadId, AppError> {
    raw.parse()
        .map_err(|_| AppError::not_found("lead_not_found", format!("lead {raw} not found")))
}

/// Reads the lead and its whole history.
fn view(state: &AppState, id: LeadId) -> Result<LeadView, AppError> {
    let lead = state
        .engine
        .lead(id)?
        .ok_or_else(|| AppError::not_found("lead_not_found", format!("lead {id} not found")))?;
    Ok(with_deadline(state, lead))
}

/// The answer for a lead, with its first-touch deadline (kept in memory).
fn with_deadline(state: &AppState, lead: leadroute_engine::LeadView) -> LeadView {
    let id = lead.state.lead.id;
    let mut view: LeadView = lead.into();
    view.first_touch_deadline = state.engine.sla_deadline(id).map(crate::dto::rfc3339);
    view
}

/// Returns a lead: status, rep, territory, stage and every event in order.
#[utoipa::path(
    get, path = "/v1/leads/{lead_id}", tag = "leads",
    params(("lead_id" = String, Path, description = "The lead's id.")),
    responses(
        (status = 200, description = "The lead with its history.", body = LeadView),
        (status = 401, description = "Missing or unknown token.", body = ErrorBody),
        (status = 404, description = "`lead_not_found`.", body = ErrorBody),
    ),
    security(("intake_token" = []), ("admin_token" = []))
)]
pub async fn get_lead(
    State(state): State<AppState>,
    Path(raw): Path<String>,
) -> Result<Json<LeadView>, AppError> {
    let id = lead_id(&raw)?;
    Ok(Json(view(&state, id)?))
}

/// Records a lifecycle event: `touched`, the next `stage`, or `closed`. Closing (or
/// `contract_signed`) frees the rep's load, which may assign a queued lead.
#[utoipa::path(
    post, path = "/v1/leads/{lead_id}/events", tag = "leads",
    params(("lead_id" = String, Path, description = "The lead's id.")),
    request_body = EventBody,
    responses(
        (status = 200, description = "Recorded (durably); the lead as it is now.", body = LeadView),
        (status = 400, description = "Malformed JSON or wrong content type.", body = ErrorBody),
        (status = 401, description = "Missing or unknown token.", body = ErrorBody),
        (status = 413, description = "Body over the JSON limit (64 KiB by default).", body = ErrorBody),
        (status = 404, description = "`lead_not_found`.", body = ErrorBody),
        (status = 409, description = "`stage_order` (the message names the expected stage), \
            `lead_closed`, or `lead_not_assigned` (the lead is queued).", body = ErrorBody),
        (status = 422, description = "Unknown event type or stage, or stray fields.", body = ErrorBody),
        (status = 503, description = "`overloaded`, `store_unavailable` or `shutting_down`; \
            nothing recorded. `Retry-After: 1`.", body = ErrorBody),
    ),
    security(("intake_token" = []), ("admin_token" = []))
)]
pub async fn post_event(
    State(state): State<AppState>,
    Path(raw): Path<String>,
    Json(event): Json<EventBody>,
) -> Result<Json<LeadView>, AppError> {
    let id = lead_id(&raw)?;
    let input = event.into_input()?;
    let engine = state.engine.clone();
    let lead = uncancelled(async move { engine.record_event(id, input).await }).await??;
    // As the change left it: a read now could fail and turn a recorded event into a
    // 503, which says nothing was recorded.
    Ok(Json(with_deadline(&state, lead)))
}
