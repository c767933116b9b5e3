//! `leadroute serve`: bind, answer `starting` while the engine opens (and the demo
//! organisation loads), announce the address, serve until SIGTERM/SIGINT, drain, exit.

use std::io::Write;

use anyhow::Context;
use leadroute_engine::{Engine, EngineConfig};
use tokio::net::TcpListener;

use crate::config::Settings;
use crate::state::AppState;
use crate::{demo, run_with};

/// Runs the server with validated `settings`; with `demo`, loads the sample
/// organisation first (idempotent). Returns once shut down cleanly.
pub async fn serve(settings: Settings, demo: bool) -> anyhow::Result<()> {
    // Bind before opening the store: a taken port fails fast, before recovery work.
    let listener = TcpListener::bind(settings.listen)
        .await
        .with_context(|| format!("cannot listen on {}", settings.listen))?;
    let addr = listener.local_addr()?;
    // Before anything else: a signal during a long recovery must not hit the default
    // action (death with no flush).
    let mut signals = ShutdownSignals::install().context("cannot install signal handlers")?;
    // Logged, not printed: stdout's one line stays `listening on`, once ready.
    tracing::info!(%addr, "bound; answering 503 starting until the store is open");

    // While the store opens, the port answers: `/healthz` 200, `/readyz` and every
    // other route 503 `starting`, so probes and clients see why they must wait.
    // Dropping `opened` ends those answers, whatever the start's outcome.
    let (opened, until_opened) = tokio::sync::oneshot::channel::<()>();
    let starting = crate::serve_starting(&listener, async move {
        let _ = until_opened.await;
    });
    let ((), started) = tokio::join!(starting, async {
        let started = start(&settings, demo, &mut signals).await;
        drop(opened);
        started
    });
    let Some(engine) = started? else {
        return Ok(());
    };

    if settings.auth.is_open() {
        tracing::warn!(
            %addr,
            "NO TOKENS CONFIGURED: every route, admin included, is open to anyone who can \
             reach this address. Set LEADROUTE_ADMIN_TOKEN and LEADROUTE_INTAKE_TOKEN before \
             exposing it"
        );
    }
    let limits = &settings.limits;
    let config_file = settings
        .config_file
        .as_deref()
        .map_or_else(|| "none".to_string(), |p| p.display().to_string());
    tracing::info!(
        %addr,
        data_dir = %settings.data_dir.display(),
        durability = %settings.durability,
        max_in_flight_leads = settings.max_in_flight_leads,
        json_body_bytes = limits.json_body_bytes,
        batch_body_bytes = limits.batch_body_bytes,
        plugin_body_bytes = limits.plugin_body_bytes,
        shutdown_delay_secs = settings.shutdown_delay.as_secs(),
        shutdown_timeout_secs = settings.shutdown_timeout.as_secs(),
        store_lock_wait_secs = settings.store_lock_wait.as_secs(),
        backup_dir = %settings.backup_dir.display(),
        backup_keep = settings.backup_keep,
        config = %config_file,
        "leadroute serving"
    );
    let webhooks = &settings.webhooks;
    tracing::info!(
        max_attempts = webhooks.max_attempts,
        base_delay_ms = webhooks.base_delay.as_millis() as u64,
        max_delay_ms = webhooks.max_delay.as_millis() as u64,
        timeout_ms = webhooks.timeout.as_millis() as u64,
        "webhook delivery policy"
    );
    let plugins = &settings.plugins;
    tracing::info!(
        fuel = plugins.fuel,
        call_timeout_ms = plugins.deadline.as_millis() as u64,
        memory_bytes = plugins.memory_bytes,
        max_instances = plugins.max_instances,
        max_compiles = plugins.max_compiles,
        compile_timeout_secs = plugins.compile_timeout.as_secs(),
        circuit_threshold = plugins.circuit_threshold,
        max_module_bytes = plugins.max_module_bytes,
        "plugin sandbox limits"
    );
    let state = AppState::new(engine, settings.auth.clone(), settings.limits)
        .with_backup_dir(settings.backup_dir.clone())
        .with_backup_keep(settings.backup_keep);
    // The one line on stdout, for scripts and tests that bind port 0: from this line
    // on, the server is ready.
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "listening on {addr}")?;
    stdout.flush()?;
    drop(stdout);

    // The first signal starts the shutdown (the delay, then the drain); a second one
    // ends the process at once, as a crash would (every answered request is already
    // durable), for an operator who will not wait for either.
    let (first, first_signal) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        signals.next().await;
        let _ = first.send(());
        signals.next().await;
        tracing::warn!(
            "second signal while draining: exiting without waiting for requests in flight"
        );
        std::process::exit(130);
    });
    run_with(
        listener,
        state,
        async move {
            let _ = first_signal.await;
        },
        crate::Drain {
            delay: settings.shutdown_delay,
            timeout: settings.shutdown_timeout,
        },
        settings.webhooks.clone(),
    )
    .await
}

