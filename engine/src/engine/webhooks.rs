//! Webhook subscriptions, and the outbox as the dispatcher reads it.
//!
//! Subscriptions are configuration, written through the committer like territories.
//! The dispatcher (in the server) reads events after its cursor, advances the cursor
//! as it delivers, and parks what it gives up on as dead letters.

use super::Engine;
use crate::domain::{OutboxEvent, Webhook, WebhookId, WebhookInput};
use crate::error::{EngineError, Result, ValidationError};
use crate::outbox::Outbox;
use crate::store::DeadLetter;
use crate::store::commit::{Applied, Change, settle};

/// Dead letters in a page when the caller does not say.
pub const DEFAULT_DEAD_LETTER_PAGE: u32 = 100;
/// Most dead letters in one page.
pub const MAX_DEAD_LETTER_PAGE: u32 = 1000;

/// One page of a subscription's dead letters.
#[derive(Clone, Debug, PartialEq)]
pub struct DeadLetterPage {
    /// The letters, oldest first.
    pub letters: Vec<DeadLetter>,
    /// When more follow: the seq of the last letter here, to pass as `after` for the
    /// next page. `None` on the last page.
    pub next: Option<u64>,
}

impl Engine {
    /// Creates or replaces a webhook subscription; returns it and whether it is new.
    /// A new subscription receives the events written after it.
    pub async fn put_webhook(&self, id: WebhookId, input: WebhookInput) -> Result<(Webhook, bool)> {
        let _permit = self.enter()?;
        let webhook = input.validate(id)?;
        let _admitted = self.admit_admin()?;
        let _admin = self.inner.admin.lock().await;
        // Before the record: events committed from now on are written for it.
        self.inner.outbox.add_interest(&webhook);
        let applied = settle(
            self.inner
                .committer
                .submit(Change::PutWebhook(Box::new(webhook.clone()))),
        )
        .await;
        self.inner
            .outbox
            .set_interest(&self.inner.store.webhooks()?);
        match applied? {
            Applied::WebhookStored { created } => Ok((webhook, created)),
            other => Err(EngineError::Internal(format!(
                "put webhook answered {other:?}"
            ))),
        }
    }

    /// Every webhook subscription, by id.
    pub fn webhooks(&self) -> Result<Vec<Webhook>> {
        self.inner.store.webhooks()
    }

    /// One webhook subscription.
    pub fn webhook(&self, id: &WebhookId) -> Result<Webhook> {
        self.inner
            .store
            .webhook(id)?
            .ok_or_else(|| EngineError::WebhookNotFound(id.clone()))
    }

    /// Deletes a subscription with its cursor and dead letters; its pending events
    /// are not delivered.
    pub async fn delete_webhook(&self, id: &WebhookId) -> Result<()> {
        let _permit = self.enter()?;
        let _admitted = self.admit_admin()?;
        let _admin = self.inner.admin.lock().await;
        settle(
            self.inner
                .committer
                .submit(Change::DeleteWebhook(id.clone())),
        )
        .await?;
        // One removal per letter, millions after a long outage: off the runtime's
        // workers. (A crash before it ends leaves letters the next opening removes.)
        let (store, webhook) = (self.inner.store.clone(), id.clone());
        tokio::task::spawn_blocking(move || store.remove_dead_letters(&webhook))
            .await
            .map_err(|e| EngineError::Internal(format!("removing dead letters: {e}")))??;
        self.inner.outbox.dead_letters_changed();
        self.inner
            .outbox
            .set_interest(&self.inner.store.webhooks()?);
        self.trim_outbox()?;
        Ok(())
    }

    /// The outbox's signals: new events, changed subscriptions, dead letters.
    pub fn outbox(&self) -> &Outbox {
        &self.inner.outbox
    }

    /// Up to `limit` events after `seq`, oldest first.
    pub fn outbox_after(&self, seq: u64, limit: usize) -> Result<Vec<OutboxEvent>> {
        self.inner.store.outbox_after(seq, limit)
    }

    /// Events waiting after `seq`.
    pub fn outbox_len_after(&self, seq: u64) -> usize {
        self.inner.store.outbox_len_after(seq)
    }

    /// The last event a subscription is done with (delivered, dead-lettered or not
    /// wanted).
    pub fn webhook_cursor(&self, id: &WebhookId) -> Result<u64> {
        self.inner
            .store
            .cursor(id)?
            .ok_or_else(|| EngineError::WebhookNotFound(id.clone()))
    }

