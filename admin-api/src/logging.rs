//! Structured logs with `tracing`: to stderr (stdout carries the machine-readable
//! `listening on` line), filtered by `RUST_LOG` when set, else by the configured level.

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Installs the global subscriber. `level` is used when `RUST_LOG` is unset or empty;
/// a `RUST_LOG` that does not parse is reported and `level` is used instead.
pub fn init(level: &str, format: LogFormat) {
    let (filter, bad_env) = match std::env::var("RUST_LOG") {
        Ok(s) if !s.trim().is_empty() => match EnvFilter::try_new(&s) {
            Ok(f) => (f, None),
            Err(e) => (EnvFilter::new(level), Some(format!("{s:?}: {e}"))),
        },
        _ => (EnvFilter::new(level), None),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    // A second init (tests that serve twice in one process) keeps the first.
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    if let Some(problem) = bad_env {
        tracing::warn!(%problem, "ignoring RUST_LOG that does not parse");
    }
}
