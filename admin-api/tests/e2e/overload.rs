//! Overload: past `--max-in-flight-leads` intake answers 503 `overloaded` with
//! `Retry-After` at once, stores nothing for it, and serves normally once work drains.

use serde_json::json;

use crate::harness::{Api, Options, Server, data_dir};

/// Most rounds of "one big batch, singles meanwhile" before giving up on seeing a 503.
/// A round is lost when the batch arrives while a single lead holds the limit (the
/// batch is then refused whole, in about a millisecond); most rounds are.
const ROUNDS: u32 = 200;

#[test]
fn past_the_limit_intake_answers_503_overloaded_then_recovers() {
    let dir = data_dir();
    let server = Server::start_with(
        dir.path(),
        Options {
            args: &["--max-in-flight-leads", "1"],
            env: &[],
        },
    );
    let api = Api {
        server: &server,
        token: None,
    };
    api.territory("east", &["CN-SH"], true);
    api.rep("a", "east", 100_000);
    api.rep("b", "east", 100_000);

    // A batch of 1000 takes the whole limit of one while it commits; single leads sent
    // meanwhile must be refused. Each round is bounded by the batch's own answer.
    let mut acked = Vec::new();
    let mut refused = Vec::new();
    let mut next = 0u32;
    for round in 0..ROUNDS {
        let first = 1_000_000 + round * 1_000;
        let leads: Vec<_> = (first..first + 1_000)
            .map(|n| json!({"phone": format!("+86 138 {:04} {:04}", n / 10_000, n % 10_000)}))
            .collect();
        let url = server.url("/v1/leads/batch");
        let batch = std::thread::spawn(move || {
            crate::harness::call("POST", &url, None, Some(&json!({ "leads": leads })))
        });
        while !batch.is_finished() {
            next += 1;
            let r = api.lead(next, "CN-SH");
            match r.status {
                201 => acked.push(r.json()["lead_id"].as_str().unwrap().to_string()),
                503 => {
                    assert_eq!(r.code(), "overloaded", "{r:?}");
                    assert_eq!(r.retry_after.as_deref(), Some("1"), "{r:?}");
                    assert!(
                        r.json()["error"]["message"]
                            .as_str()
                            .unwrap()
                            .contains("limit 1"),
                        "{r:?}"
                    );
                    refused.push(next);
                }
                _ => panic!("lead {next}: {r:?}"),
            }
        }
        let batch = batch.join().unwrap();
        assert_eq!(batch.status, 200, "{batch:?}");
        for item in batch.json()["results"].as_array().unwrap() {
            // The batch itself may meet a single lead in flight and be refused whole.
            match item["status"].as_str() {
                Some("assigned") => acked.push(item["lead_id"].as_str().unwrap().to_string()),
                _ => assert_eq!(item["error"]["code"], "overloaded", "{item}"),
            }
        }
        if !refused.is_empty() {
            break;
        }
    }
    assert!(
        !refused.is_empty(),
        "no single lead was refused while {ROUNDS} batches of 1000 held the limit of 1"
    );

    // Normal service: refused leads were not stored (they are new now, not
    // duplicates), and every acknowledged lead is there.
    for n in &refused {
        let r = api.lead(*n, "CN-SH");
        assert_eq!(r.status, 201, "refused lead {n} routed later: {r:?}");
    }
    for id in &acked {
        let r = api.get(&format!("/v1/leads/{id}"));
        assert_eq!(r.status, 200, "acknowledged lead {id}: {r:?}");
    }
    let metrics = api.get("/metrics").text;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("leadroute_overload_rejections_total{what=\"leads\"}")),
        "the refusals are counted"
    );
}
