//! The program's logger: the library's log records (refused links, resyncs,
//! failed background work) go to stderr, filtered by `TIDELOG_LOG`.
//!
//! A few dozen lines of our own instead of a logging crate: the filter
//! syntax needed is small (`info`, `tidelog::repl=debug,warn`) and the
//! program's stderr format is its own.

use log::{Level, LevelFilter, Log, Metadata, Record};

use super::CliError;

/// The environment variable that sets the filter.
pub const ENV: &str = "TIDELOG_LOG";

/// Without `TIDELOG_LOG`: what `tidelog serve` printed before the library
/// had a log facade (its own notes at info, warnings and errors), and only
/// warnings from the crates under it (rustls logs its handshakes at debug).
const DEFAULT: &str = "warn,tidelog=info";

struct Filter {
    /// Level for records no directive names.
    default: LevelFilter,
    /// `(target prefix, level)`; the longest matching prefix wins.
    targets: Vec<(String, LevelFilter)>,
}

impl Filter {
    fn parse(spec: &str) -> Result<Filter, String> {
        let mut f = Filter {
            default: LevelFilter::Off,
            targets: Vec::new(),
        };
        let mut default_set = false;
        for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (target, level) = match part.split_once('=') {
                Some((t, l)) => (Some(t.trim()), l.trim()),
                None => (None, part),
            };
            let level: LevelFilter = level.parse().map_err(|_| {
                format!(
                    "{ENV}: `{level}` in `{part}` is not a level; use off, error, warn, info, debug or trace, optionally as TARGET=LEVEL (e.g. {ENV}=warn,tidelog::repl=debug)"
                )
            })?;
            match target {
                Some("") => return Err(format!("{ENV}: `{part}` names no target before `=`")),
                Some(t) => f.targets.push((t.to_string(), level)),
                None => {
                    f.default = level;
                    default_set = true;
                }
            }
        }
        if !default_set && f.targets.is_empty() {
            return Err(format!(
                "{ENV} is empty; unset it for the default ({DEFAULT}) or give a level such as info"
            ));
        }
        Ok(f)
    }

    fn level_for(&self, target: &str) -> LevelFilter {
        self.targets
            .iter()
            .filter(|(t, _)| {
                target == t
                    || (target.starts_with(t.as_str()) && target[t.len()..].starts_with("::"))
            })
            .max_by_key(|(t, _)| t.len())
            .map_or(self.default, |(_, l)| *l)
    }

    fn max(&self) -> LevelFilter {
        self.targets
            .iter()
            .map(|(_, l)| *l)
            .fold(self.default, Ord::max)
    }
}

struct Stderr(Filter);

impl Log for Stderr {
    fn enabled(&self, m: &Metadata) -> bool {
        m.level() <= self.0.level_for(m.target())
    }

    fn log(&self, r: &Record) {
        if !self.enabled(r.metadata()) {
            return;
        }
        // Info keeps the program's old `tidelog: message` lines; the rest
        // say how serious they are and where they come from.
        match r.level() {
            Level::Info => eprintln!("tidelog: {}", r.args()),
            l => eprintln!(
                "tidelog: {} [{}] {}",
                l.as_str().to_lowercase(),
                r.target(),
                r.args()
            ),
        }
    }

    fn flush(&self) {}
}

/// Installs the logger once, from `TIDELOG_LOG` or the default.
pub fn init() -> Result<(), CliError> {
    let spec = match std::env::var(ENV) {
        Ok(s) => s,
        Err(std::env::VarError::NotPresent) => DEFAULT.to_string(),
        Err(std::env::VarError::NotUnicode(_)) => {
            return Err(CliError::Usage(format!("{ENV} is not valid UTF-8")))
        }
    };
    let filter = Filter::parse(&spec).map_err(CliError::Usage)?;
    let max = filter.max();
    // Leaked once: the logger lives as long as the program.
    log::set_logger(Box::leak(Box::new(Stderr(filter))))
        .map_err(|e| CliError::Runtime(format!("cannot install the logger: {e}")))?;
    log::set_max_level(max);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longest_target_prefix_wins_and_default_covers_the_rest() {
        let f = Filter::parse("warn,tidelog=info,tidelog::repl=debug").unwrap();
        assert_eq!(f.level_for("tidelog::repl"), LevelFilter::Debug);
        assert_eq!(f.level_for("tidelog::repl::x"), LevelFilter::Debug);
        assert_eq!(f.level_for("tidelog::storage"), LevelFilter::Info);
        assert_eq!(f.level_for("tidelogx"), LevelFilter::Warn);
        assert_eq!(f.level_for("rustls::client"), LevelFilter::Warn);
        assert_eq!(f.max(), LevelFilter::Debug);
        assert_eq!(
            Filter::parse("info").unwrap().level_for("tidelog::repl"),
            LevelFilter::Info
        );
        assert_eq!(
            Filter::parse(DEFAULT).unwrap().level_for("tidelog::repl"),
            LevelFilter::Info
        );
    }

    #[test]
    fn a_bad_filter_names_the_variable_and_the_levels() {
        let e = Filter::parse("loud").err().unwrap();
        assert!(
            e.contains(ENV) && e.contains("`loud`") && e.contains("debug"),
            "{e}"
        );
        assert!(Filter::parse("=info").is_err());
        assert!(Filter::parse(" , ").is_err());
    }
}
