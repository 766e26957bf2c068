//! Memory profiles and how a memory budget becomes fjall settings.
//!
//! A profile names a memory budget: `edge` for gateways with 256 MB-1 GB
//! of RAM and flash that wears, `hub` (the default for now) for machines
//! that take catch-up and fan-out for many edges. `hub` stays the default
//! until the small budget's stall is understood: twice, 1,000,000
//! single-record writes at 8-16 MiB (once with one fjall worker thread)
//! ended with every thread asleep and memory at 393-707 MiB; at 64 MiB
//! that was never seen. `memory_budget` set beside a
//! profile wins. The budget is spread over fjall's block cache and the
//! keyspaces' write buffers (memtables) by `FjallSizes::for_budget`; the
//! per-keyspace table settings (compression, filters, block sizes; in
//! `storage::keyspace_options`) are the same for both profiles, since they
//! decide the disk format, not memory.

use crate::error::{Error, Result};

/// How much memory the storage engine may use (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Profile {
    /// Small gateways: a 16 MiB engine budget.
    Edge,
    /// Hubs and servers: a 64 MiB engine budget, for faster catch-up and
    /// batched writes; the default (see the module docs).
    #[default]
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
    fn hub_is_the_default_and_each_split_stays_within_its_budget() {
        assert_eq!(Profile::default(), Profile::Hub);
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
                let v = format!(
                    r#"{{"id":{i},"kind":"temp","sensor":"s-{:06}","site":"plant-7/line-3","ts":{}}}"#,
                    i % 1000,
                    1_790_000_000_000 + i * 1000
                );
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
}
