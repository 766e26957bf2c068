//! Hand-rolled argument parsing: a few commands with a handful of flags do
//! not justify a parser crate and its compile time on every build.

use std::path::PathBuf;

use super::CliError;

pub const HELP: &str = "\
tidelog: embedded database for edge gateways, replicated over mutual TLS

USAGE:
    tidelog certs --out DIR [--ca-name NAME] [NODE...]
    tidelog certs --out DIR --add NODE [--add NODE...]
    tidelog serve --config FILE
    tidelog status [PEER] [--json] (--config FILE | --socket PATH)
    tidelog peers [--json] (--config FILE | --socket PATH)
    tidelog forget PEER (--config FILE | --socket PATH)
    tidelog reload (--config FILE | --socket PATH)
    tidelog --help | --version
    tidelog COMMAND --help

COMMANDS:
    certs    Make a development CA and node certificates (never overwrites)
    serve    Run an instance from a TOML config file until SIGINT/SIGTERM
    status   Status of each peer (or PEER) of a running serve
    peers    One line per peer of a running serve: link, since when, backlog
    forget   Delete what a running serve keeps about a peer no longer configured
    reload   Make a running serve re-read its config (as SIGHUP), print what changed

Errors exit with status 2 (bad arguments or config) or 1 (failure while running).
";

pub const CERTS_HELP: &str = "\
tidelog certs: development certificates for tidelog nodes

USAGE:
    tidelog certs --out DIR [--ca-name NAME] [NODE...]
        Creates DIR/ca.pem and DIR/ca.key, a new CA, and for each NODE
        DIR/NODE.pem and DIR/NODE.key, whose DNS name is the node name.
    tidelog certs --out DIR --add NODE [--add NODE...]
        Signs more nodes with the CA already in DIR.

Existing files are never overwritten. Keys are written with mode 0600.
For trying tidelog out and for tests: production clusters should issue
certificates from their own PKI.

OPTIONS:
    --out DIR         Directory for the files (created if missing)
    --ca-name NAME    Common name of a new CA [default: tidelog development CA]
    --add NODE        Sign NODE with the existing CA in DIR
";

pub const SERVE_HELP: &str = "\
tidelog serve: run a tidelog instance (e.g. the cloud side) from a config file

USAGE:
    tidelog serve --config FILE

Opens the data directory, creates the configured tables if missing, starts
replication (listens and/or dials the configured peers) and logs one status
line per peer to stderr every `status_interval_secs`. SIGINT or SIGTERM
closes the database (flushing it) and exits with status 0. SIGHUP re-reads
the config: peers, new tables and status_interval_secs are applied at once;
other changes are logged as needing a restart; a bad file is refused and
the running config stays. `tidelog reload` does the same and prints it.

An admin socket (a Unix socket, owner-only, default admin.sock in
data_dir) answers `tidelog status`, `peers`, `forget` and `reload`. With
[metrics] listen, GET /metrics serves OpenMetrics text (names in README).

CONFIG (TOML; relative paths are relative to the config file):
    node_name = \"cloud\"              # required, the DNS name in its certificate
    data_dir = \"data\"                # required
    engine = \"fjall\"                 # or \"sled\"
    durability = \"grouped\"           # or \"sync\"; flush_interval_ms = 50
    memory_budget_mib = 64
    max_record_bytes = 1048576
    max_clock_skew_secs = 60
    recover_prefix = false            # true: keep a damaged journal's valid prefix
    listen = \"0.0.0.0:7000\"          # accept peers dialing in
    status_interval_secs = 10         # 0 = no status lines
    insecure = false                  # true: plaintext, tests only, no [tls]
    [tls]      cert = ..  key = ..  ca = ..
    [replication]  heartbeat_ms, idle_timeout_ms, connect_timeout_ms,
                   backoff_initial_ms, backoff_max_ms, worker_threads
    [[tables]] name, primary_key = \"id\", indexes = [], expiration (secs)
    [[peers]]  name, address (set = we dial it),
               tables = [{ table, publish, subscribe, since_ms }]
    [admin]    socket = \"/run/tidelog/admin.sock\"   # default: data_dir/admin.sock
    [metrics]  listen = \"127.0.0.1:9464\"            # default: no /metrics

See examples/cloud.toml for a commented example. Unknown keys are refused.
";

