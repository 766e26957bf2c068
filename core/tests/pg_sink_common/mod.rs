//! Helpers of the PostgreSQL sink tests: a sink config for a test server,
//! a client, the table as rows, a hub database and a model of what a test
//! wrote to it.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tidelog::cloud::driver::{DriverConfig, SinkHandle};
use tidelog::cloud::postgres::{PostgresSinkConfig, PostgresTableConfig};
use tidelog::cloud::sink::SinkRow;
use tidelog::{Database, Key, OpenOptions, Retention, Stamp, TableOptions};

use crate::pg_common::Postgres;

pub const HIGH: u64 = 1 << 63;

pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

pub fn config(pg: &Postgres, name: &str, tables: &[(&str, Option<&str>)]) -> PostgresSinkConfig {
    let mut c = PostgresSinkConfig::new(pg.conn_string(), &[]);
    c.name = name.into();
    c.tables = tables
        .iter()
        .map(|(t, p)| PostgresTableConfig {
            name: (*t).into(),
            pg_table: p.map(str::to_string),
        })
        .collect();
    c
}

pub async fn client(pg: &Postgres) -> tokio_postgres::Client {
    let (c, conn) = tokio_postgres::connect(&pg.conn_string(), tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(conn);
    c
}

/// One PostgreSQL row as the sink wrote it.
#[derive(Debug, Clone, PartialEq)]
pub struct PgRow {
    pub record: Option<Value>,
    pub deleted: bool,
    pub stamp: Stamp,
}

/// The PostgreSQL table by key, and how many rows it has in all (a
/// duplicate key would make the two differ).
pub async fn pg_rows(c: &tokio_postgres::Client, table: &str) -> (BTreeMap<Key, PgRow>, usize) {
    let rows = c
        .query(
            &format!("SELECT key, record, deleted, stamp_time, stamp_node::text FROM {table}"),
            &[],
        )
        .await
        .expect("read table");
    let n = rows.len();
    let mut out = BTreeMap::new();
    for r in rows {
        let key: Value = r.get(0);
        let node: String = r.get(4);
        out.insert(
            Key::from_json(&key).expect("key is a string or integer"),
            PgRow {
                record: r.get(1),
                deleted: r.get(2),
                stamp: Stamp {
                    time: r.get::<_, i64>(3) as u64,
                    node: node.parse().expect("node id"),
                },
            },
        );
    }
    (out, n)
}

pub async fn digest(c: &tokio_postgres::Client) -> String {
    c.query_one(
        "SELECT md5(string_agg(key::text || coalesce(record::text, '-') || deleted || stamp_time || stamp_node, ',' ORDER BY key)) FROM alerts",
        &[],
    )
    .await
    .unwrap()
    .get::<_, String>(0)
}

pub async fn progress(c: &tokio_postgres::Client, sink: &str) -> Option<i64> {
    c.query_opt(
        "SELECT seq FROM tidelog_sink_progress WHERE sink = $1",
        &[&sink],
    )
    .await
    .expect("read progress")
    .map(|r| r.get(0))
}

pub fn row(table: &str, key: Key, record: Option<Value>, time: u64, node: u64) -> SinkRow {
    SinkRow {
        table: table.into(),
        key,
        record: record.map(|r| r.to_string()),
        stamp: Stamp { time, node },
    }
}

pub fn hub(dir: &std::path::Path, retention: Option<Retention>) -> Database {
    let mut opts = OpenOptions::new("hub");
    if let Some(r) = retention {
        opts = opts.retention(r);
    }
    let db = Database::open(dir, opts).expect("open hub");
    db.create_table("alerts", TableOptions::default())
        .expect("table");
    db.create_table("other", TableOptions::default())
        .expect("table");
    db
}

pub fn fast(tables: &[&str], batch: usize) -> DriverConfig {
    let mut c = DriverConfig::new(tables.iter().map(|t| t.to_string()).collect());
    c.max_batch_rows = batch;
    c.min_backoff = Duration::from_millis(20);
    c.max_backoff = Duration::from_millis(300);
    c.poll = Duration::from_millis(50);
    c
}

pub async fn caught_up(db: &Database, h: &SinkHandle) {
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let head = db.log_bounds().unwrap().last;
        let s = h.status();
        if s.resume_point >= head && s.connected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "sink not caught up: {s:?}, head {head}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The writes a test made, per key: the last stamp and state.
pub type Model = BTreeMap<Key, (Option<Value>, Stamp)>;

/// Writes `n` transactions of `per` alerts over keys `0..keys` (every
/// fifth transaction deletes one instead), plus a write to a table the
/// sink does not carry.
pub fn write_alerts(db: &Database, model: &mut Model, from: u64, n: u64, per: u64, keys: u64) {
    for t in from..from + n {
        let mut tx = db.transaction();
        let mut touched = Vec::new();
        if t % 5 == 4 {
            let k = (t * 31) % keys;
            tx.delete("alerts", k as i64).unwrap();
            touched.push((Key::Int(k as i64), None));
        } else {
            for i in 0..per {
                let k = (t * per + i) % keys;
                let rec = json!({"id": k, "t": t, "msg": "x".repeat(60)});
                tx.upsert("alerts", rec.clone()).unwrap();
                touched.push((Key::Int(k as i64), Some(rec)));
            }
        }
        tx.upsert("other", json!({"id": t})).unwrap();
        let info = tx.commit().unwrap();
        for (k, rec) in touched {
            model.insert(k, (rec, info.stamp));
        }
    }
}

pub async fn assert_matches(c: &tokio_postgres::Client, model: &Model) {
    let (rows, total) = pg_rows(c, "alerts").await;
    assert_eq!(total, rows.len(), "duplicate keys in PostgreSQL");
    assert_eq!(rows.len(), model.len());
    for (k, (rec, stamp)) in model {
        let got = &rows[k];
        assert_eq!(got.stamp, *stamp, "key {k}");
        assert_eq!(got.deleted, rec.is_none(), "key {k}");
        assert_eq!(&got.record, rec, "key {k}");
    }
    let other = c
        .query_opt("SELECT to_regclass('other')::text", &[])
        .await
        .unwrap()
        .and_then(|r| r.get::<_, Option<String>>(0));
    assert_eq!(
        other, None,
        "a table the sink does not carry reached PostgreSQL"
    );
}

/// PostgreSQL's own COPY + upsert of `text` (COPY text rows of the
/// sink's staging columns) into a fresh table `name`, in one transaction;
/// returns the seconds it took.
pub async fn plain_copy_upsert(c: &tokio_postgres::Client, name: &str, text: &str) -> f64 {
    use futures_util::SinkExt;
    c.batch_execute(&format!(
        "CREATE TABLE {name} (key jsonb NOT NULL PRIMARY KEY, record jsonb, \
         deleted boolean NOT NULL DEFAULT false, stamp_time bigint NOT NULL, \
         stamp_node numeric(20,0) NOT NULL); \
         CREATE TEMP TABLE IF NOT EXISTS base_stage (key jsonb, record jsonb, deleted boolean, \
         stamp_time bigint, stamp_node numeric(20,0)) ON COMMIT DELETE ROWS"
    ))
    .await
    .unwrap();
    let started = Instant::now();
    c.batch_execute("BEGIN").await.unwrap();
    let copy = c
        .copy_in::<_, bytes::Bytes>("COPY base_stage FROM STDIN")
        .await
        .unwrap();
    futures_util::pin_mut!(copy);
    copy.send(bytes::Bytes::from(text.to_string()))
        .await
        .unwrap();
    copy.as_mut().finish().await.unwrap();
    c.execute(
        &format!(
            "INSERT INTO {name} AS t SELECT DISTINCT ON (key) * FROM base_stage \
             ORDER BY key, stamp_time DESC, stamp_node DESC ON CONFLICT (key) DO UPDATE \
             SET record = EXCLUDED.record, deleted = EXCLUDED.deleted, \
             stamp_time = EXCLUDED.stamp_time, stamp_node = EXCLUDED.stamp_node \
             WHERE (t.stamp_time, t.stamp_node) < (EXCLUDED.stamp_time, EXCLUDED.stamp_node)"
        ),
        &[],
    )
    .await
    .unwrap();
    c.batch_execute("COMMIT").await.unwrap();
    started.elapsed().as_secs_f64()
}
