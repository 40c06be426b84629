//! LLRP message framing: the 10-byte header and the splitter that cuts a
//! TCP byte stream into whole messages.
//!
//! Header: `reserved(3 bits) version(3) type(10)`, `length(32)` counting
//! the header, `message id(32)`. TCP carries no other framing, so a length
//! that cannot be right (below 10, above [`MAX_MESSAGE`]) means the stream
//! is out of step and can never be resynchronised: the connection has to
//! be dropped, which [`Splitter::next_frame`] says with an error.

use super::wire::{LlrpError, Writer};

/// Bytes of the message header.
pub const HEADER_LEN: usize = 10;
/// Largest message we accept. A report of a few hundred tags is tens of
/// KiB; a larger declared length is a stream out of step, and refusing it
/// keeps the buffer bounded.
pub const MAX_MESSAGE: usize = 1 << 20;
/// Protocol version written into what we send: LLRP 1.0.1 (1), which every
/// LLRP 1.1 reader speaks until a client negotiates 1.1, and which is the
/// only version some readers know.
pub const VERSION: u8 = 1;

/// A whole message as it came off the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub version: u8,
    pub message_type: u16,
    pub message_id: u32,
    /// The whole message, header included (errors count offsets from it).
    pub bytes: Vec<u8>,
}

impl Frame {
    /// The bytes after the header.
    pub fn body(&self) -> &[u8] {
        self.bytes.get(HEADER_LEN..).unwrap_or_default()
    }
}

/// Read the header at the start of `bytes` (at least [`HEADER_LEN`]):
/// version, type, declared length, message id.
fn header(bytes: &[u8]) -> Option<(u8, u16, usize, u32)> {
    let h = bytes.get(..HEADER_LEN)?;
    let first = u16::from_be_bytes([h[0], h[1]]);
    let version = ((first >> 10) & 0x7) as u8;
    let message_type = first & 0x03FF;
    let length = u32::from_be_bytes([h[2], h[3], h[4], h[5]]) as usize;
    let message_id = u32::from_be_bytes([h[6], h[7], h[8], h[9]]);
    Some((version, message_type, length, message_id))
}

/// Parse one complete message (exactly one, nothing after it): for test
/// vectors and for the decoder's own checks.
pub fn parse(bytes: &[u8]) -> Result<Frame, LlrpError> {
    let Some((version, message_type, length, message_id)) = header(bytes) else {
        return Err(LlrpError::new(
            bytes.len(),
            format!(
                "message header needs {HEADER_LEN} bytes, got {}",
                bytes.len()
            ),
        ));
    };
    if length != bytes.len() {
        return Err(LlrpError::new(
            2,
            format!(
                "message declares length {length}, but {} byte(s) are given",
                bytes.len()
            ),
        ));
    }
    Ok(Frame {
        version,
        message_type,
        message_id,
        bytes: bytes.to_vec(),
    })
}

/// Build a message: header with [`VERSION`], `message_type`, the length and
/// `message_id`, then `body`.
pub fn build(message_type: u16, message_id: u32, body: &[u8]) -> Vec<u8> {
    let mut w = Writer::default();
    w.u16((u16::from(VERSION) << 10) | (message_type & 0x03FF));
    // Client bodies are a few hundred bytes; a u32 always holds them.
    w.u32((HEADER_LEN + body.len()) as u32);
    w.u32(message_id);
    w.buf.extend_from_slice(body);
    w.buf
}

/// Cuts a byte stream into messages, however the reads split it. One per
/// connection.
#[derive(Debug, Default)]
pub struct Splitter {
    buf: Vec<u8>,
    /// Bytes consumed before `buf[0]`, so errors name the stream offset.
    consumed: usize,
}

impl Splitter {
    pub fn new() -> Self {
        Self::default()
    }

    /// Add bytes read from the connection.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes held that do not make a whole message yet.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    /// Whether [`Splitter::next_frame`] would return at once (a whole
    /// message, or a length that is out of step) without more bytes.
    pub fn has_frame(&self) -> bool {
        match header(&self.buf) {
            Some((_, _, length, _)) => {
                !(HEADER_LEN..=MAX_MESSAGE).contains(&length) || self.buf.len() >= length
            }
            None => false,
        }
    }

    /// The next whole message, `Ok(None)` until one is complete. An error
    /// means the stream is out of step (see the module doc); the offset is
    /// counted from the start of the connection.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, LlrpError> {
        let Some((version, message_type, length, message_id)) = header(&self.buf) else {
            return Ok(None);
        };
        if !(HEADER_LEN..=MAX_MESSAGE).contains(&length) {
            return Err(LlrpError::new(
                self.consumed + 2,
                format!(
                    "message type {message_type} declares length {length}, outside {HEADER_LEN}..={MAX_MESSAGE}: the stream is out of step"
                ),
            ));
        }
        if self.buf.len() < length {
            return Ok(None);
        }
        let rest = self.buf.split_off(length);
        let bytes = std::mem::replace(&mut self.buf, rest);
        self.consumed += length;
        Ok(Some(Frame {
            version,
            message_type,
            message_id,
            bytes,
        }))
    }
}
