//! The `http-stream` transport with codec `json`: a reader that streams
//! newline-delimited JSON, such as the Impinj R700
//! `GET /api/v1/data/stream`. One [`session`] is one streaming response;
//! every chunk that arrives is split into lines, each line is decoded and
//! the chunk's lines are delivered in one transaction. The end of the
//! stream ends the session and the runner
//! ([`crate::devices::run_device`]) reconnects with backoff.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::{CONNECT_TIMEOUT, describe, mark_up};
use crate::codecs::Decoded;
use crate::devices::decoder::Decoder;
use crate::devices::{DeviceError, DeviceSpec, Ingest, deliver_until_stored};
use crate::event::now_millis;
use crate::shutdown::Shutdown;

/// A stream is idle for long stretches (no tags in the field), so it has
/// no read timeout; TCP keepalive notices a reader that vanished without
/// closing the connection (power cut, cable pulled) within about a minute
/// and a half instead of never.
const KEEPALIVE: Duration = Duration::from_secs(30);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
const KEEPALIVE_RETRIES: u32 = 6;
/// The longest line of a stream that is decoded. A longer one is not JSON
/// any reader sends; it is quarantined (its head) and skipped to its end.
pub const MAX_LINE: usize = 1024 * 1024;
/// How much of an overlong line is kept in the quarantine.
const QUARANTINE_HEAD: usize = 4096;

/// Read one streaming response to its end.
pub(super) async fn session(
    spec: &DeviceSpec,
    ingest: &Ingest,
    shutdown: &mut Shutdown,
    url: &str,
) -> Result<(), DeviceError> {
    let id = spec.id();
    let mut decoder = Decoder::new(spec, ingest.member_key())?;
    let open_error = |reason: String| DeviceError::Open {
        what: url.to_string(),
        reason,
    };
    // No overall timeout: the response is meant to last for hours.
    let client = reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_keepalive(KEEPALIVE)
        .tcp_keepalive_interval(KEEPALIVE_INTERVAL)
        .tcp_keepalive_retries(KEEPALIVE_RETRIES)
        .build()
        .map_err(|e| open_error(describe(&e)))?;
    let request = client.get(url).send();
    let mut response = tokio::select! {
        r = request => r.map_err(|e| open_error(describe(&e)))?,
        _ = shutdown.wait() => return Ok(()),
    };
    let status = response.status();
    if !status.is_success() {
        return Err(open_error(format!("HTTP {status}")));
    }
    mark_up(ingest, id, url);
    tracing::debug!(device = %id, url, "event stream open");

    let source = spec.source();
    let mut lines = LineSplitter::new(MAX_LINE);
    loop {
        let chunk = tokio::select! {
            c = response.chunk() => c,
            _ = shutdown.wait() => return Ok(()),
        };
        let (pieces, end) = match chunk {
            Ok(Some(bytes)) => (lines.push(&bytes), None),
            // A last line without its newline is still a line.
            Ok(None) => (
                lines.finish().into_iter().collect(),
                Some("end of stream".into()),
            ),
            Err(e) => (Vec::new(), Some(describe(&e))),
        };
        let now = now_millis();
        let items: Vec<Decoded> = pieces
            .into_iter()
            .flat_map(|piece| decode_piece(&mut decoder, piece, now))
            .collect();
        // The stream cannot be asked again for what it sent: hold it until
        // the database takes it.
        if !deliver_until_stored(ingest, &source, items, shutdown).await {
            return Ok(());
        }
        if let Some(reason) = end {
            return Err(DeviceError::Lost(reason));
        }
    }
}

/// Decode one piece of a stream. Blank lines (keepalives) give nothing.
fn decode_piece(decoder: &mut Decoder, piece: Piece, now: DateTime<Utc>) -> Vec<Decoded> {
    match piece {
        Piece::Line(line) => {
            if line.iter().all(u8::is_ascii_whitespace) {
                return Vec::new();
            }
            decoder.decode(&line, None, now)
        }
        Piece::TooLong(head) => vec![Decoded::Bad {
            reason: format!(
                "line longer than {MAX_LINE} bytes (only its first {} bytes are kept)",
                head.len()
            ),
            raw: head,
        }],
    }
}

/// What [`LineSplitter`] makes of a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    /// A line without its `\n` (and without a `\r` before it).
    Line(Vec<u8>),
    /// The head of a line longer than the limit; the rest of it is skipped.
    TooLong(Vec<u8>),
}

