//! Conflict policies, counters and the conflict log, with writes shipped
//! between in-process nodes by hand (`read_log` -> `apply_remote`), so the
//! delivery order is chosen by the test: every interleaving a network could
//! produce, reproducibly, and the exact arrivals each node saw.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde_json::{json, Value};
use tidelog::*;

struct Node {
    dir: tempfile::TempDir,
    name: String,
    db: Option<Database>,
    /// Per peer name: how far into that peer's log this node has taken.
    taken: HashMap<String, u64>,
}

impl Node {
    fn new(name: &str, policy: ConflictPolicy) -> Node {
        let dir = common::scratch_dir();
        let db = Database::open(dir.path(), OpenOptions::new(name)).unwrap();
        db.create_table("t", TableOptions::default().conflict(policy))
            .unwrap();
        Node {
            dir,
            name: name.into(),
            db: Some(db),
            taken: HashMap::new(),
        }
    }

    fn db(&self) -> &Database {
        self.db.as_ref().unwrap()
    }

    fn restart(&mut self) {
        if let Some(db) = self.db.take() {
            db.close().unwrap();
        }
        self.db = Some(Database::open(self.dir.path(), OpenOptions::new(&self.name)).unwrap());
    }
}

/// Ships the next `max` transactions `from` made itself to `to`, in log
/// order (one link is FIFO, as a replication link is); returns how many.
fn deliver(nodes: &mut [Node], from: usize, to: usize, max: usize) -> usize {
    deliver_m(nodes, from, to, max, &mut None)
}

fn deliver_m(
    nodes: &mut [Node],
    from: usize,
    to: usize,
    max: usize,
    model: &mut Option<Model>,
) -> usize {
    let (src_id, src_name) = (nodes[from].db().node_id(), nodes[from].name.clone());
    let after = *nodes[to].taken.get(&src_name).unwrap_or(&0);
    let entries = nodes[from].db().read_log(after + 1, 1000).unwrap();
    let mut sent = 0;
    let mut last = after;
    for e in entries {
        last = e.seq;
        // Only the table the nodes replicate (not their conflict logs), and
        // only the source's own writes (no relaying: every pair has a link).
        let writes: Vec<LogWrite> = e.writes.into_iter().filter(|w| w.table == "t").collect();
        if e.stamp.node != src_id || writes.is_empty() {
            continue;
        }
        if let Some(m) = model.as_mut() {
            m.sync_local(to, nodes[to].db());
            for w in &writes {
                m.arrive(to, nodes[to].db().node_id(), e.stamp, w);
            }
        }
        let txn = RemoteTxn {
            stamp: e.stamp,
            writes,
        };
        let out = nodes[to].db().apply_remote(&[txn], None).unwrap();
        if let Some(m) = model.as_mut() {
            m.sync_local(to, nodes[to].db());
        }
        assert!(
            !matches!(out[0], RemoteOutcome::Refused(_)),
            "refused: {out:?}"
        );
        sent += 1;
        if sent == max {
            break;
        }
    }
    nodes[to].taken.insert(src_name, last);
    sent
}

/// Delivers everything everywhere until nothing moves (resolutions make
/// new writes).
fn settle(nodes: &mut [Node]) {
    settle_m(nodes, &mut None)
}

fn settle_m(nodes: &mut [Node], model: &mut Option<Model>) {
    loop {
        let mut moved = 0;
        for from in 0..nodes.len() {
            for to in 0..nodes.len() {
                if from != to {
                    moved += deliver_m(nodes, from, to, usize::MAX, model);
                }
            }
        }
        if moved == 0 {
            return;
        }
    }
}

fn digest(db: &Database) -> Vec<(String, Stamp, Value)> {
    db.scan("t", &ScanOptions::default())
        .unwrap()
        .into_iter()
        .map(|r| {
            let mut v = r.to_value();
            if let Value::Object(m) = &mut v {
                m.remove("__updatedtime__");
                m.remove("__createdtime__");
            }
            (r.key().to_string(), r.stamp(), v)
        })
        .collect()
}

