//! Operations, open without a token: `/healthz`, `/readyz`, `/metrics`,
//! `/openapi.json`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::{Extension, Json};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa::openapi::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::{AppError, ErrorBody};
use crate::metrics;
use crate::state::AppState;

/// Returns the operations routes.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(metrics_text))
        .routes(routes!(openapi_json))
}

/// What the server answers while its store opens (recovery may take a while on a
/// large store): `/healthz` 200, everything else, `/readyz` included, 503 `starting`.
/// Nothing is read or changed, so no token is asked for.
pub fn starting() -> axum::Router {
    axum::Router::new()
        .route("/healthz", axum::routing::get(healthz).fallback(not_yet))
        .fallback(not_yet)
}

/// The answer to everything but `GET /healthz` while the store opens.
async fn not_yet() -> AppError {
    AppError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "starting",
        "the server is starting: its store is being opened; retry shortly",
    )
}

/// A liveness or readiness answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `ok` or `ready`.
    pub status: &'static str,
}

/// Answers 200 while the process lives.
#[utoipa::path(
    get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "Alive.", body = Health))
)]
pub async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// Answers 200 once the store is open and the actors run (before that the server
/// answers 503 `starting`, see [`starting`]); 503 while shutting down,
/// and while the store cannot write (intake, the server's main job, would fail).
#[utoipa::path(
    get, path = "/readyz", tag = "operations",
    responses(
        (status = 200, description = "Ready for traffic.", body = Health),
        (status = 503, description = "`starting`: the store is still being opened; \
            `draining`: shutting down; `store_unavailable`: the \
            store cannot write (disk full, read-only, I/O errors) and has not recovered yet, or \
            a commit failed after it may have been written and only a restart mends it \
            (the message says which); reads still work.", body = ErrorBody),
    )
)]
pub async fn readyz(State(state): State<AppState>) -> Result<Json<Health>, AppError> {
    if !state.is_ready() {
        Err(AppError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "draining",
            "the server is shutting down",
        ))
    } else if state.engine.store_needs_restart() {
        Err(AppError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable",
            "a commit failed after it may have been written; changes are refused until \
             the process restarts",
        ))
    } else if !state.engine.store_writable() {
        Err(AppError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable",
            "the store cannot write; changes are refused until it recovers",
        ))
    } else {
        Ok(Json(Health { status: "ready" }))
    }
}

/// Returns the engine's and the server's metrics in the Prometheus text format.
#[utoipa::path(
    get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text format 0.0.4.", content_type = "text/plain", body = String))
)]
pub async fn metrics_text(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)],
        metrics::render(&state.engine, &state.http_metrics),
    )
}

/// Returns this API's OpenAPI 3.1 document.
#[utoipa::path(
    get, path = "/openapi.json", tag = "operations",
    responses((status = 200, description = "The OpenAPI document.", content_type = "application/json", body = Object))
)]
pub async fn openapi_json(Extension(doc): Extension<OpenApiJson>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        doc.0.to_string(),
    )
}

/// The OpenAPI document, serialized once when the app is built.
#[derive(Clone, Debug)]
pub struct OpenApiJson(pub Arc<str>);

impl OpenApiJson {
    /// Serializes `doc`.
    pub fn new(doc: &OpenApi) -> Self {
        OpenApiJson(
            doc.to_json()
                .expect("the OpenAPI document serializes")
                .into(),
        )
    }
}
