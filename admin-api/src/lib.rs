//! The leadroute server: HTTP intake, the admin API, metrics, and the `leadroute` CLI.
//!
//! It knows nothing of sled or actors: every request becomes one call on
//! [`leadroute_engine::Engine`], and every engine error one HTTP status
//! ([`error::engine_status`]). `/openapi.json` documents the contract from the same
//! registrations that build the router.
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
//! - [`unparsed`]: JSON bodies for hyper's own answers to requests it cannot parse.
//! - [`sla`]: the timer that enforces first-touch deadlines while serving.
//! - [`webhooks`]: signed event delivery from the engine's outbox, with retries.
//! - [`serve`]: `leadroute serve` (open the engine, bind, signals); [`demo`]: the
//!   sample organisation of `--demo`; [`logging`]: tracing set-up.
//! - [`cli`]: the command line; [`client`]: the subcommands that talk to a running
//!   server; [`plugin_test`]: `leadroute plugin test`, a module on fixtures, offline.

#![warn(missing_docs)]

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
pub mod unparsed;
pub mod webhooks;

use std::future::Future;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, Request, StatusCode, Uri};
use axum::middleware::from_fn_with_state;
use axum::response::{IntoResponse, Response};
use tokio::net::TcpListener;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::classify::ServerErrorsFailureClass;
use tower_http::request_id::{
    MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tower_http::trace::{DefaultOnFailure, OnFailure, TraceLayer};
use tracing::Level;

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

/// How loudly the request log reports a 5xx answer. A 503 is the server refusing work
/// by design (`overloaded`, `draining`, `shutting_down`, `store_unavailable`), each
/// with its own code and metrics; under overload they come by the thousand a second,
/// and each at ERROR would bury real errors and add log I/O when the server is
/// busiest. (The store failures behind `store_unavailable` are logged at ERROR where
/// they happen.) Every other 5xx is an ERROR.
fn failure_level(class: &ServerErrorsFailureClass) -> Level {
    match class {
        ServerErrorsFailureClass::StatusCode(StatusCode::SERVICE_UNAVAILABLE) => Level::DEBUG,
        _ => Level::ERROR,
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
                    TraceLayer::new_for_http()
                        .make_span_with(|req: &Request<_>| {
                            let id = req
                                .headers()
                                .get(REQUEST_ID)
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or("");
                            tracing::info_span!("request", method = %req.method(),
                            path = %req.uri().path(), request_id = %id)
                        })
                        .on_failure(
                            |class: ServerErrorsFailureClass,
                             latency: Duration,
                             span: &tracing::Span| {
                                DefaultOnFailure::new()
                                    .level(failure_level(&class))
                                    .on_failure(class, latency, span)
                            },
                        ),
                )
                .layer(PropagateRequestIdLayer::new(REQUEST_ID))
                .layer(CatchPanicLayer::custom(panicked)),
        )
        .with_state(state)
}

/// Checks a request no route took against the token its path's group needs, so that
/// which routes exist under `/admin` and `/v1` is not told before auth.
fn unrouted_auth(state: &AppState, uri: &Uri, headers: &HeaderMap) -> Result<(), AppError> {
    match auth::needed_for_path(uri.path()) {
        Some(role) => state.auth.check(headers, role),
        None => Ok(()),
    }
}

async fn not_found(State(state): State<AppState>, uri: Uri, headers: HeaderMap) -> AppError {
    unrouted_auth(&state, &uri, &headers)
        .err()
        .unwrap_or_else(|| {
            AppError::not_found("route_not_found", "no such route; see /openapi.json")
        })
}

async fn method_not_allowed(
    State(state): State<AppState>,
    uri: Uri,
    headers: HeaderMap,
) -> AppError {
    unrouted_auth(&state, &uri, &headers)
        .err()
        .unwrap_or_else(|| {
            AppError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this route does not take that method; see /openapi.json",
            )
        })
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

/// Longest a client may take to send a request's head (on a kept-alive connection,
/// from the end of the previous answer): hyper then closes the connection. The body
/// has its own deadline (`extract::BODY_READ_TIMEOUT`).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Accepts connections and serves `app` on each until `shutdown` completes; then
/// stops accepting and returns once every connection has finished its request in
/// flight and closed.
///
/// What `axum::serve` does, plus a timer for hyper ([`http1`]).
async fn serve_connections(
    listener: TcpListener,
    app: Router,
    metrics: metrics::HttpMetrics,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    use hyper_util::rt::TokioIo;
    use hyper_util::server::graceful::GracefulShutdown;
    use hyper_util::service::TowerToHyperService;

    let http = http1();
    let connections = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    while let Some(stream) = accept_until(&listener, shutdown.as_mut()).await {
        let service = TowerToHyperService::new(app.clone());
        let io = TokioIo::new(unparsed::JsonUnparsed::new(stream, Some(metrics.clone())));
        spawn_connection(connections.watch(http.serve_connection(io, service)));
    }
    drop(listener);
    connections.shutdown().await;
    Ok(())
}

