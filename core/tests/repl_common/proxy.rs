//! An unreliable network for replication tests: a TCP proxy on 127.0.0.1
//! whose faults are switched at run time, reproducibly from a seed where
//! they draw at random.
//!
//! Faults: cutting every open connection; a blackhole (nothing forwarded
//! either way, every socket stays open: a dead NAT entry, a cable pulled
//! far away); latency (each chunk forwarded a fixed time after it was
//! read, pipelined like a long path, not one chunk per delay); loss (at
//! random, a chunk is held a short while, as TCP retransmission would, and
//! now and then a connection is cut); and half-open (the proxy stops
//! reading from one side of the connections open when it starts while the
//! sockets stay open, also after the other side hung up: the far side is
//! wedged, or its NAT entry one way is gone; connections made afterwards
//! pass).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::Rng;

/// What the proxy does to traffic right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Pass,
    /// Nothing forwarded either way; nothing closed.
    Blackhole,
    /// Each chunk goes out this long after it was read.
    Delay(Duration),
    /// Each chunk is held `hold_ms` (drawn 50..400) with probability
    /// `hold_pct` %, and the connection is cut with probability
    /// `cut_per_mille` per thousand chunks.
    Loss {
        hold_pct: u64,
        cut_per_mille: u64,
    },
    /// Connections accepted before connection number `before` stop being
    /// read on one side: the dialer's (`dialer_side`) or the listener's.
    /// Their sockets stay open until the mode changes or a cut.
    HalfOpen {
        before: u64,
        dialer_side: bool,
    },
}

pub struct FaultProxy {
    pub addr: SocketAddr,
    pub mode: watch::Sender<Mode>,
    /// Bumped to cut every open connection.
    pub cuts: watch::Sender<u64>,
    /// Connections accepted so far.
    pub accepted: Arc<AtomicU64>,
    /// Connections the loss mode cut.
    pub lossy_cuts: Arc<AtomicU64>,
}

impl FaultProxy {
    /// Starts on the current tokio runtime, forwarding to `upstream`.
    pub async fn start(upstream: SocketAddr, seed: u64) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (mode, _) = watch::channel(Mode::Pass);
        let (cuts, _) = watch::channel(0u64);
        let accepted = Arc::new(AtomicU64::new(0));
        let lossy_cuts = Arc::new(AtomicU64::new(0));
        let (m, c, a, l) = (
            mode.clone(),
            cuts.clone(),
            accepted.clone(),
            lossy_cuts.clone(),
        );
        tokio::spawn(async move {
            loop {
                let Ok((down, _)) = listener.accept().await else {
                    continue;
                };
                let id = a.fetch_add(1, Ordering::Relaxed);
                let (m, c, l) = (m.subscribe(), c.subscribe(), l.clone());
                tokio::spawn(async move {
                    let Ok(up) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    connection(down, up, id, seed, m, c, l).await;
                });
            }
        });
        FaultProxy {
            addr,
            mode,
            cuts,
            accepted,
            lossy_cuts,
        }
    }

    pub fn set(&self, mode: Mode) {
        self.mode.send_replace(mode);
    }

    pub fn cut(&self) {
        self.cuts.send_modify(|c| *c += 1);
    }

    /// Half-open for the connections open now (see [`Mode::HalfOpen`]).
    pub fn half_open(&self, dialer_side: bool) {
        let before = self.accepted.load(Ordering::Relaxed);
        self.set(Mode::HalfOpen {
            before,
            dialer_side,
        });
    }
}

