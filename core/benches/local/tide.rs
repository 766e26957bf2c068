//! tidelog through its public API, as an application uses it.

use std::hint::black_box;
use std::ops::Range;
use std::path::Path;

use serde_json::Value;
use tidelog::{Database, Durability, EngineKind, OpenOptions, TableOptions};

use crate::contenders::{budget, Contender, Res, GROUP_INTERVAL};
use crate::workload::{sensor_name, Workload, INDEXED, TABLE};

pub struct Tidelog {
    db: Database,
    wl: Workload,
}

impl Tidelog {
    pub fn open(dir: &Path, wl: Workload, engine: EngineKind) -> Res<Tidelog> {
        let opts = OpenOptions::new("bench-node")
            .engine(engine)
            .memory_budget(budget())
            .durability(Durability::Grouped {
                interval: GROUP_INTERVAL,
            });
        let db = Database::open(dir, opts)?;
        db.create_table(TABLE, TableOptions::default().index(INDEXED))?;
        Ok(Tidelog { db, wl })
    }
}

impl Contender for Tidelog {
    fn write_one(&mut self, i: u64) -> Res<()> {
        self.db.upsert(TABLE, self.wl.value(i))?;
        Ok(())
    }

    fn write_many(&mut self, ids: Range<u64>) -> Res<()> {
        let mut tx = self.db.transaction();
        for i in ids {
            tx.upsert(TABLE, self.wl.value(i))?;
        }
        tx.commit()?;
        Ok(())
    }

    fn get(&mut self, i: u64) -> Res<usize> {
        Ok(self
            .db
            .get(TABLE, i as i64)?
            .map_or(0, |r| r.body_json().len()))
    }

    fn find(&mut self, s: u64) -> Res<usize> {
        let found = self
            .db
            .find_eq(TABLE, INDEXED, &Value::String(sensor_name(s)))?;
        black_box(&found);
        Ok(found.len())
    }

    fn table_bytes(&mut self) -> Res<Option<u64>> {
        self.db.checkpoint()?;
        let u = self.db.disk_usage()?;
        Ok(u.records.zip(u.indexes).map(|(r, i)| r + i))
    }

    fn close(self: Box<Self>) -> Res<()> {
        self.db.close()?;
        Ok(())
    }
}
