//! The routes, one group per file, each with its OpenAPI annotations, so the
//! document at `/openapi.json` is built from the same registrations as the router.
//!
//! - `intake.rs`: `POST /v1/leads`, `POST /v1/leads/batch`.
//! - `leads.rs`: `GET /v1/leads/{lead_id}`, `POST /v1/leads/{lead_id}/events`.
//! - `reps.rs`: `/admin/reps`.
//! - `territories.rs`: `/admin/territories`.
//! - `simulate.rs`: `POST /admin/simulate`.
//! - `plugins.rs`: `/admin/plugins`.
//! - `webhooks.rs`: `/admin/webhooks` and their dead letters.
//! - `replay.rs`: `POST /admin/plugins/{name}/versions/{version}/replay`.
//! - `backups.rs`: `POST /admin/backups`.
//! - `ops.rs`: `/healthz`, `/readyz`, `/metrics`, `/openapi.json` (no token).
//!
//! Auth is a route layer per group: the intake token (or the admin token) for
//! `/v1/*`, the admin token for `/admin/*`.

mod backups;
mod intake;
mod leads;
mod ops;
mod plugins;
mod replay;
mod reps;
mod simulate;
mod territories;
mod webhooks;

pub use intake::MAX_BATCH;
pub use ops::{OpenApiJson, starting};

use axum::Extension;
use axum::extract::DefaultBodyLimit;
use axum::middleware::from_fn_with_state;
use tower::ServiceBuilder;
use tower::layer::util::{Identity, Stack};
use tracing::Instrument;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

use crate::auth;
use crate::error::AppError;
use crate::extract::BodyLimit;
use crate::openapi::ApiDoc;
use crate::state::AppState;

/// Runs an engine call that changes state in a task of its own, so that neither a
/// client hanging up nor the shutdown's drain deadline cancels it half-way: a lead
/// admitted would give back its admission while its commit is still queued, and
/// after a change commits the engine still has its actors' in-memory state to bring
/// in line (a rep's load after a lead moved off it, a rep deleted). The task keeps
/// the request's span, so what it logs carries the request id.
pub(crate) async fn uncancelled<T: Send + 'static>(
    call: impl Future<Output = T> + Send + 'static,
) -> Result<T, AppError> {
    tokio::spawn(call.in_current_span())
        .await
        .map_err(AppError::internal)
}

/// Returns the layers that cap a route's body at `bytes` and tell the extractors so.
pub(crate) fn body_limit(
    bytes: usize,
) -> ServiceBuilder<Stack<Extension<BodyLimit>, Stack<DefaultBodyLimit, Identity>>> {
    ServiceBuilder::new()
        .layer(DefaultBodyLimit::max(bytes))
        .layer(Extension(BodyLimit(bytes)))
}

/// Returns every route with its documentation. Auth and body limits are applied
/// here; cross-cutting layers (metrics, request ids, tracing) in [`crate::app`].
pub fn api(state: &AppState) -> OpenApiRouter<AppState> {
    let json_limit = state.limits.json_body_bytes;
    let v1 = OpenApiRouter::new()
        .merge(intake::routes(state))
        .merge(leads::routes())
        .route_layer(from_fn_with_state(state.clone(), auth::require_intake));
    let admin = OpenApiRouter::new()
        .merge(reps::routes())
        .merge(territories::routes())
        .merge(simulate::routes())
        .merge(plugins::routes(state))
        .merge(webhooks::routes())
        .merge(replay::routes())
        .merge(backups::routes())
        .route_layer(from_fn_with_state(state.clone(), auth::require_admin));
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(v1)
        .merge(admin)
        .layer(body_limit(json_limit))
        .merge(ops::routes())
}
