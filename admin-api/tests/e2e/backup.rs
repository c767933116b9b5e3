//! Online backups through the real binary: `leadroute backup` while leads arrive,
//! `leadroute restore` into a new directory, and a second server on the restored one.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use crate::harness::{ADMIN, Api, INTAKE, Options, Server, data_dir, run};

/// A lead the load thread sent: when, when answered, its id and rep.
struct Sent {
    sent: Instant,
    answered: Instant,
    id: String,
    rep: String,
}

#[test]
fn a_backup_taken_under_load_restores_into_a_server_with_exactly_its_leads() {
    let dir = data_dir();
    let server = Server::start_with_tokens(dir.path());
    let api = Api {
        server: &server,
        token: Some(ADMIN),
    };
    api.territory("east", &["CN-SH"], true);
    api.rep("a", "east", 100_000);

    // Leads keep arriving, one connection, until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = std::sync::mpsc::channel::<Sent>();
    let load = std::thread::spawn({
        let (stop, url) = (stop.clone(), server.url(""));
        move || {
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                let sent = Instant::now();
                let body = serde_json::json!({
                    "phone": format!("+86 139 {:04} {:04}", n / 10_000, n % 10_000),
                    "region": "CN-SH"
                });
                let r = crate::harness::call(
                    "POST",
                    &format!("{url}/v1/leads"),
                    Some(INTAKE),
                    Some(&body),
                );
                assert_eq!(r.status, 201, "{}", r.text);
                let json = r.json();
                let id = json["lead_id"].as_str().unwrap().to_string();
                let rep = json["rep_id"].as_str().unwrap().to_string();
                let answered = Instant::now();
                if tx
                    .send(Sent {
                        sent,
                        answered,
                        id,
                        rep,
                    })
                    .is_err()
                {
                    return;
                }
                n += 1;
            }
        }
    });
    let mut sent: Vec<Sent> = rx.iter().take(50).collect();

    let base = server.url("");
    let env = [
        ("LEADROUTE_ADMIN_TOKEN", ADMIN),
        ("LEADROUTE_SERVER", base.as_str()),
    ];
    let asked = Instant::now();
    let (status, out, err) = run(&["backup"], &env);
    let done = Instant::now();
    assert!(status.success(), "{out}{err}");
    let file = out
        .strip_prefix("backup written: ")
        .and_then(|rest| rest.lines().next())
        .unwrap_or_else(|| panic!("the backup's path: {out}"))
        .to_string();
    assert!(
        out.contains("written while it was read); the committer paused"),
        "{out}"
    );

    let mut after = 0;
    for s in rx.iter() {
        after += usize::from(s.sent > done);
        sent.push(s);
        if after == 50 {
            break;
        }
    }
    stop.store(true, Ordering::SeqCst);
    drop(rx);
    load.join().unwrap();

    // Written where the default puts it, complete, and seen in the metrics.
    let backups = dir.path().join("backups");
    let names: Vec<_> = std::fs::read_dir(&backups)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names.len(), 1, "{names:?}");
    assert!(names[0].starts_with("leadroute-") && names[0].ends_with(".backup"));
    assert_eq!(backups.join(&names[0]).to_str(), Some(file.as_str()));
    let metrics = api.get("/metrics").text;
    let last = metrics
        .lines()
        .find_map(|l| l.strip_prefix("leadroute_backup_last_success_timestamp_seconds "))
        .expect("the last backup's time");
    assert!(last.parse::<f64>().unwrap() > 1.7e9, "{last}");

    // Admin only; the answer as JSON.
    let intake = Api {
        server: &server,
        token: Some(INTAKE),
    };
    assert_eq!(intake.post_empty("/admin/backups").status, 403);
    let second = api.post_empty("/admin/backups");
    assert_eq!(second.status, 201, "{}", second.text);
    let second = second.json();
    assert!(second["bytes"].as_u64().unwrap() > 0 && second["entries"].as_u64().unwrap() > 0);
    assert!(second["captured"].is_u64() && second["took_ms"].is_u64());
    assert!(second["paused_ms"].as_f64().unwrap() < second["took_ms"].as_f64().unwrap() + 1.0);

    // Restored into a new directory, served by a second server.
    let target = data_dir();
    let restored = target.path().join("data");
    let restored_str = restored.to_str().unwrap();
    let (status, out, err) = run(&["restore", &file, "--data-dir", restored_str], &[]);
    assert!(status.success(), "{out}{err}");
    assert!(out.contains(&format!("into {restored_str}")), "{out}");
    // Never over a store.
    let (status, _, err) = run(&["restore", &file, "--data-dir", restored_str], &[]);
    assert!(!status.success());
    assert!(err.contains("is not empty"), "{err}");

    let copy = Server::start_with_tokens(&restored);
    let copy_api = Api {
        server: &copy,
        token: Some(ADMIN),
    };
    let (mut before, mut later) = (0, 0);
    for s in &sent {
        let r = copy_api.get(&format!("/v1/leads/{}", s.id));
        if s.answered < asked {
            before += 1;
            assert_eq!(r.status, 200, "answered before the backup: {}", r.text);
            assert_eq!(r.json()["rep_id"], s.rep.as_str());
        } else if s.sent > done {
            later += 1;
            assert_eq!(r.status, 404, "sent after the backup: {}", r.text);
        }
    }
    assert!(
        before >= 50 && later == 50,
        "{before} before, {later} after"
    );
    // The restored server routes on.
    assert_eq!(copy_api.lead(1_000_000, "CN-SH").status, 201);
}

