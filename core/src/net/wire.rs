//! The replication wire protocol: versioned messages, postcard-encoded, each
//! in a frame of a 4-byte big-endian length and that many payload bytes.
//!
//! Everything here treats peer bytes as hostile: lengths are checked before
//! any allocation, buffers grow only as bytes actually arrive, and every
//! malformed input is a [`WireError`], never a panic.
//!
//! Compatibility rule: postcard encodes enum variants by index and struct
//! fields by position, so `Message::Hello` must stay variant 0 with `version`
//! as its first field, in every future version. That lets any version decode
//! enough of a peer's first frame to report a version mismatch instead of
//! garbage. New messages are appended; changed layouts bump
//! [`PROTOCOL_VERSION`].

use std::cell::Cell;
use std::marker::PhantomData;
use std::sync::Arc;

use serde::de::{SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::compress::{ByteCounts, CompressError, FrameCompressor, FrameDecompressor, MARKER};
use crate::local::codec::{Key, Stamp};
use crate::local::log::LogWrite;

/// Version spoken by this build. Both sides must speak the same one.
/// Version 2 added `Hello::relays_accepted` (origin rules) and `Refusals`
/// (an acknowledgement never stands for a refused write).
/// 4: writes may carry conflict metadata (`WriteOp::Meta`: the version a
/// write replaced, merge patches, counter totals, resolutions), which a
/// version-3 node cannot decode, so the two refuse each other at hello.
pub const PROTOCOL_VERSION: u16 = 4;

/// Default largest frame payload accepted or sent (16 MiB).
pub const DEFAULT_MAX_FRAME_BYTES: usize = 16 * 1024 * 1024;

/// Largest first frame (the hello) read from a connection: it is read
/// before the peer is known to be a configured one, so an unconfigured node
/// with a CA-signed certificate costs at most this much.
pub const HELLO_MAX_BYTES: usize = 64 * 1024;

/// Most tables one hello may subscribe to; 256 names of the longest
/// allowed length (128) still fit in [`HELLO_MAX_BYTES`].
pub const MAX_HELLO_WANTS: usize = 256;

/// Sequences in a frame (transactions, writes, sync rows, wants) may take
/// at most this many times the reader's frame limit in memory once
/// decoded, counted as they are decoded (see [`ELEMENT_COST_OVERHEAD`]).
/// Without a bound, a 16 MiB frame of tiny deletes decodes to ~15 times its
/// size.
pub const DECODE_BUDGET_FACTOR: usize = 2;

/// What decoding one element of a sequence is charged on top of its own
/// size: the small allocations it holds (names, keys, record text; their
/// contents come from the frame, so they are bounded by its size already).
pub const ELEMENT_COST_OVERHEAD: usize = 64;

/// The decode budget for a reader that accepts frames up to `max_frame_bytes`.
pub fn decode_budget(max_frame_bytes: usize) -> usize {
    max_frame_bytes.saturating_mul(DECODE_BUDGET_FACTOR)
}

/// What one decoded element of type `T` is charged against the budget.
pub const fn element_cost<T>() -> usize {
    std::mem::size_of::<T>() + ELEMENT_COST_OVERHEAD
}

/// Length prefix size.
const HEADER: usize = 4;

/// A frame's body buffer grows at most this much per read, so a peer that
/// announces a large frame and then stalls only costs what it actually sent.
const GROW_STEP: usize = 64 * 1024;

/// Reused buffers above this size are shrunk back after a frame, so one large
/// initial-sync chunk does not pin memory for the life of the connection.
const RETAIN_BYTES: usize = 1024 * 1024;

/// Why a frame could not be read, decoded or written.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("connection I/O failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("connection closed in the middle of a frame ({got} of {expected} bytes of the {part}): the peer crashed or the network dropped")]
    UnexpectedEof {
        part: &'static str,
        got: usize,
        expected: usize,
    },
    #[error("peer sent an empty frame: every frame must carry a message; the peer is not speaking the tidelog protocol")]
    EmptyFrame,
    #[error("frame of {len} bytes exceeds the limit of {max} bytes: raise max_frame_bytes on the receiver or send smaller batches")]
    FrameTooLarge { len: u64, max: usize },
    #[error("undecodable message from peer ({0}): the peer is not speaking tidelog protocol version {PROTOCOL_VERSION}")]
    Decode(String),
    #[error("frame has {extra} bytes after its message: the peer is not speaking tidelog protocol version {PROTOCOL_VERSION}")]
    TrailingBytes { extra: usize },
    #[error("peer speaks tidelog protocol version {theirs}, this node speaks version {ours}: upgrade the older node")]
    VersionMismatch { ours: u16, theirs: u16 },
    #[error("expected a {expected} message, got {got}: the peer broke the protocol order")]
    UnexpectedMessage {
        expected: &'static str,
        got: &'static str,
    },
    #[error("could not encode message: {0}")]
    Encode(String),
    #[error("a frame of {len} bytes decodes to more than {budget} bytes of entries: the peer sent far more entries than a tidelog node batches into one frame (a single transaction that large cannot be replicated; split it, or raise max_frame_bytes on the receiver)")]
    DecodeBudget { len: usize, budget: usize },
    #[error("hello subscribes to {got} tables, more than the {max} allowed")]
    TooManyWants { got: usize, max: usize },
    #[error("{0}")]
    Compression(#[from] super::compress::CompressError),
}

impl From<WireError> for crate::error::Error {
    fn from(e: WireError) -> Self {
        match e {
            // A TLS alert surfaces as an I/O error on read; keep it a TLS
            // error so "the peer rejected our certificate" is not lost.
            WireError::Io(io) => super::tls::io_error(io, "replication link"),
            e => crate::error::Error::Peer(e.to_string()),
        }
    }
}

/// One table the sender of a `Hello` wants to receive from the other side,
/// and where to resume it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableWant {
    pub table: String,
    /// The other side's log sequence up to which this node has durably
    /// applied it; 0 = nothing yet.
    pub resume_after: u64,
    /// Initial sync only sends rows changed at or after this time (ms since
    /// epoch); `None` = the whole table.
    pub since_ms: Option<u64>,
    /// False until a complete initial sync has been applied; while false the
    /// publisher restarts the initial sync instead of streaming its log.
    pub initial_sync_done: bool,
}

