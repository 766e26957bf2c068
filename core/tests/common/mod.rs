//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Output};

use tidelog::*;

pub const ENGINES: [EngineKind; 2] = [EngineKind::Fjall, EngineKind::Sled];

/// A scratch directory on tmpfs where there is one: tests that open many
/// databases and do not test durability should not wait on fsync.
pub fn scratch_dir() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        if let Ok(d) = tempfile::Builder::new()
            .prefix("tidelog-test")
            .tempdir_in(shm)
        {
            return d;
        }
    }
    tempfile::tempdir().expect("tempdir")
}

pub fn open(dir: &Path, engine: EngineKind) -> Database {
    Database::open(dir, OpenOptions::new("n1").engine(engine)).expect("open")
}

/// Everything a reader can observe: tables, records with stamps, log bounds.
pub fn snapshot(db: &Database) -> Vec<String> {
    let mut out = vec![format!("{:?}", db.log_bounds().unwrap())];
    for t in db.list_tables().unwrap() {
        out.push(format!("table {t:?}"));
        for r in db.scan(&t.name, &ScanOptions::default()).unwrap() {
            out.push(format!("{} {:?} {}", t.name, r.stamp(), r.to_json_string()));
        }
    }
    out
}

/// Runs this test binary again as a child process in `role`; the test file
/// must have the ignored `child_process` entry point calling
/// [`child_main`] with its roles.
pub fn child_command(role: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(std::env::current_exe().expect("current exe"));
    cmd.args([
        "--ignored",
        "--exact",
        "child_process",
        "--nocapture",
        "--test-threads=1",
    ])
    .env("TIDELOG_CHILD_ROLE", role)
    .env("TIDELOG_CHILD_ARGS", args.join("\u{1f}"));
    cmd
}

pub fn run_child(role: &str, args: &[&str]) -> Output {
    child_command(role, args).output().expect("run child")
}

/// The role and arguments this process was started with by `child_command`.
pub fn child_role() -> Option<(String, Vec<String>)> {
    let role = std::env::var("TIDELOG_CHILD_ROLE").ok()?;
    let args = std::env::var("TIDELOG_CHILD_ARGS").unwrap_or_default();
    Some((role, args.split('\u{1f}').map(String::from).collect()))
}
