//! Tests of the stick table: the structural invariants checked the slow way, a model-based fuzz, and unit tests.

use super::*;
use std::collections::HashMap;

impl StickTable {
    /// Every structural invariant, checked the slow way.
    fn check_invariants(&self) -> Result<(), String> {
        let mut live = 0;
        let mut tombstones = 0;
        let mut in_tree = 0;
        let mut refs: HashMap<u32, u32> = HashMap::new();
        for (s, slot) in self.slots.iter().enumerate() {
            let s = s as u32;
            if slot.server == FREE {
                continue;
            }
            if self.find(&slot.key) != Some(s) {
                return Err(format!("slot {s} not found by its key"));
            }
            if slot.is_live() {
                live += 1;
                *refs.entry(slot.server).or_default() += 1;
                if slot.in_tree {
                    in_tree += 1;
                    if !self.remote_order.contains(&(slot.deadline, slot.seq, s)) {
                        return Err(format!("slot {s} missing from the tree"));
                    }
                }
            } else {
                tombstones += 1;
                if slot.log_id == 0 {
                    return Err(format!("tombstone {s} not in the log"));
                }
            }
        }
        if live != self.live || tombstones != self.tombstones {
            return Err(format!(
                "counts {live}/{tombstones} vs {}/{}",
                self.live, self.tombstones
            ));
        }
        if self.index.len() != live + tombstones {
            return Err("index size".into());
        }
        if in_tree != self.remote_order.len() {
            return Err("tree size".into());
        }
        for (id, count) in &refs {
            let name = self.labels.name(*id).ok_or("label gone")?;
            let _ = (name, count);
        }
        if refs.len() != self.labels.len() {
            return Err(format!(
                "{} labels used, {} interned",
                refs.len(),
                self.labels.len()
            ));
        }
        // Recent list: consistent links, oldest to newest in (deadline, seq) order.
        let mut n = 0;
        let mut s = self.recent_tail;
        let mut prev: Option<(u64, u32)> = None;
        let mut newer_of_prev = NIL;
        while s != NIL {
            let slot = &self.slots[s as usize];
            if slot.in_tree || !slot.is_live() {
                return Err(format!("slot {s} in the recent list"));
            }
            if slot.older != newer_of_prev {
                return Err(format!("slot {s} back link"));
            }
            if prev.is_some_and(|p| p > (slot.deadline, slot.seq)) {
                return Err(format!("recent list out of order at {s}"));
            }
            prev = Some((slot.deadline, slot.seq));
            newer_of_prev = s;
            n += 1;
            s = slot.newer;
        }
        if newer_of_prev != self.recent_head || n + in_tree != live {
            return Err("recent list head or length".into());
        }
        // Log: ids increasing above the floor, anchors exact.
        let mut n = 0;
        let mut s = self.log_head;
        let mut last = self.log_floor;
        let mut prev_slot = NIL;
        while s != NIL {
            let slot = &self.slots[s as usize];
            if slot.log_id <= last || slot.log_prev != prev_slot {
                return Err(format!("log order/link at slot {s}"));
            }
            if slot.log_id.is_multiple_of(ANCHOR_EVERY)
                != (self.anchors.get(&slot.log_id) == Some(&s))
            {
                return Err(format!("anchor of {}", slot.log_id));
            }
            last = slot.log_id;
            prev_slot = s;
            n += 1;
            s = slot.log_next;
        }
        if prev_slot != self.log_tail || n != self.log_len || self.anchors.len() > n {
            return Err("log tail, length or stray anchors".into());
        }
        if last >= self.next_id || self.log_len > self.log_capacity {
            return Err("log ids or capacity".into());
        }
        if self.live > remote_limit(self.spec.capacity) {
            return Err("memory guard".into());
        }
        Ok(())
    }
}

mod fuzz {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Call {
        Set(u8, u8),
        Lookup(u8),
        Remove(u8),
        Expire,
        Advance(u64),
        Back(u64),
        Remote(u64, u8, Option<u8>, Option<u64>),
        Entry(u8, u8, Option<u64>),
        BeginResync,
        EndResync,
        Spec(Option<u64>, usize),
        LogCapacity(usize),
        Granularity(u64),
        Retain(u8),
        Read(u64, usize),
        Snapshot(u32, usize),
    }