/// Runs one proxied connection until it ends or is cut. The halves live
/// here, not in the pumps, so a half-open connection keeps its sockets
/// open after one direction ended.
async fn connection(
    down: TcpStream,
    up: TcpStream,
    id: u64,
    seed: u64,
    mut mode: watch::Receiver<Mode>,
    mut cuts: watch::Receiver<u64>,
    lossy_cuts: Arc<AtomicU64>,
) {
    let _ = (down.set_nodelay(true), up.set_nodelay(true));
    let (mut dr, mut dw) = down.into_split();
    let (mut ur, mut uw) = up.into_split();
    cuts.borrow_and_update();
    let (lost_tx, mut lost) = mpsc::channel::<()>(1);
    let pumped = async {
        tokio::select! {
            _ = pump(&mut dr, &mut uw, id, true, seed ^ id.rotate_left(7), mode.clone(), lost_tx.clone()) => {}
            _ = pump(&mut ur, &mut dw, id, false, seed ^ id.rotate_left(29), mode.clone(), lost_tx) => {}
        }
        // One direction ended. A half-open connection stays open (the
        // wedged side never learns) until the fault ends.
        while half_open_for(*mode.borrow_and_update(), id).is_some() {
            if mode.changed().await.is_err() {
                return;
            }
        }
    };
    tokio::select! {
        _ = cuts.changed() => {}
        _ = lost.recv() => { lossy_cuts.fetch_add(1, Ordering::Relaxed); }
        () = pumped => {}
    }
}

/// Which side connection `id` does not read, if it is half-open.
fn half_open_for(mode: Mode, id: u64) -> Option<bool> {
    match mode {
        Mode::HalfOpen {
            before,
            dialer_side,
        } if id < before => Some(dialer_side),
        _ => None,
    }
}

/// Chunks read and not yet written, each with when it is due.
type InFlight = VecDeque<(Instant, Vec<u8>)>;

/// Copies one direction, obeying the mode; returns on EOF or an error.
/// Chunks go through a queue to a writer task with their due time, so a
/// delay is latency, not a cap on throughput.
async fn pump(
    from: &mut OwnedReadHalf,
    to: &mut OwnedWriteHalf,
    id: u64,
    from_dialer: bool,
    seed: u64,
    mut mode: watch::Receiver<Mode>,
    lost: mpsc::Sender<()>,
) {
    let mut rng = Rng(seed | 1);
    let queue: Arc<parking_lot::Mutex<InFlight>> = Arc::default();
    let (wake, mut woken) = mpsc::channel::<()>(1);
    let q = queue.clone();
    let mut wmode = mode.clone();
    let writer = async move {
        loop {
            let next = q.lock().pop_front();
            let Some((due, bytes)) = next else {
                if woken.recv().await.is_none() {
                    return;
                }
                continue;
            };
            tokio::time::sleep_until(due).await;
            // A blackhole, or half-open on this side, holds what is in
            // flight too (a read may have been waiting when it began).
            while {
                let m = *wmode.borrow_and_update();
                m == Mode::Blackhole || half_open_for(m, id) == Some(from_dialer)
            } {
                if wmode.changed().await.is_err() {
                    return;
                }
            }
            if to.write_all(&bytes).await.is_err() {
                return;
            }
        }
    };
    let reader = async move {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            // Not reading is what fills the sender's socket buffers, so it
            // blocks as it would behind a real black hole.
            loop {
                let m = *mode.borrow_and_update();
                let stopped = m == Mode::Blackhole || half_open_for(m, id) == Some(from_dialer);
                if !stopped {
                    break;
                }
                if mode.changed().await.is_err() {
                    return;
                }
            }
            let n = match from.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let now = Instant::now();
            let due = match *mode.borrow() {
                Mode::Delay(d) => now + d,
                Mode::Loss {
                    hold_pct,
                    cut_per_mille,
                } => {
                    if rng.below(1000) < cut_per_mille {
                        let _ = lost.try_send(());
                        return;
                    }
                    if rng.below(100) < hold_pct {
                        now + Duration::from_millis(50 + rng.below(350))
                    } else {
                        now
                    }
                }
                _ => now,
            };
            // In order: a chunk never overtakes one read before it.
            let mut q = queue.lock();
            let due = q.back().map_or(due, |(d, _)| due.max(*d));
            q.push_back((due, buf[..n].to_vec()));
            drop(q);
            let _ = wake.try_send(());
        }
    };
    tokio::pin!(writer);
    tokio::select! {
        () = &mut writer => {}
        // What was read before the end still goes out (a goodbye).
        () = reader => writer.await,
    }
}
