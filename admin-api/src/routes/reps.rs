//! Reps: `PUT/GET/DELETE /admin/reps/{rep_id}` and `GET /admin/reps`.

use axum::extract::State;
use axum::http::StatusCode;
use leadroute_engine::EngineError;
use leadroute_engine::domain::RepId;
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::uncancelled;
use crate::dto::{RepBody, RepView};
use crate::error::{AppError, ErrorBody};
use crate::extract::{Json, Path, Query};
use crate::state::AppState;

/// Returns the rep routes.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_reps))
        .routes(routes!(put_rep, get_rep, delete_rep))
}

/// Parses a rep id from a path that must name an existing rep: a malformed id names
/// no rep, so it is a 404.
fn existing(raw: &str) -> Result<RepId, AppError> {
    RepId::new(raw)
        .map_err(|_| AppError::not_found("rep_not_found", format!("rep {raw} not found")))
}

/// Lists every rep with its load, by id.
#[utoipa::path(
    get, path = "/admin/reps", tag = "reps",
    responses(
        (status = 200, description = "Every rep, by id.", body = Vec<RepView>),
        (status = 401, description = "Missing or unknown token.", body = ErrorBody),
        (status = 403, description = "Not the admin token.", body = ErrorBody),
    ),
    security(("admin_token" = []))
)]
pub async fn list_reps(State(state): State<AppState>) -> Result<Json<Vec<RepView>>, AppError> {
    let reps = state.engine.reps().await?;
    Ok(Json(reps.into_iter().map(Into::into).collect()))
}

/// Creates or replaces a rep; its load is kept. Takes effect for the next lead.
#[utoipa::path(
    put, path = "/admin/reps/{rep_id}", tag = "reps",
    params(("rep_id" = String, Path, description = "Client-chosen id, `[A-Za-z0-9_.-]{1,64}`.")),
    request_body = RepBody,
    responses(
        (status = 201, description = "Created.", body = RepView),
        (status = 200, description = "Replaced.", body = RepView),
        (status = 400, description = "Malformed JSON or wrong content type.", body = ErrorBody),
        (status = 401, description = "Missing or unknown token.", body = ErrorBody),
        (status = 403, description = "Not the admin token.", body = ErrorBody),
        (status = 413, description = "Body over the JSON limit (64 KiB by default).", body = ErrorBody),
        (status = 422, description = "`invalid_id`, `unknown_territory`, `unknown_field`, \
            `invalid_field`.", body = ErrorBody),
        (status = 503, description = "`overloaded` (64 admin writes already waiting), \
            `store_unavailable` or `shutting_down`; nothing changed. `Retry-After: 1`.", body = ErrorBody),
    ),
    security(("admin_token" = []))
)]
pub async fn put_rep(
    State(state): State<AppState>,
    Path(raw): Path<String>,
    Json(body): Json<RepBody>,
) -> Result<(StatusCode, Json<RepView>), AppError> {
    let id = RepId::new(raw).map_err(|e| AppError::invalid(e.code, "rep_id", e.message))?;
    let engine = state.engine.clone();
    let (snapshot, created) = uncancelled(async move { engine.upsert_rep(id, body.into()).await })
        .await?
        .map_err(|e| match e {
            // The territory is named in the body, not the path: bad input, not a 404.
            EngineError::TerritoryNotFound(t) => AppError::invalid(
                "unknown_territory",
                "territories",
                format!("territory {t} does not exist; create it first"),
            ),
            e => e.into(),
        })?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(snapshot.into())))
}

/// Returns one rep with its load.
#[utoipa::path(
    get, path = "/admin/reps/{rep_id}", tag = "reps",
    params(("rep_id" = String, Path, description = "The rep's id.")),
    responses(
        (status = 200, description = "The rep.", body = RepView),
        (status = 401, description = "Missing or unknown token.", body = ErrorBody),
        (status = 403, description = "Not the admin token.", body = ErrorBody),
        (status = 404, description = "`rep_not_found`.", body = ErrorBody),
    ),
    security(("admin_token" = []))
)]
pub async fn get_rep(
    State(state): State<AppState>,
    Path(raw): Path<String>,
) -> Result<Json<RepView>, AppError> {
    let id = existing(&raw)?;
    Ok(Json(state.engine.rep(&id).await?.into()))
}

/// Query of `DELETE /admin/reps/{rep_id}`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct DeleteRepQuery {
    /// Re-route the rep's open leads within their territories first.
    #[serde(default)]
    pub reassign: bool,
}

/// Deletes a rep. Refused while it owns open leads, unless `?reassign=true`.
#[utoipa::path(
    delete, path = "/admin/reps/{rep_id}", tag = "reps",
    params(("rep_id" = String, Path, description = "The rep's id."), DeleteRepQuery),
    responses(
        (status = 204, description = "Deleted."),
        (status = 400, description = "`invalid_query`.", body = ErrorBody),
        (status = 401, description = "Missing or unknown token.", body = ErrorBody),
        (status = 403, description = "Not the admin token.", body = ErrorBody),
        (status = 404, description = "`rep_not_found`.", body = ErrorBody),
        (status = 409, description = "`rep_has_open_leads`.", body = ErrorBody),
        (status = 503, description = "`overloaded` (64 admin writes already waiting), \
            `store_unavailable` or `shutting_down`; nothing changed. `Retry-After: 1`.", body = ErrorBody),
    ),
    security(("admin_token" = []))
)]
pub async fn delete_rep(
    State(state): State<AppState>,
    Path(raw): Path<String>,
    Query(query): Query<DeleteRepQuery>,
) -> Result<StatusCode, AppError> {
    let id = existing(&raw)?;
    let engine = state.engine.clone();
    uncancelled(async move { engine.delete_rep(&id, query.reassign).await }).await??;
    Ok(StatusCode::NO_CONTENT)
}