    fn call() -> impl Strategy<Value = Call> {
        let k = 0..20u8;
        let srv = 0..4u8;
        prop_oneof![
            6 => (k.clone(), srv.clone()).prop_map(|(k, s)| Call::Set(k, s)),
            4 => k.clone().prop_map(Call::Lookup),
            2 => k.clone().prop_map(Call::Remove),
            1 => Just(Call::Expire),
            3 => (0..300u64).prop_map(Call::Advance),
            1 => (0..300u64).prop_map(Call::Back),
            4 => (0..40u64, k.clone(), prop::option::of(srv.clone()), prop::option::of(0..2000u64))
                .prop_map(|(id, k, s, r)| Call::Remote(id, k, s, r)),
            2 => (k.clone(), srv.clone(), prop::option::of(0..2000u64)).prop_map(|(k, s, r)| Call::Entry(k, s, r)),
            1 => Just(Call::BeginResync),
            1 => Just(Call::EndResync),
            1 => (prop::option::of(0..1000u64), 0..12usize).prop_map(|(t, c)| Call::Spec(t, c)),
            1 => (0..30usize).prop_map(Call::LogCapacity),
            1 => (0..100u64).prop_map(Call::Granularity),
            1 => srv.clone().prop_map(Call::Retain),
            2 => (0..200u64, 0..10usize).prop_map(|(a, m)| Call::Read(a, m)),
            1 => (0..40u32, 0..10usize).prop_map(|(c, m)| Call::Snapshot(c, m)),
        ]
    }

    fn key(k: u8) -> StickKey {
        if k == 0 {
            StickKey::Service
        } else {
            StickKey::SourceIp(std::net::IpAddr::from([10, 0, 0, k]))
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        /// Any sequence of any calls keeps every structural invariant (and never panics).
        #[test]
        fn any_call_sequence_keeps_invariants(
            timeout in prop::option::of(1..1000u64),
            capacity in 0..10usize,
            calls in prop::collection::vec(call(), 1..300),
        ) {
            let mut t = StickTable::new(TableSpec { timeout_ms: timeout, capacity });
            let mut now = 100u64;
            let servers = ["a", "b", "c", "d"];
            for call in calls {
                match call {
                    Call::Set(k, s) => t.set(&key(k), servers[s as usize], now),
                    Call::Lookup(k) => { t.lookup(&key(k), now); }
                    Call::Remove(k) => { t.remove(&key(k), now); }
                    Call::Expire => { t.expire(now); }
                    Call::Advance(d) => now += d,
                    Call::Back(d) => now = now.saturating_sub(d),
                    Call::Remote(id, k, s, r) => {
                        t.apply_remote(&Update {
                            id,
                            key: key(k),
                            server: s.map(|s| servers[s as usize].into()),
                            remaining_ms: r,
                        }, now);
                    }
                    Call::Entry(k, s, r) => t.apply_remote_entry(&Entry {
                        key: key(k),
                        server: servers[s as usize].into(),
                        remaining_ms: r,
                    }, now),
                    Call::BeginResync => t.begin_resync(),
                    Call::EndResync => { t.end_resync(); }
                    Call::Spec(timeout_ms, capacity) => t.set_spec(TableSpec { timeout_ms, capacity }, now),
                    Call::LogCapacity(n) => t.set_log_capacity(n),
                    Call::Granularity(g) => t.set_touch_granularity_ms(g),
                    Call::Retain(s) => { t.retain_servers(|l| l != servers[s as usize]); }
                    Call::Read(after, max) => {
                        if let Ok(batch) = t.updates_since(after, max, now) {
                            prop_assert!(batch.updates.len() <= max);
                            prop_assert!(batch.updates.iter().all(|u| u.id > after && u.id <= batch.up_to));
                            prop_assert!(batch.updates.windows(2).all(|w| w[0].id < w[1].id));
                        }
                    }
                    Call::Snapshot(c, max) => {
                        let (entries, _) = t.snapshot_chunk(SnapshotCursor(c), max, now);
                        prop_assert!(entries.len() <= max.max(1));
                        prop_assert!(entries.iter().all(|e| e.remaining_ms.is_none_or(|r| r > 0)));
                    }
                }
                if let Err(e) = t.check_invariants() {
                    return Err(TestCaseError::fail(format!("after {call:?}: {e}")));
                }
            }
        }
    }
}

mod unit {
    use super::*;

