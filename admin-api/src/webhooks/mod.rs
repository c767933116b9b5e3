//! Webhook delivery: one worker per subscription reads the engine's outbox after its
//! cursor and POSTs each event it wants, signed, in order.
//!
//! - At least once: the cursor moves only after a 2xx (or after giving up), and it is
//!   stored, so a restart resumes where delivery stopped. Receivers drop repeats by
//!   the `Idempotency-Key` header (the event id).
//! - Per-endpoint order: a worker delivers one event at a time; a failing event is
//!   retried with exponential backoff and jitter, and after `max_attempts` parked as
//!   a dead letter, so one bad event cannot block its endpoint forever.
//! - Routing never waits for delivery: events are written by the engine's committer
//!   with the change itself; workers run on their own tasks and only read.
//!
//! - `signature.rs`: the `Leadroute-Signature` header.
//! - `worker.rs`: one subscription's delivery loop.

pub mod signature;
mod worker;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use leadroute_engine::Engine;
use leadroute_engine::domain::{Webhook, WebhookId};
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How deliveries are attempted.
#[derive(Clone, Debug)]
pub struct Policy {
    /// Attempts per event before it becomes a dead letter.
    pub max_attempts: u32,
    /// Delay after the first failure; doubles with each further one.
    pub base_delay: Duration,
    /// Longest delay between two attempts.
    pub max_delay: Duration,
    /// Longest an attempt may take, connection included.
    pub timeout: Duration,
}

impl Default for Policy {
    /// 8 attempts over about four minutes (1 s, 2 s, … capped at 5 minutes, each
    /// jittered down by up to half), 10 s per attempt.
    fn default() -> Self {
        Policy {
            max_attempts: 8,
            base_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(300),
            timeout: Duration::from_secs(10),
        }
    }
}

impl Policy {
    /// The wait after failed attempt number `attempt` (1-based) of event `seq`:
    /// exponential, capped, then scaled by a factor in [0.5, 1) drawn from the event
    /// and attempt, so endpoints recovering at once are not hit in lockstep.
    pub fn backoff(&self, webhook: &WebhookId, seq: u64, attempt: u32) -> Duration {
        use std::hash::{Hash, Hasher};
        let exp = self
            .base_delay
            .saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1)));
        let capped = exp.min(self.max_delay);
        let mut h = std::hash::DefaultHasher::new();
        (webhook.as_str(), seq, attempt).hash(&mut h);
        let jitter = (h.finish() % 1000) as f64 / 2000.0; // [0, 0.5)
        capped.mul_f64(1.0 - jitter)
    }
}

/// Waits between attempts. Injected so tests drive retries without waiting.
pub trait Sleeper: Send + Sync + 'static {
    /// Completes after `delay`.
    fn sleep(&self, delay: Duration) -> Pin<Box<dyn Future<Output = ()> + Send>>;
}

/// Real time.
pub struct TokioSleeper;

impl Sleeper for TokioSleeper {
    fn sleep(&self, delay: Duration) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        Box::pin(tokio::time::sleep(delay))
    }
}

/// The dispatcher's metrics, registered in the engine's registry.
#[derive(Clone)]
pub(crate) struct DeliveryMetrics {
    /// `leadroute_webhook_deliveries_total{webhook,outcome}`: attempts by outcome
    /// (`delivered`, `failed`, `dead_lettered`).
    pub deliveries: IntCounterVec,
    /// `leadroute_webhook_delivery_seconds{webhook}`: event written to delivered.
    pub latency: HistogramVec,
    /// `leadroute_webhook_outbox_depth{webhook}`: events after the cursor.
    pub depth: IntGaugeVec,
}

impl DeliveryMetrics {
    fn register(engine: &Engine) -> anyhow::Result<Self> {
        let registry = &engine.metrics().registry;
        let deliveries = IntCounterVec::new(
            Opts::new(
                "leadroute_webhook_deliveries_total",
                "Webhook delivery attempts by outcome (delivered, failed, dead_lettered).",
            ),
            &["webhook", "outcome"],
        )?;
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "leadroute_webhook_delivery_seconds",
                "Event written to delivered, retries included.",
            )
            .buckets(vec![
                0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0, 60.0, 300.0, 3600.0,
            ]),
            &["webhook"],
        )?;
        let depth = IntGaugeVec::new(
            Opts::new(
                "leadroute_webhook_outbox_depth",
                "Outbox events after the subscription's cursor.",
            ),
            &["webhook"],
        )?;
        registry.register(Box::new(deliveries.clone()))?;
        registry.register(Box::new(latency.clone()))?;
        registry.register(Box::new(depth.clone()))?;
        Ok(DeliveryMetrics {
            deliveries,
            latency,
            depth,
        })
    }
}

/// What every worker shares.
pub(crate) struct Shared {
    pub engine: Engine,
    pub policy: Policy,
    pub sleeper: Arc<dyn Sleeper>,
    pub client: reqwest::Client,
    pub metrics: DeliveryMetrics,
}

/// Runs one worker per subscription until stopped.
pub struct Dispatcher {
    shared: Arc<Shared>,
}