/// The first message on a connection, sent by both sides.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// Must stay the first field (see the module docs).
    pub version: u16,
    /// Must match a DNS name in the sender's certificate; the receiver checks.
    pub node_name: String,
    /// Stable id of the sender's data directory. A changed id under the same
    /// name means the peer's log restarted, so resume cursors kept for the
    /// old id are void.
    pub node_id: u64,
    /// Sender's wall clock, so clock skew is reported before any data moves.
    pub now_ms: u64,
    /// Largest frame payload the sender accepts; the other side keeps its
    /// batches under this.
    pub max_frame_bytes: u32,
    /// Tables the sender subscribes to from the receiver.
    #[serde(deserialize_with = "bounded_seq")]
    pub wants: Vec<TableWant>,
    /// Whether the sender of this hello accepts transactions (and sync
    /// rows) of origins other than the receiver's own node id from the
    /// receiver, i.e. lets it relay. The receiver sends nothing of another
    /// origin when false, and the sender closes the link if it gets some.
    pub relays_accepted: bool,
    /// Whether the sender of this hello accepts zstd-compressed frames.
    /// A link compresses what it sends only when the other side accepts
    /// it and its own settings allow it.
    pub accepts_zstd: bool,
    /// Whether the sender of this hello takes attribute deltas
    /// (`WriteOp::Delta`) from the receiver; the receiver sends them only
    /// when this is true and its own settings for the link want them.
    pub deltas: bool,
}

/// One transaction from the sender's log, already filtered to the tables the
/// receiver wants and the sender publishes to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireTxn {
    /// Sender's local log sequence; the receiver stores it as its cursor.
    pub seq: u64,
    /// Original stamp; `stamp.node` is the origin, which may be a third node.
    pub stamp: Stamp,
    #[serde(deserialize_with = "bounded_seq")]
    pub writes: Vec<LogWrite>,
}

/// One row of an initial sync or resync: a live record or a tombstone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncRow {
    pub key: Key,
    pub stamp: Stamp,
    /// HLC creation time, so every replica reports the same `__createdtime__`.
    pub created: u64,
    /// Record JSON text; `None` = tombstone.
    pub json: Option<String>,
    /// The record's merge state (JSON), where it has one (see
    /// `local::merge`): per-attribute overrides and counter contributions
    /// that the merged `json` alone would lose. Since version 4.
    pub merge: Option<String>,
}

/// Why the publisher is sending a table's state instead of its log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SyncReason {
    /// A new subscription (or one whose initial sync never finished).
    Initial,
    /// The subscriber's resume point was trimmed from the publisher's log
    /// (retention cap); must be reported, never silent.
    ResumePointTrimmed,
}

// Lives in `error` (errors carry it); re-exported so the wire names it too.
pub use crate::error::RefusalKind;

/// What a receiver refused of one transaction, for one table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnRefusal {
    /// The sender's log sequence of the transaction; 0 for a row of an
    /// initial sync or resync, which the sender matches by `stamp`.
    pub seq: u64,
    pub table: String,
    pub stamp: Stamp,
    pub kind: RefusalKind,
    /// What was wrong, for people.
    pub reason: String,
}

