use super::*;
use crate::repl::cursor::TableCursor;

fn cursor(node: u64, tables: &[(&str, u64, bool)]) -> PeerCursor {
    PeerCursor {
        peer_node_id: node,
        tables: tables
            .iter()
            .map(|(t, seq, synced)| {
                (
                    t.to_string(),
                    TableCursor {
                        seq: *seq,
                        synced: *synced,
                    },
                )
            })
            .collect(),
    }
}

fn names(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// What the driver does after a batch through `seq`: stores the positions
/// it makes durable, and says it committed.
fn commit(gate: &SinkGate, seq: u64) {
    let p = gate.positions_through(seq);
    gate.positions_written(&p);
    gate.committed(seq);
}

#[test]
fn a_link_without_a_sunk_table_is_not_gated() {
    let sunk = Arc::new(Sunk::default());
    assert!(sunk.link("e", 1, &names(&["alerts"]), 0).is_none());
    sunk.gate("pg", names(&["alerts"]));
    assert!(sunk.link("e", 1, &names(&["thresholds"]), 0).is_none());
    assert!(sunk
        .link("e", 1, &names(&["thresholds", "alerts"]), 0)
        .is_some());
}

#[test]
fn acknowledgements_wait_for_the_sink_and_go_one_per_frame_in_order() {
    let sunk = Arc::new(Sunk::default());
    let gate = sunk.gate("pg", names(&["alerts"]));
    let mut link = sunk.link("e", 1, &names(&["alerts"]), 5).unwrap();
    let q = link.acks();
    link.applied(["alerts"].into_iter(), 10);
    link.applied_upto(3, &cursor(1, &[("alerts", 3, true)]));
    // No write of a sunk table: waits for the same position.
    link.applied(["other"].into_iter(), 12);
    link.applied_upto(4, &cursor(1, &[("alerts", 4, true)]));
    let (due, held) = q.due();
    assert!(due.is_empty());
    let (applied, why) = held.unwrap();
    assert_eq!(applied, 4);
    assert!(
        why.contains("`pg`") && why.contains("through position 0 of the 10"),
        "{why}"
    );
    commit(&gate, 9);
    assert!(
        q.due().0.is_empty(),
        "released before the sink committed it"
    );
    commit(&gate, 10);
    assert_eq!(q.due(), (vec![3, 4], None));
    // A committed position never moves back.
    gate.committed(2);
    link.applied_upto(5, &cursor(1, &[("alerts", 5, true)]));
    // Committed, but position 5 is not stored yet.
    assert_eq!(q.due(), (vec![], None));
    commit(&gate, 10);
    assert_eq!(q.due(), (vec![5], None));
}

#[test]
fn a_new_link_waits_for_what_earlier_links_applied() {
    let sunk = Arc::new(Sunk::default());
    let gate = sunk.gate("pg", names(&["alerts"]));
    commit(&gate, 3);
    // The head was 7 when the link came up: frames that write nothing
    // still wait for it (a restarted hub's earlier applies).
    let mut link = sunk.link("e", 1, &names(&["alerts"]), 7).unwrap();
    link.applied_upto(20, &cursor(1, &[("alerts", 20, true)]));
    assert!(link.acks().due().0.is_empty());
    commit(&gate, 7);
    assert_eq!(link.acks().due().0, vec![20]);
}

#[test]
fn an_acknowledgement_waits_until_its_positions_are_stored_too() {
    let sunk = Arc::new(Sunk::default());
    let gate = sunk.gate("pg", names(&["alerts"]));
    let mut link = sunk.link("e", 1, &names(&["alerts"]), 0).unwrap();
    link.applied(["alerts"].into_iter(), 4);
    link.applied_upto(9, &cursor(1, &[("alerts", 9, true)]));
    // The batch through 4 was built before the link noted position 9.
    gate.committed(4);
    assert_eq!(
        link.acks().due(),
        (vec![], None),
        "acknowledged past the stored position"
    );
    let p = gate.positions_through(4);
    assert_eq!(p.len(), 1);
    gate.positions_written(&p);
    assert_eq!(link.acks().due().0, vec![9]);
}

#[test]
fn only_a_link_of_the_gates_tables_waits_for_that_gate() {
    let sunk = Arc::new(Sunk::default());
    let pg = sunk.gate("pg", names(&["alerts"]));
    let _js = sunk.gate("js", names(&["logs"]));
    let mut link = sunk.link("e", 1, &names(&["alerts"]), 0).unwrap();
    link.applied(["alerts"].into_iter(), 4);
    link.applied_upto(2, &cursor(1, &[("alerts", 2, true)]));
    commit(&pg, 4);
    // The `js` gate never committed anything: not this link's concern.
    assert_eq!(link.acks().due().0, vec![2]);
}

#[test]
fn positions_are_durable_only_through_their_hub_position_and_written_once() {
    let sunk = Arc::new(Sunk::default());
    let gate = sunk.gate("pg", names(&["alerts"]));
    let mut link = sunk.link("e", 9, &names(&["alerts", "other"]), 0).unwrap();
    link.applied(["alerts"].into_iter(), 10);
    link.applied_upto(
        30,
        &cursor(
            9,
            &[("alerts", 30, true), ("other", 30, true), ("x", 1, false)],
        ),
    );
    link.applied(["alerts"].into_iter(), 20);
    link.applied_upto(40, &cursor(9, &[("alerts", 40, true)]));
    assert!(gate.positions_through(9).is_empty());
    let p = gate.positions_through(15);
    assert_eq!(
        p,
        vec![EdgePosition {
            edge: "e".into(),
            node_id: 9,
            table: "alerts".into(),
            seq: 30
        }],
        "only the gate's tables, only what the commit covers"
    );
    // Not written yet (the batch failed): offered again.
    assert_eq!(gate.positions_through(15), p);
    gate.positions_written(&p);
    assert!(gate.positions_through(15).is_empty());
    assert_eq!(gate.positions_through(20)[0].seq, 40);
}

#[test]
fn an_unsynced_table_gives_no_position() {
    let sunk = Arc::new(Sunk::default());
    let gate = sunk.gate("pg", names(&["alerts"]));
    let mut link = sunk.link("e", 9, &names(&["alerts"]), 0).unwrap();
    link.applied_upto(30, &cursor(9, &[("alerts", 30, false)]));
    assert!(gate.positions_through(100).is_empty());
}

/// Answers with fixed positions for one node id, or fails, or hangs.
enum Hints {
    For(u64, Vec<(String, u64)>),
    Fails,
    Hangs,
}

impl ResumeHints for Hints {
    fn edge_positions(&self, _edge: &str, node_id: u64) -> HintsFuture<'_> {
        Box::pin(async move {
            match self {
                Hints::For(n, p) if *n == node_id => Ok(p.clone()),
                Hints::For(..) => Ok(Vec::new()),
                Hints::Fails => Err("connection refused".into()),
                Hints::Hangs => std::future::pending().await,
            }
        })
    }
}

