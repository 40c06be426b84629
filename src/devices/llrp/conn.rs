//! One TCP connection to an LLRP reader: sending client messages with
//! fresh message ids, cutting what arrives into messages, and waiting for
//! the answer to a request while handling what else the reader says in
//! the meantime (keepalives, events, reports).

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::codecs::llrp::{self, Frame, LlrpError, ReaderMessage, Splitter, Status};
use crate::codecs::llrp::{encode, msg};
use crate::devices::DeviceError;

/// Bytes asked for per read: a read returns whatever has arrived.
const READ_BUF: usize = 16 * 1024;

/// A message as read: the frame and what it decoded to (or why not).
pub struct Incoming {
    pub frame: Frame,
    pub message: Result<ReaderMessage, LlrpError>,
}

pub struct Conn {
    stream: super::tls::Stream,
    splitter: Splitter,
    buf: Vec<u8>,
    next_id: u32,
}

impl Conn {
    /// Connect within `timeout`. Nagle is off: requests are small and
    /// a keepalive ack held back by Nagle could arrive late.
    /// With `tls`, the TLS handshake follows within the same `timeout`.
    pub async fn open(
        address: &str,
        tls: Option<&tokio_rustls::TlsConnector>,
        timeout: Duration,
    ) -> Result<Conn, DeviceError> {
        let open = |reason: String| DeviceError::Open {
            what: address.to_string(),
            reason,
        };
        let stream = tokio::time::timeout(timeout, TcpStream::connect(address))
            .await
            .map_err(|_| open(format!("no TCP connection within {timeout:?}")))?
            .map_err(|e| open(e.to_string()))?;
        stream
            .set_nodelay(true)
            .map_err(|e| open(format!("set TCP_NODELAY: {e}")))?;
        let stream = match tls {
            None => super::tls::Stream::Plain(stream),
            Some(connector) => {
                tokio::time::timeout(timeout, super::tls::handshake(connector, address, stream))
                    .await
                    .map_err(|_| open(format!("no TLS handshake within {timeout:?}")))?
                    .map_err(open)?
            }
        };
        Ok(Conn {
            stream,
            splitter: Splitter::new(),
            buf: vec![0u8; READ_BUF],
            next_id: 1,
        })
    }

    /// A fresh message id for a request.
    pub fn id(&mut self) -> u32 {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1).max(1);
        id
    }

    pub async fn send(&mut self, bytes: &[u8]) -> Result<(), DeviceError> {
        self.stream
            .write_all(bytes)
            .await
            .map_err(|e| DeviceError::Lost(format!("write: {e}")))
    }

    /// The next message; waits for the socket as long as it takes (the
    /// caller bounds the wait). An end of stream or read error is
    /// `Lost`; a stream out of step is `Protocol`: neither can go on.
    pub async fn next(&mut self) -> Result<Incoming, DeviceError> {
        loop {
            if let Some(frame) = self
                .splitter
                .next_frame()
                .map_err(|e| DeviceError::Protocol(format!("LLRP stream: {e}")))?
            {
                let message = llrp::decode(&frame);
                return Ok(Incoming { frame, message });
            }
            let n = self
                .stream
                .read(&mut self.buf)
                .await
                .map_err(|e| DeviceError::Lost(format!("read: {e}")))?;
            if n == 0 {
                return Err(DeviceError::Lost("the reader closed the connection".into()));
            }
            self.splitter.push(self.buf.get(..n).unwrap_or_default());
        }
    }

    /// Whether a whole message is already buffered, so reading it cannot
    /// wait on the socket (used to batch a burst of reports).
    pub fn has_buffered_frame(&self) -> bool {
        self.splitter.has_frame()
    }

    /// Send a request and wait up to `timeout` for its answer (the
    /// response type, or `ERROR_MESSAGE`, with the request's id). What
    /// else arrives meanwhile goes to `other`. Returns the answer's status
    /// and the message.
    pub async fn request(
        &mut self,
        what: &str,
        request_type: u16,
        bytes: impl FnOnce(u32) -> Vec<u8>,
        timeout: Duration,
        mut other: impl FnMut(&mut Vec<u8>, Incoming),
    ) -> Result<(Status, ReaderMessage), DeviceError> {
        let id = self.id();
        self.send(&bytes(id)).await?;
        let want = msg::response_to(request_type);
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let incoming = tokio::time::timeout_at(deadline, self.next())
                .await
                .map_err(|_| {
                    DeviceError::Timeout(format!("no answer to {what} within {timeout:?}"))
                })??;
            let t = incoming.frame.message_type;
            if incoming.frame.message_id == id && (t == want || t == msg::ERROR_MESSAGE) {
                let message = incoming.message.map_err(|e| {
                    DeviceError::Protocol(format!("answer to {what} does not decode: {e}"))
                })?;
                let status = match &message {
                    ReaderMessage::Response { status, .. }
                    | ReaderMessage::Capabilities { status, .. } => status.clone(),
                    ReaderMessage::Custom {
                        status: Some(status),
                        ..
                    } => status.clone(),
                    other => {
                        return Err(DeviceError::Protocol(format!(
                            "answer to {what} carries no status: {other:?}"
                        )));
                    }
                };
                return Ok((status, message));
            }
            // Keepalives must be acked even in the middle of set-up.
            let mut replies = Vec::new();
            other(&mut replies, incoming);
            if !replies.is_empty() {
                self.send(&replies).await?;
            }
        }
    }

    /// Best effort on the way out: stop reading and say goodbye, so the
    /// reader stops transmitting and accepts the next client at once.
    pub async fn close(&mut self, rospec_id: u32) {
        let stop = encode::stop_rospec(self.id(), rospec_id);
        let close = encode::close_connection(self.id());
        let bye = async {
            self.send(&stop).await?;
            self.send(&close).await
        };
        let _ = tokio::time::timeout(Duration::from_secs(1), bye).await;
    }
}
