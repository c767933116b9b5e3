//! `round_robin`: weighted fair rotation without catch-up bursts.
//!
//! This is stride scheduling: each rep carries a *pass*; the lowest pass goes next and
//! advances by `1 / weight`, so a rep of weight 2 is picked twice as often. The
//! territory's virtual time is the pass of the last pick. A rep that was away (or at
//! capacity) while others advanced has a pass behind that time; it is lifted to the
//! current time, so on return it takes its normal turn instead of a burst of leads it
//! "missed". Rotation state is in memory: after a restart every rep starts level.

use std::collections::HashMap;

use super::{Candidate, Ranking, Strategy};
use crate::domain::{Lead, RepId};

/// Weighted fair rotation; see the module docs.
#[derive(Debug, Default, Clone)]
pub struct RoundRobin {
    pass: HashMap<RepId, f64>,
    virtual_time: f64,
}

impl RoundRobin {
    fn effective_pass(&self, rep: &RepId) -> f64 {
        self.pass
            .get(rep)
            .copied()
            .unwrap_or(self.virtual_time)
            .max(self.virtual_time)
    }
}

impl Strategy for RoundRobin {
    fn decided_by(&self) -> String {
        "builtin:round_robin".into()
    }

    fn rank(&self, _lead: &Lead, candidates: &[Candidate<'_>]) -> Ranking {
        let passes: Vec<f64> = candidates
            .iter()
            .map(|c| self.effective_pass(c.id))
            .collect();
        let mut order: Vec<usize> = (0..candidates.len()).collect();
        order.sort_by(|&a, &b| {
            passes[a]
                .total_cmp(&passes[b])
                .then_with(|| candidates[a].id.cmp(candidates[b].id))
        });
        Ranking::new(order, "round robin: next in weighted rotation")
    }

    fn on_assigned(&mut self, rep: &RepId, weight: f64) {
        let pass = self.effective_pass(rep);
        self.virtual_time = pass;
        self.pass.insert(rep.clone(), pass + 1.0 / weight);
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;

    /// Picks `n` leads from `reps` (all staying candidates), returning the picks.
    fn pick(rr: &mut RoundRobin, reps: &[Owned], n: usize) -> Vec<String> {
        let c = view(reps);
        (0..n)
            .map(|_| {
                let first = rr.rank(&lead(None, 0.0), &c).order[0];
                rr.on_assigned(c[first].id, c[first].weight);
                c[first].id.to_string()
            })
            .collect()
    }

    #[test]
    fn equal_weights_rotate() {
        let mut rr = RoundRobin::default();
        let reps = [rep("a", 0, 9), rep("b", 0, 9), rep("c", 0, 9)];
        assert_eq!(pick(&mut rr, &reps, 6), ["a", "b", "c", "a", "b", "c"]);
    }

    #[test]
    fn weights_set_the_share() {
        let mut rr = RoundRobin::default();
        let mut double = rep("double", 0, 99);
        double.weight = 2.0;
        let reps = [double, rep("single", 0, 99)];
        let picks = pick(&mut rr, &reps, 300);
        let doubles = picks.iter().filter(|p| *p == "double").count();
        assert_eq!(doubles, 200, "{picks:?}");
    }

    #[test]
    fn a_returning_rep_gets_no_catch_up_burst() {
        let mut rr = RoundRobin::default();
        let all = [rep("a", 0, 99), rep("b", 0, 99), rep("c", 0, 99)];
        pick(&mut rr, &all, 3);
        // c goes away while a and b take 20 leads.
        let without_c = [rep("a", 0, 99), rep("b", 0, 99)];
        pick(&mut rr, &without_c, 20);
        // Back: c takes one turn in three, not the next ten leads.
        let picks = pick(&mut rr, &all, 9);
        let c_count = picks.iter().filter(|p| *p == "c").count();
        assert_eq!(c_count, 3, "{picks:?}");
        assert_ne!(&picks[..2], ["c", "c"], "{picks:?}");
    }

    #[test]
    fn rotation_advances_only_for_the_rep_actually_assigned() {
        let mut rr = RoundRobin::default();
        let reps = [rep("a", 0, 9), rep("b", 0, 9), rep("c", 0, 9)];
        let c = view(&reps);
        let order = |rr: &RoundRobin| ids(&rr.rank(&lead(None, 0.0), &c), &c);
        // Ranking alone (simulations, refused reservations) moves nobody.
        for _ in 0..5 {
            assert_eq!(order(&rr), ["a", "b", "c"]);
        }
        // `a` was ranked first but `b` took the lead (say `a` filled up meanwhile):
        // only `b` goes to the back; `a` keeps its turn.
        rr.on_assigned(c[1].id, c[1].weight);
        for _ in 0..3 {
            assert_eq!(order(&rr), ["a", "c", "b"]);
        }
        rr.on_assigned(c[0].id, c[0].weight);
        assert_eq!(order(&rr), ["c", "a", "b"]);
        rr.on_assigned(c[2].id, c[2].weight);
        assert_eq!(order(&rr), ["a", "b", "c"], "a full round, level again");
    }
}
