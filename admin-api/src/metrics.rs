//! HTTP metrics, and the `/metrics` text that joins them with the engine's.
//!
//! The server keeps its own registry so the engine's stays the engine's (and an app
//! can be built twice around one engine in tests without names colliding); both are
//! rendered together. Labels are closed sets: the route is the matched route
//! template (`/v1/leads/{lead_id}`), never the raw path.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use leadroute_engine::Engine;
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};

use crate::state::AppState;

/// Request latency buckets, 100 µs to 10 s: a route is sub-millisecond, a batch or a
/// drain is seconds.
const BUCKETS: &[f64] = &[
    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// Request counts and latency by route.
#[derive(Clone)]
pub struct HttpMetrics {
    registry: Registry,
    requests: IntCounterVec,
    duration: HistogramVec,
    unparsed: IntCounterVec,
}

impl HttpMetrics {
    /// Creates the metrics in a fresh registry.
    pub fn new() -> Self {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "leadroute_http_requests_total",
                "HTTP requests, by method, matched route and status.",
            ),
            &["method", "route", "status"],
        )
        .expect("valid metric");
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "leadroute_http_request_duration_seconds",
                "HTTP request latency, by method and matched route.",
            )
            .buckets(BUCKETS.to_vec()),
            &["method", "route"],
        )
        .expect("valid metric");
        let unparsed = IntCounterVec::new(
            Opts::new(
                "leadroute_http_unparsed_requests_total",
                "Requests whose head could not be parsed, answered before the router, by status.",
            ),
            &["status"],
        )
        .expect("valid metric");
        // At zero from the start, so the first one shows in `increase()`.
        for status in crate::unparsed::STATUSES {
            unparsed.with_label_values(&[&status.to_string()]);
        }
        for metric in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(duration.clone()),
            Box::new(unparsed.clone()),
        ] {
            registry.register(metric).expect("unique metric");
        }
        HttpMetrics {
            registry,
            requests,
            duration,
            unparsed,
        }
    }

    /// Counts one request.
    pub fn observe(&self, method: &str, route: &str, status: u16, seconds: f64) {
        self.requests
            .with_label_values(&[method, route, &status.to_string()])
            .inc();
        self.duration
            .with_label_values(&[method, route])
            .observe(seconds);
    }

    /// Counts one request answered before the router because its head could not be
    /// parsed (`crate::unparsed`).
    pub fn observe_unparsed(&self, status: u16) {
        self.unparsed
            .with_label_values(&[&status.to_string()])
            .inc();
    }
}

impl Default for HttpMetrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Renders the engine's and the server's metrics in the Prometheus text format.
pub fn render(engine: &Engine, http: &HttpMetrics) -> String {
    let mut families = engine.metrics().registry.gather();
    families.extend(http.registry.gather());
    let mut out = String::new();
    prometheus::TextEncoder::new()
        .encode_utf8(&families, &mut out)
        .expect("encoding to a String cannot fail");
    out
}

/// Keeps method labels a closed set.
fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// Counts and times each request, including the ones auth rejects. Installed as a
/// route layer, so the matched route is known.
pub async fn track(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = method_label(req.method());
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let response = next.run(req).await;
    state.http_metrics.observe(
        method,
        &route,
        response.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    response
}