#[test]
fn a_server_keeping_two_backups_removes_the_oldest_after_each() {
    let dir = data_dir();
    let backups = data_dir();
    let backups_str = backups.path().to_str().unwrap();
    // An operator's own file in the directory is never touched.
    std::fs::write(backups.path().join("notes.txt"), "kept").unwrap();
    let server = Server::start_with(
        dir.path(),
        Options {
            args: &[],
            env: &[
                ("LEADROUTE_ADMIN_TOKEN", ADMIN),
                ("LEADROUTE_INTAKE_TOKEN", INTAKE),
                ("LEADROUTE_BACKUP_DIR", backups_str),
                ("LEADROUTE_BACKUP_KEEP", "2"),
            ],
        },
    );
    let api = Api {
        server: &server,
        token: Some(ADMIN),
    };
    let mut taken = Vec::new();
    for _ in 0..3 {
        let r = api.post_empty("/admin/backups");
        assert_eq!(r.status, 201, "{}", r.text);
        taken.push(r.json());
    }
    let path = |b: &serde_json::Value| b["path"].as_str().unwrap().to_string();
    assert_eq!(taken[0]["removed"], serde_json::json!([]));
    assert_eq!(taken[1]["removed"], serde_json::json!([]));
    assert_eq!(taken[2]["removed"], serde_json::json!([path(&taken[0])]));
    let mut left: Vec<String> = std::fs::read_dir(backups.path())
        .unwrap()
        .map(|e| e.unwrap().path().display().to_string())
        .collect();
    left.sort();
    let mut expected = vec![
        path(&taken[1]),
        path(&taken[2]),
        backups.path().join("notes.txt").display().to_string(),
    ];
    expected.sort();
    assert_eq!(left, expected);

    // The CLI says what it removed.
    let base = server.url("");
    let env = [
        ("LEADROUTE_ADMIN_TOKEN", ADMIN),
        ("LEADROUTE_SERVER", base.as_str()),
    ];
    let (status, out, err) = run(&["backup"], &env);
    assert!(status.success(), "{out}{err}");
    assert!(
        out.contains(&format!("removed, past backup_keep: {}", path(&taken[1]))),
        "{out}"
    );
}