pub const ADMIN_HELP: &str = "\
tidelog status | peers | forget | reload: talk to a running `tidelog serve`

USAGE:
    tidelog status [PEER] [--json] (--config FILE | --socket PATH)
        Each peer's status line (link, sequences, backlog, lag, refusals,
        bytes, tables, last error), or PEER's. --json: the library's
        PeerStatus, a list (one object with PEER).
    tidelog peers [--json] (--config FILE | --socket PATH)
        One line per peer: name, connected (since) or dormant (last
        contact), backlog transactions and bytes.
    tidelog forget PEER (--config FILE | --socket PATH)
        Deletes the peer's resume points, acknowledgements (it no longer
        holds the log), quota use and refusals. Refused while the peer is
        in the config's [[peers]]: remove it there first.
    tidelog reload (--config FILE | --socket PATH)
        Re-reads the config as SIGHUP does; prints what was applied, what
        needs a restart and what failed. Exits 1 if anything was refused.

OPTIONS:
    --config FILE    The serve's config: its [admin] socket, or admin.sock
                     in its data_dir
    --socket PATH    The admin socket itself
    --json           Machine-readable output (status, peers)

The socket is owner-only: run these as the user running the serve.
";

#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    Help(&'static str),
    Version,
    Certs(Certs),
    Serve { config: PathBuf },
    Admin(Admin),
}

/// Where a running serve's admin socket is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Config(PathBuf),
    Socket(PathBuf),
}

