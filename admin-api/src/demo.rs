//! The demo organisation of `leadroute serve --demo`: an East China medical-device
//! distributor with 63 reps over Shanghai and six provinces.
//!
//! Generated deterministically (no randomness), so every run and every reader sees
//! the same organisation, and loaded with upserts, so loading it again is harmless.

use leadroute_engine::domain::{BuiltinStrategy, StrategyInput};
use leadroute_engine::domain::{RepId, RepInput, RepStatus, TerritoryId, TerritoryInput};
use leadroute_engine::{Engine, Result};

/// One demo territory.
struct Province {
    id: &'static str,
    name: &'static str,
    region: &'static str,
    reps: u32,
    strategy: BuiltinStrategy,
    /// `vip_threshold` for the `rules` strategy.
    vip_threshold: Option<u32>,
}

/// Shanghai first: it is the default territory, catching leads with no or an
/// unmatched region.
const PROVINCES: [Province; 7] = [
    Province {
        id: "east-sh",
        name: "Shanghai",
        region: "CN-SH",
        reps: 12,
        strategy: BuiltinStrategy::Rules,
        vip_threshold: Some(200_000),
    },
    Province {
        id: "east-js",
        name: "Jiangsu",
        region: "CN-JS",
        reps: 11,
        strategy: BuiltinStrategy::LeastLoaded,
        vip_threshold: None,
    },
    Province {
        id: "east-zj",
        name: "Zhejiang",
        region: "CN-ZJ",
        reps: 10,
        strategy: BuiltinStrategy::Rules,
        vip_threshold: Some(150_000),
    },
    Province {
        id: "east-sd",
        name: "Shandong",
        region: "CN-SD",
        reps: 9,
        strategy: BuiltinStrategy::Rules,
        vip_threshold: Some(100_000),
    },
    Province {
        id: "east-ah",
        name: "Anhui",
        region: "CN-AH",
        reps: 8,
        strategy: BuiltinStrategy::RoundRobin,
        vip_threshold: None,
    },
    Province {
        id: "east-fj",
        name: "Fujian",
        region: "CN-FJ",
        reps: 7,
        strategy: BuiltinStrategy::LeastLoaded,
        vip_threshold: None,
    },
    Province {
        id: "east-jx",
        name: "Jiangxi",
        region: "CN-JX",
        reps: 6,
        strategy: BuiltinStrategy::RoundRobin,
        vip_threshold: None,
    },
];

/// The industry tags of the distributor's customers.
pub const SKILLS: [&str; 5] = [
    "hospital-lab",
    "imaging",
    "clinic",
    "pharma",
    "research-lab",
];

const SURNAMES: [&str; 19] = [
    "Wang", "Li", "Zhang", "Liu", "Chen", "Yang", "Zhao", "Huang", "Zhou", "Wu", "Xu", "Sun", "Hu",
    "Zhu", "Gao", "Lin", "He", "Guo", "Ma",
];
const GIVEN_NAMES: [&str; 11] = [
    "Wei", "Fang", "Min", "Jing", "Lei", "Yan", "Jun", "Hui", "Tao", "Ming", "Xin",
];

/// What [`load`] created or replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DemoSummary {
    /// Territories upserted.
    pub territories: usize,
    /// Reps upserted.
    pub reps: usize,
}

/// Returns the demo territories, the default (Shanghai) first.
pub fn territories() -> Vec<(TerritoryId, TerritoryInput)> {
    PROVINCES
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let plugin_config = p
                .vip_threshold
                .map(|t| serde_json::json!({ "vip_threshold": t }));
            let input = TerritoryInput {
                name: p.name.to_string(),
                regions: vec![p.region.to_string()],
                default: i == 0,
                strategy: Some(StrategyInput::Builtin {
                    builtin: p.strategy,
                }),
                plugin_config,
                first_touch_sla_secs: Some(1800),
                ..Default::default()
            };
            (TerritoryId::new(p.id).expect("valid demo id"), input)
        })
        .collect()
}