    fn ip(last: u8) -> StickKey {
        StickKey::SourceIp(std::net::IpAddr::from([10, 0, 0, last]))
    }

    fn timed(timeout_ms: u64, capacity: usize) -> StickTable {
        StickTable::new(TableSpec {
            timeout_ms: Some(timeout_ms),
            capacity,
        })
    }

    fn label(table: &mut StickTable, key: &StickKey, now: u64) -> Option<String> {
        table.lookup(key, now).map(|l| l.to_string())
    }

    fn all_updates(table: &StickTable, after: u64, now: u64) -> Vec<Update> {
        table.updates_since(after, usize::MAX, now).unwrap().updates
    }

    #[test]
    fn set_lookup_remove() {
        let mut t = timed(1000, 10);
        assert_eq!(label(&mut t, &ip(1), 0), None);
        t.set(&ip(1), "a", 0);
        t.set(&StickKey::Service, "b", 0);
        assert_eq!(label(&mut t, &ip(1), 10).as_deref(), Some("a"));
        assert_eq!(label(&mut t, &StickKey::Service, 10).as_deref(), Some("b"));
        t.set(&ip(1), "c", 20);
        assert_eq!(label(&mut t, &ip(1), 30).as_deref(), Some("c"));
        assert_eq!(t.len(), 2);
        assert_eq!(t.remove(&ip(1), 40).as_deref(), Some("c"));
        assert_eq!(t.remove(&ip(1), 40), None);
        assert_eq!(label(&mut t, &ip(1), 50), None);
        assert_eq!(t.len(), 1);
        assert_eq!(t.stats().servers, 1, "labels a and c are released");
    }

    #[test]
    fn expiry_counts_from_last_use() {
        let mut t = timed(1000, 10);
        t.set(&ip(1), "a", 0);
        t.set(&ip(2), "a", 0);
        assert!(t.lookup(&ip(1), 900).is_some()); // now lives until 1900
        assert_eq!(t.peek(&ip(1), 950).and_then(|e| e.remaining_ms), Some(950));
        assert_eq!(t.expire(999), 0);
        assert_eq!(t.expire(1000), 1, "ip(2) expires at 1000 exactly");
        assert!(t.peek(&ip(2), 1000).is_none());
        assert!(t.lookup(&ip(1), 1899).is_some());
        assert_eq!(label(&mut t, &ip(1), 2899), None, "expired at 2899");
        assert_eq!(t.len(), 0, "lookup dropped the expired entry");
        assert_eq!(t.stats().expired, 2);
    }

    #[test]
    fn bounded_expiry_sweep() {
        let mut t = timed(100, 100);
        for k in 0..10 {
            t.set(&ip(k), "a", u64::from(k));
        }
        assert_eq!(t.expire_up_to(200, 3), 3);
        assert_eq!(t.len(), 7);
        assert!(t.find(&ip(2)).is_none(), "the soonest expired went first");
        assert!(t.find(&ip(3)).is_some());
        assert_eq!(t.expire_up_to(200, 0), 0);
        assert_eq!(t.expire(200), 7);
    }

    #[test]
    fn never_expiring_table() {
        let mut t = StickTable::new(TableSpec::from_config(0, 2));
        assert_eq!(t.spec().timeout_ms, None);
        t.set(&ip(1), "a", 0);
        assert_eq!(t.expire(u64::MAX), 0);
        assert_eq!(label(&mut t, &ip(1), u64::MAX - 1).as_deref(), Some("a"));
        assert_eq!(t.peek(&ip(1), 5).and_then(|e| e.remaining_ms), None);
    }