/// The conflict log each node should hold, computed from the writes'
/// stamps and bases and each node's arrivals (the rule in `settle`).
/// A write `W` meets the record's version `c` (its newest whole write or
/// patch; counts never move it) and is concurrent with it if `W > c` and
/// `W`'s base is not `c`, or `W < c` and `c`'s base is not `W`. Only a
/// concurrent write makes losers:
/// - `lww`, `keep_local`, `resolver`: `W` loses if `W < c`; otherwise `c`
///   loses, except that under `keep_local` a version written on this node
///   is kept and `W` loses instead;
/// - `merge`: a patch's attributes lose to a newer patch of the attribute,
///   to a newer whole write, or to a tombstone; a patch or whole write
///   makes the older patches whose attributes it replaces lose; a whole
///   write loses to a newer whole write, or makes the one it replaces lose.
#[derive(Default)]
struct Model {
    policy: Option<ConflictPolicy>,
    /// Per node: key -> what the node holds of the record.
    cur: Vec<HashMap<Key, Rec>>,
    /// Per node: its own log read so far.
    own_seen: Vec<u64>,
    /// Per node: (winner, loser, side) expected.
    expected: Vec<Vec<(Stamp, Stamp, ConflictSide)>>,
}

/// A record as the model sees it: its last whole write, the stamps of the
/// patches newer than it per attribute (`merge` only), and the base of its
/// version.
#[derive(Clone, Default)]
struct Rec {
    whole: Stamp,
    live: bool,
    patched: BTreeMap<String, Stamp>,
    vb: Stamp,
}

impl Rec {
    fn version(&self) -> Stamp {
        self.patched.values().copied().fold(self.whole, Stamp::max)
    }

    /// Takes `w` in (any arrival order gives the same record).
    fn apply(&mut self, stamp: Stamp, base: Stamp, w: &What) {
        let before = self.version();
        match w {
            What::Patch(attrs) if stamp > self.whole => {
                for a in attrs {
                    if self.patched.get(a).is_none_or(|q| *q < stamp) {
                        self.patched.insert(a.clone(), stamp);
                    }
                }
            }
            What::Whole { live } if stamp > self.whole => {
                self.whole = stamp;
                self.live = *live;
                self.patched.retain(|_, q| *q > stamp);
            }
            _ => {}
        }
        if self.version() > before {
            self.vb = base;
        }
    }
}

/// What a write does, as the model sees it.
enum What {
    Whole {
        live: bool,
    },
    Patch(Vec<String>),
    /// A count: an increment that found no record creates `{key}`.
    Count {
        init: bool,
    },
}

fn meta(op: &WriteOp) -> (Stamp, bool, What) {
    match op {
        WriteOp::Meta { base, kind, op } => {
            let what = match kind {
                log::MetaKind::Patch { attrs } => {
                    let v: Value = serde_json::from_str(attrs).unwrap();
                    What::Patch(v.as_object().unwrap().keys().cloned().collect())
                }
                log::MetaKind::Count { init, .. } => What::Count { init: *init },
                _ => What::Whole {
                    live: matches!(op.inner(), WriteOp::Put { .. }),
                },
            };
            (*base, matches!(kind, log::MetaKind::Resolution), what)
        }
        other => panic!("a write without conflict metadata: {other:?}"),
    }
}

impl Model {
    fn new(policy: ConflictPolicy, n: usize) -> Model {
        Model {
            policy: Some(policy),
            cur: vec![HashMap::new(); n],
            own_seen: vec![0; n],
            expected: vec![Vec::new(); n],
        }
    }

