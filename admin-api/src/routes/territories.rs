//! Territories: `PUT/GET /admin/territories/{territory_id}` and
//! `GET /admin/territories`.

use axum::extract::State;
use axum::http::StatusCode;
use leadroute_engine::domain::TerritoryId;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::uncancelled;
use crate::dto::{TerritoryBody, TerritoryView};
use crate::error::{AppError, ErrorBody};
use crate::extract::{Json, Path};
use crate::state::AppState;

/// Returns the territory routes.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_territories))
        .routes(routes!(put_territory, get_territory))
}

/// Lists every territory with its members' load and queue depth, by id.
#[utoipa::path(
    get, path = "/admin/territories", tag = "territories",
    responses(
        (status = 200, description = "Every territory, by id.", body = Vec<TerritoryView>),
        (status = 401, description = "Missing or unknown token.", body = ErrorBody),
        (status = 403, description = "Not the admin token.", body = ErrorBody),
    ),
    security(("admin_token" = []))
)]
pub async fn list_territories(
    State(state): State<AppState>,
) -> Result<Json<Vec<TerritoryView>>, AppError> {
    let territories = state.engine.territories().await?;
    Ok(Json(territories.into_iter().map(Into::into).collect()))
}

/// Creates or replaces a territory. Takes effect for the next lead.
#[utoipa::path(
    put, path = "/admin/territories/{territory_id}", tag = "territories",
    params(("territory_id" = String, Path, description = "Client-chosen id, `[A-Za-z0-9_.-]{1,64}`.")),
    request_body = TerritoryBody,
    responses(
        (status = 201, description = "Created.", body = TerritoryView),
        (status = 200, description = "Replaced.", body = TerritoryView),
        (status = 400, description = "Malformed JSON or wrong content type.", body = ErrorBody),
        (status = 401, description = "Missing or unknown token.", body = ErrorBody),
        (status = 403, description = "Not the admin token.", body = ErrorBody),
        (status = 413, description = "Body over the JSON limit (64 KiB by default).", body = ErrorBody),
        (status = 409, description = "`territory_conflict`: a region is owned by another \
            territory, or another territory is the default.", body = ErrorBody),
        (status = 422, description = "`invalid_id`, `invalid_region`, `unknown_plugin`, \
            `unknown_field`, `invalid_field`.", body = ErrorBody),
        (status = 503, description = "`overloaded` (64 admin writes already waiting), \
            `store_unavailable` or `shutting_down`; nothing changed. `Retry-After: 1`.", body = ErrorBody),
    ),
    security(("admin_token" = []))
)]
pub async fn put_territory(
    State(state): State<AppState>,
    Path(raw): Path<String>,
    Json(body): Json<TerritoryBody>,
) -> Result<(StatusCode, Json<TerritoryView>), AppError> {
    let id =
        TerritoryId::new(raw).map_err(|e| AppError::invalid(e.code, "territory_id", e.message))?;
    let (engine, input, put) = (state.engine.clone(), body.into_input()?, id.clone());
    let created = uncancelled(async move { engine.upsert_territory(put, input).await }).await??;
    let view = state.engine.territory(&id).await?.into();
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(view)))
}

/// Returns one territory with its members' load and queue depth.
#[utoipa::path(
    get, path = "/admin/territories/{territory_id}", tag = "territories",
    params(("territory_id" = String, Path, description = "The territory's id.")),
    responses(
        (status = 200, description = "The territory.", body = TerritoryView),
        (status = 401, description = "Missing or unknown token.", body = ErrorBody),
        (status = 403, description = "Not the admin token.", body = ErrorBody),
        (status = 404, description = "`territory_not_found`.", body = ErrorBody),
    ),
    security(("admin_token" = []))
)]
pub async fn get_territory(
    State(state): State<AppState>,
    Path(raw): Path<String>,
) -> Result<Json<TerritoryView>, AppError> {
    let id = TerritoryId::new(raw.as_str()).map_err(|_| {
        AppError::not_found("territory_not_found", format!("territory {raw} not found"))
    })?;
    Ok(Json(state.engine.territory(&id).await?.into()))
}
