//! Reps and territories: configuration that reaches the actors as messages, so a
//! change takes effect for the next lead.

use std::collections::VecDeque;
use std::sync::Arc;

use actix::dev::ToEnvelope;
use actix::{Actor, Addr, Handler, Message};

use super::{Engine, ReassignReason, RepEntry, TerritoryEntry};
use crate::actors::rep::{Reconfigure, Retire, Snapshot, Stop};
use crate::actors::territory::{self, AddMember, Inspect, RemoveMember};
use crate::actors::{RepSnapshot, TerritorySnapshot};
use crate::domain::{RepId, RepInput, TerritoryId, TerritoryInput};
use crate::error::{EngineError, Result};
use crate::store::commit::{Applied, Change, settle};

/// Rounds of reassignment before deleting a rep gives up on leads that keep arriving.
const DELETE_ROUNDS: usize = 8;

impl Engine {
    /// Creates or replaces a rep. Returns it with its load, and whether it is new.
    /// Load is kept across replacement; lowering capacity below load is allowed (the
    /// rep takes no new leads until load drops).
    pub async fn upsert_rep(&self, id: RepId, input: RepInput) -> Result<(RepSnapshot, bool)> {
        let _permit = self.enter()?;
        let _admitted = self.admit_admin()?;
        let rep = Arc::new(input.validate(id)?);
        let _admin = self.inner.admin.lock().await;
        {
            let dir = self.directory();
            if let Some(missing) = rep
                .territories
                .iter()
                .find(|t| !dir.territories.contains_key(*t))
            {
                return Err(EngineError::TerritoryNotFound(missing.clone()));
            }
        }
        let applied = settle(
            self.inner
                .committer
                .submit(Change::PutRep(Box::new((*rep).clone()))),
        )
        .await?;
        let Applied::RepStored { created, load } = applied else {
            return Err(EngineError::Internal(format!(
                "put rep answered {applied:?}"
            )));
        };
        let existing = {
            let dir = self.directory();
            dir.reps.get(&rep.id).map(|e| {
                let territories: Vec<_> = rep
                    .territories
                    .iter()
                    .filter_map(|t| dir.territories.get(t).map(|e| e.addr.clone()))
                    .collect();
                let joined: Vec<_> = rep
                    .territories
                    .iter()
                    .filter(|t| !e.rep.territories.contains(t))
                    .filter_map(|t| dir.territories.get(t).map(|e| e.addr.clone()))
                    .collect();
                let left: Vec<_> = e
                    .rep
                    .territories
                    .iter()
                    .filter(|t| !rep.territories.contains(t))
                    .filter_map(|t| dir.territories.get(t).map(|e| e.addr.clone()))
                    .collect();
                (e.addr.clone(), territories, joined, left)
            })
        };
        let snap = match existing {
            Some((addr, territories, joined, left)) => {
                let snap = addr
                    .send(Reconfigure {
                        rep: rep.clone(),
                        territories,
                    })
                    .await
                    .map_err(|_| EngineError::ShuttingDown)?;
                for t in left {
                    t.do_send(RemoveMember(rep.id.clone()));
                }
                for t in joined {
                    t.do_send(AddMember(addr.clone(), snap.clone()));
                }
                self.directory_mut().reps.insert(
                    rep.id.clone(),
                    RepEntry {
                        addr,
                        rep: rep.clone(),
                    },
                );
                snap
            }
            None => {
                let mut dir = self.directory_mut();
                let addr = self.start_rep(&dir, rep.clone(), load, None);
                dir.reps.insert(
                    rep.id.clone(),
                    RepEntry {
                        addr,
                        rep: rep.clone(),
                    },
                );
                RepSnapshot {
                    rep,
                    load,
                    last_assigned_at: None,
                    retiring: false,
                    version: 0,
                }
            }
        };
        // Leads this rep has not touched leave with it, where the territory asks. The
        // rep is stored whatever happens here, and the answer must say so: a lead that
        // cannot move now stays until its first-touch deadline, which the SLA sweep
        // enforces.
        match self.reroute_away(&snap.rep.id, snap.rep.status).await {
            Ok(0) => {}
            Ok(moved) => {
                tracing::info!(rep = %snap.rep.id, moved, "rep away; untouched leads re-routed")
            }
            Err(e) => tracing::warn!(rep = %snap.rep.id, error = %e,
                "rep away, but its untouched leads could not all be re-routed; the rest \
                 wait for their first-touch deadlines"),
        }
        Ok((snap, created))
    }

    /// Deletes a rep. Refused with `RepHasOpenLeads` while it owns open leads, unless
    /// `reassign`, which first re-routes them within their territories.
    pub async fn delete_rep(&self, id: &RepId, reassign: bool) -> Result<()> {
        let _permit = self.enter()?;
        let _admitted = self.admit_admin()?;
        let _admin = self.inner.admin.lock().await;
        let addr = self
            .directory()
            .reps
            .get(id)
            .map(|e| e.addr.clone())
            .ok_or_else(|| EngineError::RepNotFound(id.clone()))?;
        // From here the rep takes no new leads; its load counts reservations in flight.
        let retired = addr
            .send(Retire(true))
            .await
            .map_err(|_| EngineError::ShuttingDown)?;
        let result = self.empty_rep(id, &addr, retired.load, reassign).await;
        if let Err(e) = result {
            let _ = addr.send(Retire(false)).await;
            return Err(e);
        }
        if let Err(e) = settle(self.inner.committer.submit(Change::DeleteRep(id.clone()))).await {
            let _ = addr.send(Retire(false)).await;
            return Err(e);
        }
        let entry = self.directory_mut().reps.remove(id);
        if let Some(entry) = entry {
            let dir = self.directory();
            for t in &entry.rep.territories {
                if let Some(t) = dir.territories.get(t) {
                    t.addr.do_send(RemoveMember(id.clone()));
                }
            }
        }
        addr.do_send(Stop);
        Ok(())
    }

