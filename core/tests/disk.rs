//! A full disk and a damaged journal, on both engines.
//!
//! Full disk: the database fills a small tmpfs through the ordinary write
//! path (and a replication apply); the failing write gets a typed error,
//! reads keep working, writes are refused while space is short and resume
//! once it is freed, without a reopen; close works; no acknowledged write
//! is lost, and a write that returned an error is absent after a reopen
//! unless its error said the outcome is unknown.
//!
//! Damaged journal: a child process writes rows that then live only in the
//! engine's journal, flushes, and is killed; the journal is then damaged
//! (4 KiB zeroed in the middle, or cut to a third). Opening is a `Corrupt`
//! error unless `recover_prefix` is asked for, which reports the count of
//! dropped transactions.
//!
//! These tests mount tmpfs (root, as in CI) and fail, not skip, where that
//! is not permitted.

mod common;

use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use tidelog::*;

/// A tmpfs of `mib` MiB, unmounted when dropped.
struct Tmpfs {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl Tmpfs {
    fn mount(mib: u64) -> Tmpfs {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().to_path_buf();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(&path)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "these tests need to mount a {mib} MiB tmpfs (run them as root, as CI does): mount said {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Tmpfs { _dir: dir, path }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

fn options(engine: EngineKind, durability: Durability) -> OpenOptions {
    OpenOptions::new("full")
        .engine(engine)
        .durability(durability)
        .memory_budget(8 << 20)
}

/// Takes up to `bytes` with a file, leaving at least `leave` bytes of what
/// was free.
fn fill_file(path: &Path, bytes: u64, leave: u64) {
    let mut f = std::fs::File::create(path).expect("filler");
    let chunk = vec![7u8; 64 << 10];
    let mut written = 0u64;
    while written < bytes && f.write_all(&chunk).is_ok() {
        written += chunk.len() as u64;
    }
    let _ = f.sync_all();
    if written < bytes {
        // Stopped by the full disk: give some back for the database.
        f.set_len(written.saturating_sub(leave))
            .expect("shrink filler");
    }
}

/// What became of a write the database refused.
#[derive(Debug)]
enum Refused {
    /// Certainly not committed.
    Not(u64),
    /// The error said the outcome is unknown.
    Unknown(u64),
}

fn check_refusal(engine: EngineKind, key: u64, e: &Error) -> Refused {
    assert_eq!(e.kind(), ErrorKind::Storage, "{engine:?}: {e}");
    match e {
        Error::OutcomeUnknown { .. } => Refused::Unknown(key),
        Error::DiskFull { .. } => {
            let text = e.to_string();
            assert!(
                text.contains("no space left") && text.contains("resume"),
                "{engine:?}: the message says the disk is full and what to do: {text}"
            );
            Refused::Not(key)
        }
        other => panic!("{engine:?}: a full disk is DiskFull or OutcomeUnknown, got {other:?}"),
    }
}

fn full_disk(engine: EngineKind, durability: Durability) {
    let fs = Tmpfs::mount(32);
    let dir = fs.path.join("db");
    let filler = fs.path.join("filler");
    let db = Database::open(&dir, options(engine, durability)).expect("open");
    db.create_table("t", TableOptions::default().index("n"))
        .expect("table");
    // Fill the disk through the write path: acknowledged keys must all
    // survive, refused ones must not (unless reported unknown). Three
    // times over: each failure has its own chance to leave the failed
    // commit whole in fjall's journal.
    let pad = "x".repeat(4000);
    let mut acked = Vec::new();
    let mut refused = Vec::new();
    let mut first = String::new();
    let mut key = 0u64;
    for cycle in 0..3 {
        // First a filler that leaves the database most of the disk, then
        // one that leaves it a few MiB.
        let filler_bytes = if cycle == 0 { 16 << 20 } else { u64::MAX };
        fill_file(&filler, filler_bytes, 3 << 20);
        let refused_before = refused.len();
        let acked_before = acked.len();
        let deadline = Instant::now() + Duration::from_secs(300);
        while refused.len() < refused_before + 5 {
            assert!(
                Instant::now() < deadline,
                "{engine:?}: the disk never filled"
            );
            key += 1;
            match db.insert("t", json!({"id": key, "n": key, "pad": pad})) {
                Ok(_) => {
                    assert!(
                        refused.len() == refused_before,
                        "{engine:?}: a write succeeded while the disk was still full"
                    );
                    acked.push(key);
                }
                Err(e) => {
                    if first.is_empty() {
                        first = format!("{e:?}");
                    }
                    refused.push(check_refusal(engine, key, &e));
                }
            }
        }
        // A replication apply is refused the same way.
        key += 1;
        let remote = remote_put(key);
        let e = db
            .apply_remote(std::slice::from_ref(&remote), Some(("peer", b"c1")))
            .expect_err("a remote apply on a full disk");
        refused.push(check_refusal(engine, key, &e));
        assert!(
            cycle > 0 || acked.len() > acked_before,
            "{engine:?} cycle {cycle}: no write fitted"
        );

        // Reads keep working. sled is reopened for them at once (it can
        // write nothing out any more), but where even that needs space, they
        // fail with DiskFull until there is room.
        let last = *acked.last().expect("acked");
        let reads = || -> Result<()> {
            let row1 = db.get("t", 1i64)?.expect("row 1");
            assert_eq!(row1.key(), &Key::Int(1));
            assert!(db.get("t", last as i64)?.is_some() || engine == EngineKind::Sled);
            assert!(db.count("t")? + db.dropped_transactions() >= acked.len() as u64 - 1);
            Ok(())
        };
        match reads() {
            Ok(()) => {}
            Err(e @ Error::DiskFull { .. }) if engine == EngineKind::Sled => {
                eprintln!("{engine:?}: reads while full: {e}")
            }
            Err(e) => panic!("{engine:?}: read while full: {e:?}"),
        }

        // Free space: writes resume without a reopen.
        std::fs::remove_file(&filler).expect("free space");
        key += 1;
        let resumed = key;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match db.insert("t", json!({"id": resumed, "n": resumed})) {
                Ok(_) => break,
                Err(e) => {
                    assert!(
                        Instant::now() < deadline,
                        "{engine:?}: writes did not resume after space was freed: {e}"
                    );
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        }
        acked.push(resumed);
        assert!(
            db.get("t", last as i64)
                .expect("read after space was freed")
                .is_some()
                || engine == EngineKind::Sled
        );
        assert!(db
            .get("t", resumed as i64)
            .expect("read after space was freed")
            .is_some());
        key += 1;
        let applied = remote_put(key);
        db.apply_remote(&[applied], Some(("peer", b"c2")))
            .expect("a remote apply after space was freed");
        acked.push(key);
    }
    db.flush().expect("flush after space was freed");
    // sled keeps grouped commits in memory until the group's flush; a
    // failed flush loses them (as a crash would), and that is counted.
    let lost = db.dropped_transactions();
    if engine == EngineKind::Fjall || durability == Durability::Sync {
        assert_eq!(lost, 0, "{engine:?} {durability:?}: commits lost");
    }
    db.close().expect("close after a full disk");

    let db = Database::open(&dir, options(engine, durability)).expect("reopen");
    let missing: Vec<u64> = acked
        .iter()
        .copied()
        .filter(|k| db.get("t", *k as i64).expect("get").is_none())
        .collect();
    assert_eq!(
        missing.len() as u64,
        lost,
        "{engine:?}: acknowledged writes {missing:?} lost, {lost} reported"
    );
    acked.retain(|k| !missing.contains(k));
    let mut unknown = 0;
    for r in &refused {
        match r {
            Refused::Not(k) => assert!(
                db.get("t", *k as i64).expect("get").is_none(),
                "{engine:?}: write {k} returned an error but is present after reopen"
            ),
            Refused::Unknown(_) => unknown += 1,
        }
    }
    assert_eq!(db.cursor("peer").expect("cursor"), Some(b"c2".to_vec()));
    assert_eq!(
        db.count("t").expect("count"),
        acked.len() as u64 + count_present(&db, &refused),
        "{engine:?}: rows other than the acknowledged ones"
    );
    eprintln!(
        "{engine:?} {durability:?}: {} acknowledged, {lost} of them lost, {} refused ({unknown} unknown); the first: {first}",
        acked.len(),
        refused.len(),
    );
    db.close().expect("close");
}

fn count_present(db: &Database, refused: &[Refused]) -> u64 {
    refused
        .iter()
        .filter(|r| match r {
            Refused::Unknown(k) => db.get("t", *k as i64).expect("get").is_some(),
            Refused::Not(_) => false,
        })
        .count() as u64
}

/// A replicated put of row `key` into `t` from node 99, stamped now.
fn remote_put(key: u64) -> RemoteTxn {
    RemoteTxn {
        stamp: Stamp {
            time: hlc::wall_millis() << 16,
            node: 99,
        },
        writes: vec![LogWrite {
            table: "t".into(),
            key: Key::Int(key as i64),
            op: WriteOp::Put {
                json: json!({"id": key, "n": key}).to_string(),
                created: 0,
            },
        }],
    }
}

#[test]
fn fjall_full_disk_sync_recovers_without_reopen() {
    full_disk(EngineKind::Fjall, Durability::Sync);
}

#[test]
fn fjall_full_disk_grouped_recovers_without_reopen() {
    full_disk(EngineKind::Fjall, Durability::default());
}

#[test]
fn sled_full_disk_sync_recovers_without_reopen() {
    full_disk(EngineKind::Sled, Durability::Sync);
}

/// Closing while the disk is still full releases the directory, and says
/// so where a failed commit could not be undone yet.
fn close_while_full(engine: EngineKind) {
    let fs = Tmpfs::mount(20);
    let dir = fs.path.join("db");
    let filler = fs.path.join("filler");
    let db = Database::open(&dir, options(engine, Durability::Sync)).expect("open");
    db.create_table("t", TableOptions::default())
        .expect("table");
    fill_file(&filler, 6 << 20, 0);
    let pad = "x".repeat(4000);
    let mut acked = Vec::new();
    let mut key = 0u64;
    let refused = loop {
        key += 1;
        match db.insert("t", json!({"id": key, "pad": pad})) {
            Ok(_) => acked.push(key),
            Err(e) => break check_refusal(engine, key, &e),
        }
    };
    let closed = db.close();
    eprintln!("{engine:?}: close while full: {closed:?}");
    let unknown = match &closed {
        Ok(()) => false,
        Err(Error::OutcomeUnknown { seq, .. }) => {
            assert!(*seq > 0);
            true
        }
        Err(e @ Error::DiskFull { .. }) => {
            assert_eq!(e.kind(), ErrorKind::Storage);
            false
        }
        Err(e) => panic!("{engine:?}: close while full: {e:?}"),
    };
    assert!(db.is_closed());
    std::fs::remove_file(&filler).expect("free space");
    let db = Database::open(&dir, options(engine, Durability::Sync))
        .expect("the directory was released and opens again");
    for k in &acked {
        assert!(
            db.get("t", *k as i64).expect("get").is_some(),
            "{engine:?}: acknowledged write {k} lost"
        );
    }
    if let (Refused::Not(k), false) = (&refused, unknown) {
        assert!(
            db.get("t", *k as i64).expect("get").is_none(),
            "{engine:?}: write {k} returned an error, close said nothing, and it is present"
        );
    }
    db.insert("t", json!({"id": key + 1})).expect("write");
    db.close().expect("close");
}

#[test]
fn fjall_close_while_the_disk_is_full() {
    close_while_full(EngineKind::Fjall);
}

#[test]
fn sled_close_while_the_disk_is_full() {
    close_while_full(EngineKind::Sled);
}

// ---- damaged journal ----------------------------------------------------

const ROWS: u64 = 5000;

/// Child: writes ROWS one-row transactions, flushes, says so, and waits to
/// be killed, so that the rows live only in the engine's journal.
fn journal_writer(dir: &str, engine: EngineKind) {
    let db = Database::open(dir, OpenOptions::new("jnl").engine(engine)).expect("child open");
    db.create_table("t", TableOptions::default())
        .expect("table");
    for i in 0..ROWS {
        db.insert("t", json!({"id": i, "v": "y".repeat(40)}))
            .expect("insert");
    }
    db.flush().expect("flush");
    println!("\nflushed");
    std::thread::sleep(Duration::from_secs(600));
}

fn write_then_kill(dir: &Path, engine: EngineKind) {
    let mut child = common::child_command(
        "journal_writer",
        &[dir.to_str().expect("utf-8 path"), engine.as_str()],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::null())
    .spawn()
    .expect("spawn");
    let stdout = child.stdout.take().expect("stdout");
    let mut flushed = false;
    for line in BufReader::new(stdout).lines() {
        if line.expect("line") == "flushed" {
            flushed = true;
            break;
        }
    }
    child.kill().expect("kill");
    child.wait().expect("wait");
    assert!(flushed, "{engine:?}: the child did not get to flush");
}

/// The file that holds what the engine has not yet written elsewhere: the
/// largest journal file (fjall), the log file (sled).
fn journal_file(dir: &Path, engine: EngineKind) -> PathBuf {
    match engine {
        EngineKind::Fjall => {
            let mut best: Option<(u64, PathBuf)> = None;
            let mut stack = vec![dir.join("data")];
            while let Some(d) = stack.pop() {
                for e in std::fs::read_dir(&d).expect("read_dir") {
                    let e = e.expect("entry");
                    let p = e.path();
                    if p.is_dir() {
                        stack.push(p);
                    } else if p.extension().is_some_and(|x| x == "jnl") {
                        let len = used_len(&p);
                        if best.as_ref().is_none_or(|b| len > b.0) {
                            best = Some((len, p));
                        }
                    }
                }
            }
            best.expect("a journal file").1
        }
        EngineKind::Sled => dir.join("data").join("db"),
    }
}

/// fjall preallocates its journal (zeros past the end of what it wrote):
/// the length up to the last nonzero byte.
fn used_len(p: &Path) -> u64 {
    let bytes = std::fs::read(p).expect("read journal");
    bytes
        .iter()
        .rposition(|b| *b != 0)
        .map_or(0, |i| i as u64 + 1)
}

enum Damage {
    ZeroMiddle4k,
    TruncateToThird,
}

fn damage(path: &Path, how: &Damage) {
    let len = used_len(path);
    assert!(len > 64 << 10, "journal only {len} bytes: rows not in it?");
    match how {
        Damage::ZeroMiddle4k => {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .open(path)
                .expect("open journal");
            f.seek(SeekFrom::Start(len / 2)).expect("seek");
            f.write_all(&[0u8; 4096]).expect("zero");
            f.sync_all().expect("sync");
        }
        Damage::TruncateToThird => {
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(path)
                .expect("open journal");
            f.set_len(len / 3).expect("truncate");
            f.sync_all().expect("sync");
        }
    }
}

fn damaged_journal(engine: EngineKind, how: Damage) {
    let dir = tempfile::tempdir().expect("tempdir");
    write_then_kill(dir.path(), engine);
    damage(&journal_file(dir.path(), engine), &how);
    let opts = OpenOptions::new("jnl").engine(engine);

    // Refused, and again: the refusal does not wear off.
    for attempt in 0..2 {
        match Database::open(dir.path(), opts.clone()) {
            Err(e) => {
                assert_eq!(e.kind(), ErrorKind::Corrupt, "{engine:?}: {e}");
                eprintln!("{engine:?} attempt {attempt}: {e}");
            }
            // sled's file also holds superseded pages: damage there loses
            // nothing, and then there is nothing to report.
            Ok(db) if engine == EngineKind::Sled => {
                assert_eq!(
                    db.count("t").expect("count"),
                    ROWS,
                    "{engine:?}: opened without error but lost rows"
                );
                eprintln!("{engine:?}: the damage hit no live data");
                return;
            }
            Ok(db) => panic!(
                "{engine:?}: a damaged journal opened without error, with {:?} of {ROWS} rows",
                db.count("t")
            ),
        }
    }

    // Opted in: the longest valid prefix, and the count of what it lost.
    let db = match Database::open(dir.path(), opts.clone().recover_prefix(true)) {
        Ok(db) => db,
        // sled cannot read some damage at all (it used to panic): nothing
        // to recover a prefix from, and it says so.
        Err(e) if engine == EngineKind::Sled && e.kind() == ErrorKind::Corrupt => {
            assert!(e.to_string().contains("sled failed"), "{e}");
            eprintln!("{engine:?}: unreadable even with recover_prefix: {e}");
            return;
        }
        Err(e) => panic!("{engine:?}: open with recover_prefix: {e}"),
    };
    // Cut to a third, sled can lose even the table.
    let rows = match db.count("t") {
        Err(Error::TableNotFound(_)) => 0,
        other => other.expect("count"),
    };
    let dropped = db.dropped_transactions();
    assert!(rows < ROWS, "{engine:?}: damage lost nothing?");
    assert_eq!(
        rows + dropped,
        ROWS,
        "{engine:?}: {rows} rows kept, {dropped} reported dropped"
    );
    eprintln!("{engine:?}: kept {rows} of {ROWS} rows, dropped_transactions = {dropped}");
    db.ensure_table("t", TableOptions::default())
        .expect("table");
    db.insert("t", json!({"id": ROWS, "v": "after"}))
        .expect("write after recovery");
    db.close().expect("close");

    // Accepted once: later opens are clean.
    let db = Database::open(dir.path(), opts).expect("open after the loss was accepted");
    assert_eq!(db.dropped_transactions(), 0);
    assert_eq!(db.count("t").expect("count"), rows + 1);
    db.close().expect("close");
}

#[test]
fn fjall_zeroed_journal_middle_is_corrupt_unless_prefix_recovered() {
    damaged_journal(EngineKind::Fjall, Damage::ZeroMiddle4k);
}

#[test]
fn fjall_truncated_journal_is_corrupt_unless_prefix_recovered() {
    damaged_journal(EngineKind::Fjall, Damage::TruncateToThird);
}

#[test]
fn sled_zeroed_journal_middle_is_corrupt_unless_prefix_recovered() {
    damaged_journal(EngineKind::Sled, Damage::ZeroMiddle4k);
}

#[test]
fn sled_truncated_journal_is_corrupt_unless_prefix_recovered() {
    damaged_journal(EngineKind::Sled, Damage::TruncateToThird);
}

#[test]
#[ignore = "child process entry point, started by other tests"]
fn child_process() {
    let Some((role, args)) = common::child_role() else {
        return;
    };
    match role.as_str() {
        "journal_writer" => journal_writer(&args[0], args[1].parse().expect("engine")),
        other => panic!("unknown role {other}"),
    }
}

#[test]
fn sled_full_disk_grouped_recovers_without_reopen() {
    full_disk(EngineKind::Sled, Durability::default());
}