/// Returns the 63 demo reps, `rep-01` to `rep-63`, in territory order.
pub fn reps() -> Vec<(RepId, RepInput)> {
    let mut out = Vec::new();
    let mut n: usize = 0;
    for p in &PROVINCES {
        for _ in 0..p.reps {
            n += 1;
            let mut skills = vec![SKILLS[n % SKILLS.len()].to_string()];
            if n.is_multiple_of(3) {
                skills.push(SKILLS[(n + 2) % SKILLS.len()].to_string());
            }
            let input = RepInput {
                name: format!(
                    "{} {}",
                    SURNAMES[(n * 7) % SURNAMES.len()],
                    GIVEN_NAMES[(n * 5) % GIVEN_NAMES.len()]
                ),
                territories: vec![p.id.to_string()],
                skills,
                tier: Some(if n % 4 == 1 { "senior" } else { "junior" }.to_string()),
                // 10 to 30 open leads, spread by a stride coprime to 21.
                capacity: 10 + ((n * 8) % 21) as u32,
                status: RepStatus::Available,
                weight: None,
            };
            out.push((
                RepId::new(format!("rep-{n:02}")).expect("valid demo id"),
                input,
            ));
        }
    }
    out
}

/// Creates or replaces the demo territories and reps in `engine`.
pub async fn load(engine: &Engine) -> Result<DemoSummary> {
    let territories = territories();
    let reps = reps();
    let summary = DemoSummary {
        territories: territories.len(),
        reps: reps.len(),
    };
    for (id, input) in territories {
        engine.upsert_territory(id, input).await?;
    }
    for (id, input) in reps {
        engine.upsert_rep(id, input).await?;
    }
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_demo_has_seven_territories_one_default_and_63_staffed_reps() {
        let territories = territories();
        let reps = reps();
        assert_eq!(territories.len(), 7);
        assert_eq!(reps.len(), 63);
        assert_eq!(territories.iter().filter(|(_, t)| t.default).count(), 1);
        assert_eq!(territories[0].0.as_str(), "east-sh");
        for (id, t) in &territories {
            let members: Vec<_> = reps
                .iter()
                .filter(|(_, r)| r.territories == [id.to_string()])
                .collect();
            assert!(members.len() >= 6, "{id}");
            assert!(
                members
                    .iter()
                    .any(|(_, r)| r.tier.as_deref() == Some("senior")),
                "{id} has a senior"
            );
            assert!(t.regions[0].starts_with("CN-"));
        }
        for (_, r) in &reps {
            assert!((10..=30).contains(&r.capacity));
        }
        for skill in SKILLS {
            assert!(
                reps.iter()
                    .any(|(_, r)| r.skills.iter().any(|s| s == skill))
            );
        }
        let strategies: std::collections::HashSet<_> = territories
            .iter()
            .map(|(_, t)| format!("{:?}", t.strategy))
            .collect();
        assert_eq!(strategies.len(), 3, "a mix of the three built-ins");
    }

    /// The organisation as generated, one line per territory: id, region, whether it
    /// is the default, strategy and `vip_threshold`, first-touch SLA, its reps, their
    /// capacities and its senior reps.
    fn outline() -> Vec<String> {
        let reps = reps();
        territories()
            .iter()
            .map(|(id, t)| {
                let strategy = serde_json::to_value(&t.strategy).unwrap();
                let members: Vec<_> = reps
                    .iter()
                    .filter(|(_, r)| r.territories == [id.to_string()])
                    .collect();
                let ids: Vec<&str> = members.iter().map(|(rep, _)| rep.as_str()).collect();
                let capacities: Vec<String> = members
                    .iter()
                    .map(|(_, r)| r.capacity.to_string())
                    .collect();
                let seniors: Vec<&str> = members
                    .iter()
                    .filter(|(_, r)| r.tier.as_deref() == Some("senior"))
                    .map(|(rep, _)| rep.as_str())
                    .collect();
                format!(
                    "{id} {:?}{} {} vip={} sla={:?} | {} | {} | senior {}",
                    t.regions,
                    if t.default { " default" } else { "" },
                    strategy["builtin"].as_str().unwrap_or("?"),
                    t.plugin_config
                        .as_ref()
                        .map_or("-".to_string(), |c| c["vip_threshold"].to_string()),
                    t.first_touch_sla_secs,
                    ids.join(" "),
                    capacities.join(" "),
                    seniors.join(" "),
                )
            })
            .collect()
    }

    /// The organisation README.md's examples and the load generator (benches/) are
    /// written against. A change to the generator that moves a rep, a region, a tier or
    /// a capacity shows up here; if it is meant, update this outline and what relies on
    /// it (README.md's "Quick start" and SLA example, benches/README.md).
    #[test]
    fn the_demo_is_the_organisation_described() {
        let ids = |range: std::ops::RangeInclusive<u32>| {
            range
                .map(|n| format!("rep-{n:02}"))
                .collect::<Vec<_>>()
                .join(" ")
        };
        let expected = [
            format!(
                "east-sh [\"CN-SH\"] default rules vip=200000 sla=Some(1800) | {} | \
                 18 26 13 21 29 16 24 11 19 27 14 22 | senior rep-01 rep-05 rep-09",
                ids(1..=12)
            ),
            format!(
                "east-js [\"CN-JS\"] least_loaded vip=- sla=Some(1800) | {} | \
                 30 17 25 12 20 28 15 23 10 18 26 | senior rep-13 rep-17 rep-21",
                ids(13..=23)
            ),
            format!(
                "east-zj [\"CN-ZJ\"] rules vip=150000 sla=Some(1800) | {} | \
                 13 21 29 16 24 11 19 27 14 22 | senior rep-25 rep-29 rep-33",
                ids(24..=33)
            ),
            format!(
                "east-sd [\"CN-SD\"] rules vip=100000 sla=Some(1800) | {} | \
                 30 17 25 12 20 28 15 23 10 | senior rep-37 rep-41",
                ids(34..=42)
            ),
            format!(
                "east-ah [\"CN-AH\"] round_robin vip=- sla=Some(1800) | {} | \
                 18 26 13 21 29 16 24 11 | senior rep-45 rep-49",
                ids(43..=50)
            ),
            format!(
                "east-fj [\"CN-FJ\"] least_loaded vip=- sla=Some(1800) | {} | \
                 19 27 14 22 30 17 25 | senior rep-53 rep-57",
                ids(51..=57)
            ),
            format!(
                "east-jx [\"CN-JX\"] round_robin vip=- sla=Some(1800) | {} | \
                 12 20 28 15 23 10 | senior rep-61",
                ids(58..=63)
            ),
        ];
        assert_eq!(outline(), expected);
        assert_eq!(reps().len(), 63, "and no rep outside them");
    }

    /// README.md's SLA example says its `PUT` of `east-sh` repeats the demo's settings
    /// for it and that `rep-01` is one of its senior reps: a reader who runs it on the
    /// demo must change nothing but the SLA fields.
    #[test]
    fn the_readme_repeats_east_sh_as_the_demo_has_it() {
        let readme = include_str!("../../README.md");
        let put = readme
            .find("-X PUT http://127.0.0.1:8080/admin/territories/east-sh")
            .expect("the README's PUT of east-sh");
        let body = &readme[put..];
        let body = &body[body.find("-d '").expect("its body") + 4..];
        let body = &body[..body.find('\'').expect("the body's end")];
        let mut from_readme: TerritoryInput = serde_json::from_str(body).unwrap();

        assert_eq!(from_readme.sla_escalation_rep.as_deref(), Some("rep-01"));
        let rep_01 = reps()
            .into_iter()
            .find(|(id, _)| id.as_str() == "rep-01")
            .unwrap()
            .1;
        assert_eq!(rep_01.territories, ["east-sh"]);
        assert_eq!(rep_01.tier.as_deref(), Some("senior"));

        // Without the SLA fields it adds, it is the demo's territory.
        from_readme.sla_max_reroutes = None;
        from_readme.sla_escalation_rep = None;
        from_readme.sla_reroute_when_away = false;
        let (id, demo) = territories().remove(0);
        assert_eq!(id.as_str(), "east-sh");
        assert_eq!(
            serde_json::to_value(&from_readme).unwrap(),
            serde_json::to_value(&demo).unwrap()
        );
    }
}
