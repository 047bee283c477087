//! The merge is a join: commutative, associative, idempotent; two nodes converge after an
//! exchange; a node's own later change wins over anything it has seen.

use proptest::prelude::*;

use super::*;

fn entry(server: &str, mode: AdminMode, wall_ms: u64, counter: u32, node: &str) -> AdminEntry {
    AdminEntry {
        service: "mysql".into(),
        server: server.into(),
        mode,
        stamp: Stamp {
            wall_ms,
            counter,
            node: node.into(),
        },
    }
}

fn merged(batches: &[Vec<AdminEntry>]) -> Vec<AdminEntry> {
    let mut states = AdminStates::new("x");
    for batch in batches {
        states.merge_remote(batch.clone());
    }
    states.snapshot()
}

#[test]
fn the_greater_stamp_wins_whatever_the_order() {
    let old = entry("c1", AdminMode::Drain, 100, 0, "lb1");
    let new = entry("c1", AdminMode::Online, 200, 0, "lb2");
    assert_eq!(
        merged(&[vec![old.clone()], vec![new.clone()]]),
        vec![new.clone()]
    );
    assert_eq!(merged(&[vec![new.clone()], vec![old]]), vec![new]);
}

#[test]
fn equal_wall_clocks_are_ordered_by_counter_then_node() {
    let a = entry("c1", AdminMode::Drain, 100, 1, "lb1");
    let b = entry("c1", AdminMode::Halt, 100, 0, "lb2");
    assert_eq!(merged(&[vec![a.clone()], vec![b.clone()]]), vec![a]);
    let c = entry("c1", AdminMode::Drain, 100, 0, "lb1");
    assert_eq!(merged(&[vec![b.clone()], vec![c]]), vec![b]);
}

#[test]
fn a_local_change_after_seeing_a_later_stamp_still_wins() {
    // lb2's clock is an hour ahead; lb1 then brings the server back online.
    let mut lb1 = AdminStates::new("lb1");
    lb1.merge_remote([entry("c1", AdminMode::Drain, 3_600_000 + 50, 7, "lb2")]);
    let online = lb1.apply_local("mysql", "c1", AdminMode::Online, 60);
    assert!(online.stamp > entry("c1", AdminMode::Drain, 3_600_050, 7, "lb2").stamp);
    let mut lb2 = AdminStates::new("lb2");
    lb2.merge_remote([entry("c1", AdminMode::Drain, 3_600_050, 7, "lb2")]);
    lb2.merge_remote([online.clone()]);
    assert_eq!(lb2.snapshot(), vec![online]);
}

#[test]
fn stamps_of_one_node_increase_even_when_the_clock_stands_still_or_goes_back() {
    let mut states = AdminStates::new("lb1");
    let a = states.apply_local("s", "a", AdminMode::Drain, 1_000);
    let b = states.apply_local("s", "a", AdminMode::Online, 1_000);
    let c = states.apply_local("s", "a", AdminMode::Halt, 400);
    assert!(a.stamp < b.stamp && b.stamp < c.stamp, "{a:?} {b:?} {c:?}");
    assert_eq!(states.get("s", "a").unwrap().entry.mode, AdminMode::Halt);
}

#[test]
fn origins_say_how_the_node_learnt_each_state() {
    let mut states = AdminStates::new("lb1");
    states.apply_local("mysql", "c1", AdminMode::Drain, 10);
    states.merge_remote([entry("c2", AdminMode::Halt, 20, 0, "lb2")]);
    states.merge(
        [entry("c3", AdminMode::Drain, 5, 0, "lb1")],
        Origin::Restored,
    );
    let origins: Vec<Origin> = states.held().iter().map(|h| h.origin).collect();
    assert_eq!(
        origins,
        vec![Origin::Operator, Origin::Replicated, Origin::Restored]
    );
    // An echo of our own entry changes nothing, its origin stays.
    let ours = states.get("mysql", "c1").unwrap().entry;
    let outcome = states.merge_remote([ours]);
    assert!(outcome.changed.is_empty());
    assert_eq!(outcome.stale, 1);
    assert_eq!(states.get("mysql", "c1").unwrap().origin, Origin::Operator);
}

#[test]
fn changes_since_a_revision_are_only_the_new_ones() {
    let mut states = AdminStates::new("lb1");
    states.apply_local("mysql", "c1", AdminMode::Drain, 10);
    let seen = states.revision();
    assert!(states.changes_since(seen).is_empty());
    states.merge_remote([entry("c2", AdminMode::Halt, 20, 0, "lb2")]);
    let changes = states.changes_since(seen);
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0].server, "c2");
    // A stale entry is no change.
    let seen = states.revision();
    states.merge_remote([entry("c2", AdminMode::Online, 1, 0, "lb2")]);
    assert_eq!(states.revision(), seen);
}

