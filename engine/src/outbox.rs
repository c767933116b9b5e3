//! The outbox's live side: which event kinds anyone subscribes to, and a signal for
//! the dispatcher when new events are durable.
//!
//! The committer writes an event only if some subscription wants its kind, so an
//! engine without webhooks pays nothing. A subscription's bit is set *before* its
//! record is written and cleared only *after* its deletion is durable: the set is
//! always a superset of what subscriptions need, never a subset.

use std::sync::atomic::{AtomicU8, Ordering};

use tokio::sync::watch;

use crate::domain::{EventKind, Webhook};

/// Shared between the engine (subscriptions), the committer (writes) and the
/// dispatcher (reads).
pub struct Outbox {
    interest: AtomicU8,
    /// The last durable event's seq.
    written: watch::Sender<u64>,
    /// Bumped whenever the set of subscriptions changes.
    subscriptions: watch::Sender<u64>,
    /// Bumped whenever a dead letter is parked, updated or removed.
    dead_letters: watch::Sender<u64>,
}

impl Outbox {
    /// An outbox whose subscriptions are `webhooks`.
    pub(crate) fn new(webhooks: &[Webhook]) -> Self {
        let outbox = Outbox {
            interest: AtomicU8::new(0),
            written: watch::channel(0).0,
            subscriptions: watch::channel(0).0,
            dead_letters: watch::channel(0).0,
        };
        outbox.set_interest(webhooks);
        outbox
    }

    /// Whether an event of `kind` must be written.
    pub(crate) fn wants(&self, kind: EventKind) -> bool {
        self.interest.load(Ordering::SeqCst) & kind.bit() != 0
    }

    /// Adds the kinds `webhook` wants (before its record is written).
    pub(crate) fn add_interest(&self, webhook: &Webhook) {
        let bits = webhook.events.iter().fold(0, |a, k| a | k.bit());
        self.interest.fetch_or(bits, Ordering::SeqCst);
    }

    /// Recomputes the kinds from every subscription (after a change is durable).
    pub(crate) fn set_interest(&self, webhooks: &[Webhook]) {
        let bits = webhooks
            .iter()
            .flat_map(|w| w.events.iter())
            .fold(0, |a, k| a | k.bit());
        self.interest.store(bits, Ordering::SeqCst);
        self.subscriptions.send_modify(|v| *v += 1);
    }

    /// Has the subscriptions' watchers look again without a change: a delivery
    /// worker that ended on its own (its subscription was gone when it looked, though
    /// one of the same id may exist again by now) asks the dispatcher to reconcile.
    pub fn recheck_subscriptions(&self) {
        self.subscriptions.send_modify(|v| *v += 1);
    }

    /// Called by the committer once events up to `seq` are durable.
    pub(crate) fn written(&self, seq: u64) {
        self.written.send_if_modified(|last| {
            let newer = seq > *last;
            *last = (*last).max(seq);
            newer
        });
    }

    /// Wakes event watchers without a new event (dead letters marked for re-drive).
    pub(crate) fn nudge(&self) {
        self.written.send_modify(|_| {});
    }

    /// Changes whenever new events are durable.
    pub fn watch_events(&self) -> watch::Receiver<u64> {
        self.written.subscribe()
    }

    /// Changes whenever subscriptions are added, replaced or deleted.
    pub fn watch_subscriptions(&self) -> watch::Receiver<u64> {
        self.subscriptions.subscribe()
    }

    /// Changes whenever a dead letter is parked, updated (marked for re-drive) or
    /// removed, so whoever waits for the dispatcher to give up on an event (or to
    /// deliver a re-driven one) is told instead of looking again and again.
    pub fn watch_dead_letters(&self) -> watch::Receiver<u64> {
        self.dead_letters.subscribe()
    }

    /// Called after every dead-letter write.
    pub(crate) fn dead_letters_changed(&self) {
        self.dead_letters.send_modify(|v| *v += 1);
    }
}
