//! The engine's Prometheus metrics, all in one registry the server exposes.
//!
//! Names follow the house rules: `leadroute_` prefix, `_total` counters, `_seconds`
//! histograms, closed sets of label values.

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry,
};

use crate::engine::{ReassignReason, RouteStatus};
use crate::plugins::FailureReason;

/// Buckets from 10 µs to 1 s: decisions are microseconds, durable commits milliseconds.
const LATENCY_BUCKETS: &[f64] = &[
    0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025,
    0.05, 0.1, 0.25, 0.5, 1.0,
];

/// Buckets from 1 µs to 100 ms: a plugin call is microseconds, its deadline 100 ms.
const PLUGIN_CALL_BUCKETS: &[f64] = &[
    0.000_001,
    0.000_002_5,
    0.000_005,
    0.000_01,
    0.000_025,
    0.000_05,
    0.000_1,
    0.000_25,
    0.000_5,
    0.001,
    0.002_5,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
];

/// Buckets from a minute to two days: the first-touch SLA is minutes, and the origin
/// case reports the 30-minute and the 24-hour touch rates (1800 and 86400 are bounds).
const FIRST_TOUCH_BUCKETS: &[f64] = &[
    60.0, 300.0, 600.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0, 28800.0, 43200.0, 86400.0, 172800.0,
];

/// Handles to every engine metric; cheap to clone.
#[derive(Clone)]
pub struct Metrics {
    /// The registry holding all of them.
    pub registry: Registry,
    /// `leadroute_leads_received_total`
    pub leads_received: IntCounter,
    /// `leadroute_leads_routed_total{territory,outcome}`
    pub leads_routed: IntCounterVec,
    /// `leadroute_route_duration_seconds`: intake to durable decision.
    pub route_duration: Histogram,
    /// `leadroute_route_stage_duration_seconds{stage}`: dedupe, decide, reserve, commit.
    pub route_stage_duration: HistogramVec,
    /// `leadroute_rep_load{rep}`
    pub rep_load: IntGaugeVec,
    /// `leadroute_rep_capacity{rep}`
    pub rep_capacity: IntGaugeVec,
    /// `leadroute_territory_queue_depth{territory}`
    pub queue_depth: IntGaugeVec,
    /// `leadroute_reassignments_total{reason}`
    pub reassignments: IntCounterVec,
    /// `leadroute_sla_breaches_total{territory}`: first-touch deadlines missed.
    pub sla_breaches: IntCounterVec,
    /// `leadroute_sla_escalations_total{territory}`: breaches past the allowed re-routes.
    pub sla_escalations: IntCounterVec,
    /// `leadroute_first_touch_seconds`: assignment (to the rep who touched) to first touch.
    pub first_touch: Histogram,
    /// `leadroute_touched_within_sla_total{territory}`: first touches inside the SLA.
    pub touched_within_sla: IntCounterVec,
    /// `leadroute_sla_pending`: assigned leads waiting for a first touch with a deadline.
    pub sla_pending: prometheus::IntGauge,
    /// `leadroute_dedupe_keys`: open leads' contact keys held in memory.
    pub dedupe_keys: prometheus::IntGauge,
    /// `leadroute_backup_pause_seconds`: the committer's time on the last backup.
    pub backup_pause: prometheus::Gauge,
    /// `leadroute_backup_last_success_timestamp_seconds`: when the last backup was
    /// made durable (Unix time; 0 until one is).
    pub backup_last_success: prometheus::Gauge,
    /// `leadroute_backup_failures_total`: backups that could not be written.
    pub backup_failures: prometheus::IntCounter,
    /// `leadroute_store_commit_group_size`: changes per group commit.
    pub commit_group_size: Histogram,
    /// `leadroute_store_commit_seconds`: apply + flush of one group.
    pub commit_duration: Histogram,
    /// `leadroute_store_commit_wait_seconds`: how long a change waited in the
    /// committer's inbox for its group to start. It grows before anything else when
    /// the committer falls behind.
    pub commit_wait: Histogram,
    /// `leadroute_store_answer_wait_seconds`: from the committer's answer to a change
    /// to its caller reading it. The caller's thread (an HTTP worker, an actor) was
    /// woken and waited for a CPU: it grows when the machine's CPUs are oversubscribed.
    pub answer_wait: Histogram,
    /// `leadroute_store_errors_total`: group commits that failed.
    pub store_errors: IntCounter,
    /// `leadroute_recovery_repairs_total`: invariant repairs made by the start-up audit.
    pub recovery_repairs: IntCounter,
    /// `leadroute_recovery_dismissed_total`: start-up audit findings that no longer
    /// held when the committer looked again: changes the audit read half-way, not
    /// faults.
    pub recovery_dismissed: IntCounter,
    /// `leadroute_startup_audit_running`: 1 while the start-up audit reads the store
    /// (it runs in the background once the engine serves), then 0.
    pub startup_audit_running: prometheus::IntGauge,
    /// `leadroute_startup_audit_seconds`: how long the start-up audit took, repairs
    /// included; 0 until it has finished.
    pub startup_audit_seconds: prometheus::Gauge,
    /// `leadroute_overload_rejections_total{what}`: calls refused at admission because
    /// the limit on work in flight was reached; `what` is `leads` or `admin_writes`.
    pub overload_rejections: IntCounterVec,
    /// `leadroute_plugin_call_duration_seconds{plugin}`: one plugin call, instantiation
    /// to checked answer.
    pub plugin_call_duration: HistogramVec,
    /// `leadroute_plugin_failures_total{plugin,reason}`: calls whose fallback decided;
    /// `reason` is a `FailureReason` label.
    pub plugin_failures: IntCounterVec,
    /// `leadroute_plugin_circuit_open{plugin}`: 1 while the plugin is bypassed.
    pub plugin_circuit_open: IntGaugeVec,
    /// `leadroute_plugin_shadow_total{plugin,agree}`: shadow runs compared with the
    /// live decision; `agree` is `true` or `false`.
    pub plugin_shadow: IntCounterVec,
    /// `leadroute_plugin_shadow_failures_total{plugin,reason}`: shadow runs that
    /// failed (and so were not compared), by `FailureReason` label. Kept apart from
    /// `leadroute_plugin_failures_total` because a shadow never feeds the circuit
    /// breaker or the fallback.
    pub plugin_shadow_failures: IntCounterVec,
}

