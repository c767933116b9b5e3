//! The engine's Prometheus metrics, all in one registry the server exposes.
//!
//! Names follow the house rules: `leadroute_` prefix, `_total` counters, `_seconds`
//! histograms, closed sets of label values.

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry,
};

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
    /// `leadroute_store_commit_group_size`: changes per group commit.
    pub commit_group_size: Histogram,
    /// `leadroute_store_commit_seconds`: apply + flush of one group.
    pub commit_duration: Histogram,
    /// `leadroute_store_errors_total`: group commits that failed.
    pub store_errors: IntCounter,
    /// `leadroute_recovery_repairs_total`: invariant repairs made at start.
    pub recovery_repairs: IntCounter,
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
        Metrics {
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
                    "Store invariant violations found and repaired at start.",
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
            registry: r,
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