    /// Records that a subscription is done with every event up to `seq`. Not flushed
    /// on its own: a crash may deliver an event again, never skip one.
    /// `WebhookNotFound` once the subscription is deleted.
    pub fn advance_webhook_cursor(&self, id: &WebhookId, seq: u64) -> Result<()> {
        self.inner.store.advance_cursor(id, seq)
    }

    /// Parks an event a subscription gave up on, before its cursor moves past it;
    /// `WebhookNotFound`, parking nothing, once the subscription is deleted, and for
    /// an event not past its cursor: that is the worker of an earlier subscription of
    /// the same id, deleted while it attempted the event.
    pub fn put_dead_letter(&self, id: &WebhookId, letter: &DeadLetter) -> Result<()> {
        self.inner.store.put_dead_letter(id, letter)?;
        self.inner.outbox.dead_letters_changed();
        Ok(())
    }

    /// Replaces a parked dead letter (marked for re-drive, or failed again); false,
    /// changing nothing, when it is no longer parked (delivered meanwhile).
    /// `WebhookNotFound` once the subscription is deleted.
    pub fn update_dead_letter(&self, id: &WebhookId, letter: &DeadLetter) -> Result<bool> {
        let updated = self.inner.store.update_dead_letter(id, letter)?;
        self.inner.outbox.dead_letters_changed();
        Ok(updated)
    }

    /// Up to `limit` ([`DEFAULT_DEAD_LETTER_PAGE`] when `None`, at most
    /// [`MAX_DEAD_LETTER_PAGE`]) of a subscription's dead letters with a seq above
    /// `after` (from the oldest when `None`), oldest first. A subscription that gave
    /// up on a long outage's worth of events can hold millions; a page bounds what one
    /// request reads and answers.
    pub fn dead_letter_page(
        &self,
        id: &WebhookId,
        after: Option<u64>,
        limit: Option<u32>,
    ) -> Result<DeadLetterPage> {
        // An unknown subscription is a 404 whatever the query says.
        self.webhook(id)?;
        let limit = limit.unwrap_or(DEFAULT_DEAD_LETTER_PAGE);
        if !(1..=MAX_DEAD_LETTER_PAGE).contains(&limit) {
            return Err(ValidationError::field(
                "limit",
                format!("must be between 1 and {MAX_DEAD_LETTER_PAGE}"),
            )
            .into());
        }
        let (letters, more) = self
            .inner
            .store
            .dead_letters_page(id, after, limit as usize)?;
        let next = if more {
            letters.last().map(|l| l.event.seq)
        } else {
            None
        };
        Ok(DeadLetterPage { letters, next })
    }

    /// How many dead letters a subscription has, without reading them.
    pub fn dead_letter_count(&self, id: &WebhookId) -> Result<usize> {
        self.inner.store.dead_letter_count(id)
    }

    /// Removes a dead letter (delivered on re-drive).
    pub fn remove_dead_letter(&self, id: &WebhookId, seq: u64) -> Result<()> {
        self.inner.store.remove_dead_letter(id, seq)?;
        self.inner.outbox.dead_letters_changed();
        Ok(())
    }

    /// Marks every dead letter of a subscription for another round of delivery;
    /// returns how many.
    /// Reads them a page at a time: a long outage can leave millions.
    pub fn redrive_dead_letters(&self, id: &WebhookId) -> Result<usize> {
        let mut marked = 0;
        let mut after = None;
        loop {
            let page = self.dead_letter_page(id, after, Some(MAX_DEAD_LETTER_PAGE))?;
            for mut letter in page.letters.into_iter().filter(|l| !l.redrive) {
                letter.redrive = true;
                // Gone since the page was read: delivered by a re-drive running beside.
                if self.inner.store.update_dead_letter(id, &letter)? {
                    marked += 1;
                }
            }
            match page.next {
                Some(seq) => after = Some(seq),
                None => break,
            }
        }
        self.inner.outbox.dead_letters_changed();
        // Wake the dispatcher as new events would.
        self.inner.outbox.nudge();
        Ok(marked)
    }

    /// Drops events every subscription is done with; returns how many.
    pub fn trim_outbox(&self) -> Result<usize> {
        let mut upto = u64::MAX;
        for webhook in self.inner.store.webhooks()? {
            upto = upto.min(self.inner.store.cursor(&webhook.id)?.unwrap_or(0));
        }
        self.inner.store.outbox_trim(upto)
    }
}