/// HTTP/1 with a timer, without which a client that opens a connection and never
/// finishes its request head holds it (and a task) forever.
fn http1() -> hyper::server::conn::http1::Builder {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    http
}

/// Answers on `listener` as the server does while its store opens
/// ([`routes::starting`]) until `ready` completes. The listener stays open:
/// connections arriving after that wait in its backlog for [`run`].
///
/// One request per connection, and nothing waits for them at the end: they touch no
/// engine, so the server's start need not wait for a slow client either, and a
/// client is never cut off between its connection and its answer.
pub async fn serve_starting(listener: &TcpListener, ready: impl Future<Output = ()>) {
    use hyper_util::rt::TokioIo;
    use hyper_util::service::TowerToHyperService;

    let mut http = http1();
    http.keep_alive(false);
    let app = routes::starting();
    let mut ready = std::pin::pin!(ready);
    while let Some(stream) = accept_until(listener, ready.as_mut()).await {
        let service = TowerToHyperService::new(app.clone());
        // Not counted: nothing serves `/metrics` yet.
        let io = TokioIo::new(unparsed::JsonUnparsed::new(stream, None));
        spawn_connection(http.serve_connection(io, service));
    }
}

/// The next connection on `listener`, or `None` once `stop` has completed. A failed
/// `accept` is retried, after [`back_off_after`].
async fn accept_until(
    listener: &TcpListener,
    mut stop: std::pin::Pin<&mut impl Future<Output = ()>>,
) -> Option<tokio::net::TcpStream> {
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => return Some(stream),
                Err(e) => back_off_after(&e).await,
            },
            () = &mut stop => return None,
        }
    }
}

/// Serves one connection in a task of its own.
fn spawn_connection(connection: impl Future<Output = hyper::Result<()>> + Send + 'static) {
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "connection ended with an error");
        }
    });
}

/// After a failed `accept`: nothing for an error of that one connection; a pause for
/// any other (out of file descriptors, say), which would otherwise repeat at once.
async fn back_off_after(e: &std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if !matches!(
        e.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    ) {
        tracing::error!(error = %e, "cannot accept connections; retrying in 1 s");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
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
    let drain = Drain {
        delay: Duration::ZERO,
        timeout: drain_timeout,
    };
    run_with(
        listener,
        state,
        shutdown,
        drain,
        webhooks::Policy::default(),
    )
    .await
}

/// How the server stops once asked to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Drain {
    /// How long to keep serving, new connections included, with `/readyz` answering
    /// 503 `draining`: the time a load balancer needs to notice and send no more.
    pub delay: Duration,
    /// Then, with the listener closed, how long requests in flight may take before
    /// their connections are closed.
    pub timeout: Duration,
}

/// [`run`], stopping as `drain` says and delivering webhooks with `policy`.
pub async fn run_with(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
    drain: Drain,
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
        draining.set_ready(false);
        if !drain.delay.is_zero() {
            tracing::info!(
                delay_secs = drain.delay.as_secs_f64(),
                "shutting down: /readyz answers 503 draining; serving on for the shutdown delay"
            );
            tokio::time::sleep(drain.delay).await;
        }
        tracing::info!("shutting down: draining requests in flight");
        let _ = drain_tx.send(true);
    };
    let metrics = state.http_metrics.clone();
    let server = serve_connections(listener, app(state), metrics, signal);
    let drained = async move {
        // A client holding a connection open must not keep the process alive forever.
        let _ = drain_rx.wait_for(|d| *d).await;
        tokio::time::sleep(drain.timeout).await;
    };
    tokio::select! {
        served = server => served?,
        () = drained => {
            tracing::warn!(drain_timeout = ?drain.timeout, "requests still in flight after the drain timeout; closing");
        }
    }
    let _ = stop_background.send(true);
    let _ = sweeps.await;
    let _ = deliveries.await;
    engine.shutdown().await?;
    tracing::info!("engine stopped; everything acknowledged is durable");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_503s_are_logged_below_error() {
        let status = |code: u16| {
            failure_level(&ServerErrorsFailureClass::StatusCode(
                StatusCode::from_u16(code).unwrap(),
            ))
        };
        assert_eq!(status(503), Level::DEBUG);
        for code in [500, 502, 504] {
            assert_eq!(status(code), Level::ERROR, "{code}");
        }
        let error = ServerErrorsFailureClass::Error("connection reset".into());
        assert_eq!(failure_level(&error), Level::ERROR);
    }
}
