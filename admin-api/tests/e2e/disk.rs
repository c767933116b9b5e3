//! Disk trouble: the data dir on a small tmpfs, filled until the store cannot write.
//! Writes answer 503 `store_unavailable`, reads keep working, `/readyz` says not
//! ready; once space returns the server writes again by itself, and every lead
//! acknowledged before, during and after is stored and consistent, across a restart
//! too.
//!
//! Mounting needs root (or CAP_SYS_ADMIN); where it is refused the test says so and
//! passes without running.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{Api, Server};

/// Size of the tmpfs: room for the store's first segments and little else.
const TMPFS_SIZE: &str = "64m";
/// Longest wait for the server to notice space is back.
const RECOVERY_DEADLINE: Duration = Duration::from_secs(30);

/// A tmpfs mounted on a temp dir; unmounted (then removed) on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount() -> Result<Tmpfs, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={TMPFS_SIZE}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
        }
        Ok(Tmpfs { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let unmounted = Command::new("umount")
            .arg(self.dir.path())
            .status()
            .is_ok_and(|s| s.success());
        if !unmounted {
            // Still busy (a server that did not exit yet): detach it now, freed when idle.
            let _ = Command::new("umount")
                .arg("-l")
                .arg(self.dir.path())
                .status();
        }
    }
}

/// Fills the filesystem holding `path` with one file until it is full.
fn fill(path: &Path) -> PathBuf {
    let filler = path.join("filler");
    let mut file = std::fs::File::create(&filler).unwrap();
    let chunk = vec![0x5a_u8; 64 * 1024];
    while file.write_all(&chunk).is_ok() {}
    // Whatever part of a chunk still fits.
    while file.write_all(&[0x5a]).is_ok() {}
    let _ = file.sync_all();
    filler
}

fn lead_body(n: u32) -> Value {
    serde_json::json!({"phone": format!("+86 137 {:04} {:04}", n / 10_000, n % 10_000),
        "region": "CN-SH"})
}

/// Sum of every rep's load.
fn total_load(api: &Api<'_>) -> u64 {
    let reps = api.get("/admin/reps").json();
    let list = reps
        .as_array()
        .or_else(|| reps["reps"].as_array())
        .expect("a rep list")
        .clone();
    list.iter().map(|r| r["load"].as_u64().unwrap()).sum()
}

/// Every acknowledged lead is stored, assigned, and the reps' loads count them all.
fn assert_all_present(api: &Api<'_>, acked: &[String]) {
    for id in acked {
        let r = api.get(&format!("/v1/leads/{id}"));
        assert_eq!(r.status, 200, "acknowledged lead {id}: {r:?}");
        assert_eq!(r.json()["status"], "assigned", "{id}");
    }
    assert_eq!(
        total_load(api),
        acked.len() as u64,
        "loads count every open lead"
    );
}

#[test]
fn a_full_disk_refuses_writes_keeps_reads_and_recovers_when_space_returns() {
    let tmpfs = match Tmpfs::mount() {
        Ok(t) => t,
        // Where mounting is allowed, a failed mount is a failure, not a skip.
        Err(why) if leadroute_tests::may_mount() => panic!("cannot mount a tmpfs: {why}"),
        Err(why) => {
            println!("SKIPPED: mounting is not allowed here (no CAP_SYS_ADMIN): {why}");
            return;
        }
    };
    let data = tmpfs.path().join("data");
    let server = Server::start(&data);
    let api = Api {
        server: &server,
        token: None,
    };
    api.territory("east", &["CN-SH"], true);
    api.rep("a", "east", 100_000);
    api.rep("b", "east", 100_000);

    let mut acked = Vec::new();
    let mut n = 0;
    let mut post = |api: &Api<'_>, acked: &mut Vec<String>| {
        n += 1;
        let r = api.post("/v1/leads", lead_body(n));
        if r.status == 201 {
            acked.push(r.json()["lead_id"].as_str().unwrap().to_string());
        }
        r
    };
    for _ in 0..50 {
        let r = post(&api, &mut acked);
        assert_eq!(r.status, 201, "{r:?}");
    }

    // Full disk: the store's next writes fail. sled may still have room in pages it
    // already has, so keep writing (bounded) until it refuses.
    let filler = fill(tmpfs.path());
    let refused = (0..100_000)
        .map(|_| post(&api, &mut acked))
        .find(|r| r.status != 201)
        .expect("the store refused a write on a full disk");
    assert_eq!(refused.status, 503, "{refused:?}");
    assert_eq!(refused.code(), "store_unavailable", "{refused:?}");
    assert_eq!(refused.retry_after.as_deref(), Some("1"));

    // Reads work; writes are refused at once; not ready.
    assert_all_present(&api, &acked);
    let again = post(&api, &mut acked);
    assert_eq!(
        (again.status, again.code().as_str()),
        (503, "store_unavailable")
    );
    let ready = api.get("/readyz");
    assert_eq!(
        (ready.status, ready.code().as_str()),
        (503, "store_unavailable")
    );

    // Space returns: the server reopens the store by itself.
    std::fs::remove_file(&filler).unwrap();
    let started = Instant::now();
    while api.get("/readyz").status != 200 {
        assert!(
            started.elapsed() < RECOVERY_DEADLINE,
            "not ready again {RECOVERY_DEADLINE:?} after space returned; stderr:\n{}",
            server.stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        server.stderr().contains("store writes again; reopened"),
        "recovered by reopening the store"
    );
    for _ in 0..50 {
        let r = post(&api, &mut acked);
        assert_eq!(r.status, 201, "after recovery: {r:?}");
    }
    assert_all_present(&api, &acked);

    // And it all survives a restart, with nothing for the start-up audit to repair.
    assert!(server.terminate().success());
    let server = Server::start(&data);
    let api = Api {
        server: &server,
        token: None,
    };
    assert_all_present(&api, &acked);
    let log = server.stderr();
    assert!(
        !log.contains("store repaired at start"),
        "the audit found damage:\n{log}"
    );
    drop(server);
    drop(tmpfs);
}