    #[test]
    fn full_table_evicts_least_recently_used() {
        let mut t = timed(10_000, 3);
        t.set(&ip(1), "a", 0);
        t.set(&ip(2), "a", 1);
        t.set(&ip(3), "a", 2);
        t.lookup(&ip(1), 3); // ip(2) is now the least recently used
        t.set(&ip(4), "a", 4);
        assert_eq!(t.len(), 3);
        assert!(t.peek(&ip(2), 4).is_none());
        assert!(t.peek(&ip(1), 4).is_some());
        assert_eq!(t.stats().evicted, 1);
        // The eviction is replicated as a delete.
        let deletes: Vec<_> = all_updates(&t, 0, 4)
            .into_iter()
            .filter(|u| u.server.is_none())
            .map(|u| u.key)
            .collect();
        assert_eq!(deletes, vec![ip(2)]);
    }

    #[test]
    fn same_millisecond_uses_still_evict_in_use_order() {
        let mut t = StickTable::new(TableSpec::from_config(0, 2));
        t.set(&ip(1), "a", 5);
        t.set(&ip(2), "a", 5);
        t.lookup(&ip(1), 5);
        t.set(&ip(3), "a", 5);
        assert!(t.peek(&ip(2), 5).is_none());
        assert!(t.peek(&ip(1), 5).is_some());
    }

    #[test]
    fn full_table_prefers_dropping_an_expired_entry() {
        let mut t = timed(100, 2);
        t.set(&ip(1), "a", 0);
        t.set(&ip(2), "a", 50);
        t.set(&ip(3), "a", 120); // ip(1) expired at 100: expired, not evicted
        assert_eq!(t.stats().evicted, 0);
        assert_eq!(t.stats().expired, 1);
        assert!(all_updates(&t, 0, 120).iter().all(|u| u.server.is_some()));
    }

    #[test]
    fn log_keeps_one_item_per_key_with_the_current_state() {
        let mut t = timed(100_000, 10);
        t.set_touch_granularity_ms(0);
        t.set(&ip(1), "a", 0);
        t.set(&ip(2), "a", 0);
        for now in 1..1000 {
            t.lookup(&ip(1), now);
        }
        assert_eq!(t.stats().log_items, 2);
        let updates = all_updates(&t, 0, 1000);
        assert_eq!(updates.len(), 2);
        assert_eq!(updates[0].key, ip(2));
        assert_eq!(updates[1].key, ip(1));
        assert_eq!(updates[1].remaining_ms, Some(100_000 - 1));
        assert_eq!(updates[1].id, t.last_update_id());
        // Reading from the last id returns nothing; a reader at an old id gets only the latest.
        assert!(all_updates(&t, t.last_update_id(), 1000).is_empty());
        let (mid, last) = (updates[0].id, updates[1].id);
        assert_eq!(
            all_updates(&t, mid, 1000)
                .iter()
                .map(|u| u.id)
                .collect::<Vec<_>>(),
            vec![last]
        );
    }

    #[test]
    fn touches_are_logged_only_across_granularity_steps() {
        let mut t = timed(64_000, 10);
        assert_eq!(t.touch_granularity_ms(), 1000);
        t.set(&ip(1), "a", 0); // deadline 64000
        let id = t.last_update_id();
        t.lookup(&ip(1), 500); // 64500: same step
        t.set(&ip(1), "a", 999); // 64999: a same-server set is a touch
        assert_eq!(t.last_update_id(), id);
        t.lookup(&ip(1), 1000); // 65000: new step
        assert_eq!(t.last_update_id(), id + 1);
        t.set(&ip(1), "b", 1001); // server change: always logged
        assert_eq!(t.last_update_id(), id + 2);
        let u = all_updates(&t, id + 1, 1001);
        assert_eq!(u[0].server.as_deref(), Some("b"));
    }

