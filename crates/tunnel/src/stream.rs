//! One multiplexed stream of a [`Link`](crate::Link): a reader and a writer that carry a
//! forwarded TCP connection, with the session's credit window as backpressure.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use tokio::sync::{Notify, mpsc};

use crate::link::{LinkError, Shared, StreamMsg, stream_code};
use crate::proto::StreamError;

/// A stream both ways; split it to read and write from separate tasks.
#[derive(Debug)]
pub struct TunnelStream {
    id: u32,
    reader: StreamReader,
    writer: StreamWriter,
}

impl TunnelStream {
    /// The stream's id (odd when the client opened it, even for the server).
    pub fn id(&self) -> u32 {
        self.id
    }

    /// The two halves.
    pub fn into_split(self) -> (StreamReader, StreamWriter) {
        (self.reader, self.writer)
    }

    /// Refuses or aborts the stream with `code`; the peer sees a reset.
    pub fn reset(self, code: u16) {
        self.writer.reset(code);
    }

    /// A handle that can reset this stream later, from elsewhere, with a code of the caller's
    /// choosing (to end a stream a changed access policy no longer permits while it is being
    /// spliced, say). Resetting a stream that has already ended does nothing.
    pub fn reset_handle(&self) -> ResetHandle {
        ResetHandle {
            end: Arc::clone(&self.writer.end),
        }
    }
}

/// Resets a stream from outside its reader and writer: see [`TunnelStream::reset_handle`].
pub struct ResetHandle {
    end: Arc<End>,
}

impl std::fmt::Debug for ResetHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResetHandle")
            .field("id", &self.end.id)
            .finish()
    }
}

impl ResetHandle {
    /// Resets the stream with `code`: the peer is told, and the local reader and writer end.
    pub fn reset(&self, code: u16) {
        self.end.reset(code);
    }
}

/// Removes the stream's slot when both halves are gone, resetting it if it was not finished
/// cleanly both ways.
struct End {
    id: u32,
    shared: Arc<Shared>,
}

impl End {
    fn reset(&self, code: u16) {
        self.shared.session.lock().close_stream(self.id, code);
        self.shared.streams.lock().remove(&self.id);
        self.shared.output.notify_one();
    }
}

impl Drop for End {
    fn drop(&mut self) {
        // A stream finished both ways is already gone from the session: this is a no-op.
        self.reset(stream_code::CANCELLED);
    }
}

/// Receives a stream's bytes.
pub struct StreamReader {
    id: u32,
    end: Arc<End>,
    rx: mpsc::UnboundedReceiver<StreamMsg>,
    /// This stream's frames queued as slices of a read buffer (shared with the link's slot).
    pinned: Arc<AtomicUsize>,
    finished: bool,
}

impl fmt::Debug for StreamReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamReader")
            .field("id", &self.id)
            .field("finished", &self.finished)
            .finish_non_exhaustive()
    }
}

impl StreamReader {
    /// The next chunk; `Ok(None)` once the peer half-closed (end of stream). Call
    /// [`consumed`](Self::consumed) after the bytes are delivered, so the peer may send more.
    ///
    /// # Errors
    ///
    /// The peer reset the stream, or the link closed.
    pub async fn recv(&mut self) -> Result<Option<Bytes>, LinkError> {
        if self.finished {
            return Ok(None);
        }
        let message = self.rx.recv().await;
        self.on_message(message)
    }

    /// The next chunk if one is already here, without waiting: `None` when nothing is
    /// queued; otherwise as [`recv`](Self::recv).
    pub fn try_recv(&mut self) -> Option<Result<Option<Bytes>, LinkError>> {
        if self.finished {
            return Some(Ok(None));
        }
        match self.rx.try_recv() {
            Ok(message) => Some(self.on_message(Some(message))),
            Err(mpsc::error::TryRecvError::Empty) => None,
            Err(mpsc::error::TryRecvError::Disconnected) => Some(Err(LinkError::Closed)),
        }
    }