fn seeded(hints: Hints, subscribed: &[&str], cursor: PeerCursor, node: u64) -> PeerCursor {
    let sunk = Sunk::default();
    sunk.gates.lock().push(Arc::new(GateState {
        name: "pg".into(),
        tables: ["alerts".to_string()].into_iter().collect(),
        committed: AtomicU64::new(0),
        edges: Mutex::new(HashMap::new()),
        noted: Notify::new(),
    }));
    sunk.hints.lock().push(Arc::new(hints));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(seed_cursor(&sunk, "e", node, &names(subscribed), cursor))
}

#[test]
fn a_position_ahead_seeds_the_cursor_and_marks_the_table_synced() {
    let hints = Hints::For(7, vec![("alerts".into(), 500)]);
    let c = seeded(hints, &["alerts"], cursor(7, &[("alerts", 100, true)]), 7);
    assert_eq!(
        c.tables["alerts"],
        TableCursor {
            seq: 500,
            synced: true
        }
    );
    // None known yet on this hub: seeded too.
    let hints = Hints::For(7, vec![("alerts".into(), 500)]);
    let c = seeded(hints, &["alerts"], PeerCursor::default(), 7);
    assert_eq!(c.peer_node_id, 7);
    assert_eq!(
        c.tables["alerts"],
        TableCursor {
            seq: 500,
            synced: true
        }
    );
}

#[test]
fn a_position_behind_the_hubs_own_changes_nothing() {
    let hints = Hints::For(7, vec![("alerts".into(), 50)]);
    let own = cursor(7, &[("alerts", 100, true)]);
    assert_eq!(seeded(hints, &["alerts"], own.clone(), 7), own);
}

#[test]
fn hostile_positions_of_another_node_id_or_table_are_not_taken() {
    // The peer reset (node id 8 now): the positions of 7 say nothing.
    let hints = Hints::For(7, vec![("alerts".into(), 500)]);
    let c = seeded(hints, &["alerts"], PeerCursor::default(), 8);
    assert!(c.tables.is_empty(), "{c:?}");
    // Tables no sink sends, or the peer does not send here, are ignored.
    let hints = Hints::For(7, vec![("thresholds".into(), 500), ("secrets".into(), 9)]);
    let c = seeded(hints, &["alerts", "thresholds"], PeerCursor::default(), 7);
    assert!(c.tables.is_empty(), "{c:?}");
    let hints = Hints::For(7, vec![("alerts".into(), 500)]);
    let c = seeded(hints, &["thresholds"], PeerCursor::default(), 7);
    assert!(c.tables.is_empty(), "{c:?}");
}

#[test]
fn failing_or_hanging_hints_fall_back_to_the_hubs_own_cursor() {
    let own = cursor(7, &[("alerts", 100, true)]);
    assert_eq!(seeded(Hints::Fails, &["alerts"], own.clone(), 7), own);
    // Gives up after HINTS_TIMEOUT instead of holding the link forever.
    assert_eq!(seeded(Hints::Hangs, &["alerts"], own.clone(), 7), own);
}

#[test]
fn the_ack_task_tells_the_peer_while_held_then_acknowledges() {
    let sunk = Arc::new(Sunk::default());
    let gate = sunk.gate("pg", names(&["alerts"]));
    let mut link = sunk.link("e", 1, &names(&["alerts"]), 0).unwrap();
    link.applied(["alerts"].into_iter(), 3);
    link.applied_upto(11, &cursor(1, &[("alerts", 11, true)]));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (tx, mut rx) = mpsc::channel(8);
        let task = tokio::spawn(link.acks().run(tx, Duration::from_millis(20)));
        match rx.recv().await {
            Some(Message::AckHeld { applied_seq, .. }) => assert_eq!(applied_seq, 11),
            other => panic!("expected AckHeld, got {other:?}"),
        }
        // Repeated while held, so the peer's watchdog sees progress.
        assert!(matches!(rx.recv().await, Some(Message::AckHeld { .. })));
        commit(&gate, 3);
        loop {
            match rx.recv().await {
                Some(Message::AckHeld { .. }) => continue,
                Some(Message::Ack { upto_seq }) => {
                    assert_eq!(upto_seq, 11);
                    break;
                }
                other => panic!("expected Ack, got {other:?}"),
            }
        }
        task.abort();
    });
}
