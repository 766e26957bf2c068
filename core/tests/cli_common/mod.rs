//! Helpers for tests that drive the `tidelog` binary: run it, keep a
//! `tidelog serve` child and its stderr, stop it with a signal.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_tidelog");

/// Runs `tidelog ARGS` in `dir` to completion.
pub fn tidelog(dir: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run tidelog")
}

/// `tidelog status --json --config CONFIG` in `dir`, parsed; panics with
/// the command's stderr when it fails.
pub fn status_json(dir: &Path, config: &str) -> serde_json::Value {
    let out = tidelog(dir, &["status", "--json", "--config", config]);
    assert!(
        out.status.success(),
        "tidelog status --json failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("status --json is JSON")
}

/// Makes a CA and node certificates in `dir/pki` with the binary itself.
pub fn make_certs(dir: &Path, nodes: &[&str]) -> PathBuf {
    let mut args = vec!["certs", "--out", "pki", "--ca-name", "cli test CA"];
    args.extend_from_slice(nodes);
    let out = tidelog(dir, &args);
    assert!(
        out.status.success(),
        "tidelog certs failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    dir.join("pki")
}

/// Timers short enough that redials happen within a test's patience; the
/// same values as `repl_common::fast`.
pub const FAST_TIMERS: &str = "\
[replication]
heartbeat_ms = 100
idle_timeout_ms = 1500
backoff_initial_ms = 50
backoff_max_ms = 500
";

/// A running `tidelog serve`. Dropping it SIGKILLs the child, so a failing
/// test leaves no process behind.
pub struct Serve {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Serve {
    pub fn start(config: &Path) -> Serve {
        let mut child = Command::new(BIN)
            .args(["serve", "--config"])
            .arg(config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn tidelog serve");
        let stderr = child.stderr.take().expect("piped stderr");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        let pid = child.id();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                // Echoed so a failing test shows the server's side too.
                eprintln!("[serve {pid}] {line}");
                sink.lock().unwrap().push(line);
            }
        });
        Serve {
            child,
            lines,
            reader: Some(reader),
        }
    }

    /// Waits for a stderr line matching `pred` and returns it; panics with
    /// everything seen so far if the child exits or time runs out.
    pub fn wait_line(
        &mut self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(l) = self.lines.lock().unwrap().iter().find(|l| pred(l)) {
                return l.clone();
            }
            let exited = self.child.try_wait().expect("try_wait");
            if exited.is_some() || Instant::now() > deadline {
                // Let the reader drain what the child wrote last.
                std::thread::sleep(Duration::from_millis(100));
                panic!(
                    "waiting for {what}: child {exited:?}; stderr so far:\n{}",
                    self.lines.lock().unwrap().join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits until serve is up; returns the address it listens on.
    pub fn ready(&mut self) -> String {
        let line = self.wait_line("listening", Duration::from_secs(30), |l| {
            l.starts_with("tidelog: listening on ")
        });
        self.wait_line("ready", Duration::from_secs(30), |l| l == "tidelog: ready");
        line["tidelog: listening on ".len()..]
            .split(' ')
            .next()
            .unwrap()
            .to_string()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn stderr(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    /// SIGTERM, then waits for the exit.
    pub fn terminate(mut self) -> (ExitStatus, String) {
        let pid = libc::pid_t::try_from(self.child.id()).unwrap();
        // SAFETY: kill(2) with a pid we spawned and still own (not reaped).
        let rc = unsafe { libc::kill(pid, libc::SIGTERM) };
        assert_eq!(rc, 0, "kill(SIGTERM)");
        let status = self.wait_exit(Duration::from_secs(30));
        (status, self.stderr())
    }

    /// SIGKILL: the process dies at once, mid-write or not.
    pub fn kill(mut self) {
        self.child.kill().expect("SIGKILL");
        self.wait_exit(Duration::from_secs(30));
    }

    fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.child.try_wait().expect("try_wait") {
                if let Some(r) = self.reader.take() {
                    let _ = r.join();
                }
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "tidelog serve did not exit within {timeout:?}:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Rewrites the `listen = ...` line, so a restart binds the port the edge
/// already dials.
pub fn set_listen(config: &Path, addr: &str) {
    let text = std::fs::read_to_string(config).unwrap();
    let text: String = text
        .lines()
        .map(|l| {
            if l.starts_with("listen = ") {
                format!("listen = \"{addr}\"\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    std::fs::write(config, text).unwrap();
}