    #[test]
    fn untimed_touches_are_not_logged() {
        let mut t = StickTable::new(TableSpec::from_config(0, 10));
        t.set(&StickKey::Service, "a", 0);
        let id = t.last_update_id();
        t.lookup(&StickKey::Service, 10);
        t.set(&StickKey::Service, "a", 20);
        assert_eq!(t.last_update_id(), id);
        t.set(&StickKey::Service, "b", 30);
        assert_eq!(t.last_update_id(), id + 1);
    }

    #[test]
    fn remove_then_set_supersedes_the_delete() {
        let mut t = timed(1000, 10);
        t.set(&ip(1), "a", 0);
        t.remove(&ip(1), 1);
        let u = all_updates(&t, 0, 1);
        assert_eq!(u.len(), 1);
        assert_eq!(u[0].server, None);
        assert_eq!(t.stats().tombstones, 1);
        t.set(&ip(1), "b", 2);
        let u = all_updates(&t, 0, 2);
        assert_eq!(u.len(), 1);
        assert_eq!(u[0].server.as_deref(), Some("b"));
        assert_eq!(t.stats().tombstones, 0);
    }

    #[test]
    fn bounded_log_asks_for_resync() {
        let mut t = StickTable::with_log_capacity(TableSpec::from_config(0, 100), 3);
        for i in 0..5 {
            t.set(&ip(i), "a", 0);
        }
        assert_eq!(t.stats().log_items, 3);
        assert_eq!(t.stats().log_floor, 2);
        assert!(t.updates_since(0, 10, 0).is_err());
        assert!(t.updates_since(1, 10, 0).is_err());
        let ok = t.updates_since(2, 10, 0).unwrap();
        assert_eq!(ok.updates.len(), 3);
        assert_eq!(ok.up_to, 5);
        // Tombstones dropped from the log are forgotten entirely.
        for i in 0..5 {
            t.remove(&ip(i), 0);
        }
        assert_eq!(t.stats().tombstones, 3);
        assert_eq!(t.stats().log_items, 3);
        assert!(t.is_empty());
    }

    #[test]
    fn reads_from_any_position_match_a_full_read() {
        // Enough churn that anchors come and go, items move and the log overflows.
        let mut t = StickTable::with_log_capacity(TableSpec::from_config(0, 700), 900);
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        for now in 0..20_000u64 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let k = ip((state % 251) as u8);
            let k = if state.is_multiple_of(7) {
                StickKey::Service
            } else {
                k
            };
            match (state >> 8) % 4 {
                0 => {
                    t.remove(&k, now);
                }
                1 => t.set(&k, "b", now),
                _ => t.set(&k, "a", now),
            }
        }
        let floor = t.stats().log_floor;
        let all = all_updates(&t, floor, 20_000);
        assert_eq!(all.len(), t.stats().log_items);
        assert!(all.windows(2).all(|w| w[0].id < w[1].id));
        for after in floor..=t.last_update_id() + 1 {
            let want: Vec<u64> = all.iter().map(|u| u.id).filter(|&id| id > after).collect();
            let got: Vec<u64> = all_updates(&t, after, 20_000)
                .iter()
                .map(|u| u.id)
                .collect();
            assert_eq!(got, want, "after {after}");
        }
    }

    #[test]
    fn updates_since_in_batches() {
        let mut t = timed(1000, 100);
        for i in 0..10 {
            t.set(&ip(i), "a", 0);
        }
        let mut after = 0;
        let mut got = Vec::new();
        loop {
            let batch = t.updates_since(after, 3, 0).unwrap();
            if batch.updates.is_empty() {
                break;
            }
            after = batch.up_to;
            got.extend(batch.updates);
        }
        assert_eq!(got.len(), 10);
        assert!(got.windows(2).all(|w| w[0].id < w[1].id));
        assert_eq!(after, t.last_update_id());
    }

    #[test]
    fn expired_items_are_skipped_not_sent() {
        let mut t = timed(100, 10);
        t.set(&ip(1), "a", 0);
        t.set(&ip(2), "a", 50);
        let batch = t.updates_since(0, 10, 120).unwrap();
        assert_eq!(batch.updates.len(), 1);
        assert_eq!(batch.updates[0].key, ip(2));
        assert_eq!(batch.updates[0].remaining_ms, Some(30));
        assert_eq!(batch.up_to, 2);
        t.expire(120);
        assert_eq!(t.stats().log_items, 1, "expiry unlinks the item");
    }

