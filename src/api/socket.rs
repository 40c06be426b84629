//! The socket of one API connection, as hyper sees it. It does two things
//! hyper has no setting for:
//!
//! - JSON bodies for the answers hyper writes on its own. When a request
//!   head cannot be parsed (not HTTP, a broken header, over
//!   [`MAX_HEAD_BYTES`] or [`MAX_HEADERS`]), hyper answers 400/431 with an
//!   empty body and closes; hyper 1.x has no hook to shape that answer
//!   (hyperium/hyper#3911 is open). On a connection that has not handed
//!   any request to the router yet, such an answer is replaced with the
//!   same status and the API's JSON error body. Once a request was served
//!   everything passes through untouched: from then on hyper's writes may
//!   hold the previous answer too.
//! - Whether everything hyper wrote has reached the kernel
//!   ([`Socket::flushed`]): only then may the server drop a connection
//!   without cutting an answer.
//! - A write timeout: a client that takes no byte of its answer for
//!   [`Limits::write_timeout`](super::Limits::write_timeout) loses the
//!   connection, so that one that stops reading cannot hold it for ever.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::http::StatusCode;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Sleep;

use super::error::{code_for, error_body};
use super::server::{MAX_HEAD_BYTES, MAX_HEADERS};

/// The socket of one API connection, as hyper sees it.
pub struct Socket {
    io: TcpStream,
    /// Set once a request reached the router.
    served: Arc<AtomicBool>,
    /// Cleared while a write waits for room in the kernel's buffer.
    flushed: Arc<AtomicBool>,
    /// Our answer, and how much of it is written.
    replacement: Option<(Vec<u8>, usize)>,
    /// hyper's own answer was replaced: the rest of it is dropped.
    replaced: bool,
    write_timeout: Duration,
    /// Running while a write waits for the client to read.
    stalled: Option<Pin<Box<Sleep>>>,
}

impl Socket {
    /// `served` is set by the server when a request reaches the router.
    pub fn new(io: TcpStream, served: Arc<AtomicBool>, write_timeout: Duration) -> Socket {
        Socket {
            io,
            served,
            flushed: Arc::new(AtomicBool::new(true)),
            replacement: None,
            replaced: false,
            write_timeout,
            stalled: None,
        }
    }

    /// False while hyper has bytes the kernel did not take yet. Read
    /// between polls of the connection: hyper flushes in the same poll in
    /// which it finishes an answer, so true then means every answer so far
    /// is in the kernel's hands.
    pub fn flushed(&self) -> Arc<AtomicBool> {
        self.flushed.clone()
    }
}

/// The status of an error answer hyper starts writing in `buf`.
fn automatic_status(buf: &[u8]) -> Option<StatusCode> {
    let code = buf.strip_prefix(b"HTTP/1.1 ")?.get(..3)?;
    let status = StatusCode::from_bytes(code).ok()?;
    (status.is_client_error() || status.is_server_error()).then_some(status)
}

/// A whole HTTP/1.1 answer with the JSON error body, closing the connection.
fn json_answer(status: StatusCode) -> Vec<u8> {
    let message = match status {
        StatusCode::BAD_REQUEST => {
            "the request line or a header is not valid HTTP/1.1; check the client".to_string()
        }
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => format!(
            "the request head is over {MAX_HEAD_BYTES} bytes or has over {MAX_HEADERS} header lines; send fewer or shorter headers"
        ),
        StatusCode::URI_TOO_LONG => "the request target is too long".to_string(),
        s => s.canonical_reason().unwrap_or("request failed").to_string(),
    };
    let body = error_body(code_for(status), &message);
    let mut answer = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        body.len()
    )
    .into_bytes();
    answer.extend_from_slice(&body);
    answer
}

impl Socket {
    /// Write `buf`, or our replacement of it.
    fn write(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        if let Some((answer, written)) = &mut self.replacement {
            while *written < answer.len() {
                let n = ready!(Pin::new(&mut self.io).poll_write(cx, &answer[*written..]))?;
                if n == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                *written += n;
            }
            self.replacement = None;
        }
        if self.replaced {
            return Poll::Ready(Ok(buf.len()));
        }
        Pin::new(&mut self.io).poll_write(cx, buf)
    }
}

impl AsyncRead for Socket {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Socket {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if !this.replaced && !this.served.load(Ordering::Acquire) {
            // Nothing was asked of the router: whatever hyper writes is its
            // own error answer.
            if let Some(status) = automatic_status(buf) {
                this.replacement = Some((json_answer(status), 0));
                this.replaced = true;
            }
        }
        let result = this.write(cx, buf);
        this.flushed.store(result.is_ready(), Ordering::Release);
        if result.is_ready() {
            this.stalled = None;
            return result;
        }
        let limit = this.write_timeout;
        let stall = this
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        if stall.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "the client took nothing of its answer for {} s",
                    limit.as_secs()
                ),
            )));
        }
        Poll::Pending
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_error_answers_are_recognised() {
        assert_eq!(
            automatic_status(b"HTTP/1.1 431 Request Header Fields Too Large\r\n"),
            Some(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE)
        );
        assert_eq!(automatic_status(b"HTTP/1.1 200 OK\r\n"), None);
        assert_eq!(automatic_status(b"HTTP/1.1 4"), None);
        assert_eq!(automatic_status(b"garbage"), None);
    }

    #[test]
    fn the_answer_is_whole_and_json() {
        let answer = String::from_utf8(json_answer(StatusCode::BAD_REQUEST)).unwrap();
        let (head, body) = answer.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{head}");
        assert!(head.contains(&format!("content-length: {}", body.len())));
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["error"]["code"], "bad_request");
    }
}