/// Everything that travels on a replication connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    /// Opens the connection both ways: identity, version, and subscriptions.
    /// Must stay variant 0.
    Hello(Hello),
    /// The publisher accepts a wanted table and announces its primary key, so
    /// a subscriber lacking the table can create it before data arrives.
    TableInfo { table: String, primary_key: String },
    /// The publisher will not send a wanted table (not published to this
    /// peer, unknown table, bad `since_ms`); the subscriber reports it.
    Refused { table: String, reason: String },
    /// A resync or initial sync of `table` starts; the subscriber merges what
    /// follows by the stamp rule and never deletes rows the publisher lacks.
    SyncBegin { table: String, reason: SyncReason },
    /// A slice of a table's state as of the publisher's log seq `upto_seq`.
    /// With `done`, the table is complete: the subscriber commits
    /// `upto_seq` as its cursor and live `Txns` continue after it.
    SyncChunk {
        table: String,
        primary_key: String,
        #[serde(deserialize_with = "bounded_seq")]
        rows: Vec<SyncRow>,
        done: bool,
        upto_seq: u64,
    },
    /// Live log transactions in the sender's log order, batched so many small
    /// transactions share one frame.
    Txns(#[serde(deserialize_with = "bounded_seq")] Vec<WireTxn>),
    /// The sender's log holds nothing more for the receiver up to `upto_seq`
    /// (every entry was filtered out), so the receiver can advance its cursor
    /// and acknowledge; otherwise unrelated traffic would stall log trimming.
    Progress { upto_seq: u64 },
    /// The receiver has durably applied the sender's log up to `upto_seq`;
    /// drives log retention and delivery receipts.
    Ack { upto_seq: u64 },
    /// Keeps an idle connection alive and carries the sender's clock.
    Heartbeat { now_ms: u64 },
    /// The sender is closing the connection on purpose, and why.
    Goodbye { reason: String },
    /// Live log transactions plus the position they complete: the sender has
    /// now sent everything up to `upto_seq` for every table of the link, so
    /// the receiver may move all its cursors there and acknowledge it. With
    /// priority lanes `upto_seq` can lag behind the transactions' own seqs.
    TxnsUpTo {
        #[serde(deserialize_with = "bounded_seq")]
        txns: Vec<WireTxn>,
        upto_seq: u64,
    },
    /// The receiver refused these (parts of) transactions: nothing of the
    /// named table in them was applied. Sent before the `Ack` that covers
    /// them (frames keep their order), so the sender never counts an
    /// acknowledged position as delivery of a refused write.
    Refusals(#[serde(deserialize_with = "bounded_seq")] Vec<TxnRefusal>),
    /// The receiver lacks the base version of an attribute delta in the
    /// sender's transaction `seq`: it applied nothing of that frame and
    /// will acknowledge nothing more on this link, so the sender ends the
    /// link and, reconnected, sends from the receiver's resume point whole.
    DeltaMiss { seq: u64, reason: String },
    /// The receiver applied the sender's log through `applied_seq` but
    /// does not acknowledge it yet: a sink of its tables has not put it
    /// into its destination (see `repl::sunk`). Repeated every heartbeat
    /// while it holds, so the sender counts the link as moving.
    AckHeld { applied_seq: u64, reason: String },
}

thread_local! {
    /// Bytes the decode in progress on this thread may still charge
    /// (`None`: no decode is bounded here), and whether it ran out.
    static DECODE_LEFT: Cell<Option<usize>> = const { Cell::new(None) };
    static DECODE_EXCEEDED: Cell<bool> = const { Cell::new(false) };
}

fn charge<E: serde::de::Error>(bytes: usize) -> Result<(), E> {
    DECODE_LEFT.with(|left| match left.get() {
        Some(l) if l >= bytes => {
            left.set(Some(l - bytes));
            Ok(())
        }
        Some(_) => {
            DECODE_EXCEEDED.with(|e| e.set(true));
            // postcard drops a custom error's text; `decode_bounded` reads
            // the flag instead.
            Err(E::custom("decode budget exceeded"))
        }
        None => Ok(()),
    })
}

/// Decodes a sequence, charging every element against the thread's decode
/// budget before it is allocated, so a frame of many tiny entries is
/// refused instead of multiplying in memory.
fn bounded_seq<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    struct Bounded<T>(PhantomData<T>);
    impl<'de, T: Deserialize<'de>> Visitor<'de> for Bounded<T> {
        type Value = Vec<T>;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a sequence")
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
            let each = element_cost::<T>();
            // postcard announces the exact length: charged whole, before
            // anything is allocated for it.
            let announced = seq.size_hint().unwrap_or(0);
            charge(announced.saturating_mul(each))?;
            let mut out = Vec::with_capacity(announced.min(1 << 16));
            while let Some(x) = seq.next_element()? {
                if out.len() >= announced {
                    charge(each)?;
                }
                out.push(x);
            }
            Ok(out)
        }
    }
    d.deserialize_seq(Bounded(PhantomData))
}

impl Message {
    /// Short name for logs and errors.
    pub fn kind(&self) -> &'static str {
        match self {
            Message::Hello(_) => "Hello",
            Message::TableInfo { .. } => "TableInfo",
            Message::Refused { .. } => "Refused",
            Message::SyncBegin { .. } => "SyncBegin",
            Message::SyncChunk { .. } => "SyncChunk",
            Message::Txns(_) => "Txns",
            Message::Progress { .. } => "Progress",
            Message::Ack { .. } => "Ack",
            Message::Heartbeat { .. } => "Heartbeat",
            Message::Goodbye { .. } => "Goodbye",
            Message::TxnsUpTo { .. } => "TxnsUpTo",
            Message::Refusals(_) => "Refusals",
            Message::DeltaMiss { .. } => "DeltaMiss",
            Message::AckHeld { .. } => "AckHeld",
        }
    }
}

/// Checks that the first message of a connection is a `Hello` of our
/// version, and returns it.
pub fn expect_hello(msg: Message) -> Result<Hello, WireError> {
    match msg {
        Message::Hello(h) if h.version == PROTOCOL_VERSION => {
            if h.wants.len() > MAX_HELLO_WANTS {
                return Err(WireError::TooManyWants {
                    got: h.wants.len(),
                    max: MAX_HELLO_WANTS,
                });
            }
            Ok(h)
        }
        Message::Hello(h) => Err(WireError::VersionMismatch {
            ours: PROTOCOL_VERSION,
            theirs: h.version,
        }),
        other => Err(WireError::UnexpectedMessage {
            expected: "Hello",
            got: other.kind(),
        }),
    }
}

