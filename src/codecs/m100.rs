//! Codec `m100` (spec/profiles.md): serial UHF RFID modules built on
//! Magicrf M100/QM100-class chips (often sold as "R200" modules).
//!
//! Every frame is `BB type cmd PL_hi PL_lo payload... checksum 7E`, where
//! `checksum` is the low byte of the sum of `type..payload`. `type` is 00
//! for a command, 01 for a response and 02 for a notice. The module reports
//! each inventoried tag as a notice (type 02, cmd 22) while a multi-poll
//! ([`MULTI_POLL`]) runs.
//!
//! The decoder is pure and stream-oriented: it is fed whatever a serial
//! read returned and keeps a partial frame until the rest arrives.

use chrono::{DateTime, Utc};
use serde::Deserialize;

use super::{Decoded, TagRead};

/// First byte of every frame.
const START: u8 = 0xBB;
/// Last byte of every frame.
const END: u8 = 0x7E;
/// `BB type cmd PL_hi PL_lo`.
const HEADER_LEN: usize = 5;
/// `checksum 7E`.
const TRAILER_LEN: usize = 2;
/// Largest payload we believe. Real frames are far smaller (a tag notice
/// with a 496-bit EPC is 69 bytes); a larger declared length means the
/// `BB` was noise, and refusing it keeps the buffer bounded.
const MAX_PAYLOAD: usize = 1024;
/// Garbage is quarantined in chunks of at most this many bytes.
const MAX_BAD_CHUNK: usize = 4096;

const TYPE_COMMAND: u8 = 0x00;
const TYPE_RESPONSE: u8 = 0x01;
const TYPE_NOTICE: u8 = 0x02;
const CMD_POLL: u8 = 0x22;

/// Start a multi-poll of 65535 (`FF FF`) rounds: sent on connect and again
/// every `repoll_s`, because the module stops once the rounds run out.
pub const MULTI_POLL: [u8; 10] = [0xBB, 0x00, 0x27, 0x00, 0x03, 0x22, 0xFF, 0xFF, 0x4A, 0x7E];

/// Stop the multi-poll: sent on shutdown so the module goes quiet.
pub const STOP: [u8; 7] = [0xBB, 0x00, 0x28, 0x00, 0x00, 0x28, 0x7E];

/// The `[m100]` table of a firmware profile.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct M100Params {
    /// Seconds between repeated [`MULTI_POLL`] commands.
    pub repoll_s: u64,
}

impl Default for M100Params {
    fn default() -> Self {
        M100Params { repoll_s: 10 }
    }
}

impl M100Params {
    /// Check values serde cannot: a zero interval would flood the module
    /// with poll commands.
    pub fn validate(&self) -> Result<(), String> {
        if self.repoll_s == 0 {
            return Err("m100.repoll_s: must be at least 1 second".to_string());
        }
        Ok(())
    }
}

/// Build a frame `BB type cmd PL_hi PL_lo payload checksum 7E`.
///
/// # Panics
/// If `payload` is longer than 65535 bytes, which the length field cannot
/// express. Commands are built from constants, never from device input.
pub fn frame(frame_type: u8, cmd: u8, payload: &[u8]) -> Vec<u8> {
    let len = u16::try_from(payload.len()).expect("M100 payload longer than 65535 bytes");
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len() + TRAILER_LEN);
    out.push(START);
    out.push(frame_type);
    out.push(cmd);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(payload);
    let sum = checksum(&out[1..]);
    out.push(sum);
    out.push(END);
    out
}

/// Low byte of the sum of `bytes`.
fn checksum(bytes: &[u8]) -> u8 {
    bytes.iter().fold(0u8, |acc, b| acc.wrapping_add(*b))
}

/// Stream decoder for the module's output. One per serial connection.
#[derive(Debug, Default)]
pub struct M100Decoder {
    /// Unconsumed input: empty or a frame candidate starting with `BB`
    /// that is still incomplete (at most one maximal frame long).
    buf: Vec<u8>,
}