    fn arrive(&mut self, node: usize, node_id: u64, stamp: Stamp, w: &LogWrite) {
        let (wb, resolution, what) = meta(&w.op);
        let side = |loser: Stamp| {
            if loser.node == node_id {
                ConflictSide::Local
            } else {
                ConflictSide::Remote
            }
        };
        let rec = self.cur[node].entry(w.key.clone()).or_default();
        let c = rec.version();
        let concurrent = c != Stamp::default()
            && if stamp > c {
                wb != c
            } else {
                stamp < c && rec.vb != stamp
            };
        let mut losers: Vec<(Stamp, Stamp)> = Vec::new();
        let merge = self.policy == Some(ConflictPolicy::MergeAttributes);
        match &what {
            _ if !concurrent => {}
            What::Count { .. } => {}
            What::Patch(attrs) if merge => {
                let tomb = !rec.live && rec.whole != Stamp::default();
                let mut beaten = Stamp::default();
                for a in attrs {
                    match rec.patched.get(a) {
                        Some(q) if *q > stamp => beaten = beaten.max(*q),
                        _ if rec.whole > stamp || tomb => beaten = beaten.max(rec.whole),
                        Some(q) => losers.push((stamp, *q)),
                        None => {}
                    }
                }
                if beaten != Stamp::default() {
                    losers.push((beaten, stamp));
                }
            }
            _ if merge => {
                if stamp < rec.whole {
                    losers.push((rec.whole, stamp));
                } else if stamp > rec.whole {
                    if rec.whole != Stamp::default() {
                        losers.push((stamp, rec.whole));
                    }
                    losers.extend(
                        rec.patched
                            .values()
                            .filter(|q| **q < stamp)
                            .map(|q| (stamp, *q)),
                    );
                }
            }
            _ if stamp < c => losers.push((c, stamp)),
            _ => {
                let keep = self.policy == Some(ConflictPolicy::KeepLocal)
                    && c.node == node_id
                    && !resolution;
                if keep {
                    self.expected[node].push((c, stamp, side(stamp)));
                    return;
                }
                losers.push((stamp, c));
            }
        }
        losers.sort();
        losers.dedup();
        self.expected[node].extend(losers.into_iter().map(|(w, l)| (w, l, side(l))));
        let what = match what {
            What::Count { init } => What::Whole { live: true }.only(init),
            other => Some(other),
        };
        if let Some(what) = what {
            rec.apply(stamp, wb, &what);
        }
    }

    /// Takes in the node's own new writes (its local writes, and the
    /// resolutions it made), checking the base each carries.
    fn sync_local(&mut self, node: usize, db: &Database) {
        let entries = db.read_log(self.own_seen[node] + 1, usize::MAX).unwrap();
        for e in entries {
            self.own_seen[node] = e.seq;
            if e.stamp.node != db.node_id() {
                continue;
            }
            for w in e.writes.iter().filter(|w| w.table == "t") {
                let (base, _, what) = meta(&w.op);
                let rec = self.cur[node].entry(w.key.clone()).or_default();
                assert_eq!(
                    base,
                    rec.version(),
                    "the base a local write carries is the version it replaced: {:?} on {:?}",
                    w.op,
                    w.key
                );
                let what = match what {
                    What::Count { init } => What::Whole { live: true }.only(init),
                    other => Some(other),
                };
                if let Some(what) = what {
                    rec.apply(e.stamp, base, &what);
                }
            }
        }
    }

    fn check(&self, nodes: &[Node]) {
        for (i, n) in nodes.iter().enumerate() {
            let mut want = self.expected[i].clone();
            let mut got: Vec<(Stamp, Stamp, ConflictSide)> = n
                .db()
                .conflicts()
                .unwrap()
                .into_iter()
                .map(|e| (e.winner, e.loser, e.lost))
                .collect();
            want.sort_by_key(|x| (x.0, x.1));
            got.sort_by_key(|x| (x.0, x.1));
            assert_eq!(got, want, "conflict log of {}", n.name);
        }
    }
}