/// Decodes one frame payload (without the length prefix), within the decode
/// budget of a [`DEFAULT_MAX_FRAME_BYTES`] reader.
pub fn decode_payload(payload: &[u8]) -> Result<Message, WireError> {
    decode_bounded(payload, decode_budget(DEFAULT_MAX_FRAME_BYTES))
}

/// Decodes one frame payload, refusing it once its sequences would take
/// more than `budget` bytes in memory (see [`decode_budget`]).
pub fn decode_bounded(payload: &[u8], budget: usize) -> Result<Message, WireError> {
    if payload.is_empty() {
        return Err(WireError::EmptyFrame);
    }
    DECODE_LEFT.with(|l| l.set(Some(budget)));
    DECODE_EXCEEDED.with(|e| e.set(false));
    let decoded = postcard::take_from_bytes::<Message>(payload);
    DECODE_LEFT.with(|l| l.set(None));
    if DECODE_EXCEEDED.with(|e| e.replace(false)) {
        return Err(WireError::DecodeBudget {
            len: payload.len(),
            budget,
        });
    }
    match decoded {
        Ok((msg, [])) => Ok(msg),
        Ok((_, rest)) => Err(hello_version(payload)
            .map(|theirs| WireError::VersionMismatch {
                ours: PROTOCOL_VERSION,
                theirs,
            })
            .unwrap_or(WireError::TrailingBytes { extra: rest.len() })),
        Err(e) => Err(hello_version(payload)
            .map(|theirs| WireError::VersionMismatch {
                ours: PROTOCOL_VERSION,
                theirs,
            })
            .unwrap_or_else(|| WireError::Decode(e.to_string()))),
    }
}

/// If `payload` starts like a `Hello` of another version, that version. Used
/// only after a decode failure, so a newer peer whose `Hello` grew fields gets
/// a version error rather than a decode error.
fn hello_version(payload: &[u8]) -> Option<u16> {
    match postcard::take_from_bytes::<(u8, u16)>(payload) {
        Ok(((0, v), _)) if v != PROTOCOL_VERSION => Some(v),
        _ => None,
    }
}

/// Encodes `msg` as a frame into `buf` (cleared first), refusing payloads
/// over `max` so we never send what the peer would reject.
fn encode_into(msg: &Message, buf: &mut Vec<u8>, max: usize) -> Result<(), WireError> {
    buf.clear();
    buf.extend_from_slice(&[0; HEADER]);
    let mut out = postcard::to_extend(msg, std::mem::take(buf))
        .map_err(|e| WireError::Encode(e.to_string()))?;
    let len = out.len() - HEADER;
    let fits = u32::try_from(len).ok().filter(|_| len <= max);
    if let Some(len32) = fits {
        out[..HEADER].copy_from_slice(&len32.to_be_bytes());
    }
    *buf = out;
    match fits {
        Some(_) => Ok(()),
        None => Err(WireError::FrameTooLarge {
            len: len as u64,
            max,
        }),
    }
}

/// Encodes one message as a complete frame (length prefix + payload). Fails
/// only for a message too large for a 4-byte length.
pub fn encode_frame(msg: &Message) -> Result<Vec<u8>, WireError> {
    let mut out = Vec::new();
    encode_into(msg, &mut out, u32::MAX as usize)?;
    Ok(out)
}

fn clamp_max(max_frame_bytes: usize) -> usize {
    max_frame_bytes.min(u32::MAX as usize)
}

/// Reads frames from a byte stream, reusing one buffer.
///
/// `read_message` is cancel safe: partial frames are kept in the reader, so
/// it can sit in a `tokio::select!` next to timers without losing bytes.
/// After an error the stream position is unknown; drop the connection.
pub struct FrameReader<R> {
    inner: R,
    max: usize,
    header: [u8; HEADER],
    header_got: usize,
    body: Vec<u8>,
    body_got: usize,
    /// `Some` once the link negotiated compression: a compressed frame
    /// before that (or without it) is refused.
    decompressor: Option<FrameDecompressor>,
    counts: Option<Arc<ByteCounts>>,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub fn new(inner: R, max_frame_bytes: usize) -> Self {
        FrameReader {
            inner,
            max: clamp_max(max_frame_bytes),
            header: [0; HEADER],
            header_got: 0,
            body: Vec::new(),
            body_got: 0,
            decompressor: None,
            counts: None,
        }
    }

    /// Accepts compressed frames from here on (the link negotiated it).
    pub fn accept_compressed(&mut self) -> Result<(), WireError> {
        self.decompressor = Some(FrameDecompressor::new()?);
        Ok(())
    }

    /// Counts each frame read into `counts`: decompressed size as `raw`,
    /// bytes read from the stream as `wire`.
    pub fn count_into(&mut self, counts: Arc<ByteCounts>) {
        self.counts = Some(counts);
    }

    /// Changes the largest frame accepted from here on: a connection reads
    /// its hello under [`HELLO_MAX_BYTES`], and only a configured peer's
    /// link gets the full limit.
    pub fn set_max_frame_bytes(&mut self, max_frame_bytes: usize) {
        self.max = clamp_max(max_frame_bytes);
    }

    pub fn get_ref(&self) -> &R {
        &self.inner
    }

    pub fn get_mut(&mut self) -> &mut R {
        &mut self.inner
    }

    pub fn into_inner(self) -> R {
        self.inner
    }

