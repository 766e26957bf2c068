//! SQLite through rusqlite, set up as a user storing these records would:
//! WAL, synchronous=NORMAL (commits reach the OS, fsync at checkpoints),
//! an integer primary key, the indexed attribute as a column with an index,
//! the record as JSON text, prepared (cached) statements, and the same
//! memory budget as tidelog ([`budget`]) for its page cache.

use std::hint::black_box;
use std::ops::Range;
use std::path::Path;

use rusqlite::{params, Connection, OptionalExtension};

use crate::contenders::{budget, Contender, Res};
use crate::workload::{sensor_name, Workload};

const INSERT: &str = "INSERT INTO readings (id, sensor, body) VALUES (?1, ?2, ?3)";
const GET: &str = "SELECT body FROM readings WHERE id = ?1";
const FIND: &str = "SELECT id, body FROM readings WHERE sensor = ?1";

pub struct Sqlite {
    conn: Connection,
    wl: Workload,
    text: String,
}

impl Sqlite {
    pub fn open(dir: &Path, wl: Workload) -> Res<Sqlite> {
        let conn = Connection::open(dir.join("bench.sqlite"))?;
        let mode: String =
            conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(format!("SQLite refused WAL mode: {mode}").into());
        }
        conn.execute_batch(&format!(
            "PRAGMA synchronous = NORMAL;
             PRAGMA cache_size = -{};
             CREATE TABLE readings (id INTEGER PRIMARY KEY, sensor TEXT NOT NULL, body TEXT NOT NULL);
             CREATE INDEX readings_sensor ON readings (sensor);",
            budget() >> 10
        ))?;
        Ok(Sqlite {
            conn,
            wl,
            text: String::with_capacity(128),
        })
    }
}

impl Contender for Sqlite {
    fn write_one(&mut self, i: u64) -> Res<()> {
        self.wl.text(i, &mut self.text);
        let sensor = sensor_name(self.wl.sensor(i));
        let mut st = self.conn.prepare_cached(INSERT)?;
        st.execute(params![i as i64, sensor, self.text])?;
        Ok(())
    }

    fn write_many(&mut self, ids: Range<u64>) -> Res<()> {
        let tx = self.conn.transaction()?;
        {
            let mut st = tx.prepare_cached(INSERT)?;
            for i in ids {
                self.wl.text(i, &mut self.text);
                let sensor = sensor_name(self.wl.sensor(i));
                st.execute(params![i as i64, sensor, self.text])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn get(&mut self, i: u64) -> Res<usize> {
        let mut st = self.conn.prepare_cached(GET)?;
        let len = st
            .query_row([i as i64], |r| Ok(r.get_ref(0)?.as_str()?.len()))
            .optional()?;
        Ok(len.unwrap_or(0))
    }

    fn find(&mut self, s: u64) -> Res<usize> {
        let mut st = self.conn.prepare_cached(FIND)?;
        let mut rows = st.query([sensor_name(s)])?;
        let mut n = 0;
        while let Some(r) = rows.next()? {
            black_box(r.get_ref(1)?.as_str()?);
            n += 1;
        }
        Ok(n)
    }

    fn close(self: Box<Self>) -> Res<()> {
        self.conn.close().map_err(|(_, e)| e)?;
        Ok(())
    }
}
