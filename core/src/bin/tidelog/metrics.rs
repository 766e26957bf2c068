//! Opt-in `/metrics` (`[metrics] listen = "127.0.0.1:9464"`): the OpenMetrics
//! text format, gathered from `Database::replication_status` at each
//! scrape (nothing is kept between scrapes, so a removed peer's series
//! simply end). HTTP/1 by hyper; `GET /metrics` only, 404 for any other
//! path, 405 for another method.
//!
//! Names (counters end in `_total` in the text): per peer (label `peer`)
//! `tidelog_peer_connected`, `tidelog_peer_lag_seconds`,
//! `tidelog_peer_oldest_unacknowledged_age_seconds`,
//! `tidelog_peer_backlog_transactions`, `tidelog_peer_backlog_bytes`,
//! `tidelog_peer_bytes_in`, `tidelog_peer_bytes_out` (on the wire),
//! `tidelog_peer_refused_writes`, `tidelog_peer_resyncs_sent`,
//! `tidelog_peer_syncs_received`, `tidelog_peer_connects`,
//! `tidelog_peer_tls_failures`, `tidelog_peer_stalls`,
//! `tidelog_peer_stalled`; per peer and table
//! (labels `peer`, `table`) `tidelog_table_coalesced` and
//! `tidelog_table_refused_writes` (label `direction` too); for the node
//! `tidelog_accepted_tls_failures`, `tidelog_certificate_expiry_days`,
//! `tidelog_peers`; per `[[sinks]]` entry (label `sink`)
//! `tidelog_sink_backlog`, `tidelog_sink_lag_seconds`,
//! `tidelog_sink_retries`, `tidelog_sink_rows`, `tidelog_sink_overruns`,
//! `tidelog_sink_connected`.

use std::convert::Infallible;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tidelog::PeerStatus;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use super::serve::Hub;

const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// Scrapes served at once; more wait for the accept loop.
const MAX_SCRAPES: usize = 8;
/// A client must send its request head within this.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `/metrics` on `listener` until the task is aborted.
pub async fn serve_metrics(listener: TcpListener, hub: Arc<Hub>) {
    let slots = Arc::new(Semaphore::new(MAX_SCRAPES));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let (tcp, from) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                log::warn!("metrics: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let hub = hub.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| answer(req, hub.clone()));
            // One request per connection: an idle kept-alive connection
            // would hold one of the few slots for as long as its client likes.
            let served = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .keep_alive(false)
                .serve_connection(TokioIo::new(tcp), service)
                .await;
            if let Err(e) = served {
                log::debug!("metrics: connection from {from}: {e}");
            }
            drop(slot);
        });
    }
}

async fn answer(
    req: Request<Incoming>,
    hub: Arc<Hub>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let reply = |code: StatusCode, ty: &'static str, body: String| {
        let mut r = Response::new(Full::new(Bytes::from(body)));
        *r.status_mut() = code;
        if let Ok(v) = ty.parse() {
            r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
        }
        Ok(r)
    };
    let text = "text/plain; charset=utf-8";
    if req.uri().path() != "/metrics" {
        return reply(
            StatusCode::NOT_FOUND,
            text,
            "not found: metrics are at /metrics\n".into(),
        );
    }
    if req.method() != Method::GET {
        return reply(
            StatusCode::METHOD_NOT_ALLOWED,
            text,
            "only GET /metrics\n".into(),
        );
    }
    match tokio::task::spawn_blocking(move || render(&hub)).await {
        Ok(Ok(body)) => reply(StatusCode::OK, CONTENT_TYPE, body),
        Ok(Err(e)) => reply(StatusCode::SERVICE_UNAVAILABLE, text, format!("{e}\n")),
        Err(e) => reply(StatusCode::INTERNAL_SERVER_ERROR, text, format!("{e}\n")),
    }
}

