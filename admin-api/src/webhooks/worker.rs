//! One subscription's delivery loop: re-drives first, then the outbox in order.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use leadroute_engine::domain::{OutboxEvent, Webhook, WebhookId};
use leadroute_engine::engine::MAX_DEAD_LETTER_PAGE;
use leadroute_engine::store::DeadLetter;
use leadroute_engine::{Engine, EngineError};
use tokio::sync::watch;

use super::{Shared, signature};
use crate::dto::WebhookPayload;

/// Events read from the outbox at a time.
const BATCH: usize = 256;

/// How one event's delivery ended.
enum Delivery {
    Delivered,
    /// Every attempt failed; the last error.
    GaveUp(String),
    /// The worker is stopping; the event stays where it was.
    Stopped,
}

/// Delivers `webhook`'s events until `stop` turns true or the subscription is gone.
pub(super) async fn deliver(
    shared: Arc<Shared>,
    webhook: Webhook,
    mut stop: watch::Receiver<bool>,
) {
    let engine = &shared.engine;
    let mut events = engine.outbox().watch_events();
    let label = [webhook.id.as_str()];
    // The subscription's series begin at zero, so the first failure shows in
    // `increase()`.
    for outcome in ["delivered", "failed", "dead_lettered"] {
        shared
            .metrics
            .deliveries
            .with_label_values(&[webhook.id.as_str(), outcome]);
    }
    shared.metrics.latency.with_label_values(&label);
    shared.metrics.depth.with_label_values(&label);
    loop {
        if *stop.borrow() {
            return;
        }
        // Seen before reading, so an event written after the read still wakes us.
        events.borrow_and_update();
        match redrive(&shared, &webhook, &mut stop).await {
            Ok(()) => {}
            // Deleted: this worker ends, and the dispatcher starts another if a
            // subscription of the same id exists again.
            Err(EngineError::WebhookNotFound(_)) => return,
            Err(e) => tracing::error!(webhook = %webhook.id, error = %e, "re-drive failed"),
        }
        let cursor = match engine.webhook_cursor(&webhook.id) {
            Ok(c) => c,
            Err(EngineError::WebhookNotFound(_)) => return,
            Err(e) => {
                tracing::error!(webhook = %webhook.id, error = %e, "cannot read cursor");
                if pause(&mut stop).await {
                    continue;
                }
                return;
            }
        };
        let batch = match engine.outbox_after(cursor, BATCH) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(webhook = %webhook.id, error = %e, "cannot read the outbox");
                if pause(&mut stop).await {
                    continue;
                }
                return;
            }
        };
        if batch.is_empty() {
            shared.metrics.depth.with_label_values(&label).set(0);
            tokio::select! {
                changed = events.changed() => if changed.is_err() { return },
                _ = stop.wait_for(|s| *s) => return,
            }
            continue;
        }
        // Counted now, not only once the batch is done: a batch's first event can be
        // retried for minutes while the endpoint is down.
        refresh_depth(&shared, &webhook.id, cursor);
        for event in batch {
            if webhook.wants(event.kind) {
                match attempt_all(&shared, &webhook, &event, &mut stop).await {
                    Delivery::Delivered => {}
                    Delivery::GaveUp(error) => {
                        let letter = DeadLetter {
                            event: event.clone(),
                            attempts: shared.policy.max_attempts,
                            last_error: error,
                            failed_at: now_ms(),
                            redrive: false,
                        };
                        // Parked before the cursor moves past it; if it cannot be, the
                        // event is tried again from the start of the next round.
                        match engine.put_dead_letter(&webhook.id, &letter) {
                            Ok(()) => {}
                            // Deleted while the attempts ran: nothing to park it for.
                            Err(EngineError::WebhookNotFound(_)) => return,
                            Err(e) => {
                                tracing::error!(webhook = %webhook.id, error = %e,
                                    "cannot park a dead letter");
                                break;
                            }
                        }
                        shared
                            .metrics
                            .deliveries
                            .with_label_values(&[webhook.id.as_str(), "dead_lettered"])
                            .inc();
                        tracing::warn!(webhook = %webhook.id, event = %event.id(),
                            "webhook event dead-lettered after every attempt failed");
                    }
                    Delivery::Stopped => return,
                }
            }
            match engine.advance_webhook_cursor(&webhook.id, event.seq) {
                Ok(()) => {}
                Err(EngineError::WebhookNotFound(_)) => return,
                Err(e) => {
                    // Delivered again later: at least once, never skipped.
                    tracing::error!(webhook = %webhook.id, error = %e, "cannot store the cursor");
                    break;
                }
            }
        }
        let cursor = engine.webhook_cursor(&webhook.id).unwrap_or(0);
        refresh_depth(&shared, &webhook.id, cursor);
        if let Err(e) = engine.trim_outbox() {
            tracing::warn!(error = %e, "cannot trim the outbox");
        }
    }
}

