//! ESC/POS stripping: a byte-level state machine that keeps the printed
//! text and the paper cuts of a receipt printer's input and drops every
//! printer command, including the binary data of images and barcodes.
//! Its state survives between calls, so input may be split anywhere.

use super::receipt::MAX_RECEIPT_BYTES;

/// Most data bytes a single ESC/POS command may declare. A larger length
/// can only come from corrupted input; honouring it would swallow the text
/// after it, so the command is dropped and text resumes instead.
const MAX_COMMAND_DATA: usize = MAX_RECEIPT_BYTES;
/// Longest NUL-terminated barcode (`GS k m d... NUL`) we skip before
/// deciding the NUL was lost.
const MAX_BARCODE_DATA: usize = 255;
/// Longest `ESC D` tab list (32 positions and the NUL).
const MAX_TAB_LIST: usize = 33;

pub(super) const LF: u8 = 0x0A;
const HT: u8 = 0x09;
pub(super) const ESC: u8 = 0x1B;
const FS: u8 = 0x1C;
pub(super) const GS: u8 = 0x1D;

/// What one input byte amounts to once printer commands are removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stripped {
    /// Part of a command, or a control character: nothing printed.
    Nothing,
    /// A printable byte, or LF.
    Text(u8),
    /// A paper cut completed with this byte.
    Cut,
}

/// A fixed-size command header whose bytes give the length of the data
/// that follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Header {
    /// `ESC * m nL nH` bit image.
    EscBitImage,
    /// `GS v 0 m xL xH yL yH` (and `GS Q 0 ...`) raster image.
    Raster,
    /// `ESC (`, `GS (` and `FS (` commands: `fn pL pH` then data.
    Paren,
    /// `GS 8 L p1 p2 p3 p4` graphics data, 32-bit length.
    Graphics32,
    /// `GS * x y` downloaded bit image of `x * y * 8` bytes.
    GsDefineImage,
}

impl Header {
    fn len(self) -> usize {
        match self {
            Header::EscBitImage | Header::Paren => 3,
            Header::Raster => 6,
            Header::Graphics32 => 5,
            Header::GsDefineImage => 2,
        }
    }

    /// Data bytes that follow the complete header `h`.
    fn data_len(self, h: &[u8; 6]) -> usize {
        let word = |lo: u8, hi: u8| usize::from(lo) + usize::from(hi) * 256;
        match self {
            Header::EscBitImage => {
                // Modes 32 and 33 are 24-dot images: 3 bytes per column.
                let per_column = if h[0] >= 32 { 3 } else { 1 };
                word(h[1], h[2]) * per_column
            }
            Header::Raster => word(h[2], h[3]) * word(h[4], h[5]),
            Header::Paren => word(h[1], h[2]),
            Header::Graphics32 => u32::from_le_bytes([h[1], h[2], h[3], h[4]])
                .try_into()
                .unwrap_or(usize::MAX),
            Header::GsDefineImage => usize::from(h[0]) * usize::from(h[1]) * 8,
        }
    }
}

/// Where the stripper is within a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum State {
    #[default]
    Text,
    /// After ESC, GS or FS: the command byte is next.
    Esc,
    Gs,
    Fs,
    /// Skip this many more argument or data bytes.
    Skip(usize),
    /// `GS V m`: the cut mode byte is next.
    CutMode,
    /// `GS V m n`: the cut happens after this last byte.
    CutArg,
    /// `GS k`: the barcode system byte `m` is next.
    BarcodeSystem,
    /// Skip up to and including a NUL, giving up after this many bytes.
    UntilNul(usize),
    /// `GS k m n` (m 65 and up): the data length byte is next.
    BarcodeLen,
    /// Collecting a length-giving header.
    Header {
        kind: Header,
        got: usize,
        bytes: [u8; 6],
    },
}

/// Byte-level ESC/POS state machine: feeds printable text through and
/// drops printer commands, including the binary data of images and
/// barcodes (which may contain LF or ESC bytes that are not text).
#[derive(Debug, Clone, Default)]
pub(super) struct Stripper {
    state: State,
}

