//! [`AppState`]: what every handler can reach.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use leadroute_engine::Engine;

use crate::auth::Auth;
use crate::config::Limits;
use crate::metrics::HttpMetrics;

/// Shared state of the HTTP app; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    /// The routing engine.
    pub engine: Engine,
    /// Configured tokens.
    pub auth: Arc<Auth>,
    /// Body limits.
    pub limits: Limits,
    /// HTTP request metrics, rendered with the engine's at `/metrics`.
    pub http_metrics: HttpMetrics,
    /// False while draining at shutdown: `/readyz` answers 503.
    ready: Arc<AtomicBool>,
}

impl AppState {
    /// Wraps an open engine; it is ready at once, since opening the engine already
    /// recovered the store and started the actors.
    pub fn new(engine: Engine, auth: Auth, limits: Limits) -> Self {
        AppState {
            engine,
            auth: Arc::new(auth),
            limits,
            http_metrics: HttpMetrics::new(),
            ready: Arc::new(AtomicBool::new(true)),
        }
    }

    /// Returns whether `/readyz` should answer 200.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    /// Marks the server as draining (or ready again).
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }
}