struct Running {
    webhook: Webhook,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Dispatcher {
    /// A dispatcher for `engine`'s subscriptions.
    pub fn new(engine: Engine, policy: Policy, sleeper: Arc<dyn Sleeper>) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .timeout(policy.timeout)
            .connect_timeout(policy.timeout)
            .user_agent(concat!("leadroute/", env!("CARGO_PKG_VERSION")))
            .build()?;
        let metrics = DeliveryMetrics::register(&engine)?;
        Ok(Dispatcher {
            shared: Arc::new(Shared {
                engine,
                policy,
                sleeper,
                client,
                metrics,
            }),
        })
    }

    /// Delivers until `stop` turns true, following subscription changes: a new one
    /// gets a worker, a replaced one a fresh worker, a deleted one loses its worker.
    /// Stopping interrupts attempts in flight; their events are delivered again after
    /// a restart.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let mut changes = self.shared.engine.outbox().watch_subscriptions();
        let mut running: HashMap<WebhookId, Running> = HashMap::new();
        loop {
            changes.borrow_and_update();
            match self.shared.engine.webhooks() {
                Ok(hooks) => self.reconcile(&mut running, hooks).await,
                Err(e) => tracing::error!(error = %e, "cannot read webhook subscriptions"),
            }
            tokio::select! {
                changed = changes.changed() => if changed.is_err() { break },
                _ = stop.wait_for(|s| *s) => break,
            }
        }
        for (_, r) in running.drain() {
            let _ = r.stop.send(true);
            let _ = r.task.await;
        }
    }

    async fn reconcile(&self, running: &mut HashMap<WebhookId, Running>, hooks: Vec<Webhook>) {
        let wanted: HashMap<WebhookId, Webhook> =
            hooks.into_iter().map(|w| (w.id.clone(), w)).collect();
        // A worker also ends on its own when it finds its subscription gone; one of
        // the same id, even the same record, may have been created since.
        let stale: Vec<WebhookId> = running
            .iter()
            .filter(|(id, r)| wanted.get(*id) != Some(&r.webhook) || r.task.is_finished())
            .map(|(id, _)| id.clone())
            .collect();
        for id in stale {
            if let Some(r) = running.remove(&id) {
                let _ = r.stop.send(true);
                let _ = r.task.await;
                let _ = self
                    .shared
                    .metrics
                    .depth
                    .remove_label_values(&[id.as_str()]);
            }
        }
        for (id, webhook) in wanted {
            if running.contains_key(&id) {
                continue;
            }
            let (stop, stopped) = watch::channel(false);
            let (shared, worker_webhook) = (self.shared.clone(), webhook.clone());
            let task = tokio::spawn(async move {
                worker::deliver(shared.clone(), worker_webhook, stopped).await;
                // Ended, stopped or not: the next reconcile replaces it if its
                // subscription exists.
                shared.engine.outbox().recheck_subscriptions();
            });
            running.insert(
                id,
                Running {
                    webhook,
                    stop,
                    task,
                },
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A worker ends on its own when it finds its subscription gone, which it may
    /// between a deletion and a creation of the same record that the dispatcher
    /// sees only as one unchanged subscription. It must not keep the ended worker.
    #[tokio::test]
    async fn a_worker_that_ended_is_replaced_even_when_its_subscription_is_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::open(leadroute_engine::EngineConfig::new(dir.path())).unwrap();
        let id = WebhookId::new("crm").unwrap();
        let input = leadroute_engine::domain::WebhookInput {
            url: "http://127.0.0.1:9/hook".into(),
            events: vec![leadroute_engine::domain::EventKind::LeadAssigned],
            secret: "whsec-test-0123456789".into(),
        };
        let (webhook, _) = engine.put_webhook(id.clone(), input).await.unwrap();
        let dispatcher =
            Dispatcher::new(engine.clone(), Policy::default(), Arc::new(TokioSleeper)).unwrap();
        let ended = tokio::spawn(async {});
        while !ended.is_finished() {
            tokio::task::yield_now().await;
        }
        let ended_id = ended.id();
        let (stop, _) = watch::channel(false);
        let mut running = HashMap::from([(
            id.clone(),
            Running {
                webhook: webhook.clone(),
                stop,
                task: ended,
            },
        )]);

        dispatcher.reconcile(&mut running, vec![webhook]).await;
        let worker = &running[&id];
        assert_ne!(worker.task.id(), ended_id, "the ended worker was kept");
        assert!(!worker.task.is_finished(), "a live worker delivers for it");
        let _ = worker.stop.send(true);
        running.remove(&id).unwrap().task.await.unwrap();
        engine.shutdown().await.unwrap();
    }

    #[test]
    fn backoff_doubles_is_capped_and_jittered_within_half() {
        let policy = Policy::default();
        let id = WebhookId::new("w").unwrap();
        for attempt in 1..=12 {
            let full = Duration::from_secs(1)
                .saturating_mul(2u32.pow(attempt - 1))
                .min(Duration::from_secs(300));
            let d = policy.backoff(&id, 42, attempt);
            assert!(
                d <= full && d >= full / 2,
                "attempt {attempt}: {d:?} vs {full:?}"
            );
        }
        // Different events spread out.
        let spread: std::collections::BTreeSet<_> =
            (0..20).map(|seq| policy.backoff(&id, seq, 3)).collect();
        assert!(spread.len() > 10, "{spread:?}");
    }
}