/// A command for a running serve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admin {
    pub target: Target,
    pub json: bool,
    pub what: AdminCommand,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminCommand {
    Status(Option<String>),
    Peers,
    Forget(String),
    Reload,
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Certs {
    pub out: PathBuf,
    pub ca_name: Option<String>,
    pub nodes: Vec<String>,
    pub add: Vec<String>,
}

fn usage(msg: impl Into<String>) -> CliError {
    CliError::Usage(msg.into())
}

/// Parses everything after the program name.
pub fn parse(args: Vec<std::ffi::OsString>) -> Result<Command, CliError> {
    let mut args = args
        .into_iter()
        .map(|a| {
            a.into_string()
                .map_err(|a| usage(format!("argument {a:?} is not valid UTF-8")))
        })
        .collect::<Result<Vec<String>, _>>()?
        .into_iter();
    let cmd = match args.next().as_deref() {
        None => return Err(usage("no command given")),
        Some("-h" | "--help" | "help") => return Ok(Command::Help(HELP)),
        Some("-V" | "--version") => return Ok(Command::Version),
        Some("certs") => "certs",
        Some("serve") => "serve",
        Some("status") => "status",
        Some("peers") => "peers",
        Some("forget") => "forget",
        Some("reload") => "reload",
        Some(other) => return Err(usage(format!("unknown command `{other}`"))),
    };
    let mut out = None;
    let mut ca_name = None;
    let mut config = None;
    let mut nodes = Vec::new();
    let mut add = Vec::new();
    let mut socket = None;
    let mut json = false;
    let mut positional: Vec<String> = Vec::new();
    while let Some(a) = args.next() {
        // `--flag=value` and `--flag value` both work.
        let (flag, inline) = match a.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (a.clone(), None),
        };
        let mut value = |what: &str| -> Result<String, CliError> {
            inline
                .clone()
                .or_else(|| args.next())
                .ok_or_else(|| usage(format!("{flag} needs a value ({what})")))
        };
        match (cmd, flag.as_str()) {
            (_, "-h" | "--help") => {
                return Ok(Command::Help(match cmd {
                    "certs" => CERTS_HELP,
                    "serve" => SERVE_HELP,
                    _ => ADMIN_HELP,
                }))
            }
            ("certs", "--out") => out = Some(PathBuf::from(value("a directory")?)),
            ("certs", "--ca-name") => ca_name = Some(value("the CA's common name")?),
            ("certs", "--add") => add.push(value("a node name")?),
            (_, "--config") if cmd != "certs" => config = Some(PathBuf::from(value("a file")?)),
            ("serve" | "certs", _) if flag == "--socket" || flag == "--json" => {
                return Err(usage(format!("`tidelog {cmd}` has no option `{flag}`")))
            }
            (_, "--socket") => socket = Some(PathBuf::from(value("a socket path")?)),
            ("status" | "peers", "--json") => json = true,
            ("certs", f) if !f.starts_with('-') => nodes.push(a),
            ("status" | "forget", f) if !f.starts_with('-') => positional.push(a),
            (_, f) => return Err(usage(format!("`tidelog {cmd}` has no option `{f}`"))),
        }
    }
    match cmd {
        "certs" => {
            let out = out.ok_or_else(|| usage("`tidelog certs` needs --out DIR"))?;
            if !add.is_empty() && (ca_name.is_some() || !nodes.is_empty()) {
                return Err(usage(
                    "--add signs nodes with an existing CA: give the nodes as --add NODE, and no --ca-name",
                ));
            }
            Ok(Command::Certs(Certs {
                out,
                ca_name,
                nodes,
                add,
            }))
        }
        "serve" => Ok(Command::Serve {
            config: config.ok_or_else(|| usage("`tidelog serve` needs --config FILE"))?,
        }),
        _ => {
            let target = match (config, socket) {
                (Some(c), None) => Target::Config(c),
                (None, Some(s)) => Target::Socket(s),
                (Some(_), Some(_)) => {
                    return Err(usage(
                        "give either --config FILE or --socket PATH, not both",
                    ))
                }
                (None, None) => {
                    return Err(usage(format!(
                        "`tidelog {cmd}` needs the serve's --config FILE or its admin --socket PATH"
                    )))
                }
            };
            let mut positional = positional.into_iter();
            let what = match cmd {
                "status" => AdminCommand::Status(positional.next()),
                "forget" => AdminCommand::Forget(
                    positional
                        .next()
                        .ok_or_else(|| usage("`tidelog forget` needs the PEER to forget"))?,
                ),
                "peers" => AdminCommand::Peers,
                _ => AdminCommand::Reload,
            };
            if let Some(extra) = positional.next() {
                return Err(usage(format!(
                    "`tidelog {cmd}` takes one PEER; `{extra}` is one too many"
                )));
            }
            Ok(Command::Admin(Admin { target, json, what }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<Command, CliError> {
        parse(s.split_whitespace().map(Into::into).collect())
    }

    #[test]
    fn commands_parse() {
        assert_eq!(p("--help").unwrap(), Command::Help(HELP));
        assert_eq!(p("serve --help").unwrap(), Command::Help(SERVE_HELP));
        assert_eq!(
            p("serve --config=a.toml").unwrap(),
            Command::Serve {
                config: "a.toml".into()
            }
        );
        assert_eq!(
            p("certs --out d --ca-name X cloud edge-1").unwrap(),
            Command::Certs(Certs {
                out: "d".into(),
                ca_name: Some("X".into()),
                nodes: vec!["cloud".into(), "edge-1".into()],
                add: vec![],
            })
        );
        let Command::Certs(c) = p("certs --out d --add e2 --add e3").unwrap() else {
            panic!()
        };
        assert_eq!(c.add, ["e2", "e3"]);
        assert_eq!(
            p("status edge-1 --json --config c.toml").unwrap(),
            Command::Admin(Admin {
                target: Target::Config("c.toml".into()),
                json: true,
                what: AdminCommand::Status(Some("edge-1".into())),
            })
        );
        assert_eq!(
            p("forget e --socket /s").unwrap(),
            Command::Admin(Admin {
                target: Target::Socket("/s".into()),
                json: false,
                what: AdminCommand::Forget("e".into()),
            })
        );
        assert_eq!(p("reload --help").unwrap(), Command::Help(ADMIN_HELP));
    }

    #[test]
    fn mistakes_say_what_is_wrong() {
        for (args, says) in [
            ("", "no command"),
            ("frobnicate", "unknown command"),
            ("serve", "needs --config"),
            ("serve --config", "needs a value"),
            ("serve --out x", "has no option `--out`"),
            ("certs cloud", "needs --out"),
            ("certs --out d --add e cloud", "--add signs nodes"),
            ("status", "needs the serve's --config"),
            ("peers --config a --socket b", "not both"),
            ("forget --socket s", "needs the PEER"),
            ("status a b --socket s", "one too many"),
            ("reload --json --socket s", "has no option `--json`"),
            ("serve --socket s", "has no option `--socket`"),
        ] {
            let e = p(args).unwrap_err().to_string();
            assert!(e.contains(says), "{args:?}: {e}");
        }
    }
}