    /// The next message; `None` on a clean end of stream between frames.
    pub async fn read_message(&mut self) -> Result<Option<Message>, WireError> {
        while self.header_got < HEADER {
            let n = self.inner.read(&mut self.header[self.header_got..]).await?;
            if n == 0 {
                if self.header_got == 0 {
                    return Ok(None);
                }
                let got = std::mem::take(&mut self.header_got);
                return Err(WireError::UnexpectedEof {
                    part: "length prefix",
                    got,
                    expected: HEADER,
                });
            }
            self.header_got += n;
        }
        let len = u32::from_be_bytes(self.header) as usize;
        if len == 0 {
            self.header_got = 0;
            return Err(WireError::EmptyFrame);
        }
        if len > self.max {
            self.header_got = 0;
            return Err(WireError::FrameTooLarge {
                len: len as u64,
                max: self.max,
            });
        }
        while self.body_got < len {
            // Grow only as far as the next read can fill, never to the
            // announced length up front.
            if self.body.len() <= self.body_got {
                self.body.resize((self.body_got + GROW_STEP).min(len), 0);
            }
            let end = self.body.len().min(len);
            let n = self.inner.read(&mut self.body[self.body_got..end]).await?;
            if n == 0 {
                let got = std::mem::take(&mut self.body_got);
                self.header_got = 0;
                return Err(WireError::UnexpectedEof {
                    part: "message body",
                    got,
                    expected: len,
                });
            }
            self.body_got += n;
        }
        self.header_got = 0;
        self.body_got = 0;
        let budget = decode_budget(self.max);
        let payload = &self.body[..len];
        let (msg, raw) = if payload[0] == MARKER {
            let d = self
                .decompressor
                .as_mut()
                .ok_or(CompressError::NotNegotiated)?;
            let plain = d.decompress(payload, self.max)?;
            if plain.first() == Some(&MARKER) {
                return Err(WireError::Decode(
                    "a compressed frame may not hold another compressed frame".into(),
                ));
            }
            let msg = decode_bounded(plain, budget);
            let raw = plain.len();
            d.shrink(RETAIN_BYTES);
            (msg, raw)
        } else {
            (decode_bounded(payload, budget), len)
        };
        if let Some(c) = &self.counts {
            c.add(HEADER + raw, HEADER + len);
        }
        if self.body.capacity() > RETAIN_BYTES {
            self.body.truncate(RETAIN_BYTES);
            self.body.shrink_to(RETAIN_BYTES);
        }
        msg.map(Some)
    }
}

/// Writes frames to a byte stream, reusing one buffer. Not cancel safe: a
/// cancelled write leaves a partial frame, so drop the connection after one.
pub struct FrameWriter<W> {
    inner: W,
    max: usize,
    buf: Vec<u8>,
    compressor: Option<FrameCompressor>,
    counts: Option<Arc<ByteCounts>>,
}

impl<W: AsyncWrite + Unpin> FrameWriter<W> {
    pub fn new(inner: W, max_frame_bytes: usize) -> Self {
        FrameWriter {
            inner,
            max: clamp_max(max_frame_bytes),
            buf: Vec::new(),
            compressor: None,
            counts: None,
        }
    }

    /// Compresses frames worth it with zstd at `level` from here on (the
    /// peer accepts compressed frames).
    pub fn compress(&mut self, level: i32) -> Result<(), WireError> {
        self.compressor = Some(FrameCompressor::new(level)?);
        Ok(())
    }

    /// Counts each frame written into `counts`: encoded size as `raw`,
    /// bytes written to the stream as `wire`.
    pub fn count_into(&mut self, counts: Arc<ByteCounts>) {
        self.counts = Some(counts);
    }

    /// Lowers or raises the send limit, e.g. to the peer's
    /// `Hello::max_frame_bytes`.
    pub fn set_max_frame_bytes(&mut self, max_frame_bytes: usize) {
        self.max = clamp_max(max_frame_bytes);
    }

    pub fn get_ref(&self) -> &W {
        &self.inner
    }

    pub fn get_mut(&mut self) -> &mut W {
        &mut self.inner
    }

    pub fn into_inner(self) -> W {
        self.inner
    }

    /// Writes and flushes one message. A message over the limit is refused
    /// with `FrameTooLarge` before anything is written, so the caller can
    /// split the batch and carry on.
    ///
    /// Returns the bytes written to the stream, length prefix included
    /// (after compression).
    pub async fn write_message(&mut self, msg: &Message) -> Result<usize, WireError> {
        encode_into(msg, &mut self.buf, self.max)?;
        let raw = self.buf.len();
        if let Some(payload) = match &mut self.compressor {
            Some(c) => c.compress(&self.buf[HEADER..])?,
            None => None,
        } {
            // Rebuilt in `buf` and written with one call: over TLS each
            // write call becomes a record of its own, and a record for the
            // length prefix alone would cost more than the prefix. Smaller
            // than the plain payload, which fit in a u32.
            self.buf.clear();
            self.buf
                .extend_from_slice(&(payload.len() as u32).to_be_bytes());
            self.buf.extend_from_slice(payload);
        }
        let wire = self.buf.len();
        self.inner.write_all(&self.buf).await?;
        self.inner.flush().await?;
        if let Some(c) = &self.counts {
            c.add(raw, wire);
        }
        if self.buf.capacity() > RETAIN_BYTES {
            self.buf = Vec::new();
            if let Some(c) = &mut self.compressor {
                c.shrink(RETAIN_BYTES);
            }
        }
        Ok(wire)
    }
}

