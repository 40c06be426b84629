//! The compact rows of the tag table ([`super::TagTracker`]) and their
//! storage: fixed-size chunks, so that the table never holds twice its
//! size while it grows, and a removal frees memory as the table shrinks.

/// Slots per chunk: 4,096 of 35 bytes, about 140 KiB.
const CHUNK: usize = 4096;

/// The range of [`Slot::last_seen_ms`].
const LAST_SEEN_MAX: i64 = (1 << 47) - 1;
const LAST_SEEN_MIN: i64 = -(1 << 47);

const HAS_RSSI: u8 = 1;
const HAS_ANTENNA: u8 = 2;
const DIRTY: u8 = 4;
/// The EPC is not 96 bits of upper-case hex: `epc` holds its number in
/// the tracker's table of long EPCs.
const LONG_EPC: u8 = 8;

/// A tag's EPC as a slot keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Epc {
    /// 96 bits (24 upper-case hex digits), the EPC of nearly every tag.
    Bits96([u8; 12]),
    /// Any other EPC, by its number in the tracker's table of long EPCs.
    Long(u32),
}

impl Epc {
    /// The 12 bytes of `epc` if it is exactly 24 upper-case hex digits
    /// (what codecs produce for a 96-bit EPC): such an EPC and its bytes
    /// convert both ways without loss.
    pub(super) fn bits96(epc: &str) -> Option<[u8; 12]> {
        let hex = epc.as_bytes();
        if hex.len() != 24 {
            return None;
        }
        let digit = |c: u8| match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        };
        let mut out = [0u8; 12];
        for (o, pair) in out.iter_mut().zip(hex.chunks_exact(2)) {
            *o = (digit(pair[0])? << 4) | digit(pair[1])?;
        }
        Some(out)
    }
}

/// One tag's row in memory: what every read of it needs. Packed: 35
/// bytes instead of 40, for a table of hundreds of thousands of tags.
#[derive(Debug, Clone, Copy)]
#[repr(C, packed)]
pub(super) struct Slot {
    epc: [u8; 12],
    /// Reader timestamp of the last read, as journaled: milliseconds
    /// since 1970 in 48 bits (little-endian, signed), years -2489 to 6429.
    last_seen: [u8; 6],
    /// When the agent last received a read of the tag, on its own clock,
    /// in seconds after the tracker's base: departures are timed by this,
    /// so a reader whose clock is off does not make every tag depart and
    /// arrive again.
    pub heard_s: i32,
    pub reads: u32,
    /// The zone's number in the tracker's zone table.
    pub zone: u32,
    best_rssi: i16,
    antenna: u16,
    flags: u8,
}

impl Slot {
    /// A tag just seen (its EPC is set when it is inserted).
    pub fn new(
        zone: u32,
        last_seen_ms: i64,
        heard_s: i32,
        reads: u32,
        best_rssi: Option<i16>,
        antenna: Option<u16>,
    ) -> Slot {
        let mut slot = Slot {
            epc: [0; 12],
            last_seen: [0; 6],
            heard_s,
            reads,
            zone,
            best_rssi: 0,
            antenna: antenna.unwrap_or(0),
            flags: if antenna.is_some() { HAS_ANTENNA } else { 0 },
        };
        slot.set_best_rssi(best_rssi);
        slot.set_last_seen_ms(last_seen_ms);
        slot
    }

    /// Reader timestamp of the last read, in milliseconds since 1970.
    pub fn last_seen_ms(&self) -> i64 {
        let [a, b, c, d, e, f] = self.last_seen;
        // Sign-extend from 48 bits.
        i64::from_le_bytes([a, b, c, d, e, f, 0, 0]) << 16 >> 16
    }

    /// Set the last read's time; one beyond 48 bits (a reader clock past
    /// the year 6429 or before -2489) is kept as the nearest that fits.
    pub fn set_last_seen_ms(&mut self, ms: i64) {
        let ms = ms.clamp(LAST_SEEN_MIN, LAST_SEEN_MAX);
        let b = ms.to_le_bytes();
        self.last_seen = [b[0], b[1], b[2], b[3], b[4], b[5]];
    }

    /// The same slot with `other`'s EPC.
    pub fn with_epc_of(mut self, other: &Slot) -> Slot {
        self.epc = other.epc;
        self.flags = (self.flags & !LONG_EPC) | (other.flags & LONG_EPC);
        self
    }

    pub fn epc(&self) -> Epc {
        if self.flags & LONG_EPC != 0 {
            let [a, b, c, d, ..] = self.epc;
            Epc::Long(u32::from_le_bytes([a, b, c, d]))
        } else {
            Epc::Bits96(self.epc)
        }
    }

    pub fn set_epc(&mut self, epc: Epc) {
        match epc {
            Epc::Bits96(b) => {
                self.epc = b;
                self.flags &= !LONG_EPC;
            }
            Epc::Long(n) => {
                self.epc = [0; 12];
                self.epc[..4].copy_from_slice(&n.to_le_bytes());
                self.flags |= LONG_EPC;
            }
        }
    }

