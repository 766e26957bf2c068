//! What the two halves of a replication link share: the stream types,
//! the queue item of initial syncs, running database calls off the
//! runtime, and the error of a closed link. The session (session.rs) builds
//! links from these; the sender and receiver use them without importing the
//! session that runs them.

use tokio::io::{AsyncRead, AsyncWrite, ReadHalf, WriteHalf};
use tokio::sync::oneshot;

use crate::error::{Error, Result};
use crate::net::wire::{FrameReader, FrameWriter, Message};

pub(super) trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}
pub(super) type BoxIo = Box<dyn Io>;
pub(super) type Reader = FrameReader<ReadHalf<BoxIo>>;
pub(super) type Writer = FrameWriter<WriteHalf<BoxIo>>;

/// A message of an initial sync, and who to tell once it is written.
pub(super) type BulkMessage = (Message, Option<oneshot::Sender<()>>);

/// Runs a database call off the runtime's worker threads: commits may
/// fsync and scans may read from disk.
pub(super) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Peer(format!("replication worker failed: {e}")))?
}

pub(super) fn link_closed() -> Error {
    Error::Peer("replication link closed".into())
}
