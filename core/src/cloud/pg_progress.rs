//! Edges' positions in PostgreSQL: `tidelog_edge_progress (edge,
//! edge_node, tbl, seq)` says that every write of the edge `edge` (node id
//! `edge_node`, 16 hex digits) to the tidelog table `tbl` up to its log
//! sequence `seq` is in PostgreSQL. The sink stores it in the same
//! transaction as the batch that made it true ([`store`]); a hub an edge
//! moves to reads it when the edge links ([`PostgresResumeHints`]), so the
//! edge sends only what follows, whichever hub it came from.
//!
//! `seq` only moves forward (`GREATEST`), so two hubs writing for one
//! edge (the old one finishing its backlog while the edge already moved)
//! never move it back. Names are bound parameters, never SQL text.

use std::time::Duration;

use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, NoTls};

use crate::repl::{EdgePosition, HintsFuture, ResumeHints};

/// Creates the table if it is missing (run with the sink's layout).
pub(crate) const CREATE: &str = "CREATE TABLE IF NOT EXISTS tidelog_edge_progress (\
     edge text NOT NULL, edge_node text NOT NULL, tbl text NOT NULL, seq bigint NOT NULL, \
     PRIMARY KEY (edge, edge_node, tbl))";

/// The node id as the table keeps it.
fn node_text(node_id: u64) -> String {
    format!("{node_id:016x}")
}

/// Stores `edges` inside the caller's open transaction, in one statement.
pub(crate) async fn store(
    client: &Client,
    edges: &[EdgePosition],
) -> Result<(), tokio_postgres::Error> {
    if edges.is_empty() {
        return Ok(());
    }
    let mut names = Vec::with_capacity(edges.len());
    let mut nodes = Vec::with_capacity(edges.len());
    let mut tables = Vec::with_capacity(edges.len());
    let mut seqs = Vec::with_capacity(edges.len());
    for e in edges {
        // A position past i64 cannot be a real log's: it is left out
        // rather than stored wrapped.
        let Ok(seq) = i64::try_from(e.seq) else {
            continue;
        };
        names.push(e.edge.clone());
        nodes.push(node_text(e.node_id));
        tables.push(e.table.clone());
        seqs.push(seq);
    }
    client
        .execute(
            "INSERT INTO tidelog_edge_progress AS p (edge, edge_node, tbl, seq) \
             SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[]) \
             ON CONFLICT (edge, edge_node, tbl) DO UPDATE SET seq = GREATEST(p.seq, EXCLUDED.seq)",
            &[&names, &nodes, &tables, &seqs],
        )
        .await?;
    Ok(())
}

/// Reads edges' positions from the PostgreSQL a sink writes to.
pub struct PostgresResumeHints {
    url: String,
    tables: Vec<String>,
}

impl PostgresResumeHints {
    /// Hints for the tidelog `tables` a sink into `url` sends.
    pub fn new(url: impl Into<String>, tables: Vec<String>) -> PostgresResumeHints {
        PostgresResumeHints {
            url: url.into(),
            tables,
        }
    }

    async fn read(&self, edge: &str, node_id: u64) -> Result<Vec<(String, u64)>, String> {
        let mut pg: tokio_postgres::Config = self
            .url
            .parse()
            .map_err(|e| format!("`url` is not a PostgreSQL connection string: {e}"))?;
        if pg.get_connect_timeout().is_none() {
            pg.connect_timeout(Duration::from_secs(2));
        }
        pg.application_name("tidelog-resume");
        // One short connection per link start: links start rarely, and a
        // pool would hold connections for nothing in between.
        let (client, connection) = pg
            .connect(NoTls)
            .await
            .map_err(|e| format!("connecting to PostgreSQL: {e}"))?;
        let conn = tokio::spawn(async move {
            let _ = connection.await;
        });
        let rows = client
            .query(
                "SELECT tbl, seq FROM tidelog_edge_progress \
                 WHERE edge = $1 AND edge_node = $2 AND tbl = ANY($3)",
                &[&edge, &node_text(node_id), &self.tables],
            )
            .await;
        drop(client);
        conn.abort();
        match rows {
            Ok(rows) => rows
                .iter()
                .map(|r| {
                    let table: String = r.try_get(0).map_err(|e| e.to_string())?;
                    let seq: i64 = r.try_get(1).map_err(|e| e.to_string())?;
                    Ok((table, seq.max(0) as u64))
                })
                .collect::<Result<_, String>>()
                .map_err(|e| format!("tidelog_edge_progress has unexpected columns ({e}): drop it and let the sink create it")),
            // No sink has written yet: nothing is known.
            Err(e) if e.code() == Some(&SqlState::UNDEFINED_TABLE) => Ok(Vec::new()),
            Err(e) => Err(format!("reading tidelog_edge_progress: {e}")),
        }
    }
}

impl ResumeHints for PostgresResumeHints {
    fn edge_positions(&self, edge: &str, node_id: u64) -> HintsFuture<'_> {
        let edge = edge.to_string();
        Box::pin(async move { self.read(&edge, node_id).await })
    }
}