    pub fn best_rssi(&self) -> Option<i16> {
        (self.flags & HAS_RSSI != 0).then_some(self.best_rssi)
    }

    pub fn set_best_rssi(&mut self, rssi: Option<i16>) {
        self.best_rssi = rssi.unwrap_or(0);
        self.flags = match rssi {
            Some(_) => self.flags | HAS_RSSI,
            None => self.flags & !HAS_RSSI,
        };
    }

    pub fn antenna(&self) -> Option<u16> {
        (self.flags & HAS_ANTENNA != 0).then_some(self.antenna)
    }

    /// Counters changed since the last flush to the `tags` table.
    pub fn dirty(&self) -> bool {
        self.flags & DIRTY != 0
    }

    pub fn set_dirty(&mut self, dirty: bool) {
        self.flags = if dirty {
            self.flags | DIRTY
        } else {
            self.flags & !DIRTY
        };
    }
}

/// The slots, numbered densely from 0, in chunks of [`CHUNK`].
#[derive(Default)]
pub(super) struct Slots {
    chunks: Vec<Vec<Slot>>,
    len: usize,
}

impl Slots {
    pub fn len(&self) -> usize {
        self.len
    }

    /// The slot at `pos`, which must be below [`Slots::len`].
    pub fn get(&self, pos: u32) -> &Slot {
        let pos = pos as usize;
        &self.chunks[pos / CHUNK][pos % CHUNK]
    }

    pub fn get_mut(&mut self, pos: u32) -> &mut Slot {
        let pos = pos as usize;
        &mut self.chunks[pos / CHUNK][pos % CHUNK]
    }

    /// Append a slot; returns its position.
    pub fn push(&mut self, slot: Slot) -> u32 {
        if self.len % CHUNK == 0 {
            self.chunks.push(Vec::with_capacity(CHUNK));
        }
        if let Some(chunk) = self.chunks.last_mut() {
            chunk.push(slot);
        }
        self.len += 1;
        (self.len - 1) as u32
    }

    /// Remove the slot at `pos` by moving the last one into its place;
    /// returns the position the moved slot came from, if one moved.
    pub fn swap_remove(&mut self, pos: u32) -> Option<u32> {
        let last = self.len.checked_sub(1)?;
        let moved = self.chunks.last_mut().and_then(Vec::pop)?;
        if self.chunks.last().is_some_and(Vec::is_empty) {
            self.chunks.pop();
        }
        self.len = last;
        if pos as usize == last {
            return None;
        }
        *self.get_mut(pos) = moved;
        Some(last as u32)
    }

    pub fn clear(&mut self) {
        self.chunks = Vec::new();
        self.len = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slot_stays_small() {
        // The table's budget: the stock of a big store (500,000 tags) in
        // about 20 MB with the index (docs/BENCHMARKS.md, `bench tags`).
        assert_eq!(std::mem::size_of::<Slot>(), 35);
    }

    #[test]
    fn only_upper_case_96_bit_hex_is_compact() {
        assert!(Epc::bits96("3074257BF7194E4000001A85").is_some());
        assert_eq!(
            hex::encode_upper(Epc::bits96("E28011606000020A6681F23F").unwrap()),
            "E28011606000020A6681F23F"
        );
        assert!(Epc::bits96("3074257bf7194e4000001a85").is_none());
        assert!(Epc::bits96("3074257BF7194E4000001A").is_none());
        assert!(Epc::bits96("3074257BF7194E4000001A8500").is_none());
        assert!(Epc::bits96("3074257BF7194E4000001AXY").is_none());
    }

    #[test]
    fn last_seen_keeps_milliseconds_over_millennia() {
        let mut slot = Slot::new(0, 0, 0, 1, None, None);
        for ms in [
            0,
            1,
            -1,
            1_700_000_000_123,
            -62_135_596_800_000,
            LAST_SEEN_MAX,
            LAST_SEEN_MIN,
        ] {
            slot.set_last_seen_ms(ms);
            assert_eq!(slot.last_seen_ms(), ms);
        }
        slot.set_last_seen_ms(i64::MAX);
        assert_eq!(slot.last_seen_ms(), LAST_SEEN_MAX);
    }

    #[test]
    fn removal_moves_the_last_slot_and_frees_empty_chunks() {
        let mut s = Slots::default();
        for i in 0..(CHUNK + 2) {
            s.push(Slot::new(0, i as i64, 0, 1, None, None));
        }
        assert_eq!(s.chunks.len(), 2);
        assert_eq!(s.swap_remove(0), Some((CHUNK + 1) as u32));
        assert_eq!(s.get(0).last_seen_ms(), (CHUNK + 1) as i64);
        assert_eq!(s.swap_remove(CHUNK as u32), None);
        assert_eq!(s.len(), CHUNK);
        assert_eq!(s.chunks.len(), 1);
    }
}