fn register<T: prometheus::core::Collector + Clone + 'static>(registry: &Registry, metric: T) -> T {
    registry
        .register(Box::new(metric.clone()))
        .expect("metric names are unique and valid");
    metric
}

impl Metrics {
    /// Creates and registers every metric in a fresh registry.
    pub fn new() -> Self {
        let r = Registry::new();
        let latency = |name: &str, help: &str| {
            HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec())
        };
        let metrics = Metrics {
            leads_received: register(
                &r,
                IntCounter::new(
                    "leadroute_leads_received_total",
                    "Leads received at intake.",
                )
                .unwrap(),
            ),
            leads_routed: register(
                &r,
                IntCounterVec::new(
                    Opts::new(
                        "leadroute_leads_routed_total",
                        "Leads routed, by territory and outcome (assigned, queued, duplicate).",
                    ),
                    &["territory", "outcome"],
                )
                .unwrap(),
            ),
            route_duration: register(
                &r,
                Histogram::with_opts(latency(
                    "leadroute_route_duration_seconds",
                    "Intake to durable decision.",
                ))
                .unwrap(),
            ),
            route_stage_duration: register(
                &r,
                HistogramVec::new(
                    latency(
                        "leadroute_route_stage_duration_seconds",
                        "Time per routing stage (dedupe, decide, reserve, commit).",
                    ),
                    &["stage"],
                )
                .unwrap(),
            ),
            rep_load: register(
                &r,
                IntGaugeVec::new(
                    Opts::new("leadroute_rep_load", "Open leads per rep."),
                    &["rep"],
                )
                .unwrap(),
            ),
            rep_capacity: register(
                &r,
                IntGaugeVec::new(
                    Opts::new("leadroute_rep_capacity", "Capacity per rep."),
                    &["rep"],
                )
                .unwrap(),
            ),
            queue_depth: register(
                &r,
                IntGaugeVec::new(
                    Opts::new(
                        "leadroute_territory_queue_depth",
                        "Leads waiting for capacity, per territory.",
                    ),
                    &["territory"],
                )
                .unwrap(),
            ),
            reassignments: register(
                &r,
                IntCounterVec::new(
                    Opts::new(
                        "leadroute_reassignments_total",
                        "Leads moved to another rep.",
                    ),
                    &["reason"],
                )
                .unwrap(),
            ),
            sla_breaches: register(
                &r,
                IntCounterVec::new(
                    Opts::new(
                        "leadroute_sla_breaches_total",
                        "Assigned leads not touched by their first-touch deadline.",
                    ),
                    &["territory"],
                )
                .unwrap(),
            ),
            sla_escalations: register(
                &r,
                IntCounterVec::new(
                    Opts::new(
                        "leadroute_sla_escalations_total",
                        "SLA breaches past the territory's allowed re-routes, sent to escalation.",
                    ),
                    &["territory"],
                )
                .unwrap(),
            ),
            first_touch: register(
                &r,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "leadroute_first_touch_seconds",
                        "Assignment to first touch, for the rep who touched.",
                    )
                    .buckets(FIRST_TOUCH_BUCKETS.to_vec()),
                )
                .unwrap(),
            ),
            touched_within_sla: register(
                &r,
                IntCounterVec::new(
                    Opts::new(
                        "leadroute_touched_within_sla_total",
                        "First touches inside the territory's first-touch SLA.",
                    ),
                    &["territory"],
                )
                .unwrap(),
            ),
            sla_pending: register(
                &r,
                prometheus::IntGauge::new(
                    "leadroute_sla_pending",
                    "Assigned leads waiting for a first touch, with a deadline.",
                )
                .unwrap(),
            ),
            dedupe_keys: register(
                &r,
                prometheus::IntGauge::new(
                    "leadroute_dedupe_keys",
                    "Contact keys of open leads held in memory for de-duplication.",
                )
                .unwrap(),
            ),
            backup_pause: register(
                &r,
                prometheus::Gauge::new(
                    "leadroute_backup_pause_seconds",
                    "The committer's time on the last backup (its two handovers).",
                )
                .unwrap(),
            ),
            backup_last_success: register(
                &r,
                prometheus::Gauge::new(
                    "leadroute_backup_last_success_timestamp_seconds",
                    "When the last backup was made durable, in Unix seconds (0: none yet).",
                )
                .unwrap(),
            ),
            backup_failures: register(
                &r,
                prometheus::IntCounter::new(
                    "leadroute_backup_failures_total",
                    "Backups that could not be written.",
                )
                .unwrap(),
            ),
            commit_group_size: register(
                &r,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "leadroute_store_commit_group_size",
                        "Changes made durable by one group commit.",
                    )
                    .buckets(vec![
                        1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
                    ]),
                )
                .unwrap(),
            ),
            commit_duration: register(
                &r,
                Histogram::with_opts(latency(
                    "leadroute_store_commit_seconds",
                    "Apply and flush of one commit group.",
                ))
                .unwrap(),
            ),
            commit_wait: register(
                &r,
                Histogram::with_opts(latency(
                    "leadroute_store_commit_wait_seconds",
                    "Time a change waited for its commit group to start.",
                ))
                .unwrap(),
            ),
            answer_wait: register(
                &r,
                Histogram::with_opts(latency(
                    "leadroute_store_answer_wait_seconds",
                    "Time from the committer's answer to a change to its caller reading it.",
                ))
                .unwrap(),
            ),
            store_errors: register(
                &r,
                IntCounter::new(
                    "leadroute_store_errors_total",
                    "Commit groups the store failed to persist.",
                )
                .unwrap(),
            ),
            overload_rejections: register(
                &r,
                IntCounterVec::new(
                    Opts::new(
                        "leadroute_overload_rejections_total",
                        "Calls refused at once because the limit on work in flight was reached.",
                    ),
                    &["what"],
                )
                .unwrap(),
            ),
            recovery_repairs: register(
                &r,
                IntCounter::new(
                    "leadroute_recovery_repairs_total",
                    "Store invariant violations found and repaired by the start-up audit.",
                )
                .unwrap(),
            ),
            recovery_dismissed: register(
                &r,
                IntCounter::new(
                    "leadroute_recovery_dismissed_total",
                    "Start-up audit findings that no longer held when checked again \
                     (changes read half-way while the engine served).",
                )
                .unwrap(),
            ),
            startup_audit_running: register(
                &r,
                prometheus::IntGauge::new(
                    "leadroute_startup_audit_running",
                    "1 while the start-up audit of the store runs in the background.",
                )
                .unwrap(),
            ),
            startup_audit_seconds: register(
                &r,
                prometheus::Gauge::new(
                    "leadroute_startup_audit_seconds",
                    "How long the start-up audit took, repairs included (0 until done).",
                )
                .unwrap(),
            ),
            plugin_call_duration: register(
                &r,
                HistogramVec::new(
                    HistogramOpts::new(
                        "leadroute_plugin_call_duration_seconds",
                        "One plugin call: fresh instance, run, checked answer.",
                    )
                    .buckets(PLUGIN_CALL_BUCKETS.to_vec()),
                    &["plugin"],
                )
                .unwrap(),
            ),
            plugin_failures: register(
                &r,
                IntCounterVec::new(
                    Opts::new(
                        "leadroute_plugin_failures_total",
                        "Plugin calls that failed (the territory's fallback decided), by reason.",
                    ),
                    &["plugin", "reason"],
                )
                .unwrap(),
            ),
            plugin_circuit_open: register(
                &r,
                IntGaugeVec::new(
                    Opts::new(
                        "leadroute_plugin_circuit_open",
                        "1 while a plugin is bypassed after repeated failures.",
                    ),
                    &["plugin"],
                )
                .unwrap(),
            ),
            plugin_shadow: register(
                &r,
                IntCounterVec::new(
                    Opts::new(
                        "leadroute_plugin_shadow_total",
                        "Shadow plugin runs compared with the live decision, by agreement.",
                    ),
                    &["plugin", "agree"],
                )
                .unwrap(),
            ),
            plugin_shadow_failures: register(
                &r,
                IntCounterVec::new(
                    Opts::new(
                        "leadroute_plugin_shadow_failures_total",
                        "Shadow plugin runs that failed and were not compared, by reason.",
                    ),
                    &["plugin", "reason"],
                )
                .unwrap(),
            ),
            registry: r,
        };
        // Counters whose labels are known from the start begin at zero: a series that
        // appears only at its first event hides that event from `increase()` and
        // `rate()`, and alerts on them.
        for what in ["leads", "admin_writes"] {
            metrics.overload_rejections.with_label_values(&[what]);
        }
        for reason in ReassignReason::ALL {
            metrics.reassignments.with_label_values(&[reason.as_str()]);
        }
        metrics
    }

    /// Creates a territory's series at zero, when it is loaded or created (see
    /// [`Metrics::new`] for why).
    pub fn start_territory_series(&self, territory: &str) {
        for status in RouteStatus::ALL {
            self.leads_routed
                .with_label_values(&[territory, status.as_str()]);
        }
        for counter in [
            &self.sla_breaches,
            &self.sla_escalations,
            &self.touched_within_sla,
        ] {
            counter.with_label_values(&[territory]);
        }
        self.queue_depth.with_label_values(&[territory]);
    }

    /// Creates a plugin's series at zero, when it is loaded or first uploaded (see
    /// [`Metrics::new`] for why).
    pub fn start_plugin_series(&self, plugin: &str) {
        self.plugin_call_duration.with_label_values(&[plugin]);
        for reason in FailureReason::ALL {
            self.plugin_failures
                .with_label_values(&[plugin, reason.as_str()]);
        }
        self.plugin_circuit_open.with_label_values(&[plugin]);
    }

    /// Removes every series of a deleted plugin, so that `/metrics` lists what it
    /// would list after a restart.
    pub fn end_plugin_series(&self, plugin: &str) {
        let _ = self.plugin_call_duration.remove_label_values(&[plugin]);
        let _ = self.plugin_circuit_open.remove_label_values(&[plugin]);
        for reason in FailureReason::ALL {
            let _ = self
                .plugin_failures
                .remove_label_values(&[plugin, reason.as_str()]);
            let _ = self
                .plugin_shadow_failures
                .remove_label_values(&[plugin, reason.as_str()]);
        }
        for agree in ["true", "false"] {
            let _ = self.plugin_shadow.remove_label_values(&[plugin, agree]);
        }
    }

    /// Renders every metric in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus::TextEncoder::new()
            .encode_utf8(&self.registry.gather(), &mut out)
            .expect("encoding to a String cannot fail");
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
