//! Memory profiles and how a memory budget becomes fjall settings.
//!
//! A profile names a memory budget: `edge` (the library's default) for
//! gateways with 256 MB-1 GB of RAM and flash that wears, `hub` (the
//! default of `tidelog serve`) for machines that take catch-up and fan-out
//! for many edges. `memory_budget` set beside a profile wins.
//!
//! `edge` became the default once small budgets stopped stalling: before,
//! 1,000,000 single-record writes at 8-16 MiB sometimes ended with every
//! thread asleep and memory at 148-853 MiB, a deadlock of fjall's workers
//! on their own full channel that the committing thread now prevents
//! (`storage::seal_full_buffers` says how). Counts of the before/after
//! runs are in the README ("Edge footprint against SQLite").
//!
//! The budget is spread over fjall's block cache and the keyspaces' write
//! buffers (memtables) by `FjallSizes::for_budget`; the
//! per-keyspace table settings (compression, filters, block sizes; in
//! `storage::keyspace_options`) are the same for both profiles, since they
//! decide the disk format, not memory, except the size compactions cut
//! tables at: a quarter of the budget of the open that creates a
//! directory, so that a compaction's work stays in proportion to the
//! write buffers that feed it.

use crate::error::{Error, Result};

/// How much memory the storage engine may use (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Profile {
    /// Small gateways: a 16 MiB engine budget; the library's default.
    #[default]
    Edge,
    /// Hubs and servers: a 64 MiB engine budget, for faster catch-up and
    /// batched writes; `tidelog serve`'s default.
    Hub,
}

impl Profile {
    /// The engine memory budget this profile sets.
    pub fn memory_budget(self) -> u64 {
        match self {
            Profile::Edge => 16 << 20,
            Profile::Hub => 64 << 20,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Profile::Edge => "edge",
            Profile::Hub => "hub",
        }
    }
}

impl std::str::FromStr for Profile {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "edge" => Ok(Profile::Edge),
            "hub" => Ok(Profile::Hub),
            other => Err(Error::invalid(
                "profile",
                format!("`{other}` is not a profile; use \"edge\" (16 MiB) or \"hub\" (64 MiB)"),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::local::storage::{Batch, EngineKind, EngineTuning, FjallSizes, Space, Store};

    #[test]
    fn edge_is_the_default_and_each_split_stays_within_its_budget() {
        assert_eq!(Profile::default(), Profile::Edge);
        assert!(Profile::Edge.memory_budget() < Profile::Hub.memory_budget());
        for p in [Profile::Edge, Profile::Hub] {
            let s = FjallSizes::for_budget(p.memory_budget());
            let sum = s.cache + s.rows + s.index + s.log + s.meta;
            assert!(sum <= p.memory_budget(), "{p:?}: {s:?}");
            assert_eq!(p.as_str().parse::<Profile>().unwrap(), p);
        }
        let e = "server".parse::<Profile>().unwrap_err().to_string();
        assert!(e.contains("profile") && e.contains("\"hub\""), "{e}");
    }

    /// Records repeat their attribute names, so with lz4 on every level a
    /// freshly flushed record table is far smaller than what was written.
    #[test]
    fn record_tables_are_compressed_from_the_first_level() {
        let dir = tempfile::tempdir().unwrap();
        let tuning = EngineTuning {
            memory_budget: Profile::Edge.memory_budget(),
        };
        let store = Store::open(EngineKind::Fjall, dir.path(), tuning).unwrap();
        let mut raw = 0;
        for chunk in 0..20u64 {
            let mut b = Batch::default();
            for i in chunk * 500..(chunk + 1) * 500 {
                let v = crate::local::storage::sample_reading(i);
                let k = i.to_be_bytes().to_vec();
                raw += (k.len() + v.len()) as u64;
                b.put(Space::Rows, k, v.into_bytes());
            }
            store.commit(b, false).unwrap();
        }
        store.write_out_buffers().unwrap();
        let on_disk = store.space_disk_bytes(Space::Rows).unwrap();
        assert!(
            on_disk > 0 && on_disk * 2 < raw,
            "{on_disk} bytes on disk for {raw} written"
        );
    }

    /// fjall 3.1.13's workers blocked for good on their own full channel
    /// when small write buffers filled faster than the workers sealed them
    /// (see `storage::seal_full_buffers`); with one worker and 1-1.25 MiB
    /// buffers that happened within a few seconds of single-record
    /// commits. Progress is all this asserts: the deadline only catches a
    /// hang.
    #[test]
    fn small_write_buffers_keep_being_flushed_with_one_worker() {
        let dir = tempfile::tempdir().unwrap();
        let tuning = EngineTuning {
            memory_budget: 4 << 20,
        };
        assert!(FjallSizes::for_budget(tuning.memory_budget).rows < 2 << 20);
        let store = Store::open_fjall(dir.path(), tuning, Some(1)).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let commits = 300_000u64;
        std::thread::spawn(move || {
            let run = || -> crate::error::Result<u64> {
                for i in 0..commits {
                    // Scattered record keys, so that compactions have work
                    // and keep the single worker busy.
                    let key = i.wrapping_mul(0x9E37_79B9_7F4A_7C15).to_be_bytes();
                    let value = format!(
                        r#"{{"id":{i},"sensor":"s-{:06}","site":"plant-7/line-3","v":{}}}"#,
                        i % 1000,
                        i * 7
                    );
                    let mut b = Batch::default();
                    b.put(Space::Rows, key.to_vec(), value.clone().into_bytes());
                    b.put(Space::Index, [&key[..4], &i.to_be_bytes()].concat(), vec![]);
                    b.put(Space::Log, i.to_be_bytes().to_vec(), value.into_bytes());
                    store.commit(b, false).map_err(|f| f.error)?;
                }
                store.write_out_buffers()?;
                Ok(store.space_disk_bytes(Space::Rows).unwrap_or(0))
            };
            let _ = tx.send(run());
        });
        let rows_on_disk = rx
            .recv_timeout(std::time::Duration::from_secs(120))
            .expect(
                "300,000 commits at a 4 MiB budget did not finish in 120 s: fjall's worker stopped",
            )
            .unwrap();
        assert!(
            rows_on_disk > 4 << 20,
            "{rows_on_disk} bytes of records on disk"
        );
    }
}
