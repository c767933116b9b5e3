//! [`AppState`]: what every handler can reach.

use std::path::PathBuf;
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
    /// Where `POST /admin/backups` writes.
    pub backup_dir: Arc<PathBuf>,
    /// Backup files kept in `backup_dir` after each backup (0: every file).
    pub backup_keep: usize,
    /// False while draining at shutdown: `/readyz` answers 503.
    ready: Arc<AtomicBool>,
}

impl AppState {
    /// Wraps an open engine; it is ready at once, since opening the engine already
    /// recovered the store and started the actors. Backups go to `backups` in the
    /// data directory until [`AppState::with_backup_dir`] says otherwise, and every
    /// file is kept until [`AppState::with_backup_keep`] says otherwise.
    pub fn new(engine: Engine, auth: Auth, limits: Limits) -> Self {
        let backup_dir = Arc::new(engine.data_dir().join("backups"));
        AppState {
            engine,
            auth: Arc::new(auth),
            limits,
            http_metrics: HttpMetrics::new(),
            backup_dir,
            backup_keep: 0,
            ready: Arc::new(AtomicBool::new(true)),
        }
    }

    /// Writes backups to `dir`.
    pub fn with_backup_dir(mut self, dir: PathBuf) -> Self {
        self.backup_dir = Arc::new(dir);
        self
    }

    /// Keeps the newest `keep` backup files after each backup (0: every file).
    pub fn with_backup_keep(mut self, keep: usize) -> Self {
        self.backup_keep = keep;
        self
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