impl Stripper {
    pub(super) fn push(&mut self, b: u8) -> Stripped {
        let (next, out) = match self.state {
            State::Text => match b {
                ESC => (State::Esc, Stripped::Nothing),
                GS => (State::Gs, Stripped::Nothing),
                FS => (State::Fs, Stripped::Nothing),
                LF => (State::Text, Stripped::Text(LF)),
                // Columns are often aligned with tabs (ESC D); keep the gap.
                HT => (State::Text, Stripped::Text(b' ')),
                // CR, and every other C0 control, prints nothing.
                0x00..=0x1F => (State::Text, Stripped::Nothing),
                _ => (State::Text, Stripped::Text(b)),
            },
            // ESC i / ESC m: the older full and partial cut commands.
            State::Esc if matches!(b, b'i' | b'm') => (State::Text, Stripped::Cut),
            State::Esc => (after_esc(b), Stripped::Nothing),
            State::Gs => (after_gs(b), Stripped::Nothing),
            State::Fs => (after_fs(b), Stripped::Nothing),
            State::Skip(n) => (skip(n.saturating_sub(1)), Stripped::Nothing),
            State::CutMode => match b {
                // Modes that take one more byte (feed amount / position).
                65 | 66 | 97 | 98 | 103 | 104 => (State::CutArg, Stripped::Nothing),
                _ => (State::Text, Stripped::Cut),
            },
            State::CutArg => (State::Text, Stripped::Cut),
            State::BarcodeSystem => match b {
                0..=6 => (State::UntilNul(MAX_BARCODE_DATA), Stripped::Nothing),
                65..=79 => (State::BarcodeLen, Stripped::Nothing),
                _ => (State::Text, Stripped::Nothing),
            },
            State::UntilNul(left) => {
                if b == 0 || left <= 1 {
                    (State::Text, Stripped::Nothing)
                } else {
                    (State::UntilNul(left - 1), Stripped::Nothing)
                }
            }
            State::BarcodeLen => (skip(usize::from(b)), Stripped::Nothing),
            State::Header {
                kind,
                got,
                mut bytes,
            } => {
                if let Some(slot) = bytes.get_mut(got) {
                    *slot = b;
                }
                let got = got + 1;
                if got < kind.len() {
                    (State::Header { kind, got, bytes }, Stripped::Nothing)
                } else {
                    let n = kind.data_len(&bytes);
                    let next = if n > MAX_COMMAND_DATA {
                        State::Text
                    } else {
                        skip(n)
                    };
                    (next, Stripped::Nothing)
                }
            }
        };
        self.state = next;
        out
    }
}

/// Skip `n` more bytes (none: back to text).
fn skip(n: usize) -> State {
    if n == 0 { State::Text } else { State::Skip(n) }
}

fn header(kind: Header) -> State {
    State::Header {
        kind,
        got: 0,
        bytes: [0; 6],
    }
}

/// The state after `ESC b`. Unknown commands drop ESC and `b`.
fn after_esc(b: u8) -> State {
    match b {
        b'@' | b'2' | b'<' | b'L' | b'S' | 0x0C => State::Text,
        b'E' | b'a' | b'd' | b'!' | b't' | b'-' | b'M' | b'J' | b'3' | b'G' | b'R' | b'V'
        | b'r' | b' ' | b'{' | b'=' | b'%' | b'?' | b'U' | b'e' | b'T' => State::Skip(1),
        b'$' | b'\\' | b'c' => State::Skip(2),
        b'p' => State::Skip(3),
        b'W' => State::Skip(8),
        b'D' => State::UntilNul(MAX_TAB_LIST),
        b'*' => header(Header::EscBitImage),
        b'(' => header(Header::Paren),
        _ => State::Text,
    }
}

/// The state after `GS b`. Unknown commands drop GS and `b`.
fn after_gs(b: u8) -> State {
    match b {
        b'V' => State::CutMode,
        b'k' => State::BarcodeSystem,
        b'v' | b'Q' => header(Header::Raster),
        b'(' => header(Header::Paren),
        b'8' => header(Header::Graphics32),
        b'*' => header(Header::GsDefineImage),
        b'!' | b'h' | b'w' | b'f' | b'H' | b'B' | b'b' | b'a' | b'r' | b'I' | b'/' | b'E'
        | b'T' => State::Skip(1),
        b'L' | b'W' | b'P' | b'$' | b'\\' => State::Skip(2),
        b'^' => State::Skip(3),
        b'g' => State::Skip(4),
        _ => State::Text,
    }
}

/// The state after `FS b` (kanji and NV image commands). Unknown commands
/// drop FS and `b`.
fn after_fs(b: u8) -> State {
    match b {
        b'(' => header(Header::Paren),
        b'!' | b'-' | b'C' | b'W' => State::Skip(1),
        b'p' | b'S' => State::Skip(2),
        _ => State::Text,
    }
}
