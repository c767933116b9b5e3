//! Online backups: a backup taken while the engine serves is one instant of the store,
//! a restore brings exactly that back, and a damaged backup restores nothing.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use leadroute_engine::domain::{LeadEventInput, Outcome, WebhookId};
use leadroute_engine::store::backup::{RestoreError, restore};
use leadroute_engine::{Checkpoint, Engine, EngineError, RouteOutcome, RouteStatus};
use leadroute_tests::*;

/// The files in `dir`, by name.
fn files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn a_restored_backup_is_the_store_as_it_was_when_the_backup_was_taken() {
    // sled moves its id counter on by one to two million at each opening (it persists the
    // counter that often): after two more, this store's numbers are past those a
    // fresh store starts with, as a long-lived store's are.
    let Fixture {
        mut engine,
        clock,
        dir,
    } = fixture();
    for _ in 0..2 {
        engine.shutdown().await.unwrap();
        drop(engine);
        engine = open(dir.path(), &clock);
    }
    let f = Fixture { engine, clock, dir };
    let ids = populate(&f.engine).await;
    let before = observe(&f.engine, &ids).await;
    let backups = tempfile::tempdir().unwrap();
    let backup = f.engine.backup(backups.path()).await.unwrap();
    // Named after the engine's clock (1_700_000_000_000 ms), complete, nothing partial.
    assert_eq!(
        files(backups.path()),
        ["leadroute-2023-11-14T221320.000Z.backup"]
    );
    assert_eq!(
        backup.counts.bytes,
        std::fs::metadata(&backup.path).unwrap().len()
    );
    assert!(backup.counts.entries > ids.len() as u64, "{backup:?}");

    // Changes after the backup are not in it.
    let later = f.engine.route(lead(500, "CN-SH")).await.unwrap();
    f.engine
        .record_event(
            ids[3],
            LeadEventInput::Closed {
                outcome: Outcome::Won,
            },
        )
        .await
        .unwrap();

    let target = tempfile::tempdir().unwrap();
    let data = target.path().join("data");
    assert_eq!(restore(&backup.path, &data).unwrap(), backup.counts);
    assert_eq!(
        files(target.path()),
        ["data"],
        "nothing of the restore is left"
    );
    let engine = open(&data, &f.clock);
    assert_eq!(engine.startup_audit().await.unwrap(), Vec::<String>::new());
    assert_eq!(observe(&engine, &ids).await, before);
    assert!(engine.lead(later.lead_id).unwrap().is_none());
    assert_healthy(&engine).await;

    // The restored store numbers on after the backup's last number: a lead queued now
    // is queued behind those queued before (the queue is ordered by that number).
    let north = |snapshots: Vec<leadroute_engine::TerritorySnapshot>| {
        snapshots
            .into_iter()
            .find(|t| t.territory.id.as_str() == "north")
            .unwrap()
            .queue
    };
    let queued_before = north(engine.territories().await.unwrap());
    assert!(!queued_before.is_empty(), "the scenario queues in north");
    let queued = engine.route(fixture_lead(300)).await.unwrap();
    assert_eq!(queued.status, RouteStatus::Queued);
    let queue = north(engine.territories().await.unwrap());
    assert_eq!(queue.last(), Some(&queued.lead_id));
    assert_healthy(&engine).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_under_load_is_one_instant_of_the_store() {
    let f = fixture();
    east_with_reps(&f.engine, 100_000).await;
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(Instant, Instant, RouteOutcome)>();
    let mut workers = Vec::new();
    for worker in 0..4u32 {
        let (engine, tx, stop) = (f.engine.clone(), tx.clone(), stop.clone());
        workers.push(tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                let sent = Instant::now();
                let outcome = engine.route(lead(worker * 1_000_000 + n, "CN-SH")).await;
                tx.send((sent, Instant::now(), outcome.unwrap())).unwrap();
                n += 1;
            }
        }));
    }
    drop(tx);
    let mut routed = Vec::new();
    while routed.len() < 200 {
        routed.push(rx.recv().await.unwrap());
    }
    let asked = Instant::now();
    let backups = tempfile::tempdir().unwrap();
    let backup = f.engine.backup(backups.path()).await.unwrap();
    let done = Instant::now();
    let mut after = 0;
    while after < 200 {
        let r = rx.recv().await.unwrap();
        after += usize::from(r.0 > done);
        routed.push(r);
    }
    stop.store(true, Ordering::SeqCst);
    for w in workers {
        w.await.unwrap();
    }
    while let Ok(r) = rx.try_recv() {
        routed.push(r);
    }

    let target = tempfile::tempdir().unwrap();
    let data = target.path().join("data");
    restore(&backup.path, &data).unwrap();
    let engine = open(&data, &f.clock);
    assert_eq!(engine.startup_audit().await.unwrap(), Vec::<String>::new());
    assert_healthy(&engine).await;
    let (mut answered_before, mut sent_after) = (0, 0);
    for (sent, answered, outcome) in &routed {
        let stored = engine.lead(outcome.lead_id).unwrap();
        if *answered < asked {
            answered_before += 1;
            let view = stored.expect("a lead answered before the backup is in it");
            assert_eq!(view.state.rep, outcome.rep_id);
        } else if *sent > done {
            sent_after += 1;
            assert!(
                stored.is_none(),
                "a lead sent after the backup is not in it"
            );
        }
    }
    assert!(answered_before >= 200 && sent_after >= 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_committed_after_every_tree_is_read_are_in_the_backup() {
    // Held with every tree read: these changes reach the backup only through what
    // the committer captured, its writes and its removals.
    changes_while_held_are_in_the_backup(Checkpoint::BackupRead).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_committed_while_the_trees_are_read_are_in_the_backup() {
    // Held after the first tree (`assignments`): each change below writes or removes
    // keys both in trees already read and in trees not read yet, which the read may
    // then see, and which the captured writes bring to their last state either way.
    changes_while_held_are_in_the_backup(Checkpoint::BackupTree).await;
}

async fn changes_while_held_are_in_the_backup(at: Checkpoint) {
    let (holder, mut checkpoints) = Holder::new(at, 1);
    let f = fixture_with(|config| config.probe(holder.probe()));
    let mut ids = populate(&f.engine).await;
    let backups = tempfile::tempdir().unwrap();
    let first = tokio::spawn({
        let (engine, dir) = (f.engine.clone(), backups.path().to_path_buf());
        async move { engine.backup(&dir).await }
    });
    expect_checkpoint(&mut checkpoints, at).await;
    let routed = f.engine.route(lead(700, "CN-SH")).await.unwrap();
    assert_eq!(routed.status, RouteStatus::Assigned);
    ids.push(routed.lead_id);
    let closed = f
        .engine
        .record_event(
            ids[1],
            LeadEventInput::Closed {
                outcome: Outcome::Lost,
            },
        )
        .await
        .unwrap();
    assert!(!closed.state.status.is_open());
    // A new rep, and an old one deleted with its leads moved to the others.
    f.engine.upsert_rep(rid("c"), rep("east", 7)).await.unwrap();
    f.engine.delete_rep(&rid("b"), true).await.unwrap();
    let expected = observe(&f.engine, &ids).await;
    // One backup at a time.
    assert!(matches!(
        f.engine.backup(backups.path()).await,
        Err(EngineError::BackupInProgress)
    ));
    holder.release(1);
    let first = first.await.unwrap().unwrap();
    assert!(first.counts.captured > 0, "{first:?}");

    let target = tempfile::tempdir().unwrap();
    let data = target.path().join("data");
    restore(&first.path, &data).unwrap();
    let engine = open(&data, &f.clock);
    assert_eq!(engine.startup_audit().await.unwrap(), Vec::<String>::new());
    assert_eq!(observe(&engine, &ids).await, expected);
    assert_healthy(&engine).await;

    // Free again; a second backup in the same millisecond gets a name of its own.
    let second = f.engine.backup(backups.path()).await.unwrap();
    assert_ne!(first.path, second.path);
    assert_eq!(files(backups.path()).len(), 2);
}

/// The webhook dispatcher's progress is not captured: it parks an event's dead
/// letter, then moves its cursor past the event, both outside the committer. Here it
/// takes that step after each tree the backup reads (the probe runs on the backup's
/// thread), so the read meets the two trees at every stage of it. A restore may
/// deliver an event again, never drop one: its cursor is never past an event whose
/// letter it lacks.
#[tokio::test]
async fn a_restored_webhook_cursor_is_never_past_a_dead_letter_the_backup_lacks() {
    type Dispatcher = (Engine, WebhookId, u64);
    let dispatcher: Arc<Mutex<Option<Dispatcher>>> = Arc::default();
    let steps = Arc::new(AtomicU64::new(0));
    let probe = {
        let (dispatcher, steps) = (dispatcher.clone(), steps.clone());
        move |at| {
            if at != Checkpoint::BackupTree {
                return;
            }
            if let Some((engine, id, start)) = &*dispatcher.lock().unwrap() {
                let seq = start + 1 + steps.fetch_add(1, Ordering::SeqCst);
                engine.put_dead_letter(id, &dead_letter(seq)).unwrap();
                engine.advance_webhook_cursor(id, seq).unwrap();
            }
        }
    };
    let f = fixture_with(|config| config.probe(probe));
    populate(&f.engine).await;
    let id = subscribe(&f.engine, "crm").await;
    let start = f.engine.webhook_cursor(&id).unwrap();
    *dispatcher.lock().unwrap() = Some((f.engine.clone(), id.clone(), start));
    let backups = tempfile::tempdir().unwrap();
    let backup = f.engine.backup(backups.path()).await.unwrap();
    // The probe's engine handle would keep the engine open past the test.
    dispatcher.lock().unwrap().take();
    assert_eq!(steps.load(Ordering::SeqCst), backup.counts.trees);

    let target = tempfile::tempdir().unwrap();
    let data = target.path().join("data");
    restore(&backup.path, &data).unwrap();
    let engine = open(&data, &f.clock);
    let cursor = engine.webhook_cursor(&id).unwrap();
    let letters: Vec<u64> = engine
        .dead_letter_page(&id, None, None)
        .unwrap()
        .letters
        .iter()
        .map(|l| l.event.seq)
        .collect();
    assert!(
        cursor > start,
        "the cursor was read after some of the steps"
    );
    for seq in start + 1..=cursor {
        assert!(
            letters.contains(&seq),
            "the cursor is at {cursor}, past event {seq}, whose letter is not in the backup \
             (letters: {letters:?})"
        );
    }
}

#[tokio::test]
async fn a_backup_that_cannot_be_written_fails_and_leaves_nothing() {
    let f = fixture();
    east_with_reps(&f.engine, 10).await;
    let not_a_dir = f.dir.path().join("leadroute.ballast");
    match f.engine.backup(&not_a_dir.join("backups")).await {
        Err(EngineError::BackupFailed(why)) => assert!(why.contains("backups"), "{why}"),
        other => panic!("expected BackupFailed, got {other:?}"),
    }
    assert_eq!(f.engine.metrics().backup_failures.get(), 1);
    assert_healthy(&f.engine).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_that_captures_more_than_its_bound_fails_and_the_next_backup_works() {
    // Past the bound after the whole read: the handover refuses.
    over_the_bound(Checkpoint::BackupRead, "more than 64 bytes were written").await;
    // Past it during the read: the read stops at once.
    over_the_bound(Checkpoint::BackupTree, "could not be kept").await;
}

async fn over_the_bound(at: Checkpoint, says: &str) {
    let (holder, mut checkpoints) = Holder::new(at, 1);
    let f = fixture_with(|config| config.probe(holder.probe()).backup_capture_bytes(64));
    east_with_reps(&f.engine, 10).await;
    let backups = tempfile::tempdir().unwrap();
    let first = tokio::spawn({
        let (engine, dir) = (f.engine.clone(), backups.path().to_path_buf());
        async move { engine.backup(&dir).await }
    });
    expect_checkpoint(&mut checkpoints, at).await;
    // A lead writes more than 64 bytes: the capture is given up, not grown.
    f.engine.route(lead(1, "CN-SH")).await.unwrap();
    holder.release(1);
    match first.await.unwrap() {
        Err(EngineError::BackupFailed(why)) => assert!(why.contains(says), "{why}"),
        other => panic!("expected BackupFailed, got {other:?}"),
    }
    assert!(files(backups.path()).is_empty(), "nothing of it is kept");
    assert_eq!(f.engine.metrics().backup_failures.get(), 1);
    // With nothing written during its read, the next one is complete.
    let second = f.engine.backup(backups.path()).await.unwrap();
    assert_eq!(second.counts.captured, 0);
    assert_eq!(files(backups.path()).len(), 1);
    assert_healthy(&f.engine).await;
}

#[tokio::test]
async fn a_damaged_backup_is_refused_and_restores_nothing() {
    let f = fixture();
    populate(&f.engine).await;
    let backups = tempfile::tempdir().unwrap();
    let backup = f.engine.backup(backups.path()).await.unwrap();
    let good = std::fs::read(&backup.path).unwrap();
    let len = good.len();
    let changed = |at: usize| {
        let mut b = good.clone();
        b[at] ^= 0x01;
        b
    };
    let cases: [(&str, Vec<u8>, &str); 7] = [
        (
            "its checksum changed",
            changed(len - 1),
            "checksum does not match",
        ),
        ("a byte of a record changed", changed(len / 2), ""),
        ("cut short", good[..len - 10].to_vec(), "ends early"),
        ("cut to its header", good[..20].to_vec(), "ends early"),
        ("empty", Vec::new(), "ends early"),
        (
            "not a backup",
            b"PK\x03\x04 a zip file, say".to_vec(),
            "does not begin",
        ),
        (
            "bytes after its end",
            [good.as_slice(), b"x"].concat(),
            "follow its end",
        ),
    ];
    for (what, bytes, says) in cases {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("damaged.backup");
        std::fs::write(&file, bytes).unwrap();
        let data = dir.path().join("data");
        match restore(&file, &data) {
            Err(e @ RestoreError::Damaged { .. }) => {
                assert!(e.to_string().contains(says), "{what}: {e}")
            }
            other => panic!("{what}: expected Damaged, got {other:?}"),
        }
        assert_eq!(
            files(dir.path()),
            ["damaged.backup"],
            "{what}: nothing left"
        );
    }

    // A directory that holds files is never written over.
    let before = files(f.dir.path());
    assert!(matches!(
        restore(&backup.path, f.dir.path()),
        Err(RestoreError::TargetNotEmpty(_))
    ));
    assert_eq!(files(f.dir.path()), before);
    // An empty one is fine, and so is a new one named with a trailing slash.
    let empty = tempfile::tempdir().unwrap();
    restore(&backup.path, empty.path()).unwrap();
    assert!(files(empty.path()).contains(&"db".to_string()));
    let slashed = format!("{}/fresh/", empty.path().display());
    restore(&backup.path, Path::new(&slashed)).unwrap();
    assert!(files(&empty.path().join("fresh")).contains(&"db".to_string()));
    // A file is not a directory to restore into.
    let file = empty.path().join("db");
    assert!(matches!(
        restore(&backup.path, &file),
        Err(RestoreError::Io(_))
    ));
}

#[tokio::test]
async fn a_restore_follows_a_symlink_and_refuses_what_it_cannot_replace_before_reading() {
    let f = fixture();
    let ids = populate(&f.engine).await;
    let expected = observe(&f.engine, &ids).await;
    let backups = tempfile::tempdir().unwrap();
    let backup = f.engine.backup(backups.path()).await.unwrap();

    // A link to an empty directory: the store goes where it points, and the link
    // stays a link.
    let place = tempfile::tempdir().unwrap();
    let real = place.path().join("real");
    std::fs::create_dir(&real).unwrap();
    let link = place.path().join("link");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    restore(&backup.path, &link).unwrap();
    assert!(std::fs::symlink_metadata(&link).unwrap().is_symlink());
    assert!(files(&real).contains(&"db".to_string()));
    assert_eq!(files(place.path()), ["link", "real"]);
    let engine = open(&link, &f.clock);
    assert_eq!(observe(&engine, &ids).await, expected);
    engine.shutdown().await.unwrap();
    drop(engine);

    // Another restore into the same target holds its lock: refused before anything
    // is looked at or written. A restore beside it, into another name, goes on.
    let busy = tempfile::tempdir().unwrap();
    let held = std::fs::File::create(busy.path().join(".data.restore-lock")).unwrap();
    held.lock().unwrap();
    let err = restore(&backup.path, &busy.path().join("data")).unwrap_err();
    assert!(matches!(err, RestoreError::Busy(_)), "{err:?}");
    assert_eq!(files(busy.path()), [".data.restore-lock"]);
    restore(&backup.path, &busy.path().join("other")).unwrap();
    held.unlock().unwrap();
    restore(&backup.path, &busy.path().join("data")).unwrap();
    assert_eq!(files(busy.path()), ["data", "other"], "no lock file left");

    // A mount point cannot be renamed over: refused at once, and the message names
    // the way that works.
    let Some(mounted) = Tmpfs::mount_or_skip("64m") else {
        return;
    };
    let err = restore(&backup.path, mounted.0.path()).unwrap_err();
    assert!(matches!(err, RestoreError::TargetMountPoint(_)), "{err:?}");
    let inside = mounted.0.path().join("data");
    assert!(
        err.to_string().contains(&inside.display().to_string()),
        "{err}"
    );
    assert_eq!(files(mounted.0.path()), Vec::<String>::new());
    let parent = mounted.0.path().parent().unwrap();
    let mut building = mounted.0.path().file_name().unwrap().to_owned();
    building.push(".restoring");
    assert!(!parent.join(building).exists(), "nothing built beside it");
    // A bind mount, on the same file system (and device) as its parent, is one too.
    let place = tempfile::tempdir().unwrap();
    let (source, point) = (place.path().join("source"), place.path().join("point"));
    std::fs::create_dir(&source).unwrap();
    std::fs::create_dir(&point).unwrap();
    let bound = std::process::Command::new("mount")
        .arg("--bind")
        .arg(&source)
        .arg(&point)
        .status()
        .unwrap();
    assert!(bound.success(), "mount --bind");
    let result = restore(&backup.path, &point);
    let unbound = std::process::Command::new("umount")
        .arg(&point)
        .status()
        .unwrap();
    assert!(unbound.success(), "umount");
    assert!(
        matches!(result, Err(RestoreError::TargetMountPoint(_))),
        "{result:?}"
    );

    restore(&backup.path, &inside).unwrap();
    let engine = open(&inside, &f.clock);
    assert_eq!(observe(&engine, &ids).await, expected);
    engine.shutdown().await.unwrap();
}