#[test]
fn bad_labels_and_entries_beyond_the_bound_are_refused() {
    let mut states = AdminStates::new("lb1");
    let mut long = entry("c1", AdminMode::Drain, 1, 0, "lb2");
    long.server = "x".repeat(MAX_LABEL_BYTES + 1);
    let mut nameless = entry("c1", AdminMode::Drain, 1, 0, "");
    nameless.stamp.node.clear();
    let outcome = states.merge_remote([long, nameless]);
    assert_eq!(outcome.refused, 2);
    assert!(states.is_empty());

    let many =
        (0..MAX_ENTRIES + 10).map(|i| entry(&format!("s{i}"), AdminMode::Drain, 1, 0, "lb2"));
    let outcome = states.merge_remote(many);
    assert_eq!(states.len(), MAX_ENTRIES);
    assert_eq!(outcome.refused, 10);
}

#[test]
fn retain_drops_servers_no_longer_configured() {
    let mut states = AdminStates::new("lb1");
    states.apply_local("mysql", "c1", AdminMode::Drain, 10);
    states.apply_local("mysql", "gone", AdminMode::Halt, 10);
    let dropped = states.retain(|_, server| server != "gone");
    assert_eq!(dropped.len(), 1);
    assert_eq!(dropped[0].server, "gone");
    assert_eq!(states.len(), 1);
}

#[test]
fn shared_states_run_the_hook_only_on_changes() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    let shared = SharedAdminStates::new(AdminStates::new("lb1"), move |changed| {
        record.lock().unwrap().extend(changed.iter().cloned());
    });
    let drain = entry("c1", AdminMode::Drain, 10, 0, "lb2");
    shared.merge_remote(vec![drain.clone()]);
    shared.merge_remote(vec![drain.clone()]);
    assert_eq!(*seen.lock().unwrap(), vec![drain]);
}

fn arb_entry() -> impl Strategy<Value = AdminEntry> {
    // Small domains, so keys and stamps collide often.
    (
        0u8..3,
        prop_oneof![
            Just(AdminMode::Online),
            Just(AdminMode::Drain),
            Just(AdminMode::Halt)
        ],
        0u64..4,
        0u32..2,
        prop_oneof![Just("lb1"), Just("lb2")],
    )
        .prop_map(|(server, mode, wall, counter, node)| {
            entry(&format!("c{server}"), mode, wall, counter, node)
        })
}

fn arb_batch() -> impl Strategy<Value = Vec<AdminEntry>> {
    proptest::collection::vec(arb_entry(), 0..8)
}

/// One node's step in the convergence property.
#[derive(Debug, Clone)]
enum Step {
    /// An operator on node 0 or 1 sets a server at this wall time.
    Local(usize, u8, AdminMode, u64),
    /// Node 0 or 1 sends what changed since its last send to the other (when connected).
    Send(usize),
    /// The session drops (changes made meanwhile are only exchanged at the next full exchange).
    Disconnect,
    /// A session opens: full exchange both ways.
    Connect,
}

fn arb_step() -> impl Strategy<Value = Step> {
    let mode = prop_oneof![
        Just(AdminMode::Online),
        Just(AdminMode::Drain),
        Just(AdminMode::Halt)
    ];
    prop_oneof![
        4 => (0usize..2, 0u8..3, mode, 0u64..20).prop_map(|(n, s, m, w)| Step::Local(n, s, m, w)),
        3 => (0usize..2).prop_map(Step::Send),
        1 => Just(Step::Disconnect),
        1 => Just(Step::Connect),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    #[test]
    fn merge_is_commutative(a in arb_batch(), b in arb_batch()) {
        prop_assert_eq!(merged(&[a.clone(), b.clone()]), merged(&[b, a]));
    }

    #[test]
    fn merge_is_associative(a in arb_batch(), b in arb_batch(), c in arb_batch()) {
        let bc = merged(&[b.clone(), c.clone()]);
        let ab = merged(&[a.clone(), b]);
        prop_assert_eq!(merged(&[a, bc]), merged(&[ab, c]));
    }

    #[test]
    fn merge_is_idempotent(a in arb_batch(), b in arb_batch()) {
        prop_assert_eq!(merged(&[a.clone(), b.clone(), b.clone(), a.clone()]), merged(&[a, b]));
    }

    #[test]
    fn both_nodes_converge_after_a_full_exchange(steps in proptest::collection::vec(arb_step(), 0..40)) {
        let mut nodes = [AdminStates::new("lb1"), AdminStates::new("lb2")];
        let mut sent = [0u64, 0u64];
        let mut connected = true;
        for step in steps {
            match step {
                Step::Local(n, server, mode, wall) => {
                    nodes[n].apply_local("mysql", &format!("c{server}"), mode, wall);
                }
                Step::Send(n) if connected => {
                    let changes = nodes[n].changes_since(sent[n]);
                    sent[n] = nodes[n].revision();
                    nodes[1 - n].merge_remote(changes);
                }
                Step::Send(_) => {}
                Step::Disconnect => connected = false,
                Step::Connect => {
                    connected = true;
                    for n in 0..2 {
                        let all = nodes[n].snapshot();
                        sent[n] = nodes[n].revision();
                        nodes[1 - n].merge_remote(all);
                    }
                }
            }
        }
        for n in 0..2 {
            let all = nodes[n].snapshot();
            nodes[1 - n].merge_remote(all);
        }
        prop_assert_eq!(nodes[0].snapshot(), nodes[1].snapshot());
    }
}