    fn on_message(&mut self, message: Option<StreamMsg>) -> Result<Option<Bytes>, LinkError> {
        match message {
            Some(StreamMsg::Data(queued)) => {
                queued.release(&self.end.shared, &self.pinned);
                Ok(Some(queued.data))
            }
            Some(StreamMsg::Fin) => {
                self.finished = true;
                Ok(None)
            }
            Some(StreamMsg::Reset(code)) => {
                self.finished = true;
                Err(
                    if code == stream_code::CANCELLED
                        && self.end.shared.shutting.load(Ordering::Acquire)
                    {
                        LinkError::Closed
                    } else {
                        LinkError::Reset { id: self.id, code }
                    },
                )
            }
            None => Err(LinkError::Closed),
        }
    }

    /// Reports `bytes` delivered; the peer is granted more credit as the window drains.
    pub fn consumed(&self, bytes: usize) {
        let shared = &self.end.shared;
        let mut session = shared.session.lock();
        let before = session.pending_output();
        session.consumed(self.id, bytes);
        let queued = session.pending_output() != before;
        drop(session);
        if queued {
            shared.output.notify_one();
        }
    }
}

impl Drop for StreamReader {
    fn drop(&mut self) {
        // What is still queued is nobody's now: give its charge back.
        self.rx.close();
        while let Ok(message) = self.rx.try_recv() {
            if let StreamMsg::Data(queued) = message {
                queued.release(&self.end.shared, &self.pinned);
            }
        }
        if !self.finished {
            // Nobody will read the rest: tell the peer to stop sending now.
            self.end.reset(stream_code::CANCELLED);
        }
    }
}

/// Sends a stream's bytes.
pub struct StreamWriter {
    id: u32,
    end: Arc<End>,
    credit: Arc<Notify>,
    finished: bool,
}

impl fmt::Debug for StreamWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamWriter")
            .field("id", &self.id)
            .field("finished", &self.finished)
            .finish_non_exhaustive()
    }
}

impl StreamWriter {
    /// Sends all of `data`, waiting for credit from the peer and for room in the link's
    /// outbound buffer.
    ///
    /// # Errors
    ///
    /// The stream was reset or finished, or the link closed.
    pub async fn send(&mut self, mut data: Bytes) -> Result<(), LinkError> {
        let shared = Arc::clone(&self.end.shared);
        while !data.is_empty() {
            let credit = self.credit.notified();
            let drained = shared.drained.notified();
            tokio::pin!(credit, drained);
            credit.as_mut().enable();
            drained.as_mut().enable();
            if shared.shutting.load(Ordering::Acquire) {
                return Err(LinkError::Closed);
            }
            let (taken, full) = {
                let mut session = shared.session.lock();
                if session.pending_output() >= shared.config.max_pending {
                    (0, true)
                } else {
                    let taken = session.send_stream(self.id, &data).map_err(|e| match e {
                        StreamError::NotEstablished => LinkError::Closed,
                        StreamError::Unknown(id) => LinkError::Reset {
                            id,
                            code: stream_code::CANCELLED,
                        },
                        other => LinkError::Stream(other),
                    })?;
                    (taken, false)
                }
            };
            if taken > 0 {
                let _ = data.split_to(taken);
                shared.output.notify_one();
                continue;
            }
            if full {
                drained.await;
            } else {
                credit.await;
            }
        }
        Ok(())
    }

    /// Half-closes: the peer reads end-of-stream after the bytes already sent; this side can
    /// still receive.
    pub fn finish(&mut self) {
        if !self.finished {
            self.finished = true;
            let shared = &self.end.shared;
            let _ = shared.session.lock().half_close(self.id);
            shared.output.notify_one();
        }
    }

    /// Aborts the stream both ways with `code`.
    pub fn reset(mut self, code: u16) {
        self.finished = true;
        self.end.reset(code);
    }
}

impl Drop for StreamWriter {
    fn drop(&mut self) {
        if !self.finished {
            self.end.reset(stream_code::CANCELLED);
        }
    }
}

pub(crate) fn pair(
    id: u32,
    shared: &Arc<Shared>,
    rx: mpsc::UnboundedReceiver<StreamMsg>,
    credit: Arc<Notify>,
    pinned: Arc<AtomicUsize>,
) -> TunnelStream {
    let end = Arc::new(End {
        id,
        shared: Arc::clone(shared),
    });
    TunnelStream {
        id,
        reader: StreamReader {
            id,
            end: Arc::clone(&end),
            rx,
            pinned,
            finished: false,
        },
        writer: StreamWriter {
            id,
            end,
            credit,
            finished: false,
        },
    }
}
