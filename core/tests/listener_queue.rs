//! The listener queue is bounded: a listener that stops while 100,000
//! writes commit holds at most `listener_queue_max` events in memory, no
//! commit waits for it, and every dropped event is reported, in the next
//! delivered event's `missed` and in `listener_events_missed`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier, Mutex};

use serde_json::json;
use tidelog::*;

const BOUND: usize = 64;
const WRITES: i64 = 100_000;

#[test]
fn a_stalled_listener_costs_a_bounded_queue_and_is_told_what_it_missed() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path(), OpenOptions::new("n1").listener_queue_max(BOUND)).unwrap();
    db.create_table("t", TableOptions::default()).unwrap();
    db.create_table("quiet", TableOptions::default()).unwrap();
    let delivered = Arc::new(AtomicU64::new(0));
    let missed = Arc::new(AtomicU64::new(0));
    let seqs = Arc::new(Mutex::new(Vec::new()));
    // The listener stops at its first event until the writes are done.
    let gate = Arc::new(Barrier::new(2));
    {
        let (delivered, missed, seqs, gate) = (
            delivered.clone(),
            missed.clone(),
            seqs.clone(),
            gate.clone(),
        );
        let first = AtomicU64::new(0);
        db.on_change("t", move |e| {
            if first.fetch_add(1, Ordering::SeqCst) == 0 {
                gate.wait();
            }
            delivered.fetch_add(1, Ordering::SeqCst);
            missed.fetch_add(e.missed, Ordering::SeqCst);
            seqs.lock().unwrap().push(e.seq);
        })
        .unwrap();
    }
    for i in 0..WRITES {
        db.upsert("t", json!({"id": i % 1000, "v": i})).unwrap();
    }
    assert!(db.listener_events_missed() > 0, "the queue overflowed");
    gate.wait();
    // One more write after the listener catches up carries what was
    // missed since the last event that fitted.
    // The first event (held at the gate) and a full queue behind it.
    while delivered.load(Ordering::SeqCst) < BOUND as u64 + 1 {
        std::thread::yield_now();
    }
    let last = db.upsert("t", json!({"id": 0, "v": -1})).unwrap();
    let want_total = WRITES as u64 + 1;
    loop {
        let got = seqs.lock().unwrap().last().copied();
        if got == Some(last.seq) {
            break;
        }
        std::thread::yield_now();
    }
    let delivered = delivered.load(Ordering::SeqCst);
    // The one being handled at the gate, a full queue, and the final one.
    assert_eq!(
        delivered,
        BOUND as u64 + 2,
        "the queue held other than {BOUND} events"
    );
    assert_eq!(
        delivered + missed.load(Ordering::SeqCst),
        want_total,
        "every event is delivered or reported missed"
    );
    assert_eq!(db.listener_events_missed(), want_total - delivered);
    // Delivered events are in commit order.
    let seqs = seqs.lock().unwrap().clone();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]));
    // Missing one table's events reports nothing in another's.
    let quiet = Arc::new(Mutex::new(Vec::new()));
    let q = quiet.clone();
    db.on_change("quiet", move |e| q.lock().unwrap().push(e.missed))
        .unwrap();
    let c = db.upsert("quiet", json!({"id": 1})).unwrap();
    db.close().unwrap();
    let _ = c;
    assert_eq!(*quiet.lock().unwrap(), vec![0]);
}

#[test]
fn the_bound_is_an_option_and_zero_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let e = Database::open(dir.path(), OpenOptions::new("n1").listener_queue_max(0))
        .expect_err("0 events");
    assert!(e.to_string().contains("listener_queue_max"), "{e}");
    let o = options::open_from_json(json!({"node_name": "n1", "listener_queue_max": 5})).unwrap();
    assert_eq!(o.listener_queue_max, 5);
    for bad in [json!(0), json!(-1), json!(1u64 << 40), json!("many")] {
        let e = options::open_from_json(json!({"node_name": "n1", "listener_queue_max": bad}))
            .expect_err("hostile bound");
        assert!(e.to_string().contains("listener_queue_max"), "{bad}: {e}");
    }
}

/// Waits (up to a generous limit, so a bug fails instead of hanging) for
/// `cond`.
fn wait_for(what: &str, cond: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !cond() {
        assert!(std::time::Instant::now() < deadline, "never: {what}");
        std::thread::yield_now();
    }
}

#[test]
fn pending_counts_queued_and_running_events_not_dropped_ones_and_returns_to_zero() {
    const SMALL: usize = 8;
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path(), OpenOptions::new("n1").listener_queue_max(SMALL)).unwrap();
    db.create_table("t", TableOptions::default()).unwrap();
    assert_eq!(
        db.listener_events_pending(),
        0,
        "no listener, nothing queued"
    );
    db.upsert("t", json!({"id": "before any listener"}))
        .unwrap();
    assert_eq!(
        db.listener_events_pending(),
        0,
        "an event nobody listens to is not counted"
    );

    let entered = Arc::new(Barrier::new(2));
    let gate = Arc::new(Barrier::new(2));
    let delivered = Arc::new(AtomicU64::new(0));
    // What the count read inside a listener call: the running event counts.
    let seen_inside = Arc::new(Mutex::new(Vec::new()));
    {
        let (entered, gate, delivered, seen_inside) = (
            entered.clone(),
            gate.clone(),
            delivered.clone(),
            seen_inside.clone(),
        );
        let db2 = db.clone();
        let first = AtomicU64::new(0);
        db.on_change("t", move |_| {
            seen_inside
                .lock()
                .unwrap()
                .push(db2.listener_events_pending());
            if first.fetch_add(1, Ordering::SeqCst) == 0 {
                entered.wait();
                gate.wait();
            }
            delivered.fetch_add(1, Ordering::SeqCst);
        })
        .unwrap();
    }
    db.upsert("t", json!({"id": 0})).unwrap();
    entered.wait();
    // The listener holds the first event; SMALL fit in the queue behind it,
    // the rest are dropped.
    let writes = 50u64;
    for i in 1..writes {
        db.upsert("t", json!({"id": i})).unwrap();
    }
    assert_eq!(db.listener_events_missed(), writes - 1 - SMALL as u64);
    assert_eq!(
        db.listener_events_pending(),
        SMALL + 1,
        "the running event and a full queue; dropped events are not counted"
    );
    gate.wait();
    wait_for("every queued event delivered", || {
        delivered.load(Ordering::SeqCst) == SMALL as u64 + 1
    });
    wait_for(
        "the count back to 0 after the last listener returned",
        || db.listener_events_pending() == 0,
    );
    assert!(
        seen_inside.lock().unwrap().iter().all(|&p| p >= 1),
        "an event counts while its listener runs: {:?}",
        seen_inside.lock().unwrap()
    );
    // Normal traffic after the overflow: counted, then back to 0.
    db.upsert("t", json!({"id": "after"})).unwrap();
    wait_for("the next event delivered", || {
        delivered.load(Ordering::SeqCst) == SMALL as u64 + 2
    });
    wait_for("back to 0", || db.listener_events_pending() == 0);
    db.close().unwrap();
    assert_eq!(db.listener_events_pending(), 0);
}
