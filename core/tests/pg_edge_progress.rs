//! Edges' positions in PostgreSQL (`tidelog_edge_progress`) against a real
//! private server: stored with the batch that makes them true, never moved
//! back, odd and hostile names kept as data, read back per node id only,
//! and a failed batch stores none of them.
#![cfg(feature = "postgres")]

mod common;
mod pg_common;
mod pg_sink_common;

use pg_common::Postgres;
use pg_sink_common::*;
use serde_json::json;
use tidelog::cloud::pg_progress::PostgresResumeHints;
use tidelog::cloud::postgres::PostgresSink;
use tidelog::cloud::sink::{EdgePosition, Sink, SinkBatch};
use tidelog::{Key, ResumeHints};

fn pos(edge: &str, node_id: u64, table: &str, seq: u64) -> EdgePosition {
    EdgePosition {
        edge: edge.into(),
        node_id,
        table: table.into(),
        seq,
    }
}

fn batch(through: u64) -> SinkBatch {
    SinkBatch {
        after_seq: through - 1,
        through_seq: through,
        rows: vec![row(
            "alerts",
            Key::Int(through as i64),
            Some(json!({"id": through})),
            through,
            1,
        )],
    }
}

#[test]
fn positions_land_with_their_batch_never_move_back_and_are_read_per_node_id() {
    let pg = Postgres::start();
    let hostile = "e'; DROP TABLE alerts; --\"\\\t☃";
    rt().block_on(async {
        let hints = PostgresResumeHints::new(pg.conn_string(), vec!["alerts".into()]);
        // Nothing written yet (no table even): nothing known, not an error.
        assert_eq!(hints.edge_positions("edge-1", 7).await.unwrap(), vec![]);

        let mut sink = PostgresSink::new(config(&pg, "a", &[("alerts", None)]), "hub-1").unwrap();
        sink.apply_with_positions(
            &batch(1),
            &[
                pos("edge-1", 7, "alerts", 40),
                pos(hostile, u64::MAX, "alerts", 5),
                pos("edge-1", 7, "other", 3),
            ],
        )
        .await
        .unwrap();
        // Older positions (another hub finishing a backlog) never move it back.
        sink.apply_with_positions(&batch(2), &[pos("edge-1", 7, "alerts", 30)])
            .await
            .unwrap();
        assert_eq!(
            hints.edge_positions("edge-1", 7).await.unwrap(),
            vec![("alerts".to_string(), 40)],
            "only the hint's tables"
        );
        // Another node id of the same name (a reset edge): nothing.
        assert_eq!(hints.edge_positions("edge-1", 8).await.unwrap(), vec![]);
        assert_eq!(
            hints.edge_positions(hostile, u64::MAX).await.unwrap(),
            vec![("alerts".to_string(), 5)]
        );
        let c = client(&pg).await;
        let n: i64 = c
            .query_one("SELECT count(*) FROM alerts", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(n, 2, "the hostile name was taken as SQL");

        // A batch that fails stores none of its positions.
        c.batch_execute("ALTER TABLE alerts ADD CONSTRAINT small CHECK ((key #>> '{}')::int < 3)")
            .await
            .unwrap();
        let failed = sink
            .apply_with_positions(&batch(3), &[pos("edge-1", 7, "alerts", 90)])
            .await;
        assert!(failed.is_err());
        assert_eq!(
            hints.edge_positions("edge-1", 7).await.unwrap(),
            vec![("alerts".to_string(), 40)]
        );
    });
}

#[test]
fn an_unreachable_postgres_is_an_error_that_says_so() {
    let mut pg = Postgres::start();
    let url = pg.conn_string();
    pg.stop();
    rt().block_on(async {
        let hints = PostgresResumeHints::new(url, vec!["alerts".into()]);
        let e = hints.edge_positions("edge-1", 7).await.unwrap_err();
        assert!(e.contains("connecting to PostgreSQL"), "{e}");
    });
}