/// What the bytes at the front of the buffer (starting with `BB`) are.
enum Candidate {
    /// Could still become a frame: wait for more bytes.
    Incomplete,
    /// This `BB` does not start a frame; the reason says why.
    NotAFrame(String),
    /// Well-formed except for the checksum.
    BadChecksum { expected: u8, actual: u8 },
    /// A valid frame of `len` bytes.
    Frame { frame_type: u8, cmd: u8, len: usize },
}

/// Look at the frame candidate at the start of `bytes` (`bytes[0] == BB`).
fn candidate(bytes: &[u8]) -> Candidate {
    let (Some(&frame_type), Some(&cmd), Some(&pl_hi), Some(&pl_lo)) =
        (bytes.get(1), bytes.get(2), bytes.get(3), bytes.get(4))
    else {
        return Candidate::Incomplete;
    };
    // Checking the type early rejects most noise `BB`s without waiting for
    // the bytes a bogus length would ask for.
    if !matches!(frame_type, TYPE_COMMAND | TYPE_RESPONSE | TYPE_NOTICE) {
        return Candidate::NotAFrame(format!("unknown frame type 0x{frame_type:02X}"));
    }
    let payload_len = usize::from(u16::from_be_bytes([pl_hi, pl_lo]));
    if payload_len > MAX_PAYLOAD {
        return Candidate::NotAFrame(format!(
            "declared payload length {payload_len} exceeds {MAX_PAYLOAD}"
        ));
    }
    let len = HEADER_LEN + payload_len + TRAILER_LEN;
    let Some(frame) = bytes.get(..len) else {
        return Candidate::Incomplete;
    };
    let body = frame.get(1..len - TRAILER_LEN).unwrap_or_default();
    let actual = frame.get(len - 2).copied().unwrap_or_default();
    if frame.get(len - 1) != Some(&END) {
        return Candidate::NotAFrame(format!("no 0x7E end byte after {payload_len}-byte payload"));
    }
    let expected = checksum(body);
    if expected != actual {
        return Candidate::BadChecksum { expected, actual };
    }
    Candidate::Frame {
        frame_type,
        cmd,
        len,
    }
}

/// The EPC of a tag notice payload `RSSI(1) PC(2) EPC(n) CRC(2)` plus its
/// RSSI byte, or why the payload is inconsistent.
fn parse_tag_notice(payload: &[u8]) -> Result<(String, i8), String> {
    let (Some(&rssi), Some(&pc_hi), Some(&pc_lo)) =
        (payload.first(), payload.get(1), payload.get(2))
    else {
        return Err(format!(
            "tag notice payload of {} bytes is too short",
            payload.len()
        ));
    };
    let pc = u16::from_be_bytes([pc_hi, pc_lo]);
    // PC bits 15..11: EPC length in 16-bit words.
    let epc_len = usize::from(pc >> 11) * 2;
    let expected_payload = 1 + 2 + epc_len + 2;
    if epc_len == 0 || payload.len() != expected_payload {
        return Err(format!(
            "tag notice PC 0x{pc:04X} says a {epc_len}-byte EPC (payload {expected_payload} bytes) but the payload has {} bytes",
            payload.len()
        ));
    }
    let epc = payload.get(3..3 + epc_len).unwrap_or_default();
    Ok((hex::encode_upper(epc), rssi as i8))
}

/// A run of consecutive bytes that did not form a frame, quarantined as one
/// [`Decoded::Bad`] instead of one per byte.
#[derive(Default)]
struct BadRun {
    bytes: Vec<u8>,
    /// The first specific reason seen in this run, if any.
    reason: Option<String>,
}

impl BadRun {
    fn push(&mut self, bytes: &[u8], reason: Option<String>, out: &mut Vec<Decoded>) {
        if self.reason.is_none() {
            self.reason = reason;
        }
        for chunk in bytes.chunks(MAX_BAD_CHUNK) {
            let room = MAX_BAD_CHUNK - self.bytes.len();
            let (now, later) = chunk.split_at(chunk.len().min(room));
            self.bytes.extend_from_slice(now);
            if self.bytes.len() >= MAX_BAD_CHUNK {
                self.flush(out);
            }
            self.bytes.extend_from_slice(later);
        }
    }

