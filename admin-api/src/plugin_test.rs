//! `leadroute plugin test FILE.wasm FIXTURES.json`: runs a built plugin through the
//! engine's real sandbox — the same limits, encoding and fresh instance per decision
//! as a server — on fixture leads, with no server and no store. Made for plugin
//! authors' CI: the exit status is 1 as soon as one decision fails.
//!
//! The fixtures file:
//! ```json
//! {"plugin_config": {"bands": [{"min_amount": 100000, "tier": "senior"}]},
//!  "candidates": [{"id": "ann", "capacity": 10, "tier": "senior", "load": 2},
//!                 {"id": "bo", "capacity": 10, "skills": ["imaging"]}],
//!  "leads": [{"phone": "+86 139 0000 0001", "purchase_amount": 250000}]}
//! ```
//! Leads are written as for `POST /v1/leads`; candidates carry what the engine hands
//! a plugin (`load`, `weight`, `skills`, `tier`, `last_assigned_at` are optional).

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, anyhow, bail};
use leadroute_engine::domain::{LeadId, LeadInput, RepId};
use leadroute_engine::plugins::{PluginLimits, Standalone};
use leadroute_engine::strategy::Candidate;
use serde::Deserialize;

use crate::client::Output;

/// The fixtures file; see the module docs.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Fixtures {
    #[serde(default = "empty_object")]
    plugin_config: serde_json::Value,
    candidates: Vec<CandidateFixture>,
    leads: Vec<LeadInput>,
}

/// One rep as a plugin sees it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CandidateFixture {
    id: String,
    #[serde(default)]
    load: u32,
    capacity: u32,
    #[serde(default = "one")]
    weight: f64,
    #[serde(default)]
    skills: Vec<String>,
    #[serde(default = "junior")]
    tier: String,
    #[serde(default)]
    last_assigned_at: Option<u64>,
}

fn empty_object() -> serde_json::Value {
    serde_json::json!({})
}

fn one() -> f64 {
    1.0
}

fn junior() -> String {
    "junior".into()
}

/// Runs every fixture lead through the module and prints each decision.
pub fn run(wasm: &Path, fixtures: &Path, out: Output) -> anyhow::Result<ExitCode> {
    let module = std::fs::read(wasm).with_context(|| format!("cannot read {}", wasm.display()))?;
    let text = std::fs::read_to_string(fixtures)
        .with_context(|| format!("cannot read {}", fixtures.display()))?;
    let fixtures: Fixtures =
        serde_path_to_error::deserialize(&mut serde_json::Deserializer::from_str(&text))
            .with_context(|| format!("{} is not a fixtures file", fixtures.display()))?;
    if fixtures.candidates.is_empty() {
        bail!("the fixtures name no candidates");
    }
    let ids = fixtures
        .candidates
        .iter()
        .map(|c| RepId::new(c.id.as_str()).map_err(|e| anyhow!("candidate id: {e}")))
        .collect::<anyhow::Result<Vec<RepId>>>()?;
    let candidates: Vec<Candidate<'_>> = fixtures
        .candidates
        .iter()
        .zip(&ids)
        .map(|(c, id)| Candidate {
            id,
            load: c.load,
            capacity: c.capacity,
            weight: c.weight,
            skills: &c.skills,
            tier: &c.tier,
            last_assigned_at: c.last_assigned_at,
        })
        .collect();
    let host = Standalone::new(PluginLimits::default(), &module, &fixtures.plugin_config)
        .map_err(|e| anyhow!("{}: {e}", wasm.display()))?;

    let mut failures = 0;
    let mut results = Vec::with_capacity(fixtures.leads.len());
    for (i, input) in fixtures.leads.iter().enumerate() {
        let id = LeadId::from_ulid(ulid::Ulid::new());
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let lead = input
            .validate(id, now)
            .map_err(|e| anyhow!("leads[{i}].{e}"))?;
        let result = match host.rank(&lead, &candidates) {
            Ok(ranking) => {
                let ranked: Vec<&str> = ranking
                    .order
                    .iter()
                    .map(|&c| candidates[c].id.as_str())
                    .collect();
                serde_json::json!({"lead": i, "ranked": ranked, "reason": ranking.reason})
            }
            Err(error) => {
                failures += 1;
                serde_json::json!({"lead": i, "error": error})
            }
        };
        results.push(result);
    }

    match out {
        Output::Json => println!("{}", serde_json::to_string_pretty(&results)?),
        Output::Text => {
            for r in &results {
                match r.get("error") {
                    Some(e) => println!("lead {}: FAILED {}", r["lead"], e.as_str().unwrap_or("")),
                    None => {
                        let ranked: Vec<&str> = r["ranked"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .filter_map(|v| v.as_str())
                            .collect();
                        let order = if ranked.is_empty() {
                            "no preference".to_string()
                        } else {
                            ranked.join(" > ")
                        };
                        println!(
                            "lead {}: {order} ({})",
                            r["lead"],
                            r["reason"].as_str().unwrap_or("")
                        );
                    }
                }
            }
            println!("{} lead(s), {failures} failed", results.len());
        }
    }
    Ok(if failures == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