/// Reads one message without keeping a reader; allocates per call and is not
/// cancel safe. Prefer [`FrameReader`] on a connection.
pub async fn read_message<R: AsyncRead + Unpin>(
    r: &mut R,
    max_frame_bytes: usize,
) -> Result<Option<Message>, WireError> {
    FrameReader::new(r, max_frame_bytes).read_message().await
}

/// Writes and flushes one message, up to [`DEFAULT_MAX_FRAME_BYTES`].
pub async fn write_message<W: AsyncWrite + Unpin>(
    w: &mut W,
    msg: &Message,
) -> Result<(), WireError> {
    FrameWriter::new(w, DEFAULT_MAX_FRAME_BYTES)
        .write_message(msg)
        .await
        .map(|_| ())
}

/// Shared with the net-level tests in `net/mod.rs`.
#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::local::log::WriteOp;

    fn stamp(t: u64) -> Stamp {
        Stamp { time: t, node: 7 }
    }

    /// One of every message, with both key kinds, a tombstone and a live row.
    pub(crate) fn samples() -> Vec<Message> {
        let put = LogWrite {
            table: "alerts".into(),
            key: Key::Str("a-1".into()),
            op: WriteOp::Put {
                json: r#"{"id":"a-1","v":3}"#.into(),
                created: 41,
            },
        };
        let del = LogWrite {
            table: "alerts".into(),
            key: Key::Int(-9),
            op: WriteOp::Delete,
        };
        vec![
            Message::Hello(Hello {
                version: PROTOCOL_VERSION,
                node_name: "edge-1".into(),
                node_id: u64::MAX,
                now_ms: 1_700_000_000_000,
                max_frame_bytes: 1 << 20,
                wants: vec![TableWant {
                    table: "thresholds".into(),
                    resume_after: 12,
                    since_ms: Some(5),
                    initial_sync_done: true,
                }],
                relays_accepted: true,
                accepts_zstd: false,
                deltas: true,
            }),
            Message::TableInfo {
                table: "thresholds".into(),
                primary_key: "id".into(),
            },
            Message::Refused {
                table: "secret".into(),
                reason: "not published to edge-1".into(),
            },
            Message::SyncBegin {
                table: "t".into(),
                reason: SyncReason::ResumePointTrimmed,
            },
            Message::SyncChunk {
                table: "t".into(),
                primary_key: "id".into(),
                rows: vec![
                    SyncRow {
                        key: Key::Int(1),
                        stamp: stamp(3),
                        created: 2,
                        json: Some(r#"{"id":1}"#.into()),
                        merge: None,
                    },
                    SyncRow {
                        key: Key::Str("x".into()),
                        stamp: stamp(4),
                        created: 1,
                        json: None,
                        merge: Some("{}".into()),
                    },
                ],
                done: true,
                upto_seq: 99,
            },
            Message::Txns(vec![
                WireTxn {
                    seq: 1,
                    stamp: stamp(10),
                    writes: vec![put, del],
                },
                WireTxn {
                    seq: 2,
                    stamp: stamp(11),
                    writes: vec![],
                },
                WireTxn {
                    seq: 3,
                    stamp: stamp(13),
                    writes: vec![LogWrite {
                        table: "alerts".into(),
                        key: Key::Str("a-1".into()),
                        op: WriteOp::Delta {
                            base_back: 3,
                            base_node: Some(9),
                            created: None,
                            script: vec![2, 0, 7],
                            lits: "\"v\":4".into(),
                        },
                    }],
                },
            ]),
            Message::Progress { upto_seq: 300 },
            Message::Ack { upto_seq: 1 << 40 },
            Message::Heartbeat { now_ms: 0 },
            Message::Goodbye {
                reason: "shutting down".into(),
            },
            Message::TxnsUpTo {
                txns: vec![WireTxn {
                    seq: 9,
                    stamp: stamp(12),
                    writes: vec![],
                }],
                upto_seq: 7,
            },
            Message::Refusals(vec![TxnRefusal {
                seq: 5,
                table: "alerts".into(),
                stamp: stamp(13),
                kind: RefusalKind::ClockSkew,
                reason: "ahead".into(),
            }]),
            Message::DeltaMiss {
                seq: 3,
                reason: "no version of a-1".into(),
            },
            Message::AckHeld {
                applied_seq: 8,
                reason: "sink down".into(),
            },
        ]
    }

    pub(crate) fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    /// Runs the async reader over `bytes` until EOF or the first error.
    pub(crate) fn read_all(
        rt: &tokio::runtime::Runtime,
        bytes: &[u8],
        max: usize,
    ) -> Result<Vec<Message>, WireError> {
        rt.block_on(async {
            let mut r = FrameReader::new(bytes, max);
            let mut out = Vec::new();
            while let Some(m) = r.read_message().await? {
                out.push(m);
            }
            Ok(out)
        })
    }

    #[test]
    fn every_message_round_trips_sync_and_async() {
        let all = samples();
        let mut stream = Vec::new();
        for m in &all {
            let frame = encode_frame(m).unwrap();
            let len = u32::from_be_bytes(frame[..4].try_into().unwrap()) as usize;
            assert_eq!(len, frame.len() - 4);
            assert_eq!(&decode_payload(&frame[4..]).unwrap(), m);
            stream.extend_from_slice(&frame);
        }
        assert_eq!(
            read_all(&rt(), &stream, DEFAULT_MAX_FRAME_BYTES).unwrap(),
            all
        );

        // Through a tiny pipe, so frames arrive in pieces and the writer
        // waits on the reader.
        let got = rt().block_on(async {
            let (a, b) = tokio::io::duplex(7);
            let sent = all.clone();
            let writer = tokio::spawn(async move {
                let mut w = FrameWriter::new(a, DEFAULT_MAX_FRAME_BYTES);
                for m in &sent {
                    w.write_message(m).await.unwrap();
                }
            });
            let mut r = FrameReader::new(b, DEFAULT_MAX_FRAME_BYTES);
            let mut got = Vec::new();
            while let Some(m) = r.read_message().await.unwrap() {
                got.push(m);
            }
            writer.await.unwrap();
            got
        });
        assert_eq!(got, all);
    }

    #[test]
    fn every_truncation_is_an_error() {
        let rt = rt();
        for m in samples() {
            let frame = encode_frame(&m).unwrap();
            for cut in 0..frame.len() {
                let r = read_all(&rt, &frame[..cut], DEFAULT_MAX_FRAME_BYTES);
                if cut == 0 {
                    assert!(r.unwrap().is_empty(), "empty stream is a clean EOF");
                } else {
                    assert!(
                        matches!(r, Err(WireError::UnexpectedEof { .. })),
                        "{} cut at {cut}: {r:?}",
                        m.kind()
                    );
                }
                if cut > 4 {
                    assert!(
                        decode_payload(&frame[4..cut]).is_err(),
                        "{} payload cut at {cut}",
                        m.kind()
                    );
                }
            }
            // A frame whose length claims less than its message holds, or
            // more (with the rest of the stream supplying junk), is refused.
            let mut extra = frame[4..].to_vec();
            extra.push(0);
            assert!(matches!(
                decode_payload(&extra),
                Err(WireError::TrailingBytes { extra: 1 })
            ));
        }
        assert!(matches!(decode_payload(&[]), Err(WireError::EmptyFrame)));
        assert!(matches!(
            read_all(&rt, &[0, 0, 0, 0], 100),
            Err(WireError::EmptyFrame)
        ));
    }

    #[test]
    fn oversized_length_is_refused_before_allocating() {
        let rt = rt();
        // 4 GiB claimed, 4 bytes sent.
        let bytes = [0xFF, 0xFF, 0xFF, 0xFF, 1, 2, 3, 4];
        rt.block_on(async {
            let mut r = FrameReader::new(&bytes[..], DEFAULT_MAX_FRAME_BYTES);
            let e = r.read_message().await.unwrap_err();
            assert!(
                matches!(
                    e,
                    WireError::FrameTooLarge {
                        len: 0xFFFF_FFFF,
                        ..
                    }
                ),
                "{e}"
            );
            assert!(e.to_string().contains("max_frame_bytes"));
            assert_eq!(r.body.capacity(), 0);

            // Under the limit but never sent: the buffer only grows with
            // bytes that arrive.
            let bytes = [0x00, 0xF0, 0x00, 0x00, 9, 9, 9, 9];
            let mut r = FrameReader::new(&bytes[..], DEFAULT_MAX_FRAME_BYTES);
            let e = r.read_message().await.unwrap_err();
            assert!(matches!(e, WireError::UnexpectedEof { got: 4, .. }), "{e}");
            assert!(r.body.capacity() <= GROW_STEP);
        });
        // The writer refuses to send what the peer would refuse.
        let big = Message::Goodbye {
            reason: "x".repeat(200),
        };
        rt.block_on(async {
            let mut w = FrameWriter::new(Vec::new(), 100);
            assert!(matches!(
                w.write_message(&big).await,
                Err(WireError::FrameTooLarge { .. })
            ));
            assert!(w.get_ref().is_empty(), "nothing written");
            w.set_max_frame_bytes(1000);
            let n = w.write_message(&big).await.unwrap();
            assert_eq!(
                n,
                w.get_ref().len(),
                "the frame's bytes, length prefix included"
            );
        });
    }

    #[tokio::test]
    async fn reader_is_cancel_safe_under_select() {
        let (mut a, b) = tokio::io::duplex(64);
        let frames: Vec<u8> = samples()
            .iter()
            .flat_map(|m| encode_frame(m).unwrap())
            .collect();
        // Dribble the stream a few bytes at a time so reads are cancelled
        // mid-header and mid-body.
        let writer = tokio::spawn(async move {
            for chunk in frames.chunks(3) {
                a.write_all(chunk).await.unwrap();
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            }
        });
        let mut r = FrameReader::new(b, DEFAULT_MAX_FRAME_BYTES);
        let (mut got, mut cancelled) = (Vec::new(), 0);
        loop {
            tokio::select! {
                m = r.read_message() => match m.unwrap() {
                    Some(m) => got.push(m),
                    None => break,
                },
                _ = tokio::task::yield_now() => cancelled += 1,
            }
        }
        writer.await.unwrap();
        assert_eq!(got, samples());
        assert!(cancelled > 0);
    }

    /// `Txns` of `n` one-delete transactions, built as bytes so a test
    /// does not hold millions of decoded entries itself.
    fn tiny_deletes_payload(n: usize) -> Vec<u8> {
        let one = WireTxn {
            seq: 1,
            stamp: stamp(1),
            writes: vec![LogWrite {
                table: "a".into(),
                key: Key::Int(0),
                op: WriteOp::Delete,
            }],
        };
        let single = encode_frame(&Message::Txns(vec![one])).unwrap();
        // Frame header, variant 5, length 1, then the transaction.
        let txn = &single[4 + 2..];
        let mut p = vec![5u8];
        let mut len = n as u64;
        while len >= 0x80 {
            p.push(len as u8 | 0x80);
            len >>= 7;
        }
        p.push(len as u8);
        for _ in 0..n {
            p.extend_from_slice(txn);
        }
        p
    }

    #[test]
    fn a_frame_of_many_tiny_entries_is_refused_by_its_decode_budget() {
        // A 16 MiB frame of about 1.5 million tiny deletes: refused, and
        // before any of it is allocated (the announced count is charged).
        let n = DEFAULT_MAX_FRAME_BYTES / 11;
        let payload = tiny_deletes_payload(n);
        assert!(
            payload.len() <= DEFAULT_MAX_FRAME_BYTES,
            "{}",
            payload.len()
        );
        let budget = decode_budget(DEFAULT_MAX_FRAME_BYTES);
        let e = decode_bounded(&payload, budget).unwrap_err();
        assert!(matches!(e, WireError::DecodeBudget { .. }), "{e}");
        assert!(e.to_string().contains("decodes to more than"), "{e}");
        // Just within the budget decodes; the budget does not leak into the
        // next decode on this thread.
        let fits = budget / (element_cost::<WireTxn>() + element_cost::<LogWrite>());
        match decode_bounded(&tiny_deletes_payload(fits), budget).unwrap() {
            Message::Txns(t) => assert_eq!(t.len(), fits),
            m => panic!("{m:?}"),
        }
        assert!(decode_bounded(&tiny_deletes_payload(fits + 1), budget).is_err());
        assert!(decode_payload(&tiny_deletes_payload(10)).is_ok());
        // The whole 16 MiB frame of them through a reader: refused too.
        let frame = {
            let mut f = (payload.len() as u32).to_be_bytes().to_vec();
            f.extend_from_slice(&payload);
            f
        };
        let r = read_all(&rt(), &frame, DEFAULT_MAX_FRAME_BYTES);
        assert!(matches!(r, Err(WireError::DecodeBudget { .. })), "{r:?}");
    }

    #[test]
    fn a_hello_is_small_and_wants_few_tables() {
        let mut h = match samples().remove(0) {
            Message::Hello(h) => h,
            _ => unreachable!(),
        };
        // The most wants a peer may be configured with, at the longest
        // table name, fit the hello limit.
        h.wants = (0..MAX_HELLO_WANTS)
            .map(|i| TableWant {
                table: format!("{i:0>128}"),
                resume_after: u64::MAX,
                since_ms: Some(u64::MAX),
                initial_sync_done: true,
            })
            .collect();
        h.node_name = "n".repeat(253);
        let frame = encode_frame(&Message::Hello(h.clone())).unwrap();
        assert!(frame.len() - 4 <= HELLO_MAX_BYTES, "{}", frame.len());
        let got = read_all(&rt(), &frame, HELLO_MAX_BYTES).unwrap();
        assert!(expect_hello(got[0].clone()).is_ok());
        // One more want is refused, and a larger hello is not even read.
        h.wants.push(h.wants[0].clone());
        let e = expect_hello(Message::Hello(h.clone())).unwrap_err();
        assert!(matches!(e, WireError::TooManyWants { .. }), "{e}");
        h.wants = vec![h.wants[0].clone(); 1000];
        let frame = encode_frame(&Message::Hello(h)).unwrap();
        let r = read_all(&rt(), &frame, HELLO_MAX_BYTES);
        assert!(matches!(r, Err(WireError::FrameTooLarge { .. })), "{r:?}");
    }

    #[test]
    fn version_mismatch_and_protocol_order_are_clear_errors() {
        let mut h = match samples().remove(0) {
            Message::Hello(h) => h,
            _ => unreachable!(),
        };
        assert!(expect_hello(Message::Hello(h.clone())).is_ok());
        h.version = PROTOCOL_VERSION + 1;
        let e = expect_hello(Message::Hello(h.clone())).unwrap_err();
        assert!(matches!(
            e,
            WireError::VersionMismatch { ours: PROTOCOL_VERSION, theirs } if theirs == PROTOCOL_VERSION + 1
        ));
        assert!(e.to_string().contains("upgrade"), "{e}");
        // A future Hello with extra fields still reports the version.
        let mut payload = encode_frame(&Message::Hello(h)).unwrap().split_off(4);
        payload.extend_from_slice(&[1, 2, 3]);
        assert!(matches!(
            decode_payload(&payload),
            Err(WireError::VersionMismatch { theirs, .. }) if theirs == PROTOCOL_VERSION + 1
        ));
        let e = expect_hello(Message::Ack { upto_seq: 1 }).unwrap_err();
        assert!(matches!(e, WireError::UnexpectedMessage { got: "Ack", .. }));
        let peer: crate::error::Error = e.into();
        assert_eq!(peer.kind(), crate::error::ErrorKind::Peer);
    }
}