    #[test]
    fn snapshot_in_chunks() {
        let mut t = timed(1000, 100);
        for i in 0..10 {
            t.set(&ip(i), "a", i as u64);
        }
        t.remove(&ip(3), 10);
        let mut cursor = Some(SnapshotCursor::START);
        let mut entries = Vec::new();
        while let Some(c) = cursor {
            let (chunk, next) = t.snapshot_chunk(c, 4, 10);
            assert!(chunk.len() <= 4);
            entries.extend(chunk);
            cursor = next;
        }
        assert_eq!(entries.len(), 9);
        assert!(!entries.iter().any(|e| e.key == ip(3)));
        let e0 = entries.iter().find(|e| e.key == ip(0)).unwrap();
        assert_eq!(e0.remaining_ms, Some(990));
    }

    #[test]
    fn remote_updates_are_applied_without_logging() {
        let mut t = timed(1000, 10);
        let u = Update {
            id: 7,
            key: ip(1),
            server: Some("a".into()),
            remaining_ms: Some(400),
        };
        assert!(t.apply_remote(&u, 100));
        assert_eq!(t.peek(&ip(1), 100).unwrap().remaining_ms, Some(400));
        assert_eq!(t.last_update_id(), 0, "nothing logged");
        assert!(!t.apply_remote(&u, 100), "duplicate ignored");
        let older = Update { id: 6, ..u.clone() };
        assert!(!t.apply_remote(&older, 100), "late update ignored");
        // A local change then a remote one: the remote one wins and takes the item out.
        t.set(&ip(1), "b", 200);
        assert_eq!(t.stats().log_items, 1);
        let del = Update {
            id: 8,
            key: ip(1),
            server: None,
            remaining_ms: None,
        };
        assert!(t.apply_remote(&del, 210));
        assert!(t.peek(&ip(1), 210).is_none());
        assert_eq!(t.stats().log_items, 0);
        assert_eq!(t.stats().tombstones, 0);
        // Remaining lifetime is capped at our timeout; 0 means already expired.
        let long = Update {
            id: 9,
            key: ip(2),
            server: Some("a".into()),
            remaining_ms: Some(50_000),
        };
        t.apply_remote(&long, 300);
        assert_eq!(t.peek(&ip(2), 300).unwrap().remaining_ms, Some(1000));
        let dead = Update {
            id: 10,
            key: ip(2),
            server: Some("a".into()),
            remaining_ms: Some(0),
        };
        t.apply_remote(&dead, 300);
        assert!(t.peek(&ip(2), 300).is_none());
    }

    #[test]
    fn local_touch_of_a_remote_entry_is_logged() {
        let mut t = timed(1000, 10);
        t.apply_remote_entry(
            &Entry {
                key: ip(1),
                server: "a".into(),
                remaining_ms: Some(10),
            },
            0,
        );
        assert_eq!(t.last_update_id(), 0);
        t.lookup(&ip(1), 5);
        let u = all_updates(&t, 0, 5);
        assert_eq!(u.len(), 1);
        assert_eq!(u[0].remaining_ms, Some(1000));
    }

    #[test]
    fn resync_drops_what_the_peer_no_longer_has() {
        let mut t = timed(10_000, 10);
        let entry = |k: u8| Entry {
            key: ip(k),
            server: "a".into(),
            remaining_ms: Some(5000),
        };
        t.apply_remote_entry(&entry(1), 0);
        t.apply_remote_entry(&entry(2), 0);
        t.apply_remote_entry(&entry(3), 0);
        assert_eq!(t.end_resync(), 0, "no resync in progress: nothing dropped");
        t.begin_resync();
        t.apply_remote_entry(&entry(1), 10);
        t.lookup(&ip(3), 10); // used here meanwhile: kept
        assert!(t.is_resyncing());
        assert_eq!(t.end_resync(), 1);
        assert!(t.peek(&ip(2), 10).is_none());
        assert!(t.peek(&ip(1), 10).is_some());
        assert!(t.peek(&ip(3), 10).is_some());
    }

