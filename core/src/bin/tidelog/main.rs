//! `tidelog`: development certificates and a config-file-driven instance
//! (the cloud side of the edge/cloud scenario). See `tidelog --help`; the
//! config format is documented in `config.rs` and shown in
//! `examples/cloud.toml`.
//!
//! The program is a module tree of the `tidelog` package's bin target, not
//! part of the library: bindings never compile it, and the tests that run it
//! (`core/tests/cli*.rs`, `security.rs`) get its path from cargo.

mod admin;
mod admin_client;
mod admin_socket;
mod args;
mod config;
mod logger;
mod metrics;
mod reload;
mod serve;
mod sinks;

use std::process::ExitCode;

use args::{parse, Command};

/// What went wrong, sorted by who has to act: the person typing the command
/// (usage), the config file's author (config) or the environment (runtime).
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{0}\n(run `tidelog --help` for usage)")]
    Usage(String),
    #[error("bad config: {0}")]
    Config(String),
    #[error("{0}")]
    Runtime(String),
}

impl CliError {
    /// Exit status: 2 for anything the caller must fix in what it passed
    /// (the convention of most Unix tools), 1 for failures while running.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Usage(_) | CliError::Config(_) => 2,
            CliError::Runtime(_) => 1,
        }
    }
}

/// `tidelog certs`: a development CA and node certificates.
pub fn certs(cmd: &args::Certs) -> Result<(), CliError> {
    use tidelog::net::certs;
    let (ca, ca_key) = certs::ca_paths(&cmd.out);
    let dir = cmd.out.display();
    // The library's own refusals name its functions; these name the flags.
    let written = if cmd.add.is_empty() {
        if ca.exists() || ca_key.exists() {
            return Err(CliError::Runtime(format!(
                "{dir} already holds a CA: sign more nodes with `tidelog certs --out {dir} --add NODE`, or pick an empty directory"
            )));
        }
        let ca_name = cmd.ca_name.as_deref().unwrap_or("tidelog development CA");
        let files = certs::generate_dev_pki(&cmd.out, ca_name, &cmd.nodes)
            .map_err(|e| CliError::Runtime(e.to_string()))?;
        eprintln!(
            "tidelog: wrote CA {} and {}",
            ca.display(),
            ca_key.display()
        );
        files
    } else {
        if !ca.exists() || !ca_key.exists() {
            return Err(CliError::Runtime(format!(
                "{dir} holds no CA (ca.pem and ca.key): create one with `tidelog certs --out {dir} --ca-name NAME`"
            )));
        }
        // Refuse before signing anything, so a typo in the third name does
        // not leave the first two half-done.
        for (i, node) in cmd.add.iter().enumerate() {
            let f = certs::node_paths(&cmd.out, node);
            if cmd.add[..i].contains(node) || f.cert_chain.exists() || f.key.exists() {
                return Err(CliError::Runtime(format!(
                    "node `{node}` is listed twice or already has files in {}: nothing was written",
                    cmd.out.display()
                )));
            }
        }
        let mut files = Vec::new();
        for node in &cmd.add {
            files.push(
                certs::add_node(&cmd.out, node).map_err(|e| CliError::Runtime(e.to_string()))?,
            );
        }
        files
    };
    for f in written {
        eprintln!(
            "tidelog: wrote {} and {}",
            f.cert_chain.display(),
            f.key.display()
        );
    }
    Ok(())
}

fn main() -> ExitCode {
    let result = parse(std::env::args_os().skip(1).collect()).and_then(|cmd| match cmd {
        Command::Help(text) => {
            print!("{text}");
            Ok(())
        }
        Command::Version => {
            println!("tidelog {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
        Command::Certs(c) => certs(&c),
        Command::Serve { config } => serve::serve(&config),
        Command::Admin(a) => admin_client::run(&a),
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tidelog: error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
