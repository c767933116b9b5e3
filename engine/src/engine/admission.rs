//! Admission: a bound on the work in flight, so overload is refused at the door.
//!
//! Behind intake sit queues that cannot refuse: the territory actors' mailboxes and
//! the committer's channel. Bounding what enters bounds them all, and refusing at once
//! (no waiting) keeps an overloaded engine's answers fast: a caller past the limit
//! learns it in microseconds and can retry, instead of joining a queue whose delay
//! grows for as long as the overload lasts.
//!
//! Leads (intake, batches, lead events, reassignments) share one limit, counted per
//! lead. Admin writes are serialized anyway; they get a small limit of their own so
//! waiting writers cannot pile up, and so a flood of leads never locks operators out.
//!
//! A place is held as long as the call's future: a caller that drops the future early
//! gives the place back while its lead may still be queued inside. The server runs
//! each intake call in a task of its own so a client hanging up cannot do that.

use tokio::sync::{Semaphore, SemaphorePermit, TryAcquireError};

use super::Engine;
use crate::error::{EngineError, Result};

/// Most admin writes admitted at once (one runs, the others wait their turn).
pub(super) const MAX_ADMIN_WRITES: usize = 64;

/// The two limits and their permits.
pub(super) struct Admission {
    leads: Semaphore,
    lead_limit: usize,
    admin: Semaphore,
}

impl Admission {
    /// Admits up to `lead_limit` leads at once.
    pub(super) fn new(lead_limit: usize) -> Admission {
        let lead_limit = lead_limit.clamp(1, Semaphore::MAX_PERMITS);
        Admission {
            leads: Semaphore::new(lead_limit),
            lead_limit,
            admin: Semaphore::new(MAX_ADMIN_WRITES),
        }
    }
}

fn refuse(e: TryAcquireError, what: &'static str, sem: &Semaphore, limit: usize) -> EngineError {
    match e {
        TryAcquireError::Closed => EngineError::ShuttingDown,
        TryAcquireError::NoPermits => EngineError::Overloaded {
            what,
            in_flight: limit.saturating_sub(sem.available_permits()),
            limit,
        },
    }
}

impl Engine {
    /// Admits `n` leads, or refuses at once. A batch larger than the whole limit takes
    /// all of it, so it runs alone rather than never.
    pub(super) fn admit_leads(&self, n: usize) -> Result<SemaphorePermit<'_>> {
        let a = &self.inner.admission;
        let want = n.min(a.lead_limit) as u32;
        a.leads.try_acquire_many(want).map_err(|e| {
            self.inner
                .metrics
                .overload_rejections
                .with_label_values(&["leads"])
                .inc();
            refuse(e, "leads", &a.leads, a.lead_limit)
        })
    }

    /// Admits one admin write, or refuses at once.
    pub(super) fn admit_admin(&self) -> Result<SemaphorePermit<'_>> {
        let a = &self.inner.admission;
        a.admin.try_acquire().map_err(|e| {
            self.inner
                .metrics
                .overload_rejections
                .with_label_values(&["admin_writes"])
                .inc();
            refuse(e, "admin writes", &a.admin, MAX_ADMIN_WRITES)
        })
    }

    /// Leads admitted and not yet answered.
    pub fn leads_in_flight(&self) -> usize {
        let a = &self.inner.admission;
        a.lead_limit - a.leads.available_permits()
    }

    /// The limit on leads in flight this engine was opened with.
    pub fn max_in_flight_leads(&self) -> usize {
        self.inner.admission.lead_limit
    }
}
