//! The webhook dispatcher's progress in the store: cursors and dead letters belong to
//! a webhook that exists, and a deleted webhook leaves none behind, even when its
//! deletion was cut short.

use leadroute_engine::EngineError;
use leadroute_engine::domain::WebhookId;
use leadroute_tests::*;

fn not_found<T: std::fmt::Debug>(result: Result<T, EngineError>) -> bool {
    matches!(result, Err(EngineError::WebhookNotFound(_)))
}

#[tokio::test]
async fn a_deleted_webhook_gets_no_dead_letter_and_no_cursor() {
    let f = fixture();
    let id = subscribe(&f.engine, "crm").await;
    let start = f.engine.webhook_cursor(&id).unwrap();
    f.engine
        .put_dead_letter(&id, &dead_letter(start + 1))
        .unwrap();
    f.engine.advance_webhook_cursor(&id, start + 1).unwrap();
    assert_eq!(f.engine.webhook_cursor(&id).unwrap(), start + 1);
    f.engine.delete_webhook(&id).await.unwrap();
    assert_eq!(f.engine.dead_letter_count(&id).unwrap(), 0);

    // Its worker, finishing an event it was attempting as the deletion landed, is
    // refused both steps, and stores nothing.
    assert!(not_found(
        f.engine.put_dead_letter(&id, &dead_letter(start + 2))
    ));
    assert!(not_found(f.engine.advance_webhook_cursor(&id, start + 2)));
    assert!(not_found(f.engine.webhook_cursor(&id)));
    assert_eq!(f.engine.dead_letter_count(&id).unwrap(), 0);

    // A webhook created again under the id starts clean, with a cursor of its own.
    subscribe(&f.engine, "crm").await;
    assert_eq!(f.engine.dead_letter_count(&id).unwrap(), 0);
    assert!(f.engine.webhook_cursor(&id).unwrap() > start);
}

/// A worker attempting an event as its webhook is deleted and created again (the
/// dispatcher keeps it when the record is the same) gives up on the event: its letter
/// belongs to no webhook that exists now, and the new one must not inherit it.
#[tokio::test]
async fn a_webhook_created_again_inherits_no_letter_from_the_old_ones_worker() {
    let f = fixture();
    east_with_reps(&f.engine, 10).await;
    let id = subscribe(&f.engine, "crm").await;
    let cursor = f.engine.webhook_cursor(&id).unwrap();
    f.engine.route(lead(1, "CN-SH")).await.unwrap();
    let [event] = &f.engine.outbox_after(cursor, 10).unwrap()[..] else {
        panic!("one lead, one event");
    };
    f.engine.delete_webhook(&id).await.unwrap();
    subscribe(&f.engine, "crm").await;
    let start = f.engine.webhook_cursor(&id).unwrap();

    // The old worker's two steps: the letter is refused, the cursor does not move.
    assert!(not_found(
        f.engine.put_dead_letter(&id, &dead_letter(event.seq))
    ));
    f.engine.advance_webhook_cursor(&id, event.seq).unwrap();
    assert_eq!(f.engine.webhook_cursor(&id).unwrap(), start);
    assert_eq!(f.engine.dead_letter_count(&id).unwrap(), 0);

    // The new webhook's worker parks its events past the cursor, moves past them, and
    // may update a parked letter after a failed re-drive, but not one that is gone.
    f.engine.route(lead(2, "CN-SH")).await.unwrap();
    let [event] = &f.engine.outbox_after(start, 10).unwrap()[..] else {
        panic!("one lead, one event");
    };
    f.engine
        .put_dead_letter(&id, &dead_letter(event.seq))
        .unwrap();
    f.engine.advance_webhook_cursor(&id, event.seq).unwrap();
    let mut again = dead_letter(event.seq);
    again.attempts = 16;
    assert!(f.engine.update_dead_letter(&id, &again).unwrap());
    let letters = f.engine.dead_letter_page(&id, None, None).unwrap().letters;
    assert_eq!(
        letters
            .iter()
            .map(|l| (l.event.seq, l.attempts))
            .collect::<Vec<_>>(),
        [(event.seq, 16)]
    );
    // A new letter at or before the cursor is an old worker's, whatever its seq; and
    // one delivered meanwhile (by another re-drive) is not brought back.
    assert!(not_found(
        f.engine.put_dead_letter(&id, &dead_letter(start))
    ));
    f.engine.remove_dead_letter(&id, event.seq).unwrap();
    assert!(!f.engine.update_dead_letter(&id, &again).unwrap());
    assert_eq!(f.engine.dead_letter_count(&id).unwrap(), 0);
    // And once the webhook is deleted, updating is refused like parking.
    f.engine.delete_webhook(&id).await.unwrap();
    assert!(not_found(f.engine.update_dead_letter(&id, &again)));
}

#[tokio::test]
async fn what_a_deletion_cut_short_left_is_removed_when_the_store_opens() {
    let Fixture { engine, clock, dir } = fixture();
    // Ids that sort next to each other: "crm\0…" keys come before "crm-old\0…".
    let kept = subscribe(&engine, "crm").await;
    let deleted = subscribe(&engine, "crm-old").await;
    let last = subscribe(&engine, "erp").await;
    // Past every cursor: a webhook's letters are of events after its start.
    let after = engine.webhook_cursor(&last).unwrap();
    for seq in after + 1..=after + 3 {
        for id in [&kept, &deleted, &last] {
            engine.put_dead_letter(id, &dead_letter(seq)).unwrap();
        }
    }
    engine.shutdown().await.unwrap();
    drop(engine);

    // The deletion's transaction (the record and the cursor) without the removal of
    // the letters after it: what a crash between the two leaves. And a cursor of no
    // webhook at all.
    {
        let db = sled_when_free(dir.path());
        db.open_tree("webhooks").unwrap().remove("crm-old").unwrap();
        let cursors = db.open_tree("webhook_cursors").unwrap();
        cursors.remove("crm-old").unwrap();
        cursors.insert("ghost", &7u64.to_be_bytes()).unwrap();
        db.flush().unwrap();
    }

    let engine = open(dir.path(), &clock);
    assert_eq!(engine.dead_letter_count(&kept).unwrap(), 3);
    assert_eq!(engine.dead_letter_count(&last).unwrap(), 3);
    assert_eq!(engine.dead_letter_count(&deleted).unwrap(), 0);
    assert!(not_found(
        engine.webhook_cursor(&WebhookId::new("ghost").unwrap())
    ));
    // A webhook created again under the deleted id inherits nothing.
    subscribe(&engine, "crm-old").await;
    assert_eq!(engine.dead_letter_count(&deleted).unwrap(), 0);
    assert_eq!(
        engine
            .dead_letter_page(&kept, None, None)
            .unwrap()
            .letters
            .iter()
            .map(|l| l.event.seq)
            .collect::<Vec<_>>(),
        [after + 1, after + 2, after + 3]
    );
}