/// Opens the engine on the settings' store and, with `demo`, loads the sample
/// organisation (idempotent).
///
/// A signal meanwhile stops the start once the store is open (`None`): opening cannot
/// be cut short, and the opened store is closed cleanly; the demo is not loaded. A
/// second signal exits at once (status 130), as a crash would, which the store
/// survives.
async fn start(
    settings: &Settings,
    demo: bool,
    signals: &mut ShutdownSignals,
) -> anyhow::Result<Option<Engine>> {
    let opening = open(settings);
    tokio::pin!(opening);
    let engine = tokio::select! {
        engine = &mut opening => engine?,
        () = signals.next() => {
            tracing::info!(
                "shutdown requested while starting; stopping once the store is open \
                 (a second signal exits at once)"
            );
            let engine = tokio::select! {
                engine = &mut opening => engine?,
                () = signals.next() => {
                    tracing::warn!("second signal while starting: exiting without waiting for the store");
                    std::process::exit(130);
                }
            };
            engine.shutdown().await?;
            tracing::info!("engine stopped; everything acknowledged is durable");
            return Ok(None);
        }
    };
    if demo {
        let summary = demo::load(&engine)
            .await
            .context("cannot load the demo organisation")?;
        tracing::info!(
            territories = summary.territories,
            reps = summary.reps,
            "demo organisation loaded"
        );
    }
    Ok(Some(engine))
}

/// Opens the engine on the settings' store.
async fn open(settings: &Settings) -> anyhow::Result<Engine> {
    let config = EngineConfig::new(&settings.data_dir)
        .durability(settings.durability)
        .max_in_flight_leads(settings.max_in_flight_leads)
        .store_lock_wait(settings.store_lock_wait)
        .backup_capture_bytes(settings.backup_capture_bytes)
        .plugin_limits(settings.plugins.clone());
    let data_dir = settings.data_dir.clone();
    tokio::task::spawn_blocking(move || Engine::open(config))
        .await?
        .with_context(|| format!("cannot open the store in {}", data_dir.display()))
}

/// SIGTERM and SIGINT handlers, installed right after binding, before the address is
/// announced, so a signal sent at any time after cannot hit the default action (death
/// with no drain).
pub struct ShutdownSignals {
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
}

impl ShutdownSignals {
    /// Installs the handlers.
    pub fn install() -> std::io::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(ShutdownSignals {
                terminate: signal(SignalKind::terminate())?,
                interrupt: signal(SignalKind::interrupt())?,
            })
        }
        #[cfg(not(unix))]
        Ok(ShutdownSignals {})
    }

    /// Completes on the next SIGTERM or SIGINT.
    pub async fn next(&mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = self.terminate.recv() => tracing::info!("SIGTERM received"),
            _ = self.interrupt.recv() => tracing::info!("SIGINT received"),
        }
        #[cfg(not(unix))]
        {
            let _ = &mut *self;
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
