//! The hub: one real `tidelog serve` process (the crate's own binary), its
//! generated config, and what the simulator reads about it from /proc
//! (resident memory, CPU time, file descriptor limit).

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use super::edge::{ALERTS, HUB, THRESHOLDS};

pub const BIN: &str = env!("CARGO_BIN_EXE_tidelog");

/// The node that writes thresholds: a real in-process `Database`, an
/// explicit peer of the hub.
pub const OPERATOR: &str = "operator";

/// What the hub's config is made from.
pub struct HubSetup<'a> {
    pub listen: &'a str,
    pub data_dir: &'a Path,
    pub cert: &'a Path,
    pub key: &'a Path,
    pub ca: &'a Path,
    pub edges: &'a [String],
}

/// Whether the fleet rule's glob (`edge-?????`) takes `name`.
fn takes_fleet_rule(name: &str) -> bool {
    name.len() == 10 && name.starts_with("edge-")
}

/// The hub's `tidelog serve` TOML. The one place that says how the hub
/// knows its edges: one `[[rules]]` entry, `edge-?????` (edges are
/// admitted on first contact, as a fleet hub runs; a name like
/// `edge-stranger` matches no rule).
///
/// `log_min_age` keeps every applied transaction in the hub's log for the
/// run, so the check after it can count each alert's entries (an alert
/// applied twice would have two). `status_interval_secs = 0`: one status
/// line per peer every 10 s would be 10,000 lines.
pub fn hub_config(s: &HubSetup) -> String {
    let mut t = format!(
        "node_name = \"{HUB}\"\n\
         data_dir = \"{}\"\n\
         listen = \"{}\"\n\
         status_interval_secs = 0\n\n\
         [tls]\ncert = \"{}\"\nkey = \"{}\"\nca = \"{}\"\n\n\
         [retention]\nlog_min_age = \"1d\"\nlog_max_bytes = \"4GiB\"\n\n\
         [[tables]]\nname = \"{THRESHOLDS}\"\n\n\
         [[tables]]\nname = \"{ALERTS}\"\n\n\
         [[peers]]\nname = \"{OPERATOR}\"\n\
         tables = [{{ table = \"{THRESHOLDS}\", subscribe = true }}]\n",
        s.data_dir.display(),
        s.listen,
        s.cert.display(),
        s.key.display(),
        s.ca.display(),
    );
    // One rule admits the fleet (edge names are `edge-` and five digits),
    // as a fleet hub runs; the names are only checked against it.
    assert!(
        s.edges.iter().all(|e| takes_fleet_rule(e)),
        "every simulated edge is named for the fleet rule"
    );
    let _ = write!(
        t,
        "\n[[rules]]\nname = \"fleet\"\nnode_name = \"edge-?????\"\n\
         tables = [{{ table = \"{THRESHOLDS}\", publish = true }}, {{ table = \"{ALERTS}\", subscribe = true }}]\n"
    );
    t
}

/// Raises this process's open-file limit to its hard limit; children (the
/// hub) inherit it. Returns (soft, hard) after the change.
pub fn raise_nofile() -> (u64, u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own; no other effect.
    let got = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
    if got != 0 {
        return (0, 0);
    }
    lim.rlim_cur = lim.rlim_max;
    // SAFETY: setrlimit only reads the struct; raising the soft limit up to
    // the hard one needs no privilege.
    let _ = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) };
    // SAFETY: as above.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
    (lim.rlim_cur, lim.rlim_max)
}

/// Clock ticks per second, for /proc/PID/stat times.
fn clock_ticks() -> u64 {
    // SAFETY: sysconf reads a constant of the system; no memory involved.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as u64
    } else {
        100
    }
}

/// CPU time (user + system) of process `pid` so far.
pub fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces; fields after it are fixed.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 1000 / clock_ticks()))
}

/// Resident memory of `pid` in KiB (VmRSS).
pub fn rss_kib(pid: u32) -> Option<u64> {
    proc_status_field(pid, "VmRSS:")
}

fn proc_status_field(pid: u32, field: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with(field))?;
    line[field.len()..].split_whitespace().next()?.parse().ok()
}

/// The soft "Max open files" of `pid`.
pub fn nofile_of(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/limits")).ok()?;
    let line = s.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Open file descriptors of `pid`.
pub fn fd_count(pid: u32) -> Option<usize> {
    Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count())
}

/// A running `tidelog serve`. Its stderr is drained by a thread (10,000
/// peers log 10,000 lines at start; an undrained pipe would block it),
/// keeping the last lines for reports. Dropping it SIGKILLs the child.
pub struct Hub {
    child: Child,
    lines: Arc<Mutex<VecDeque<String>>>,
    events: mpsc::Receiver<String>,
    /// Lines that report a refused or failed link, since start.
    pub refused_lines: Arc<AtomicU64>,
}

const KEEP_LINES: usize = 300;

impl Hub {
    pub fn start(config: &Path) -> Hub {
        let mut child = Command::new(BIN)
            .args(["serve", "--config"])
            .arg(config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn tidelog serve");
        let stderr = child.stderr.take().expect("piped stderr");
        let lines = Arc::new(Mutex::new(VecDeque::new()));
        let refused_lines = Arc::new(AtomicU64::new(0));
        let (tx, events) = mpsc::channel();
        let (sink, refused) = (lines.clone(), refused_lines.clone());
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if line.starts_with("tidelog: listening on ") || line == "tidelog: ready" {
                    let _ = tx.send(line.clone());
                }
                if line.contains("refused replication link") {
                    refused.fetch_add(1, Ordering::Relaxed);
                }
                let mut l = sink.lock().unwrap();
                if l.len() == KEEP_LINES {
                    l.pop_front();
                }
                l.push_back(line);
            }
        });
        Hub {
            child,
            lines,
            events,
            refused_lines,
        }
    }

    /// Waits for "listening on ADDR" and "ready"; returns ADDR.
    pub fn ready(&mut self, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        let mut addr = None;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(l) if l == "tidelog: ready" => {
                    return addr.expect("ready before listening");
                }
                Ok(l) => {
                    let a = l["tidelog: listening on ".len()..].split(' ').next();
                    addr = a.map(str::to_string);
                }
                Err(_) => panic!(
                    "tidelog serve not ready within {timeout:?}; last stderr:\n{}",
                    self.tail(40)
                ),
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn tail(&self, n: usize) -> String {
        let l = self.lines.lock().unwrap();
        let skip = l.len().saturating_sub(n);
        l.iter().skip(skip).cloned().collect::<Vec<_>>().join("\n")
    }

    /// SIGKILL: the hub dies at once, whatever it was writing.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM and wait: the hub closes its database cleanly.
    pub fn terminate(mut self, timeout: Duration) -> bool {
        let Ok(pid) = libc::pid_t::try_from(self.child.id()) else {
            return false;
        };
        // SAFETY: kill(2) on the pid of a child we spawned and have not
        // reaped, so it cannot name another process.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(s)) = self.child.try_wait() {
                return s.success();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Rewrites the config's `listen` line, so a restarted hub binds the port
/// the edges dial.
pub fn pin_listen(config: &Path, addr: &str) {
    let text = std::fs::read_to_string(config).expect("read hub config");
    let out: String = text
        .lines()
        .map(|l| {
            if l.starts_with("listen = ") {
                format!("listen = \"{addr}\"\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    std::fs::write(config, out).expect("write hub config");
}

/// Paths of the hub's files in the run's scratch directory.
pub struct HubFiles {
    pub config: PathBuf,
    pub data: PathBuf,
}
