//! `least_loaded`: the rep with the lowest load relative to capacity and weight.

use std::cmp::Ordering;

use super::{Candidate, Ranking, Strategy};
use crate::domain::Lead;

/// Lowest `load / capacity / weight` first; ties go to the rep idle longest (never
/// assigned counts as longest), then to the smaller id so the order is total.
#[derive(Debug, Default, Clone, Copy)]
pub struct LeastLoaded;

/// A candidate's relative load; lower is better.
pub(crate) fn relative_load(c: &Candidate<'_>) -> f64 {
    f64::from(c.load) / f64::from(c.capacity.max(1)) / c.weight
}

/// The least-loaded order, shared with `rules` as its last criterion.
pub(crate) fn compare(a: &Candidate<'_>, b: &Candidate<'_>) -> Ordering {
    relative_load(a)
        .total_cmp(&relative_load(b))
        .then_with(|| a.last_assigned_at.cmp(&b.last_assigned_at))
        .then_with(|| a.id.cmp(b.id))
}

impl Strategy for LeastLoaded {
    fn decided_by(&self) -> String {
        "builtin:least_loaded".into()
    }

    fn rank(&self, _lead: &Lead, candidates: &[Candidate<'_>]) -> Ranking {
        let mut order: Vec<usize> = (0..candidates.len()).collect();
        order.sort_by(|&a, &b| compare(&candidates[a], &candidates[b]));
        let reason = match order.first().map(|&i| &candidates[i]) {
            Some(c) => format!("least loaded: {}/{} open", c.load, c.capacity),
            None => "no candidates".into(),
        };
        Ranking::new(order, reason)
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;

    #[test]
    fn lowest_relative_load_first() {
        let reps = [rep("a", 5, 10), rep("b", 1, 10), rep("c", 1, 3)];
        let c = view(&reps);
        let r = LeastLoaded.rank(&lead(None, 0.0), &c);
        assert_eq!(ids(&r, &c), ["b", "c", "a"]);
        assert_eq!(r.reason, "least loaded: 1/10 open");
    }

    #[test]
    fn weight_scales_the_load() {
        // 4/10 at weight 2 counts as 0.2, below 3/10 at weight 1.
        let mut heavy = rep("heavy", 4, 10);
        heavy.weight = 2.0;
        let reps = [rep("plain", 3, 10), heavy];
        let c = view(&reps);
        assert_eq!(
            ids(&LeastLoaded.rank(&lead(None, 0.0), &c), &c),
            ["heavy", "plain"]
        );
    }

    #[test]
    fn ties_go_to_the_longest_idle_then_the_id() {
        let mut recent = rep("a", 1, 10);
        recent.last = Some(2_000);
        let mut older = rep("b", 1, 10);
        older.last = Some(1_000);
        let never = rep("c", 1, 10);
        let never_too = rep("d", 1, 10);
        let reps = [recent, never_too, older, never];
        let c = view(&reps);
        assert_eq!(
            ids(&LeastLoaded.rank(&lead(None, 0.0), &c), &c),
            ["c", "d", "b", "a"]
        );
    }
}