/// Sets `leadroute_webhook_outbox_depth` to the events after `cursor`. Counting walks
/// them, so it runs once per batch and once per event that fails, not per attempt.
fn refresh_depth(shared: &Shared, webhook: &WebhookId, cursor: u64) {
    let depth = shared.engine.outbox_len_after(cursor);
    shared
        .metrics
        .depth
        .with_label_values(&[webhook.as_str()])
        .set(i64::try_from(depth).unwrap_or(i64::MAX));
}

/// Waits a second after a store error (the store may be reopening after a disk
/// problem); false when the worker should stop instead.
async fn pause(stop: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        () = tokio::time::sleep(std::time::Duration::from_secs(1)) => true,
        _ = stop.wait_for(|s| *s) => false,
    }
}

/// Delivers the dead letters an operator asked to re-drive, in order, reading them a
/// page at a time (a long outage can leave millions).
async fn redrive(
    shared: &Shared,
    webhook: &Webhook,
    stop: &mut watch::Receiver<bool>,
) -> leadroute_engine::Result<()> {
    let engine: &Engine = &shared.engine;
    let mut after = None;
    loop {
        let page = engine.dead_letter_page(&webhook.id, after, Some(MAX_DEAD_LETTER_PAGE))?;
        for mut letter in page.letters {
            if !letter.redrive {
                continue;
            }
            match attempt_all(shared, webhook, &letter.event, stop).await {
                Delivery::Delivered => engine.remove_dead_letter(&webhook.id, letter.event.seq)?,
                Delivery::GaveUp(error) => {
                    letter.attempts += shared.policy.max_attempts;
                    letter.last_error = error;
                    letter.failed_at = now_ms();
                    letter.redrive = false;
                    // Not parked any more only if its webhook was deleted (and perhaps
                    // created again) meanwhile: nothing to keep it for.
                    engine.update_dead_letter(&webhook.id, &letter)?;
                }
                Delivery::Stopped => return Ok(()),
            }
        }
        match page.next {
            Some(seq) => after = Some(seq),
            None => return Ok(()),
        }
    }
}

/// Attempts one event until it is delivered, every attempt failed, or stop.
async fn attempt_all(
    shared: &Shared,
    webhook: &Webhook,
    event: &OutboxEvent,
    stop: &mut watch::Receiver<bool>,
) -> Delivery {
    let body = match serde_json::to_vec(&WebhookPayload::from(event)) {
        Ok(b) => b,
        Err(e) => return Delivery::GaveUp(format!("cannot encode the event: {e}")),
    };
    let mut last_error = String::new();
    for attempt in 1..=shared.policy.max_attempts {
        let sent = tokio::select! {
            sent = post(shared, webhook, event, &body, attempt) => sent,
            _ = stop.wait_for(|s| *s) => return Delivery::Stopped,
        };
        let outcome = if sent.is_ok() { "delivered" } else { "failed" };
        shared
            .metrics
            .deliveries
            .with_label_values(&[webhook.id.as_str(), outcome])
            .inc();
        match sent {
            Ok(()) => {
                let waited = now_ms().saturating_sub(event.at) as f64 / 1000.0;
                shared
                    .metrics
                    .latency
                    .with_label_values(&[webhook.id.as_str()])
                    .observe(waited);
                return Delivery::Delivered;
            }
            Err(e) => {
                tracing::debug!(webhook = %webhook.id, event = %event.id(), attempt, error = %e,
                    "webhook delivery failed");
                last_error = e;
            }
        }
        // The endpoint is failing: show the backlog behind this event. Once per event,
        // not per attempt: counting walks the backlog, which an outage makes long.
        if attempt == 1
            && attempt < shared.policy.max_attempts
            && let Ok(cursor) = shared.engine.webhook_cursor(&webhook.id)
        {
            refresh_depth(shared, &webhook.id, cursor);
        }
        if attempt < shared.policy.max_attempts {
            let delay = shared.policy.backoff(&webhook.id, event.seq, attempt);
            tokio::select! {
                () = shared.sleeper.sleep(delay) => {}
                _ = stop.wait_for(|s| *s) => return Delivery::Stopped,
            }
        }
    }
    Delivery::GaveUp(last_error)
}

/// One attempt: a signed POST; any 2xx is delivered.
async fn post(
    shared: &Shared,
    webhook: &Webhook,
    event: &OutboxEvent,
    body: &[u8],
    attempt: u32,
) -> Result<(), String> {
    let timestamp = now_ms() / 1000;
    let response = shared
        .client
        .post(&webhook.url)
        .header("content-type", "application/json")
        .header(
            signature::HEADER,
            signature::sign(&webhook.secret, timestamp, body),
        )
        .header("idempotency-key", event.id())
        .header("leadroute-event", event.kind.as_str())
        .header("leadroute-delivery-attempt", attempt.to_string())
        .body(body.to_vec())
        .send()
        .await
        .map_err(|e| format!("request failed: {e}"))?;
    let status = response.status();
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("endpoint answered {status}"))
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
