//! The admin socket's protocol and its server, on the serve's runtime.
//!
//! One JSON request line (`{"cmd": "status", "peer": "edge-1"}`, `{"cmd":
//! "peers"}`, `{"cmd": "forget", "peer": "edge-1"}`, `{"cmd": "reload"}`),
//! one JSON response, then the server closes the connection. A request is
//! at most [`MAX_REQUEST_BYTES`] and must arrive within [`READ_TIMEOUT`];
//! at most [`MAX_CLIENTS`] are served at once, so a client that never
//! finishes (or many) cannot pin the serve. Database calls run on the
//! blocking pool: none of them may stall the runtime that also answers
//! signals and `/metrics`.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tidelog::{Error, PeerStatus};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Semaphore;

use super::config::Config;
use super::reload::ReloadReport;
use super::serve::{now_ms, status_line, Hub};

/// The longest request line; real ones are under 200 bytes.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;
/// How long a client may take to send its request line.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the response may take to be written (a client that never
/// reads it).
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once; more are closed at once.
pub const MAX_CLIENTS: usize = 16;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "lowercase", deny_unknown_fields)]
pub enum Request {
    /// Every peer's status, or `peer`'s.
    Status {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        peer: Option<String>,
    },
    Peers,
    Forget {
        peer: String,
    },
    Reload,
}

/// The one response. `ok = false` comes with `error`.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Response {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// `status` and `peers`: the library's `PeerStatus` of each, as JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peers: Option<Vec<serde_json::Value>>,
    /// `status` of the whole node: each `[[sinks]]` entry's status, where
    /// the serve runs any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sinks: Option<Vec<serde_json::Value>>,
    /// What the CLI prints without `--json`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lines: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reload: Option<ReloadReport>,
    /// `status` of a hub with `[[sources]]`: each source's status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sources: Option<Vec<serde_json::Value>>,
}

impl Response {
    fn error(msg: impl Into<String>) -> Response {
        Response {
            ok: false,
            error: Some(msg.into()),
            ..Response::default()
        }
    }

    fn lines(lines: Vec<String>) -> Response {
        Response {
            ok: true,
            lines,
            ..Response::default()
        }
    }
}

/// Serves `listener` until the task is aborted. `owner` is the uid that
/// made the socket: only it and root are answered.
pub async fn serve_admin(listener: UnixListener, hub: Arc<Hub>, owner: u32) {
    let slots = Arc::new(Semaphore::new(MAX_CLIENTS));
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            // Out of file descriptors and the like: wait, do not spin.
            Err(e) => {
                log::warn!("admin socket: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            log::warn!("admin socket: {MAX_CLIENTS} clients already connected; closed another");
            continue;
        };
        let hub = hub.clone();
        tokio::spawn(async move {
            handle(stream, &hub, owner).await;
            drop(slot);
        });
    }
}