    /// Makes sure a retiring rep holds no open lead, re-routing them if allowed.
    async fn empty_rep(
        &self,
        id: &RepId,
        addr: &actix::Addr<crate::actors::rep::RepActor>,
        load: u32,
        reassign: bool,
    ) -> Result<()> {
        let mut load = load;
        for _ in 0..DELETE_ROUNDS {
            let open = self.inner.store.open_leads_of(id)?;
            if load == 0 && open.is_empty() {
                return Ok(());
            }
            if !reassign {
                return Err(EngineError::RepHasOpenLeads {
                    rep: id.clone(),
                    open: load.max(open.len() as u32),
                });
            }
            for lead in open {
                match self.reassign_inner(lead, ReassignReason::RepDeleted).await {
                    // Closed or moved meanwhile: nothing left to do for it.
                    Ok(_) | Err(EngineError::LeadClosed(_) | EngineError::LeadNotAssigned(_)) => {}
                    Err(e) => return Err(e),
                }
            }
            // Reservations that were in flight when the rep retired land now.
            self.settle().await?;
            load = addr
                .send(Snapshot)
                .await
                .map_err(|_| EngineError::ShuttingDown)?
                .load;
        }
        Err(EngineError::RepHasOpenLeads {
            rep: id.clone(),
            open: load,
        })
    }

    /// Every rep with its current load, by id.
    pub async fn reps(&self) -> Result<Vec<RepSnapshot>> {
        let addrs: Vec<_> = {
            let dir = self.directory();
            dir.reps
                .iter()
                .map(|(id, e)| (id.clone(), e.addr.clone()))
                .collect()
        };
        Ok(ask_all(addrs, || Snapshot).await)
    }

    /// One rep with its current load.
    pub async fn rep(&self, id: &RepId) -> Result<RepSnapshot> {
        let addr = self
            .directory()
            .reps
            .get(id)
            .map(|e| e.addr.clone())
            .ok_or_else(|| EngineError::RepNotFound(id.clone()))?;
        addr.send(Snapshot)
            .await
            .map_err(|_| EngineError::RepNotFound(id.clone()))
    }

    /// Creates or replaces a territory. Returns whether it is new. Its regions may not
    /// overlap another territory's, and only one territory may be the default.
    pub async fn upsert_territory(&self, id: TerritoryId, input: TerritoryInput) -> Result<bool> {
        let _permit = self.enter()?;
        let _admitted = self.admit_admin()?;
        let territory = input.validate(id)?;
        // Under the admin lock, so a plugin cannot be deleted between this check and
        // the territory's commit.
        let _admin = self.inner.admin.lock().await;
        let strategy = self.strategy_for(&territory)?;
        let shadow = self.shadow_for(&territory)?;
        self.check_plugin_config(&territory)?;
        let mut regions = self.directory().regions.clone();
        regions
            .assign(&territory.id, &territory.regions, territory.default)
            .map_err(EngineError::TerritoryConflict)?;
        let applied = settle(
            self.inner
                .committer
                .submit(Change::PutTerritory(Box::new(territory.clone()))),
        )
        .await?;
        let Applied::TerritoryStored { created } = applied else {
            return Err(EngineError::Internal(format!(
                "put territory answered {applied:?}"
            )));
        };
        let territory = Arc::new(territory);
        let mut dir = self.directory_mut();
        dir.regions = regions;
        match dir.territories.get_mut(&territory.id) {
            Some(entry) => {
                entry
                    .addr
                    .do_send(territory::Reconfigure(territory.clone(), strategy, shadow));
                entry.territory = territory;
            }
            None => {
                let addr =
                    self.start_territory(territory.clone(), strategy, shadow, VecDeque::new());
                dir.territories
                    .insert(territory.id.clone(), TerritoryEntry { addr, territory });
            }
        }
        Ok(created)
    }

    /// Every territory with its members' load and queue, by id.
    pub async fn territories(&self) -> Result<Vec<TerritorySnapshot>> {
        let addrs: Vec<_> = {
            let dir = self.directory();
            dir.territories
                .iter()
                .map(|(id, e)| (id.clone(), e.addr.clone()))
                .collect()
        };
        Ok(ask_all(addrs, || Inspect).await)
    }

    /// One territory with its members' load and queue.
    pub async fn territory(&self, id: &TerritoryId) -> Result<TerritorySnapshot> {
        let addr = self
            .directory()
            .territories
            .get(id)
            .map(|e| e.addr.clone())
            .ok_or_else(|| EngineError::TerritoryNotFound(id.clone()))?;
        addr.send(Inspect)
            .await
            .map_err(|_| EngineError::TerritoryNotFound(id.clone()))
    }
}

/// Asks every actor the same question and returns the answers in key order. Every
/// request is sent before any answer is awaited, so the actor thread serves them in
/// one wake-up rather than one cross-thread round trip each. Actors stopped meanwhile
/// are left out.
async fn ask_all<K: Ord, A, M>(mut addrs: Vec<(K, Addr<A>)>, msg: impl Fn() -> M) -> Vec<M::Result>
where
    A: Actor + Handler<M>,
    A::Context: ToEnvelope<A, M>,
    M: Message + Send + 'static,
    M::Result: Send,
{
    addrs.sort_by(|a, b| a.0.cmp(&b.0));
    let pending: Vec<_> = addrs.iter().map(|(_, addr)| addr.send(msg())).collect();
    let mut answers = Vec::with_capacity(pending.len());
    for request in pending {
        if let Ok(answer) = request.await {
            answers.push(answer);
        }
    }
    answers
}