impl What {
    fn only(self, yes: bool) -> Option<What> {
        yes.then_some(self)
    }
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// One randomized run: writes on random nodes, deliveries on random links,
/// a restart now and then; then everything is delivered. Returns the nodes.
/// With `model`, the model predicts every node's conflict log; increments
/// are left out under `keep_local` and `resolver` (a record with counters
/// settles by last writer wins there, which the model does not follow).
fn random_run(policy: ConflictPolicy, seed: u64, model: &mut Option<Model>) -> Vec<Node> {
    let mut nodes: Vec<Node> = ["a", "b", "c"]
        .iter()
        .map(|n| Node::new(n, policy))
        .collect();
    if policy == ConflictPolicy::Resolver {
        for n in &nodes {
            install_max_resolver(n.db());
        }
    }
    let mut rng = Rng(seed | 1);
    for step in 0..120u64 {
        let n = rng.below(3) as usize;
        let key = format!("k{}", rng.below(4));
        let db = nodes[n].db().clone();
        let v = rng.below(100) as i64;
        let counts = model.is_none()
            || matches!(
                policy,
                ConflictPolicy::LastWriterWins | ConflictPolicy::MergeAttributes
            );
        let kinds = if counts { 10 } else { 7 };
        match rng.below(kinds) {
            0..=2 => {
                let attr = format!("a{}", rng.below(3));
                db.upsert("t", json!({"id": key, attr: v, "v": v})).unwrap();
            }
            3..=5 => {
                let attr = format!("a{}", rng.below(3));
                // Patching a record this node does not hold is refused.
                let _ = db.update("t", json!({"id": key, attr: v, "v": v}));
            }
            6 => {
                db.delete("t", key.as_str()).unwrap();
            }
            _ => {
                let attr = "n";
                let by = rng.below(11) as i64 - 5;
                match db.increment("t", key.as_str(), attr, by) {
                    Ok(_) | Err(Error::NotACounter { .. }) => {}
                    Err(e) => panic!("increment: {e}"),
                }
            }
        }
        if let Some(m) = model.as_mut() {
            m.sync_local(n, nodes[n].db());
        }
        for _ in 0..rng.below(3) {
            let from = rng.below(3) as usize;
            let to = (from + 1 + rng.below(2) as usize) % 3;
            deliver_m(&mut nodes, from, to, 1 + rng.below(3) as usize, model);
        }
        if step % 40 == 39 {
            let r = rng.below(3) as usize;
            nodes[r].restart();
            // Resolvers belong to a handle: the reopened one needs its own.
            if policy == ConflictPolicy::Resolver {
                install_max_resolver(nodes[r].db());
            }
        }
    }
    settle_m(&mut nodes, model);
    nodes
}

/// Keeps the version with the larger `v` (a delete loses to a record).
fn install_max_resolver(db: &Database) {
    let r: ConflictResolver = Arc::new(|case: &ConflictCase| {
        let v = |x: &Option<Value>| x.as_ref().and_then(|r| r["v"].as_i64());
        match (v(&case.local), v(&case.remote)) {
            (Some(l), Some(r)) if l >= r => Resolution::KeepLocal,
            (Some(_), None) => Resolution::KeepLocal,
            _ => Resolution::TakeRemote,
        }
    });
    db.set_conflict_resolver("t", r).unwrap();
}

fn assert_converged(nodes: &[Node], what: &str) {
    let d0 = digest(nodes[0].db());
    for n in &nodes[1..] {
        assert_eq!(digest(n.db()), d0, "{what}: {} differs from a", n.name);
    }
}

#[test]
fn every_policy_converges_under_random_interleavings_restarts_and_counters() {
    for policy in [
        ConflictPolicy::LastWriterWins,
        ConflictPolicy::MergeAttributes,
        ConflictPolicy::KeepLocal,
        ConflictPolicy::Resolver,
    ] {
        for seed in [1u64, 7, 42, 1234, 99_991] {
            let nodes = random_run(policy, seed, &mut None);
            assert_converged(&nodes, &format!("{policy:?} seed {seed}"));
        }
    }
}

#[test]
fn each_conflict_log_lists_exactly_the_writes_that_lost_there() {
    for policy in [
        ConflictPolicy::LastWriterWins,
        ConflictPolicy::MergeAttributes,
        ConflictPolicy::KeepLocal,
        ConflictPolicy::Resolver,
    ] {
        for seed in [3u64, 11, 4242, 77_777, 5, 8_675_309] {
            eprintln!("exact log: {policy:?} seed {seed}");
            let mut model = Some(Model::new(policy, 3));
            let nodes = random_run(policy, seed, &mut model);
            assert_converged(&nodes, &format!("{policy:?} seed {seed}"));
            let model = model.unwrap();
            let total: usize = model.expected.iter().map(Vec::len).sum();
            assert!(total > 0, "{policy:?} seed {seed}: no conflict to check");
            model.check(&nodes);
        }
    }
}

#[test]
fn concurrent_increments_on_three_nodes_never_lose_a_count() {
    let mut nodes: Vec<Node> = ["a", "b", "c"]
        .iter()
        .map(|n| Node::new(n, ConflictPolicy::LastWriterWins))
        .collect();
    let mut rng = Rng(5);
    let mut total = 0i64;
    for _ in 0..90 {
        let n = rng.below(3) as usize;
        let by = rng.below(21) as i64 - 7;
        total += by;
        nodes[n].db().increment("t", "events", "count", by).unwrap();
        let from = rng.below(3) as usize;
        deliver(&mut nodes, from, (from + 1) % 3, 2);
    }
    settle(&mut nodes);
    for n in &nodes {
        let r = n.db().get("t", "events").unwrap().unwrap().to_value();
        assert_eq!(r["count"], json!(total), "{}", n.name);
    }
    assert_converged(&nodes, "counters");
    // Increments are never conflicts.
    for n in &nodes {
        assert!(n.db().conflicts().unwrap().is_empty(), "{}", n.name);
    }
}

#[test]
fn concurrent_patches_to_different_attributes_both_survive_under_merge() {
    let mut nodes: Vec<Node> = ["edge", "cloud"]
        .iter()
        .map(|n| Node::new(n, ConflictPolicy::MergeAttributes))
        .collect();
    nodes[0]
        .db()
        .upsert("t", json!({"id": "th", "limit": 5, "last_triggered": 0}))
        .unwrap();
    settle(&mut nodes);
    nodes[1]
        .db()
        .update("t", json!({"id": "th", "limit": 9}))
        .unwrap();
    nodes[0]
        .db()
        .update("t", json!({"id": "th", "last_triggered": 77}))
        .unwrap();
    settle(&mut nodes);
    for n in &nodes {
        let r = n.db().get("t", "th").unwrap().unwrap().to_value();
        assert_eq!((&r["limit"], &r["last_triggered"]), (&json!(9), &json!(77)));
        assert!(
            n.db().conflicts().unwrap().is_empty(),
            "{}: {:?}",
            n.name,
            n.db().conflicts()
        );
    }
    assert_converged(&nodes, "merge");

    // The same under lww: one of the two edits is gone, and the log says
    // which, on the node where it was lost.
    let mut nodes: Vec<Node> = ["edge", "cloud"]
        .iter()
        .map(|n| Node::new(n, ConflictPolicy::LastWriterWins))
        .collect();
    nodes[0]
        .db()
        .upsert("t", json!({"id": "th", "limit": 5, "last_triggered": 0}))
        .unwrap();
    settle(&mut nodes);
    let on_cloud = nodes[1]
        .db()
        .update("t", json!({"id": "th", "limit": 9}))
        .unwrap();
    let on_edge = nodes[0]
        .db()
        .update("t", json!({"id": "th", "last_triggered": 77}))
        .unwrap();
    settle(&mut nodes);
    assert_converged(&nodes, "lww");
    // The older edit lost on both nodes: overwritten where it was made
    // (local), refused where it arrived late (remote).
    let (loser_node, winner_node) = if on_cloud.stamp < on_edge.stamp {
        (1, 0)
    } else {
        (0, 1)
    };
    let (loser, winner) = (
        on_cloud.stamp.min(on_edge.stamp),
        on_cloud.stamp.max(on_edge.stamp),
    );
    for (n, side) in [
        (loser_node, ConflictSide::Local),
        (winner_node, ConflictSide::Remote),
    ] {
        let log = nodes[n].db().conflicts().unwrap();
        assert_eq!(log.len(), 1, "{}: {log:?}", nodes[n].name);
        let e = &log[0];
        assert_eq!(
            (e.lost, e.loser, e.winner, e.rule, e.table.as_str()),
            (side, loser, winner, ConflictPolicy::LastWriterWins, "t")
        );
        assert_eq!(e.key, Key::Str("th".into()));
        assert_eq!(
            e.loser_origin,
            if loser_node == n {
                nodes[n].name.clone()
            } else {
                format!("{:#x}", loser.node)
            }
        );
        let changed = if loser_node == 1 {
            "limit"
        } else {
            "last_triggered"
        };
        let v = e.loser_values.as_ref().unwrap();
        assert_eq!(
            v[changed],
            if loser_node == 1 { json!(9) } else { json!(77) }
        );
        assert!(e.id.starts_with(&format!("{}:", nodes[n].name)), "{}", e.id);
        // The entry is a record of `_conflicts`, readable like any table.
        let rec = nodes[n]
            .db()
            .get("_conflicts", e.id.as_str())
            .unwrap()
            .unwrap();
        assert_eq!(ConflictEntry::from_json(&rec.to_value()).as_ref(), Some(e));
    }
}

#[test]
fn a_sequential_update_is_not_a_conflict() {
    let mut nodes: Vec<Node> = ["edge", "cloud"]
        .iter()
        .map(|n| Node::new(n, ConflictPolicy::LastWriterWins))
        .collect();
    for i in 0..5 {
        let n = i % 2;
        nodes[n]
            .db()
            .upsert("t", json!({"id": "r", "v": i}))
            .unwrap();
        settle(&mut nodes);
    }
    nodes[1].db().delete("t", "r").unwrap();
    settle(&mut nodes);
    for n in &nodes {
        assert!(n.db().conflicts().unwrap().is_empty(), "{}", n.name);
    }
}

#[test]
fn keep_local_reasserts_and_two_keep_local_nodes_converge() {
    let mut nodes: Vec<Node> = ["a", "b"]
        .iter()
        .map(|n| Node::new(n, ConflictPolicy::KeepLocal))
        .collect();
    nodes[0].db().upsert("t", json!({"id": 1, "v": 0})).unwrap();
    settle(&mut nodes);
    let sa = nodes[0].db().upsert("t", json!({"id": 1, "v": 1})).unwrap();
    let sb = nodes[1].db().upsert("t", json!({"id": 1, "v": 2})).unwrap();
    settle(&mut nodes);
    assert_converged(&nodes, "keep_local");
    // The node holding the older write kept it against the newer one and
    // re-asserted it; the newer one's node then took the resolution.
    let (keeper, kept_v) = if sa.stamp < sb.stamp { (0, 1) } else { (1, 2) };
    let r = nodes[0].db().get("t", 1).unwrap().unwrap().to_value();
    assert_eq!(r["v"], json!(kept_v));
    assert!(r["v"] != json!(3 - kept_v));
    let on_keeper = nodes[keeper].db().conflicts().unwrap();
    assert_eq!(on_keeper.len(), 1, "{on_keeper:?}");
    assert_eq!(
        (on_keeper[0].lost, on_keeper[0].rule),
        (ConflictSide::Remote, ConflictPolicy::KeepLocal)
    );
}

#[test]
fn a_resolver_decides_and_its_answer_replicates() {
    let mut nodes: Vec<Node> = ["a", "b"]
        .iter()
        .map(|n| Node::new(n, ConflictPolicy::Resolver))
        .collect();
    let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    for n in &nodes {
        let calls = calls.clone();
        let r: ConflictResolver = Arc::new(move |case: &ConflictCase| {
            calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let sum = [&case.local, &case.remote]
                .iter()
                .filter_map(|x| x.as_ref().and_then(|r| r["v"].as_i64()))
                .sum::<i64>();
            Resolution::Write(json!({"id": 1, "v": sum}))
        });
        n.db().set_conflict_resolver("t", r).unwrap();
    }
    nodes[0].db().upsert("t", json!({"id": 1, "v": 0})).unwrap();
    settle(&mut nodes);
    nodes[0]
        .db()
        .upsert("t", json!({"id": 1, "v": 10}))
        .unwrap();
    nodes[1].db().upsert("t", json!({"id": 1, "v": 5})).unwrap();
    settle(&mut nodes);
    assert_converged(&nodes, "resolver");
    let r = nodes[0].db().get("t", 1).unwrap().unwrap().to_value();
    assert_eq!(r["v"], json!(15));
    assert!(calls.load(std::sync::atomic::Ordering::SeqCst) >= 1);
    assert!(nodes[0].db().clear_conflict_resolver("t"));
    assert!(!nodes[0].db().clear_conflict_resolver("t"));
}

#[test]
fn hostile_inputs_are_typed_errors() {
    let dir = common::scratch_dir();
    let db = Database::open(dir.path(), OpenOptions::new("n")).unwrap();
    db.create_table("t", TableOptions::default()).unwrap();
    db.upsert("t", json!({"id": 1, "name": "x", "n": i64::MAX}))
        .unwrap();
    let before = db.get("t", 1).unwrap().unwrap().to_value();
    assert!(matches!(
        db.increment("t", 1, "name", 1),
        Err(Error::NotACounter { .. })
    ));
    let e = db.increment("t", 1, "n", 1).unwrap_err();
    assert!(matches!(e, Error::CounterOverflow { .. }), "{e}");
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    assert!(
        db.increment("t", 1, "id", 1).is_err(),
        "the primary key is no counter"
    );
    assert!(db.increment("nope", 1, "n", 1).is_err());
    assert_eq!(db.get("t", 1).unwrap().unwrap().to_value(), before);
    // Absent record: created as {id, attr: by}.
    db.increment("t", 2, "n", -3).unwrap();
    let r = db.get("t", 2).unwrap().unwrap().to_value();
    assert_eq!((&r["id"], &r["n"]), (&json!(2), &json!(-3)));

    for e in [
        db.create_table("_conflicts", TableOptions::default())
            .unwrap_err(),
        db.drop_table("_conflicts").unwrap_err(),
    ] {
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
        assert!(e.to_string().contains("reserved"), "{e}");
    }
    assert!(!db
        .list_tables()
        .unwrap()
        .iter()
        .any(|t| t.name == "_conflicts"));
    assert_eq!(
        db.describe_table("t").unwrap().conflict,
        ConflictPolicy::LastWriterWins
    );
    // A resolver only for a resolver table.
    let r: ConflictResolver = Arc::new(|_: &ConflictCase| Resolution::TakeRemote);
    assert!(db.set_conflict_resolver("t", r).is_err());
}

#[test]
fn a_peer_write_with_nested_metadata_is_refused_whole() {
    let dir = common::scratch_dir();
    let db = Database::open(dir.path(), OpenOptions::new("n")).unwrap();
    db.create_table("t", TableOptions::default()).unwrap();
    let put = WriteOp::Put {
        json: "{\"id\":1}".into(),
        created: 1,
    };
    let nested = WriteOp::Meta {
        op: Box::new(WriteOp::Meta {
            op: Box::new(put),
            base: Stamp::default(),
            kind: log::MetaKind::Whole,
        }),
        base: Stamp::default(),
        kind: log::MetaKind::Whole,
    };
    let txn = RemoteTxn {
        stamp: Stamp {
            time: db.upsert("t", json!({"id": 0})).unwrap().stamp.time + 1,
            node: 77,
        },
        writes: vec![LogWrite {
            table: "t".into(),
            key: Key::Int(1),
            op: nested,
        }],
    };
    let out = db.apply_remote(&[txn], None).unwrap();
    assert!(matches!(out[0], RemoteOutcome::Refused(_)), "{out:?}");
    assert!(db.get("t", 1).unwrap().is_none());
}

#[test]
fn the_log_is_bounded_by_bytes_and_counts_what_it_dropped() {
    let mut nodes: Vec<Node> = ["a", "b"]
        .iter()
        .map(|n| Node::new(n, ConflictPolicy::LastWriterWins))
        .collect();
    // b keeps a tiny log.
    nodes[1].db.take().unwrap().close().unwrap();
    nodes[1].db = Some(
        Database::open(
            nodes[1].dir.path(),
            OpenOptions::new("b").conflict_log_max_bytes(1200),
        )
        .unwrap(),
    );
    let mut lost = 0;
    for i in 0..12 {
        nodes[0].db().upsert("t", json!({"id": 1, "v": i})).unwrap();
        nodes[1]
            .db()
            .upsert("t", json!({"id": 1, "v": -i, "pad": "x".repeat(50)}))
            .unwrap();
        settle(&mut nodes);
        lost += 1;
    }
    let kept = nodes[1].db().conflicts().unwrap();
    let dropped = nodes[1].db().conflicts_dropped();
    assert!(dropped > 0, "nothing dropped");
    assert!(!kept.is_empty());
    let bytes: usize = kept.iter().map(|e| e.to_json().to_string().len()).sum();
    assert!(bytes <= 1200 + 200, "{bytes} bytes kept");
    let total: BTreeMap<&str, usize> = BTreeMap::from([("kept", kept.len())]);
    assert!(
        total["kept"] as u64 + dropped <= 2 * lost,
        "{total:?} {dropped}"
    );
    // Newest kept: the oldest went first.
    let ids: Vec<&str> = kept.iter().map(|e| e.id.as_str()).collect();
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(ids, sorted);
}