type PeerLabel = [(&'static str, String); 1];
type TableLabel = [(&'static str, String); 2];
type RefusalLabel = [(&'static str, String); 3];

/// A per-peer family registered under `name`.
fn family<M>(reg: &mut Registry, name: &str, help: &str) -> Family<PeerLabel, M>
where
    M: prometheus_client::metrics::TypedMetric
        + prometheus_client::encoding::EncodeMetric
        + Default
        + Clone
        + Send
        + Sync
        + std::fmt::Debug
        + 'static,
{
    let f = Family::<PeerLabel, M>::default();
    reg.register(name, help, f.clone());
    f
}

/// The OpenMetrics text of this node now.
pub fn render(hub: &Hub) -> Result<String, String> {
    let peers = hub
        .db
        .replication_status()
        .map_err(|e| format!("status unavailable: {e}"))?;
    let accepted = hub.db.accepted_tls_failures().unwrap_or(0);
    let mut reg = Registry::default();
    fill(&mut reg, &peers, accepted, hub.cert_not_after);
    fill_sinks(&mut reg, &hub.sinks.lock().statuses());
    let mut out = String::new();
    encode(&mut out, &reg).map_err(|e| format!("cannot encode metrics: {e}"))?;
    Ok(out)
}

fn fill(reg: &mut Registry, peers: &[PeerStatus], accepted_tls: u64, cert_not_after: Option<i64>) {
    type G = Gauge<f64, AtomicU64>;
    type C = Counter<u64>;
    let connected = family::<Gauge>(
        reg,
        "tidelog_peer_connected",
        "1 while the link to the peer is up",
    );
    let lag = family::<G>(
        reg,
        "tidelog_peer_lag_seconds",
        "How far behind the peer is: the age of the oldest log entry it has not acknowledged",
    );
    let oldest = family::<G>(
        reg,
        "tidelog_peer_oldest_unacknowledged_age_seconds",
        "Age of the oldest log entry the peer has not acknowledged (0 without a backlog)",
    );
    let backlog_txns = family::<Gauge>(
        reg,
        "tidelog_peer_backlog_transactions",
        "Transactions in this node's log after the peer's acknowledged position",
    );
    let backlog_bytes = family::<Gauge>(
        reg,
        "tidelog_peer_backlog_bytes",
        "Bytes of those transactions",
    );
    let bytes_in = family::<C>(
        reg,
        "tidelog_peer_bytes_in",
        "Bytes read from the link (on the wire)",
    );
    let bytes_out = family::<C>(
        reg,
        "tidelog_peer_bytes_out",
        "Bytes written to the link (on the wire)",
    );
    let refused = family::<C>(
        reg,
        "tidelog_peer_refused_writes",
        "Writes from the peer this node refused",
    );
    let resyncs = family::<C>(
        reg,
        "tidelog_peer_resyncs_sent",
        "Resyncs sent to the peer (its resume point was no longer in the log)",
    );
    let syncs = family::<C>(
        reg,
        "tidelog_peer_syncs_received",
        "Initial syncs and resyncs received from the peer",
    );
    let connects = family::<C>(
        reg,
        "tidelog_peer_connects",
        "Links to the peer that came up (reconnects included)",
    );
    let tls = family::<C>(
        reg,
        "tidelog_peer_tls_failures",
        "Dials of the peer that failed in TLS",
    );
    let stalls = family::<C>(
        reg,
        "tidelog_peer_stalls",
        "Links to the peer torn down as stalled (no acknowledgement progress, a blocked write, or applying stuck)",
    );
    let stalled = family::<Gauge>(
        reg,
        "tidelog_peer_stalled",
        "1 while the peer's last link stalled and no later link moved yet",
    );
    let coalesced = Family::<TableLabel, C>::default();
    reg.register(
        "tidelog_table_coalesced",
        "Versions of the table not sent to the peer for a newer one of the same key",
        coalesced.clone(),
    );
    let refused_table = Family::<RefusalLabel, C>::default();
    reg.register(
        "tidelog_table_refused_writes",
        "Writes refused by table and direction (inbound: this node refused the peer's; outbound: the peer refused this node's)",
        refused_table.clone(),
    );
    for p in peers {
        let l: PeerLabel = [("peer", p.name.clone())];
        connected.get_or_create(&l).set(i64::from(p.connected));
        lag.get_or_create(&l).set(p.lag_ms as f64 / 1000.0);
        let oldest_ms = if p.backlog_txns > 0 { p.lag_ms } else { 0 };
        oldest.get_or_create(&l).set(oldest_ms as f64 / 1000.0);
        backlog_txns.get_or_create(&l).set(clamp(p.backlog_txns));
        backlog_bytes.get_or_create(&l).set(clamp(p.backlog_bytes));
        bytes_in.get_or_create(&l).inc_by(p.traffic.bytes_in_wire);
        bytes_out.get_or_create(&l).inc_by(p.traffic.bytes_out_wire);
        refused.get_or_create(&l).inc_by(p.refused_writes);
        resyncs.get_or_create(&l).inc_by(p.resyncs_sent);
        syncs.get_or_create(&l).inc_by(p.syncs_received);
        connects.get_or_create(&l).inc_by(p.connects);
        tls.get_or_create(&l).inc_by(p.tls_failures);
        stalls.get_or_create(&l).inc_by(p.stalls);
        stalled
            .get_or_create(&l)
            .set(i64::from(p.stalled.is_some()));
        for t in &p.tables {
            coalesced
                .get_or_create(&[("peer", p.name.clone()), ("table", t.table.clone())])
                .inc_by(t.coalesced);
        }
        for r in &p.refusals {
            refused_table
                .get_or_create(&[
                    ("peer", p.name.clone()),
                    ("table", r.table.clone()),
                    ("direction", r.direction.clone()),
                ])
                .inc_by(r.count);
        }
    }
    let n = Gauge::<i64>::default();
    n.set(clamp(peers.len() as u64));
    reg.register("tidelog_peers", "Peers configured on this node", n);
    let accepted = C::default();
    accepted.inc_by(accepted_tls);
    reg.register(
        "tidelog_accepted_tls_failures",
        "Connections dialed in whose TLS handshake failed or whose certificate did not name the node they claimed",
        accepted,
    );
    if let Some(not_after) = cert_not_after {
        let days = G::default();
        let now = super::serve::now_ms() as f64 / 1000.0;
        days.set((not_after as f64 - now) / 86_400.0);
        reg.register(
            "tidelog_certificate_expiry_days",
            "Days until this node's certificate ([tls] cert) expires; negative once expired",
            days,
        );
    }
}

fn fill_sinks(reg: &mut Registry, sinks: &[tidelog::cloud::driver::SinkStatus]) {
    type L = [(&'static str, String); 1];
    let backlog = Family::<L, Gauge>::default();
    reg.register(
        "tidelog_sink_backlog",
        "Log entries after the sink's resume point (not yet in its destination)",
        backlog.clone(),
    );
    let lag = Family::<L, Gauge<f64, AtomicU64>>::default();
    reg.register(
        "tidelog_sink_lag_seconds",
        "Age of the oldest log entry the sink has not applied (0 without a backlog)",
        lag.clone(),
    );
    let retries = Family::<L, Counter<u64>>::default();
    reg.register(
        "tidelog_sink_retries",
        "Failed tries of the sink's destination (each retried with backoff)",
        retries.clone(),
    );
    let rows = Family::<L, Counter<u64>>::default();
    reg.register(
        "tidelog_sink_rows",
        "Rows the sink applied since start",
        rows.clone(),
    );
    let overruns = Family::<L, Counter<u64>>::default();
    reg.register(
        "tidelog_sink_overruns",
        "Times the log was trimmed past the sink's resume point and the tables' state was resent",
        overruns.clone(),
    );
    let connected = Family::<L, Gauge>::default();
    reg.register(
        "tidelog_sink_connected",
        "1 while the sink's last exchange with its destination succeeded",
        connected.clone(),
    );
    for s in sinks {
        let l: L = [("sink", s.name.clone())];
        backlog.get_or_create(&l).set(clamp(s.backlog));
        lag.get_or_create(&l).set(s.lag_seconds);
        retries.get_or_create(&l).inc_by(s.retries);
        rows.get_or_create(&l).inc_by(s.rows);
        overruns.get_or_create(&l).inc_by(s.overruns);
        connected.get_or_create(&l).set(i64::from(s.connected));
    }
}

fn clamp(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// When the first certificate in the PEM file at `path` expires, in seconds
/// since the epoch.
pub fn cert_not_after(path: &std::path::Path) -> Result<i64, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let (_, pem) = x509_parser::pem::parse_x509_pem(&pem)
        .map_err(|e| format!("{} is not a PEM certificate: {e}", path.display()))?;
    let cert = pem
        .parse_x509()
        .map_err(|e| format!("{} holds no readable certificate: {e}", path.display()))?;
    Ok(cert.validity().not_after.timestamp())
}
