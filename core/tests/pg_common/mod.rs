//! A private PostgreSQL server for one test: its own data directory in a
//! temporary folder, a free port on 127.0.0.1, trust authentication for
//! the role `tidelog`, stopped (or killed) by the postmaster's PID.
//!
//! PostgreSQL refuses to run as root, so under root the server runs as the
//! `postgres` system user (the Debian package creates it) and its folder
//! belongs to that user; as anyone else it runs as the caller. The server
//! binaries come from Debian's `postgresql` package (tests/run_all.sh
//! installs it where missing); without them a test fails, it never skips.
#![allow(dead_code)]

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The role and database every test server has.
pub const ROLE: &str = "tidelog";
pub const DATABASE: &str = "tidelog";

pub struct Postgres {
    /// Holds the data directory; removed when the server is dropped.
    _dir: tempfile::TempDir,
    data: PathBuf,
    bin: PathBuf,
    pub port: u16,
    /// The postmaster, a child of the test process.
    child: Option<Child>,
    /// uid/gid the server runs as (None: as the test process).
    owner: Option<(u32, u32)>,
}

/// The folder with `initdb` and `postgres` of the newest installed major.
fn server_bin() -> PathBuf {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let major = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("postgres").is_file().then_some((major, bin))
        })
        .collect();
    found.sort();
    match found.pop() {
        Some((major, bin)) if major >= 15 => bin,
        Some((major, _)) => panic!(
            "PostgreSQL {major} found in /usr/lib/postgresql; tidelog's tests need 15 or newer"
        ),
        None => panic!(
            "no PostgreSQL server in /usr/lib/postgresql/*/bin: install it with \
             `apt-get install -y postgresql` (tests/run_all.sh does this where it is missing)"
        ),
    }
}

fn id_of(flag: &str, user: &str) -> u32 {
    let out = Command::new("id")
        .args([flag, user])
        .output()
        .expect("run id");
    assert!(
        out.status.success(),
        "no `{user}` system user to run PostgreSQL as (root may not): install Debian's \
         `postgresql` package, which creates it"
    );
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("id prints a number")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind a free port")
        .local_addr()
        .expect("local addr")
        .port()
}

fn chown_tree(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::chown(path, Some(uid), Some(gid)).expect("chown");
    if path.is_dir() {
        for e in std::fs::read_dir(path).expect("read dir").flatten() {
            chown_tree(&e.path(), uid, gid);
        }
    }
}

