//! `tidelog status | peers | forget | reload`: one request to a running
//! serve's admin socket, its answer printed.

use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use super::admin::{Request, Response};
use super::args::{Admin, AdminCommand, Target};
use super::config::Config;
use super::CliError;

/// A reload adds and removes peers: give it time on a loaded machine.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(120);
/// The largest answer read: status of ten thousand peers fits.
const MAX_ANSWER_BYTES: u64 = 512 << 20;

pub fn run(cmd: &Admin) -> Result<(), CliError> {
    let socket = match &cmd.target {
        Target::Socket(p) => p.clone(),
        Target::Config(c) => Config::admin_socket_of(c)?,
    };
    let request = match &cmd.what {
        AdminCommand::Status(peer) => Request::Status { peer: peer.clone() },
        AdminCommand::Peers => Request::Peers,
        AdminCommand::Forget(peer) => Request::Forget { peer: peer.clone() },
        AdminCommand::Reload => Request::Reload,
    };
    let answer = ask(&socket, &request)?;
    if let Some(report) = answer.reload.as_ref().filter(|_| !answer.ok) {
        for l in report.lines() {
            eprintln!("tidelog: {l}");
        }
        return Err(CliError::Runtime(match &report.refused {
            Some(_) => "the serve refused the config; it keeps running as it was".into(),
            None => format!("{} change(s) failed (see above)", report.errors.len()),
        }));
    }
    if !answer.ok {
        return Err(CliError::Runtime(answer.error.unwrap_or_else(|| {
            "the serve refused the request without saying why".into()
        })));
    }
    if cmd.json {
        let peers = answer.peers.unwrap_or_default();
        let value = match (&cmd.what, peers.as_slice(), answer.sinks, answer.sources) {
            (AdminCommand::Status(Some(_)), [one], _, _) => one.clone(),
            (_, _, None, None) => serde_json::Value::Array(peers),
            // A hub with [[sinks]] or [[sources]]: the lists, named (without
            // either, the array of peers as ever, so scripts keep working).
            (_, _, sinks, sources) => {
                let mut o = serde_json::json!({ "peers": peers });
                if let Some(s) = sinks {
                    o["sinks"] = serde_json::Value::Array(s);
                }
                if let Some(s) = sources {
                    o["sources"] = serde_json::Value::Array(s);
                }
                o
            }
        };
        let text = serde_json::to_string_pretty(&value)
            .map_err(|e| CliError::Runtime(format!("cannot print the answer: {e}")))?;
        print_lines(std::iter::once(text))
    } else {
        print_lines(answer.lines)
    }
}

/// Prints to stdout; a reader that went away (`| head`) ends it quietly.
fn print_lines(lines: impl IntoIterator<Item = String>) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    for l in lines {
        match writeln!(out, "{l}") {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::BrokenPipe => return Ok(()),
            Err(e) => return Err(CliError::Runtime(format!("cannot print: {e}"))),
        }
    }
    Ok(())
}

/// Sends `request` to the serve at `socket` and reads its answer.
pub fn ask(socket: &Path, request: &Request) -> Result<Response, CliError> {
    let shown = socket.display();
    let mut stream = UnixStream::connect(socket).map_err(|e| connect_error(socket, e))?;
    let io = |e: std::io::Error| {
        CliError::Runtime(match e.kind() {
            ErrorKind::WouldBlock | ErrorKind::TimedOut => format!(
                "the serve at {shown} did not answer within {ANSWER_TIMEOUT:?}: it may be overloaded; its log says more"
            ),
            _ => format!("talking to the serve at {shown} failed: {e}"),
        })
    };
    stream.set_read_timeout(Some(ANSWER_TIMEOUT)).map_err(io)?;
    stream.set_write_timeout(Some(ANSWER_TIMEOUT)).map_err(io)?;
    let mut line = serde_json::to_vec(request)
        .map_err(|e| CliError::Runtime(format!("cannot encode the request: {e}")))?;
    line.push(b'\n');
    stream.write_all(&line).map_err(io)?;
    let mut answer = Vec::new();
    BufReader::new(std::io::Read::take(&stream, MAX_ANSWER_BYTES))
        .read_until(b'\n', &mut answer)
        .map_err(io)?;
    if answer.is_empty() {
        return Err(CliError::Runtime(format!(
            "the serve at {shown} closed the connection without answering: it may be stopping, or busy with {} other admin clients",
            super::admin::MAX_CLIENTS
        )));
    }
    serde_json::from_slice(&answer).map_err(|e| {
        CliError::Runtime(format!(
            "the answer from {shown} is not the admin protocol ({e}): is it a tidelog serve's admin socket?"
        ))
    })
}

fn connect_error(socket: &Path, e: std::io::Error) -> CliError {
    let shown = socket.display();
    CliError::Runtime(match e.kind() {
        ErrorKind::NotFound => format!(
            "no admin socket at {shown}: is `tidelog serve` running with this config? (check --config, or the [admin] socket it sets)"
        ),
        ErrorKind::ConnectionRefused => format!(
            "nothing answers on {shown}: the serve that made it is not running (killed?); start `tidelog serve`, which replaces the stale socket"
        ),
        ErrorKind::PermissionDenied => format!(
            "may not connect to {shown}: the admin socket is owner-only, run this as the user running `tidelog serve`"
        ),
        _ => format!("cannot connect to the admin socket {shown}: {e}"),
    })
}
