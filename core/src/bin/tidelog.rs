//! `tidelog`: development certificates and a config-file-driven instance
//! (the cloud side of the edge/cloud scenario). See `tidelog --help`; the
//! config format is documented in `src/cli/config.rs` and shown in
//! `examples/cloud.toml`.

#[path = "../cli/mod.rs"]
mod cli;

use std::process::ExitCode;

use cli::args::{parse, Command};

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
        Command::Certs(c) => cli::certs(&c),
        Command::Serve { config } => cli::serve::serve(&config),
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tidelog: error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