impl Postgres {
    /// Creates a cluster and starts it. `settings` are extra
    /// `postgresql.conf` lines (e.g. `wal_level = logical`).
    pub fn start_with(settings: &[&str]) -> Postgres {
        let bin = server_bin();
        let dir = tempfile::Builder::new()
            .prefix("tidelog-pg-")
            .tempdir()
            .expect("temp dir");
        let owner = if is_root() {
            Some((id_of("-u", "postgres"), id_of("-g", "postgres")))
        } else {
            None
        };
        // The server user must reach its folder inside ours.
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .expect("chmod temp dir");
        let data = dir.path().join("data");
        std::fs::create_dir(&data).expect("data dir");
        if let Some((uid, gid)) = owner {
            chown_tree(dir.path(), uid, gid);
        }
        let out = as_owner(Command::new(bin.join("initdb")), owner)
            .args(["-D"])
            .arg(&data)
            .args(["-U", ROLE, "--auth=trust", "-E", "UTF8", "--no-sync"])
            .output()
            .expect("run initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut conf = String::from("\n# tidelog test server\nlisten_addresses = '127.0.0.1'\n");
        conf.push_str(&format!(
            "unix_socket_directories = '{}'\n",
            dir.path().display()
        ));
        conf.push_str("max_connections = 200\nshared_buffers = 64MB\n");
        for s in settings {
            conf.push_str(s);
            conf.push('\n');
        }
        let conf_path = data.join("postgresql.conf");
        let mut existing = std::fs::read_to_string(&conf_path).expect("read postgresql.conf");
        existing.push_str(&conf);
        std::fs::write(&conf_path, existing).expect("write postgresql.conf");
        let mut pg = Postgres {
            _dir: dir,
            data,
            bin,
            port: free_port(),
            child: None,
            owner,
        };
        pg.launch();
        pg.sql(&format!("CREATE DATABASE {DATABASE}"), "postgres");
        pg
    }

    pub fn start() -> Postgres {
        Postgres::start_with(&[])
    }

    fn launch(&mut self) {
        let log = std::fs::File::create(self.data.join("../server.log")).expect("server log");
        if let Some((uid, gid)) = self.owner {
            let _ = std::os::unix::fs::chown(self.data.join("../server.log"), Some(uid), Some(gid));
        }
        let child = as_owner(Command::new(self.bin.join("postgres")), self.owner)
            .arg("-D")
            .arg(&self.data)
            .args(["-p", &self.port.to_string()])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .expect("start postgres");
        self.child = Some(child);
        self.wait_ready();
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!(
                        "postgres exited at start ({status}); its log:\n{}",
                        self.server_log()
                    );
                }
            }
            let ok = Command::new(self.bin.join("pg_isready"))
                .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-q"])
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if ok {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "postgres not ready on 127.0.0.1:{} within 60 s; its log:\n{}",
                self.port,
                self.server_log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn server_log(&self) -> String {
        std::fs::read_to_string(self.data.join("../server.log")).unwrap_or_default()
    }

    /// The postmaster's PID while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// A libpq/tokio-postgres connection string for the test database.
    pub fn conn_string(&self) -> String {
        format!(
            "host=127.0.0.1 port={} user={ROLE} dbname={DATABASE}",
            self.port
        )
    }

    /// `postgres://` form of [`Postgres::conn_string`].
    pub fn url(&self) -> String {
        format!("postgres://{ROLE}@127.0.0.1:{}/{DATABASE}", self.port)
    }

    /// Runs SQL with psql in `database` and returns its unaligned output
    /// (`|`-separated columns, one row per line); panics on an error.
    pub fn sql(&self, sql: &str, database: &str) -> String {
        let out = Command::new(self.bin.join("psql"))
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-U", ROLE, "-d", database, "-X", "-q", "-A", "-t"])
            .args(["-v", "ON_ERROR_STOP=1", "-c", sql])
            .output()
            .expect("run psql");
        assert!(
            out.status.success(),
            "psql failed for `{sql}`: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim_end().to_string()
    }

    /// [`Postgres::sql`] in the test database.
    pub fn query(&self, sql: &str) -> String {
        self.sql(sql, DATABASE)
    }

    /// Stops the server cleanly (SIGINT: fast shutdown, open transactions
    /// rolled back) and waits for it.
    pub fn stop(&mut self) {
        self.signal_and_wait(libc::SIGINT);
    }

    /// Kills the postmaster with SIGKILL, as a crash would; its backends
    /// notice and exit, and the next start runs crash recovery.
    pub fn kill(&mut self) {
        let backends = self.pid().map(children_of).unwrap_or_default();
        self.signal_and_wait(libc::SIGKILL);
        // A new postmaster refuses to start while a backend of the old one
        // still holds its shared memory.
        let deadline = Instant::now() + Duration::from_secs(30);
        while backends
            .iter()
            .any(|pid| Path::new(&format!("/proc/{pid}")).exists())
        {
            assert!(
                Instant::now() < deadline,
                "backends of the killed postmaster still alive after 30 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts the server again on the same port and data directory.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "restart a stopped server");
        self.launch();
    }

    fn signal_and_wait(&mut self, sig: i32) {
        if let Some(mut child) = self.child.take() {
            let pid = child.id() as i32;
            let _ = Command::new("kill")
                .args([format!("-{sig}"), pid.to_string()])
                .status();
            let _ = child.wait();
        }
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // Immediate shutdown: the test is over and the folder goes next.
        self.signal_and_wait(libc::SIGQUIT);
    }
}

/// PIDs whose parent is `parent` (from /proc/PID/stat's fourth field).
fn children_of(parent: u32) -> Vec<u32> {
    let mut kids = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        // The command name is in parentheses and may hold spaces.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(parent) {
            kids.push(pid);
        }
    }
    kids
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn as_owner(mut cmd: Command, owner: Option<(u32, u32)>) -> Command {
    if let Some((uid, gid)) = owner {
        cmd.uid(uid).gid(gid);
        // HOME of root is not readable by the server user.
        cmd.env("HOME", "/tmp");
        cmd.current_dir("/tmp");
    }
    cmd
}