/// Splits a byte stream into lines, whatever the chunks' boundaries: a
/// line may arrive in many chunks, a chunk may hold many lines. Memory is
/// bounded by the longest line it accepts.
#[derive(Debug)]
struct LineSplitter {
    max: usize,
    /// The start of the current line.
    buf: Vec<u8>,
    /// Inside an overlong line that was already reported: drop bytes up
    /// to its newline.
    skipping: bool,
}

impl LineSplitter {
    fn new(max: usize) -> Self {
        LineSplitter {
            max,
            buf: Vec::new(),
            skipping: false,
        }
    }

    /// Take a chunk; returns the pieces it completed.
    fn push(&mut self, mut chunk: &[u8]) -> Vec<Piece> {
        let mut out = Vec::new();
        while let Some(at) = chunk.iter().position(|b| *b == b'\n') {
            let (head, rest) = chunk.split_at(at);
            chunk = &rest[1..];
            if self.skipping {
                self.skipping = false;
                continue;
            }
            if self.append(head, &mut out) {
                let mut line = std::mem::take(&mut self.buf);
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                out.push(Piece::Line(line));
            } else {
                // Reported by append; the line ends here, nothing to skip.
                self.skipping = false;
            }
        }
        if !self.skipping {
            self.append(chunk, &mut out);
        }
        out
    }

    /// The stream ended: what is left is the last line, if anything.
    fn finish(&mut self) -> Option<Piece> {
        let skipped = std::mem::replace(&mut self.skipping, false);
        let mut line = std::mem::take(&mut self.buf);
        if skipped || line.is_empty() {
            return None;
        }
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        Some(Piece::Line(line))
    }

    /// Add bytes to the current line. If that makes it too long, report
    /// its head, forget it and start skipping; returns whether the line
    /// is still being collected.
    fn append(&mut self, bytes: &[u8], out: &mut Vec<Piece>) -> bool {
        if self.buf.len() + bytes.len() <= self.max {
            self.buf.extend_from_slice(bytes);
            return true;
        }
        let mut head = std::mem::take(&mut self.buf);
        head.truncate(QUARANTINE_HEAD);
        let room = QUARANTINE_HEAD.saturating_sub(head.len());
        head.extend_from_slice(&bytes[..room.min(bytes.len())]);
        out.push(Piece::TooLong(head));
        self.skipping = true;
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(s: &str) -> Piece {
        Piece::Line(s.as_bytes().to_vec())
    }

    #[test]
    fn lines_split_across_chunks() {
        let mut s = LineSplitter::new(100);
        assert_eq!(s.push(b"{\"a\":"), vec![]);
        assert_eq!(s.push(b"1}\n{\"b\""), vec![line("{\"a\":1}")]);
        assert_eq!(s.push(b":2}\r"), vec![]);
        assert_eq!(
            s.push(b"\n\n{\"c\":3}\r\n{\"d\""),
            vec![line("{\"b\":2}"), line(""), line("{\"c\":3}")]
        );
        assert_eq!(s.finish(), Some(line("{\"d\"")));
        assert_eq!(s.finish(), None);
    }

    #[test]
    fn a_chunk_split_between_cr_and_lf() {
        let mut s = LineSplitter::new(100);
        assert_eq!(s.push(b"x\r"), vec![]);
        assert_eq!(s.push(b"\ny"), vec![line("x")]);
        assert_eq!(s.finish(), Some(line("y")));
    }

    #[test]
    fn an_overlong_line_is_reported_once_and_skipped() {
        let mut s = LineSplitter::new(8);
        assert_eq!(s.push(b"ok\n12345"), vec![line("ok")]);
        // Over the limit in the middle of a chunk: reported, then skipped
        // up to its newline, across chunks.
        assert_eq!(s.push(b"6789"), vec![Piece::TooLong(b"123456789".to_vec())]);
        assert_eq!(s.push(b"more of it"), vec![]);
        assert_eq!(s.push(b"end\nnext\n"), vec![line("next")]);
        // Over the limit within one chunk, newline included.
        assert_eq!(
            s.push(b"abcdefghij\nz\n"),
            vec![Piece::TooLong(b"abcdefghij".to_vec()), line("z")]
        );
        // An overlong last line is not a line.
        assert_eq!(
            s.push(b"0123456789"),
            vec![Piece::TooLong(b"0123456789".to_vec())]
        );
        assert_eq!(s.finish(), None);
    }

    #[test]
    fn the_quarantined_head_is_bounded() {
        let mut s = LineSplitter::new(QUARANTINE_HEAD * 2);
        let big = vec![b'x'; QUARANTINE_HEAD * 3];
        match s.push(&big).as_slice() {
            [Piece::TooLong(head)] => assert_eq!(head.len(), QUARANTINE_HEAD),
            other => panic!("{other:?}"),
        }
    }
}
