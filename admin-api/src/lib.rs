//! The leadroute server: HTTP intake, the admin API, metrics, and the `leadroute` CLI.
//!
//! It knows nothing of sled or actors: every request becomes one call on
//! [`leadroute_engine::Engine`], and every engine error one HTTP status
//! ([`error::engine_status`]). The contract is `API.md`; `/openapi.json` documents it
//! from the same registrations that build the router.
//!
//! # Layout
//! - [`app`] builds the router (callable without a socket, for tests); [`run`] serves
//!   it on a listener until a shutdown signal, then drains and shuts the engine down.
//! - [`routes`]: one route group per file (intake, leads, reps, territories, simulate,
//!   plugins, ops), each with its OpenAPI annotations; auth and body limits per group.
//! - [`dto`]: the JSON bodies and views; [`extract`]: extractors whose rejections
//!   are JSON; [`error`]: [`error::AppError`] and the engine-error → status map.
//! - [`auth`]: bearer tokens; [`config`]: TOML + env + flags → [`config::Settings`].
//! - [`metrics`]: HTTP metrics and `/metrics`; [`openapi`]: the document's frame.
//! - [`sla`]: the timer that enforces first-touch deadlines while serving.
//! - [`webhooks`]: signed event delivery from the engine's outbox, with retries.
//! - [`serve`]: `leadroute serve` (open the engine, bind, signals); [`demo`]: the
//!   sample organisation of `--demo`; [`logging`]: tracing set-up.
//! - [`cli`]: the command line; [`client`]: the subcommands that talk to a running
//!   server; [`plugin_test`]: `leadroute plugin test`, a module on fixtures, offline.

pub mod auth;
pub mod cli;
pub mod client;
pub mod config;
pub mod demo;
pub mod dto;
pub mod error;
pub mod extract;
pub mod logging;
pub mod metrics;
pub mod openapi;
pub mod plugin_test;
pub mod routes;
pub mod serve;
pub mod sla;
pub mod state;
pub mod webhooks;

use std::future::Future;
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderName, Request, StatusCode};
use axum::middleware::from_fn_with_state;
use axum::response::{IntoResponse, Response};
use tokio::net::TcpListener;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{
    MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tower_http::trace::TraceLayer;

use crate::error::AppError;
pub use crate::state::AppState;

/// The request id header, set when the client did not send one and echoed back.
const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Request ids are ULIDs: unique, and they sort by time in the logs.
#[derive(Clone, Copy, Default)]
struct UlidRequestId;

impl MakeRequestId for UlidRequestId {
    fn make_request_id<B>(&mut self, _: &Request<B>) -> Option<RequestId> {
        let id = ulid::Ulid::new().to_string();
        Some(RequestId::new(id.parse().ok()?))
    }
}

/// Builds the whole HTTP app around `state`.
pub fn app(state: AppState) -> Router {
    let (router, doc) = routes::api(&state).split_for_parts();
    router
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .route_layer(from_fn_with_state(state.clone(), metrics::track))
        .layer(axum::Extension(routes::OpenApiJson::new(&doc)))
        .layer(
            ServiceBuilder::new()
                .layer(SetRequestIdLayer::new(REQUEST_ID, UlidRequestId))
                .layer(
                    TraceLayer::new_for_http().make_span_with(|req: &Request<_>| {
                        let id = req
                            .headers()
                            .get(REQUEST_ID)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("");
                        tracing::info_span!("request", method = %req.method(),
                        path = %req.uri().path(), request_id = %id)
                    }),
                )
                .layer(PropagateRequestIdLayer::new(REQUEST_ID))
                .layer(CatchPanicLayer::custom(panicked)),
        )
        .with_state(state)
}

async fn not_found() -> AppError {
    AppError::not_found("route_not_found", "no such route; see /openapi.json")
}

async fn method_not_allowed() -> AppError {
    AppError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not take that method; see /openapi.json",
    )
}

/// Turns a handler panic into the generic 500 body; the panic is logged.
fn panicked(panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let detail = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("(no message)");
    AppError::internal(format!("handler panicked: {detail}")).into_response()
}

/// Serves the app on `listener` until `shutdown` completes, then drains: `/readyz`
/// turns 503, no new connections are accepted, requests in flight finish (for at
/// most `drain_timeout`), and the engine shuts down, making everything durable.
/// Webhooks are delivered with the default [`webhooks::Policy`].
pub async fn run(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
    drain_timeout: Duration,
) -> anyhow::Result<()> {
    run_with(
        listener,
        state,
        shutdown,
        drain_timeout,
        webhooks::Policy::default(),
    )
    .await
}

/// [`run`], delivering webhooks with `policy`.
pub async fn run_with(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
    drain_timeout: Duration,
    policy: webhooks::Policy,
) -> anyhow::Result<()> {
    let engine = state.engine.clone();
    // Background work on the engine: SLA deadlines and webhook deliveries. Both stop
    // before the engine shuts down.
    let (stop_background, stopped) = tokio::sync::watch::channel(false);
    let sweeps = tokio::spawn(sla::sweep_until(
        engine.clone(),
        sla::SWEEP_INTERVAL,
        stopped.clone(),
    ));
    let dispatcher = webhooks::Dispatcher::new(
        engine.clone(),
        policy,
        std::sync::Arc::new(webhooks::TokioSleeper),
    )?;
    let deliveries = tokio::spawn(dispatcher.run(stopped));
    let draining = state.clone();
    let (drain_tx, mut drain_rx) = tokio::sync::watch::channel(false);
    let signal = async move {
        shutdown.await;
        tracing::info!("shutting down: draining requests in flight");
        draining.set_ready(false);
        let _ = drain_tx.send(true);
    };
    let server = axum::serve(listener, app(state)).with_graceful_shutdown(signal);
    let drained = async move {
        // A client holding a connection open must not keep the process alive forever.
        let _ = drain_rx.wait_for(|d| *d).await;
        tokio::time::sleep(drain_timeout).await;
    };
    tokio::select! {
        served = server => served?,
        () = drained => {
            tracing::warn!(?drain_timeout, "requests still in flight after the drain timeout; closing");
        }
    }
    let _ = stop_background.send(true);
    let _ = sweeps.await;
    let _ = deliveries.await;
    engine.shutdown().await?;
    tracing::info!("engine stopped; everything acknowledged is durable");
    Ok(())
}
