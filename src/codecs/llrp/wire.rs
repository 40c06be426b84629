//! The LLRP byte layer: a bounds-checked reader that knows its absolute
//! offset in the message (so every error names the byte it happened at),
//! the TLV/TV parameter walk, and the writer the encoder builds on.
//!
//! A TLV parameter is `reserved(6 bits) type(10 bits) length(16 bits)
//! body`, its length counting the 4-byte header. A TV parameter is one
//! byte `1 type(7 bits)` followed by a body whose length is fixed by the
//! type ([`tv_len`]); an unknown TV type cannot be skipped, so it ends the
//! walk with an error rather than a guess.

/// What was wrong with an LLRP message, and at which byte of it (counted
/// from the first byte of the message header).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} at byte {offset}")]
pub struct LlrpError {
    pub offset: usize,
    pub what: String,
}

impl LlrpError {
    pub fn new(offset: usize, what: impl Into<String>) -> Self {
        LlrpError {
            offset,
            what: what.into(),
        }
    }
}

/// TLV type of a vendor extension (`Custom`): vendor id, subtype, data.
pub const CUSTOM: u16 = 1023;

/// Body length of each TV parameter type of LLRP 1.0.1/1.1 (section 16.2
/// and 17.2.3 of the 1.1 spec): the type is all a reader says, the length
/// has to be known.
pub fn tv_len(tv_type: u8) -> Option<usize> {
    Some(match tv_type {
        1 => 2,       // AntennaID
        2..=5 => 8,   // First/LastSeenTimestamp UTC/Uptime
        6 => 1,       // PeakRSSI
        7 | 8 => 2,   // ChannelIndex, TagSeenCount
        9 => 4,       // ROSpecID
        10..=12 => 2, // InventoryParameterSpecID, C1G2_CRC, C1G2_PC
        13 => 12,     // EPC-96
        14 | 15 => 2, // SpecIndex, ClientRequestOpSpecResult
        16 => 4,      // AccessSpecID
        17 => 2,      // OpSpecID
        18 => 4,      // C1G2SingulationDetails
        19 | 20 => 2, // C1G2_XPC_W1, C1G2_XPC_W2
        _ => return None,
    })
}

/// A read position in (part of) a message. `base` is the absolute offset
/// of `buf[0]` in the message, so errors from nested parameters still name
/// the byte in the whole frame.
#[derive(Debug, Clone)]
pub struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
    base: usize,
}

impl<'a> Cursor<'a> {
    pub fn new(buf: &'a [u8], base: usize) -> Self {
        Cursor { buf, pos: 0, base }
    }

    /// Absolute offset of the next byte.
    pub fn offset(&self) -> usize {
        self.base + self.pos
    }

    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    /// The next `n` bytes, or an error naming `what` was cut short.
    pub fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], LlrpError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len());
        let Some(end) = end else {
            return Err(LlrpError::new(
                self.offset(),
                format!("{what}: needs {n} byte(s), only {} left", self.remaining()),
            ));
        };
        let bytes = &self.buf[self.pos..end];
        self.pos = end;
        Ok(bytes)
    }

    /// A cursor over the next `n` bytes, which this one skips.
    pub fn sub(&mut self, n: usize, what: &str) -> Result<Cursor<'a>, LlrpError> {
        let base = self.offset();
        Ok(Cursor::new(self.take(n, what)?, base))
    }

    pub fn u8(&mut self, what: &str) -> Result<u8, LlrpError> {
        Ok(self.take(1, what)?[0])
    }

    pub fn u16(&mut self, what: &str) -> Result<u16, LlrpError> {
        let b = self.take(2, what)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    pub fn u32(&mut self, what: &str) -> Result<u32, LlrpError> {
        let b = self.take(4, what)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub fn u64(&mut self, what: &str) -> Result<u64, LlrpError> {
        let b = self.take(8, what)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }

    /// An LLRP `utf8v`: a 16-bit byte count and that many bytes. Invalid
    /// UTF-8 is replaced, not refused: it is only ever shown to people.
    pub fn utf8v(&mut self, what: &str) -> Result<String, LlrpError> {
        let n = usize::from(self.u16(what)?);
        Ok(String::from_utf8_lossy(self.take(n, what)?).into_owned())
    }

    /// The next parameter, `None` at the end of the buffer.
    pub fn param(&mut self) -> Result<Option<Param<'a>>, LlrpError> {
        if self.is_empty() {
            return Ok(None);
        }
        let offset = self.offset();
        let first = self.u8("parameter type")?;
        if first & 0x80 != 0 {
            let tv_type = first & 0x7F;
            let Some(len) = tv_len(tv_type) else {
                return Err(LlrpError::new(
                    offset,
                    format!(
                        "unknown TV parameter type {tv_type}: its length is not known, so nothing after it can be read"
                    ),
                ));
            };
            let body = self.sub(len, &format!("TV parameter {tv_type}"))?;
            return Ok(Some(Param {
                kind: Kind::Tv(tv_type),
                offset,
                body,
            }));
        }
        let second = self.u8("parameter type")?;
        let typ = u16::from_be_bytes([first & 0x03, second]);
        let len = usize::from(self.u16("parameter length")?);
        if len < 4 {
            return Err(LlrpError::new(
                offset,
                format!("TLV parameter {typ} declares length {len}, less than its 4-byte header"),
            ));
        }
        if len - 4 > self.remaining() {
            return Err(LlrpError::new(
                offset,
                format!(
                    "TLV parameter {typ} declares length {len}, but only {} byte(s) are left",
                    self.remaining() + 4
                ),
            ));
        }
        let body = self.sub(len - 4, "TLV body")?;
        Ok(Some(Param {
            kind: Kind::Tlv(typ),
            offset,
            body,
        }))
    }
}

/// TV or TLV, with its type number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Tv(u8),
    Tlv(u16),
}

/// One parameter: its kind, where it started and a cursor over its body.
#[derive(Debug, Clone)]
pub struct Param<'a> {
    pub kind: Kind,
    pub offset: usize,
    pub body: Cursor<'a>,
}

/// A growing message or parameter body, big-endian as LLRP is.
#[derive(Debug, Default)]
pub struct Writer {
    pub buf: Vec<u8>,
}

impl Writer {
    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.buf.push(v);
        self
    }

    pub fn u16(&mut self, v: u16) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }

    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }

    /// A TLV parameter whose body `body` writes. The length is patched in
    /// afterwards.
    ///
    /// # Panics
    /// If the body exceeds 65531 bytes. Client messages are built from
    /// validated configuration (a few antennas), never from device input.
    pub fn tlv(&mut self, typ: u16, body: impl FnOnce(&mut Writer)) -> &mut Self {
        let start = self.buf.len();
        self.u16(typ & 0x03FF).u16(0);
        body(self);
        let len = u16::try_from(self.buf.len() - start).expect("LLRP parameter over 64 KiB");
        self.buf[start + 2..start + 4].copy_from_slice(&len.to_be_bytes());
        self
    }
}