async fn handle(mut stream: UnixStream, hub: &Arc<Hub>, owner: u32) {
    let response = match stream.peer_cred() {
        Ok(c) if c.uid() == owner || c.uid() == 0 => match read_request(&mut stream).await {
            Ok(Some(req)) => execute(req, hub).await,
            // Connected and closed: another serve checking whether this
            // one is alive. Nobody to answer.
            Ok(None) => return,
            Err(msg) => {
                log::warn!("admin socket: {msg}");
                Response::error(msg)
            }
        },
        Ok(c) => Response::error(format!(
            "uid {} may not use this admin socket: only its owner (uid {owner}, the user running tidelog serve) and root may",
            c.uid()
        )),
        Err(e) => Response::error(format!("cannot tell who is connecting: {e}")),
    };
    let mut text = serde_json::to_vec(&response).unwrap_or_else(|e| {
        format!(r#"{{"ok":false,"error":"cannot encode the response: {e}"}}"#).into_bytes()
    });
    text.push(b'\n');
    let write = async {
        stream.write_all(&text).await?;
        stream.shutdown().await
    };
    if let Ok(Err(e)) | Err(e) = tokio::time::timeout(WRITE_TIMEOUT, write)
        .await
        .map_err(std::io::Error::other)
    {
        log::debug!("admin socket: the response was not delivered: {e}");
    }
}

/// Reads one request line within [`READ_TIMEOUT`] and [`MAX_REQUEST_BYTES`].
/// `None`: the client closed without sending anything.
async fn read_request(stream: &mut UnixStream) -> Result<Option<Request>, String> {
    let mut line = Vec::new();
    let limited = (&mut *stream).take(MAX_REQUEST_BYTES as u64 + 1);
    let read = async { BufReader::new(limited).read_until(b'\n', &mut line).await };
    match tokio::time::timeout(READ_TIMEOUT, read).await {
        Err(_) => {
            return Err(format!(
                "no complete request line within {READ_TIMEOUT:?}: send one JSON object ending in a newline"
            ))
        }
        Ok(Err(e)) => return Err(format!("reading the request failed: {e}")),
        Ok(Ok(_)) => {}
    }
    if line.is_empty() {
        return Ok(None);
    }
    if line.len() > MAX_REQUEST_BYTES {
        return Err(format!(
            "request longer than {MAX_REQUEST_BYTES} bytes: refused unread"
        ));
    }
    serde_json::from_slice(&line).map(Some).map_err(|e| {
        format!(
            "not a request ({e}): send one JSON object per line, e.g. {{\"cmd\": \"status\"}}; commands: status [peer], peers, forget peer, reload"
        )
    })
}

async fn execute(req: Request, hub: &Arc<Hub>) -> Response {
    let hub = hub.clone();
    let run = tokio::task::spawn_blocking(move || match req {
        Request::Status { peer } => status(&hub, peer.as_deref()),
        Request::Peers => peers(&hub),
        Request::Forget { peer } => forget(&hub, &peer),
        Request::Reload => {
            let report = hub.reload("reload (admin socket)");
            Ok(Response {
                ok: report.is_clean(),
                error: report.refused.clone(),
                lines: report.lines(),
                reload: Some(report),
                ..Response::default()
            })
        }
    });
    match run.await {
        Ok(Ok(r)) => r,
        Ok(Err(msg)) => Response::error(msg),
        Err(e) => Response::error(format!("the command failed inside the serve: {e}")),
    }
}

fn not_found(name: &str) -> String {
    format!("no peer `{name}` on this node: `tidelog peers` lists them")
}

fn statuses(hub: &Hub, peer: Option<&str>) -> Result<Vec<PeerStatus>, String> {
    match peer {
        Some(name) => match hub.db.peer_status(name) {
            Ok(s) => Ok(vec![s]),
            Err(Error::PeerNotFound(_)) => Err(not_found(name)),
            Err(e) => Err(format!("status of `{name}` unavailable: {e}")),
        },
        None => hub
            .db
            .replication_status()
            .map_err(|e| format!("status unavailable: {e}")),
    }
}

fn json(peers: &[PeerStatus]) -> Result<Vec<serde_json::Value>, String> {
    peers
        .iter()
        .map(|p| serde_json::to_value(p).map_err(|e| format!("cannot encode a status: {e}")))
        .collect()
}

fn status(hub: &Hub, peer: Option<&str>) -> Result<Response, String> {
    let peers = statuses(hub, peer)?;
    let now = now_ms();
    let mut lines: Vec<String> = peers.iter().map(|p| status_line(p, now)).collect();
    if lines.is_empty() {
        lines.push("no peers configured".into());
    }
    // Sinks have names of their own, not peers': only the node's status
    // (no peer named) lists them.
    let sinks = match peer {
        Some(_) => Vec::new(),
        None => hub.sinks.lock().statuses(),
    };
    lines.extend(sinks.iter().map(super::sinks::status_line));
    let sinks = (!sinks.is_empty())
        .then(|| {
            sinks
                .iter()
                .map(|s| {
                    serde_json::to_value(s).map_err(|e| format!("cannot encode a status: {e}"))
                })
                .collect::<Result<Vec<_>, _>>()
        })
        .transpose()?;
    let sources = match peer {
        Some(_) => Vec::new(),
        None => hub.sources.lock().iter().map(|s| s.status()).collect(),
    };
    lines.extend(sources.iter().map(super::serve::source_line));
    let sources = sources
        .iter()
        .map(|s| serde_json::to_value(s).map_err(|e| format!("cannot encode a status: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Response {
        ok: true,
        peers: Some(json(&peers)?),
        sinks,
        lines,
        sources: (!sources.is_empty()).then_some(sources),
        ..Response::default()
    })
}

fn peers(hub: &Hub) -> Result<Response, String> {
    let peers = statuses(hub, None)?;
    let now = now_ms();
    Ok(Response {
        ok: true,
        peers: Some(json(&peers)?),
        lines: peers.iter().map(|p| peer_line(p, now)).collect(),
        ..Response::default()
    })
}

/// `tidelog peers`: name, link, since when or last contact, how it was
/// admitted (configured, or the rule that admitted it), backlog.
pub fn peer_line(p: &PeerStatus, now_ms: u64) -> String {
    let ago = |t: u64| format!("{:.0}s", now_ms.saturating_sub(t) as f64 / 1000.0);
    // An admitted peer's last contact survives restarts; `since_ms` is
    // only this run's.
    let last = p.last_contact_ms.or(p.since_ms);
    let link = match (p.connected, p.since_ms, last) {
        (true, Some(s), _) => format!("connected  for {}", ago(s)),
        (true, None, _) => "connected".into(),
        (false, _, Some(s)) => format!("dormant    last contact {} ago", ago(s)),
        (false, _, None) => "dormant    never connected".into(),
    };
    let admitted = match &p.rule {
        Some(rule) => format!("rule `{rule}`"),
        None => "configured".into(),
    };
    format!(
        "{}  {link}  {admitted}  backlog {} txns {} bytes",
        p.name, p.backlog_txns, p.backlog_bytes
    )
}

fn forget(hub: &Hub, name: &str) -> Result<Response, String> {
    // Held throughout, so a reload cannot add the peer back meanwhile.
    let running = hub.cfg.lock();
    let in_file = Config::load(&hub.config_path)
        .map(|c| c.peers.iter().any(|p| p.name == name))
        .unwrap_or(false);
    if in_file {
        return Err(format!(
            "peer `{name}` is in the config's [[peers]]: remove it from the config first (it would come back at the next reload)"
        ));
    }
    if running.peers.iter().any(|p| p.name == name) {
        return Err(format!(
            "peer `{name}` is still configured in the running config: run `tidelog reload` (it was removed from the file), then forget it"
        ));
    }
    match hub.db.forget_peer(name) {
        Ok(()) => {
            log::info!("admin socket: forgot peer `{name}` (its link, resume points and acknowledgements are gone)");
            Ok(Response::lines(vec![format!(
                "forgot peer `{name}`: its resume points and acknowledgements are gone; if it comes back it starts with an initial sync"
            )]))
        }
        Err(Error::PeerNotFound(_)) => Err(format!(
            "no peer `{name}` is known to this node: nothing to forget"
        )),
        Err(e) => Err(format!("cannot forget `{name}`: {e}")),
    }
}