    #[test]
    fn remote_entries_may_overflow_the_capacity_up_to_a_memory_guard() {
        let mut t = timed(10_000, 2);
        for k in 0..=1032u32 {
            t.apply_remote_entry(
                &Entry {
                    key: StickKey::SourceIp(std::net::IpAddr::from(k.to_be_bytes())),
                    server: "a".into(),
                    remaining_ms: Some(1000 + u64::from(k)),
                },
                0,
            );
        }
        assert_eq!(t.len(), 1032, "4 x capacity + 1024");
        let first = StickKey::SourceIp(std::net::IpAddr::from(0u32.to_be_bytes()));
        assert!(t.peek(&first, 0).is_none(), "closest to expiry dropped");
        // A local insert brings the table back under its capacity.
        t.set(&ip(9), "a", 1);
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn retain_servers_drops_removed_servers() {
        let mut t = timed(10_000, 10);
        t.set(&ip(1), "a", 0);
        t.set(&ip(2), "b", 0);
        t.set(&ip(3), "c", 0);
        assert_eq!(t.retain_servers(|l| l != "b"), 1);
        assert!(t.peek(&ip(2), 0).is_none());
        assert_eq!(t.retain_servers(|_| true), 0);
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn set_spec_retimes_and_resizes_keeping_entries() {
        let mut t = timed(10_000, 10);
        for k in 0..5 {
            t.set(&ip(k), "a", u64::from(k) * 100);
        }
        // Shorter timeout: remaining capped.
        t.set_spec(
            TableSpec {
                timeout_ms: Some(1000),
                capacity: 10,
            },
            500,
        );
        assert_eq!(t.peek(&ip(0), 500).unwrap().remaining_ms, Some(1000));
        // Never expire: lifetime is dropped, order (last use) kept.
        t.set_spec(TableSpec::from_config(0, 10), 600);
        assert_eq!(t.peek(&ip(0), 600).unwrap().remaining_ms, None);
        // Smaller: the least recently used go.
        t.set_spec(TableSpec::from_config(0, 3), 700);
        assert_eq!(t.len(), 3);
        assert!(t.peek(&ip(0), 700).is_none());
        assert!(t.peek(&ip(4), 700).is_some());
        // Back to a timeout: lifetime counts from the last use (as implied by the capped
        // deadline 1500 under the 1000 ms timeout: 500).
        t.set_spec(TableSpec::from_config(2, 3), 800);
        assert_eq!(
            t.peek(&ip(4), 800).unwrap().remaining_ms,
            Some(500 + 2000 - 800)
        );
    }

    #[test]
    fn ipv4_mapped_clients_share_the_ipv4_key() {
        let mapped: std::net::IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert_eq!(StickKey::source_ip(mapped), ip(1));
        let v6: std::net::IpAddr = "2001:db8::1".parse().unwrap();
        assert_eq!(StickKey::source_ip(v6), StickKey::SourceIp(v6));
    }

    #[test]
    fn wire_types_roundtrip_with_bincode() {
        let u = Update {
            id: 42,
            key: StickKey::SourceIp("2001:db8::1".parse().unwrap()),
            server: Some("Overcloud-controller-1".into()),
            remaining_ms: Some(12_345),
        };
        let config = bincode::config::standard();
        let bytes = bincode::serde::encode_to_vec(&u, config).unwrap();
        let (back, _): (Update, usize) = bincode::serde::decode_from_slice(&bytes, config).unwrap();
        assert_eq!(back, u);
        let e = Entry {
            key: StickKey::Service,
            server: "x".into(),
            remaining_ms: None,
        };
        let bytes = bincode::serde::encode_to_vec(&e, config).unwrap();
        let (back, _): (Entry, usize) = bincode::serde::decode_from_slice(&bytes, config).unwrap();
        assert_eq!(back, e);
    }
}