    fn flush(&mut self, out: &mut Vec<Decoded>) {
        if self.bytes.is_empty() {
            return;
        }
        let n = self.bytes.len();
        let reason = match self.reason.take() {
            Some(r) => format!("m100: skipped {n} bytes that do not form a frame ({r})"),
            None => format!("m100: skipped {n} bytes that do not form a frame"),
        };
        out.push(Decoded::Bad {
            reason,
            raw: std::mem::take(&mut self.bytes),
        });
    }
}

impl M100Decoder {
    /// A decoder with nothing buffered, for a freshly opened port.
    pub fn new() -> Self {
        M100Decoder { buf: Vec::new() }
    }

    /// Decode the next bytes read from the module. Returns tag reads (one
    /// [`Decoded::TagReads`] per run of consecutive tag notices, stamped
    /// `now`) and quarantined garbage, in stream order. A frame split across
    /// calls is completed by a later call; garbage is reported at the end of
    /// the call that saw it (at most one [`Decoded::Bad`] per contiguous
    /// run per call, in chunks of at most 4096 bytes).
    pub fn feed(&mut self, bytes: &[u8], now: DateTime<Utc>) -> Vec<Decoded> {
        let mut out = Vec::new();
        let mut bad = BadRun::default();
        let mut buf = std::mem::take(&mut self.buf);
        buf.extend_from_slice(bytes);
        let mut pos = 0;
        while let Some(rest) = buf.get(pos..).filter(|r| !r.is_empty()) {
            if rest.first() != Some(&START) {
                let skip = rest.iter().position(|&b| b == START).unwrap_or(rest.len());
                bad.push(&rest[..skip], None, &mut out);
                pos += skip;
                continue;
            }
            match candidate(rest) {
                Candidate::Incomplete => break,
                Candidate::NotAFrame(reason) => {
                    // Skip only the `BB`: a real frame may start inside
                    // what this one claimed.
                    bad.push(&rest[..1], Some(reason), &mut out);
                    pos += 1;
                }
                Candidate::BadChecksum { expected, actual } => {
                    // A corrupted frame gets its own record, then we resync
                    // at the next `BB` after its start byte.
                    bad.flush(&mut out);
                    let reason = format!(
                        "bad checksum: expected 0x{expected:02X}, frame has 0x{actual:02X}"
                    );
                    bad.push(&rest[..1], Some(reason), &mut out);
                    pos += 1;
                }
                Candidate::Frame {
                    frame_type,
                    cmd,
                    len,
                } => {
                    bad.flush(&mut out);
                    let raw = &rest[..len];
                    if frame_type == TYPE_NOTICE && cmd == CMD_POLL {
                        let payload = raw.get(HEADER_LEN..len - TRAILER_LEN).unwrap_or_default();
                        match parse_tag_notice(payload) {
                            Ok((epc, rssi)) => push_read(&mut out, epc, rssi, now),
                            Err(reason) => out.push(Decoded::Bad {
                                reason: format!("m100: {reason}"),
                                raw: raw.to_vec(),
                            }),
                        }
                    }
                    // Responses (including error frames such as 01 FF 15,
                    // "no tag") and echoed commands carry nothing for us.
                    pos += len;
                }
            }
        }
        bad.flush(&mut out);
        buf.drain(..pos.min(buf.len()));
        self.buf = buf;
        out
    }
}

