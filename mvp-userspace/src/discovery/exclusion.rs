//! Tracking of the CRD/APIService exclusion set over time (upstream
//! `gv_exclusion_manager.go`, upstream-mvp.md §3.3): the set is the group/versions currently
//! backed by CRDs or aggregated APIServices ("active") plus those that left the active set
//! less than a grace period ago ("recently deleted", upstream: 5 minutes) — a peer's
//! discovery snapshot may still list a just-deleted CRD, and must not be routed to or merged
//! for it. Time is passed in, so the tracker is pure.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::served::ExclusionSet;

/// Upstream's grace period for recently deleted group/versions.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(5 * 60);

#[derive(Debug, Clone)]
pub struct ExclusionTracker {
    grace: Duration,
    active: ExclusionSet,
    /// (group, version) → when it left the active set.
    recently_deleted: HashMap<(String, String), Instant>,
}

impl ExclusionTracker {
    pub fn new(grace: Duration) -> Self {
        ExclusionTracker {
            grace,
            active: ExclusionSet::default(),
            recently_deleted: HashMap::new(),
        }
    }

    /// Replace the active set (computed from the CRD and APIService lists). Group/versions
    /// that left it are remembered from `now`; ones that came back are no longer "deleted".
    /// Returns whether the active set changed.
    pub fn set_active(&mut self, active: ExclusionSet, now: Instant) -> bool {
        if active == self.active {
            return false;
        }
        for (group, version) in self.active.iter() {
            if !active.contains(group, version) {
                self.recently_deleted
                    .insert((group.to_owned(), version.to_owned()), now);
            }
        }
        for (group, version) in active.iter() {
            self.recently_deleted
                .remove(&(group.to_owned(), version.to_owned()));
        }
        self.active = active;
        true
    }

    /// Forget deleted group/versions whose grace period has passed. Returns whether any was
    /// forgotten (the exclusion set then shrinks and views must be rebuilt).
    pub fn reap(&mut self, now: Instant) -> bool {
        let before = self.recently_deleted.len();
        let grace = self.grace;
        self.recently_deleted
            .retain(|_, deleted_at| now.saturating_duration_since(*deleted_at) < grace);
        self.recently_deleted.len() != before
    }

    /// Active ∪ recently deleted.
    pub fn exclusions(&self) -> ExclusionSet {
        let deleted: ExclusionSet = self
            .recently_deleted
            .keys()
            .map(|(group, version)| (group.clone(), version.clone()))
            .collect();
        self.active.union(&deleted)
    }
}

impl Default for ExclusionTracker {
    fn default() -> Self {
        ExclusionTracker::new(DEFAULT_GRACE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(pairs: &[(&str, &str)]) -> ExclusionSet {
        pairs.iter().copied().collect()
    }

    #[test]
    fn exclusions_are_active_union_deleted() {
        // §8 case 15.
        let start = Instant::now();
        let mut tracker = ExclusionTracker::default();
        assert!(tracker.exclusions().is_empty());
        tracker.set_active(set(&[("a", "v1"), ("b", "v1")]), start);
        tracker.set_active(set(&[("b", "v1")]), start + Duration::from_secs(1));
        let exclusions = tracker.exclusions();
        assert!(exclusions.contains("a", "v1") && exclusions.contains("b", "v1"));
        assert_eq!(exclusions.len(), 2);
    }

    #[test]
    fn active_set_diff() {
        // §8 case 17: identical → no change; added, removed, same size but different → change.
        let now = Instant::now();
        let mut tracker = ExclusionTracker::default();
        assert!(tracker.set_active(set(&[("a", "v1")]), now));
        assert!(!tracker.set_active(set(&[("a", "v1")]), now));
        assert!(tracker.set_active(set(&[("a", "v1"), ("b", "v1")]), now));
        assert!(tracker.set_active(set(&[("b", "v1")]), now));
        assert!(tracker.set_active(set(&[("c", "v1")]), now));
        assert!(!tracker.set_active(set(&[("c", "v1")]), now));
    }

    #[test]
    fn reaping_honours_the_grace_period() {
        // §8 case 16: grace 100 ms: older entries go, newer stay; grace 50 ms: all older go.
        let start = Instant::now();
        let mut tracker = ExclusionTracker::new(Duration::from_millis(100));
        tracker.set_active(set(&[("old", "v1"), ("new", "v1")]), start);
        tracker.set_active(set(&[("new", "v1")]), start); // "old" deleted at start
        tracker.set_active(set(&[]), start + Duration::from_millis(80)); // "new" at +80ms
        assert!(tracker.reap(start + Duration::from_millis(120)));
        let exclusions = tracker.exclusions();
        assert!(!exclusions.contains("old", "v1"));
        assert!(exclusions.contains("new", "v1"));
        assert!(
            !tracker.reap(start + Duration::from_millis(150)),
            "nothing more to reap yet"
        );
        assert!(tracker.reap(start + Duration::from_millis(180)));
        assert!(tracker.exclusions().is_empty());

        let mut tracker = ExclusionTracker::new(Duration::from_millis(50));
        tracker.set_active(set(&[("a", "v1"), ("b", "v1")]), start);
        tracker.set_active(set(&[]), start);
        assert!(tracker.reap(start + Duration::from_millis(60)));
        assert!(tracker.exclusions().is_empty());
    }

    #[test]
    fn a_group_version_coming_back_is_no_longer_deleted() {
        let start = Instant::now();
        let mut tracker = ExclusionTracker::new(Duration::from_millis(10));
        tracker.set_active(set(&[("a", "v1")]), start);
        tracker.set_active(set(&[]), start);
        tracker.set_active(set(&[("a", "v1")]), start + Duration::from_millis(1));
        assert!(!tracker.reap(start + Duration::from_secs(1)));
        assert!(tracker.exclusions().contains("a", "v1"));
    }
}