/// Append a read, joining it to an immediately preceding batch of reads.
fn push_read(out: &mut Vec<Decoded>, epc: String, rssi: i8, now: DateTime<Utc>) {
    let read = TagRead {
        epc,
        antenna: None,
        rssi_dbm: Some(i32::from(rssi)),
        ts: now,
    };
    if let Some(Decoded::TagReads(reads)) = out.last_mut() {
        reads.push(read);
    } else {
        out.push(Decoded::TagReads(vec![read]));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    /// A copy of `samples/m100-tag-notice.bin` (shared device samples), kept
    /// inline so the tests do not depend on a path outside the repository.
    const SAMPLE: &[u8] = &[
        0xBB, 0x02, 0x22, 0x00, 0x11, 0xC4, 0x30, 0x00, 0x30, 0x74, 0x25, 0x7B, 0xF7, 0x19, 0x4E,
        0x40, 0x00, 0x00, 0x1A, 0x85, 0x12, 0x34, 0xF0, 0x7E,
    ];
    const SAMPLE_EPC: &str = "3074257BF7194E4000001A85";

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 22, 10, 15, 30).unwrap()
    }

    /// Every tag read in `out`, flattened.
    fn reads(out: &[Decoded]) -> Vec<TagRead> {
        out.iter()
            .filter_map(|d| match d {
                Decoded::TagReads(r) => Some(r.clone()),
                _ => None,
            })
            .flatten()
            .collect()
    }

    /// Every quarantined record in `out`.
    fn bads(out: &[Decoded]) -> Vec<(String, Vec<u8>)> {
        out.iter()
            .filter_map(|d| match d {
                Decoded::Bad { reason, raw } => Some((reason.clone(), raw.clone())),
                _ => None,
            })
            .collect()
    }

    fn sample_read() -> TagRead {
        TagRead {
            epc: SAMPLE_EPC.to_string(),
            antenna: None,
            rssi_dbm: Some(-60),
            ts: now(),
        }
    }

    /// A tag notice for `epc` built with the frame builder.
    fn notice(epc: &[u8], rssi: u8) -> Vec<u8> {
        let words = (epc.len() / 2) as u16;
        let pc = words << 11;
        let mut payload = vec![rssi];
        payload.extend_from_slice(&pc.to_be_bytes());
        payload.extend_from_slice(epc);
        payload.extend_from_slice(&[0xAB, 0xCD]);
        frame(TYPE_NOTICE, CMD_POLL, &payload)
    }

    #[test]
    fn builder_reproduces_the_commands() {
        assert_eq!(frame(0x00, 0x27, &[0x22, 0xFF, 0xFF]), MULTI_POLL);
        assert_eq!(frame(0x00, 0x28, &[]), STOP);
    }

    #[test]
    fn inline_sample_matches_the_shared_file_when_present() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../shared/samples/m100-tag-notice.bin"
        );
        if let Ok(bytes) = std::fs::read(path) {
            assert_eq!(bytes, SAMPLE);
        }
    }

    #[test]
    fn sample_is_a_valid_frame() {
        assert_eq!(
            frame(0x02, 0x22, &SAMPLE[HEADER_LEN..SAMPLE.len() - 2]),
            SAMPLE
        );
    }

    #[test]
    fn params_default_and_refuse_unknown_keys() {
        let p: M100Params = toml::from_str("").unwrap();
        assert_eq!(p.repoll_s, 10);
        let p: M100Params = toml::from_str("repoll_s = 30").unwrap();
        assert_eq!(p.repoll_s, 30);
        assert!(toml::from_str::<M100Params>("repol_s = 30").is_err());
        assert!(M100Params { repoll_s: 0 }.validate().is_err());
        assert!(M100Params::default().validate().is_ok());
    }

    #[test]
    fn sample_fed_whole() {
        let out = M100Decoder::new().feed(SAMPLE, now());
        assert_eq!(out, vec![Decoded::TagReads(vec![sample_read()])]);
    }

    #[test]
    fn sample_fed_byte_by_byte() {
        let mut d = M100Decoder::new();
        let mut out = Vec::new();
        for b in SAMPLE {
            out.extend(d.feed(&[*b], now()));
        }
        assert_eq!(out, vec![Decoded::TagReads(vec![sample_read()])]);
        assert!(d.buf.is_empty());
    }

    #[test]
    fn sample_split_at_every_offset() {
        for cut in 0..=SAMPLE.len() {
            let mut d = M100Decoder::new();
            let mut out = d.feed(&SAMPLE[..cut], now());
            out.extend(d.feed(&SAMPLE[cut..], now()));
            assert_eq!(
                out,
                vec![Decoded::TagReads(vec![sample_read()])],
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn empty_feed_gives_nothing() {
        let mut d = M100Decoder::new();
        assert!(d.feed(&[], now()).is_empty());
        assert!(d.feed(&SAMPLE[..3], now()).is_empty());
        assert!(d.feed(&[], now()).is_empty());
        assert_eq!(reads(&d.feed(&SAMPLE[3..], now())), vec![sample_read()]);
    }

    #[test]
    fn consecutive_notices_are_batched() {
        let mut input = SAMPLE.to_vec();
        input.extend(notice(&[0xE2, 0x00, 0x11, 0x22], 0xB0));
        let out = M100Decoder::new().feed(&input, now());
        assert_eq!(out.len(), 1);
        let r = reads(&out);
        assert_eq!(r.len(), 2);
        assert_eq!(r[1].epc, "E2001122");
        assert_eq!(r[1].rssi_dbm, Some(-80));
    }

    #[test]
    fn garbage_before_and_between_frames_is_one_bad_per_run() {
        let mut input = b"hello".to_vec();
        input.extend_from_slice(SAMPLE);
        input.extend_from_slice(&[0x00, 0x7E, 0x12]);
        input.extend_from_slice(SAMPLE);
        let out = M100Decoder::new().feed(&input, now());
        assert_eq!(out.len(), 4, "{out:?}");
        assert!(matches!(&out[0], Decoded::Bad { raw, .. } if raw == b"hello"));
        assert!(matches!(&out[1], Decoded::TagReads(_)));
        assert!(matches!(&out[2], Decoded::Bad { raw, .. } if raw == &[0x00, 0x7E, 0x12]));
        assert!(matches!(&out[3], Decoded::TagReads(_)));
    }

    #[test]
    fn noise_start_byte_is_skipped_and_the_frame_behind_it_found() {
        // A stray BB right before a real frame, and one with an absurd length.
        let mut input = vec![0xBB];
        input.extend_from_slice(SAMPLE);
        input.extend_from_slice(&[0xBB, 0x01, 0x22, 0xFF, 0xFF]);
        input.extend_from_slice(SAMPLE);
        let out = M100Decoder::new().feed(&input, now());
        assert_eq!(reads(&out).len(), 2);
        let b = bads(&out);
        assert_eq!(b.len(), 2);
        assert_eq!(b[0].1, vec![0xBB]);
        assert_eq!(b[1].1, vec![0xBB, 0x01, 0x22, 0xFF, 0xFF]);
        assert!(b[1].0.contains("exceeds 1024"), "{}", b[1].0);
    }

    #[test]
    fn bad_checksum_is_quarantined_with_both_values() {
        let mut broken = SAMPLE.to_vec();
        let n = broken.len();
        broken[n - 2] = 0xF1;
        let mut input = broken.clone();
        input.extend_from_slice(SAMPLE);
        let out = M100Decoder::new().feed(&input, now());
        let b = bads(&out);
        assert_eq!(b.len(), 1, "{out:?}");
        assert!(b[0].0.contains("expected 0xF0"), "{}", b[0].0);
        assert!(b[0].0.contains("0xF1"), "{}", b[0].0);
        // The whole broken frame is skipped (it holds no other BB) ...
        assert_eq!(b[0].1, broken);
        // ... and the next frame is still read.
        assert_eq!(reads(&out), vec![sample_read()]);
    }

    #[test]
    fn bad_checksum_resyncs_on_a_frame_inside_it() {
        // A frame whose tail was lost: its declared length swallows the
        // start of the next, complete frame.
        let mut input = SAMPLE[..10].to_vec();
        input.extend_from_slice(SAMPLE);
        input.extend_from_slice(&[0u8; 20]);
        let out = M100Decoder::new().feed(&input, now());
        assert_eq!(reads(&out), vec![sample_read()]);
    }

    #[test]
    fn no_tag_error_frame_and_other_responses_give_nothing() {
        let mut d = M100Decoder::new();
        assert!(
            d.feed(&[0xBB, 0x01, 0xFF, 0x00, 0x01, 0x15, 0x16, 0x7E], now())
                .is_empty()
        );
        assert!(d.feed(&frame(0x01, 0x28, &[0x00]), now()).is_empty());
        // Our own commands echoed back by a loopback are valid frames too.
        assert!(d.feed(&MULTI_POLL, now()).is_empty());
        assert!(d.feed(&STOP, now()).is_empty());
    }

    #[test]
    fn inconsistent_pc_word_is_quarantined() {
        // PC says 8 words (16 bytes) but the payload holds 12.
        let mut payload = SAMPLE[HEADER_LEN..SAMPLE.len() - 2].to_vec();
        payload[1] = 0x40;
        let bad_frame = frame(0x02, 0x22, &payload);
        let out = M100Decoder::new().feed(&bad_frame, now());
        let b = bads(&out);
        assert_eq!(b.len(), 1);
        assert!(b[0].0.contains("PC 0x4000"), "{}", b[0].0);
        assert_eq!(b[0].1, bad_frame);
        // Too short to hold RSSI and PC at all.
        let out = M100Decoder::new().feed(&frame(0x02, 0x22, &[0xC4]), now());
        assert_eq!(bads(&out).len(), 1);
        // A zero-length EPC.
        let out = M100Decoder::new().feed(&frame(0x02, 0x22, &[0xC4, 0, 0, 1, 2]), now());
        assert_eq!(bads(&out).len(), 1);
    }

    #[test]
    fn long_garbage_is_chunked() {
        let garbage = vec![0x55u8; 10_000];
        let out = M100Decoder::new().feed(&garbage, now());
        let b = bads(&out);
        assert_eq!(b.len(), 3);
        assert!(b.iter().all(|(_, raw)| raw.len() <= MAX_BAD_CHUNK));
        assert_eq!(b.iter().map(|(_, raw)| raw.len()).sum::<usize>(), 10_000);
    }

    #[test]
    fn buffer_stays_bounded() {
        let mut d = M100Decoder::new();
        // A plausible header declaring the largest length we accept.
        d.feed(&[0xBB, 0x01, 0x22, 0x04, 0x00], now());
        for _ in 0..100 {
            d.feed(&[0x11; 100], now());
            assert!(d.buf.len() < HEADER_LEN + MAX_PAYLOAD + TRAILER_LEN);
        }
    }

    /// Linear congruential generator: deterministic pseudo-random bytes
    /// without a new dependency.
    struct Lcg(u64);

    impl Lcg {
        fn next(&mut self) -> u8 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (self.0 >> 33) as u8
        }

        /// Random bytes with plenty of start bytes and plausible headers.
        fn bytes(&mut self, n: usize) -> Vec<u8> {
            (0..n)
                .map(|_| match self.next() % 8 {
                    0 => START,
                    1 => END,
                    2 => self.next() % 3,
                    _ => self.next(),
                })
                .collect()
        }
    }

    #[test]
    fn random_input_never_panics_and_the_embedded_frame_is_found() {
        let mut rng = Lcg(0x5EED);
        for round in 0..300 {
            let n_before = usize::from(rng.next());
            let before = rng.bytes(n_before);
            // Trailing garbage longer than a maximal frame, so any noise
            // `BB` before the real frame is resolved by the end of input.
            let after = rng.bytes(1100);
            let mut input = before;
            input.extend_from_slice(SAMPLE);
            input.extend_from_slice(&after);

            let mut d = M100Decoder::new();
            let mut out = Vec::new();
            let mut i = 0;
            while i < input.len() {
                let n = usize::from(rng.next() % 40) + 1;
                let end = (i + n).min(input.len());
                out.extend(d.feed(&input[i..end], now()));
                i = end;
            }
            let found = reads(&out);
            assert!(
                found.iter().any(|r| r.epc == SAMPLE_EPC),
                "round {round}: frame not found"
            );
            // Every input byte is accounted for: read, quarantined, ignored
            // as a valid frame, or still buffered.
            let bad_bytes: usize = bads(&out).iter().map(|(_, raw)| raw.len()).sum();
            assert!(bad_bytes + d.buf.len() <= input.len());
        }
    }

    #[test]
    fn pure_noise_never_panics() {
        let mut rng = Lcg(42);
        let mut d = M100Decoder::new();
        for _ in 0..2000 {
            let n = usize::from(rng.next());
            let chunk: Vec<u8> = (0..n).map(|_| rng.next()).collect();
            d.feed(&chunk, now());
            assert!(d.buf.len() < HEADER_LEN + MAX_PAYLOAD + TRAILER_LEN);
        }
    }
}
