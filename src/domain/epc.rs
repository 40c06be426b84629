//! What one line of a handheld sled's export is: a serialised trade item
//! (SGTIN-96, SGTIN-198 or a GS1 Digital Link URI with GTIN and serial),
//! some other tag (an SSCC, a GRAI, a blank tag), or not an EPC at all.
//!
//! A trade item is identified by GTIN-14 and serial whichever way it was
//! written, so the same tag read as hex by one sled and as a Digital Link
//! by another counts once.

use super::sgtin::{self, SgtinError, normalize_gtin};

/// The SGTIN-198 header byte.
const SGTIN198_HEADER: u8 = 0x36;

/// The SGTIN-96 header byte (decoded by [`sgtin::decode_sgtin96`]).
const SGTIN96_HEADER: u8 = 0x30;

/// Longest serial GS1 allows (AI 21, and the 20 characters of SGTIN-198).
const MAX_SERIAL_CHARS: usize = 20;

/// Longest line considered at all; anything longer is malformed.
pub const MAX_LINE_LEN: usize = 256;

/// What a sled line is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SledTag {
    /// A serialised trade item: counts towards its GTIN's SKU.
    Product { gtin: String, serial: String },
    /// A well-formed EPC of another kind (logistic unit, asset, a tag never
    /// encoded), in upper-case hex; `kind` names it for the report.
    NonProduct { epc: String, kind: &'static str },
    /// Not an EPC: `reason` says why, for the report.
    Malformed { reason: String },
}

impl SledTag {
    /// The key under which a session keeps this tag, so that a repeat of
    /// the same item (however encoded) or of the same line is one entry.
    pub fn key(&self, line: &str) -> String {
        match self {
            SledTag::Product { gtin, serial } => format!("{gtin}/{serial}"),
            SledTag::NonProduct { epc, .. } => epc.clone(),
            SledTag::Malformed { .. } => shorten(line.trim()).to_string(),
        }
    }
}

/// `text` cut to at most 64 bytes on a character boundary, so that a
/// report or a stored key never carries a whole garbage line.
pub fn shorten(text: &str) -> &str {
    let mut end = text.len().min(64);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Classify one line of a sled export (surrounding whitespace ignored).
pub fn classify(line: &str) -> SledTag {
    let text = line.trim();
    let malformed = |reason: String| SledTag::Malformed { reason };
    if text.is_empty() {
        return malformed("empty line".into());
    }
    if text.len() > MAX_LINE_LEN {
        return malformed(format!("longer than {MAX_LINE_LEN} bytes"));
    }
    if text.starts_with("http://") || text.starts_with("https://") {
        return match digital_link(text) {
            Ok(Some((gtin, serial))) => SledTag::Product { gtin, serial },
            Ok(None) => SledTag::NonProduct {
                epc: text.to_string(),
                kind: "Digital Link without GTIN and serial",
            },
            Err(reason) => malformed(reason),
        };
    }
    if !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return malformed("neither hex nor a Digital Link URI".into());
    }
    // EPC memory is read in 16-bit words.
    if text.len() % 4 != 0 {
        return malformed(format!(
            "{} hex digits is not a whole number of 16-bit words",
            text.len()
        ));
    }
    let epc = text.to_ascii_uppercase();
    let header = u8::from_str_radix(&epc[..2], 16).unwrap_or_default();
    match header {
        SGTIN96_HEADER if epc.len() == 24 => match sgtin::decode_sgtin96(&epc) {
            Ok(s) => SledTag::Product {
                gtin: s.gtin,
                serial: s.serial.to_string(),
            },
            Err(e) => malformed(format!("invalid SGTIN-96: {e}")),
        },
        SGTIN198_HEADER if matches!(epc.len(), 52 | 56) => match decode_sgtin198(&epc) {
            Ok((gtin, serial)) => SledTag::Product { gtin, serial },
            Err(e) => malformed(format!("invalid SGTIN-198: {e}")),
        },
        SGTIN96_HEADER | SGTIN198_HEADER => malformed(format!(
            "header 0x{header:02X} is an SGTIN but {} hex digits is the wrong length",
            epc.len()
        )),
        _ => SledTag::NonProduct {
            kind: kind_of(header),
            epc,
        },
    }
}

/// A name for a non-product EPC header (TDS table 14-1), for the report.
fn kind_of(header: u8) -> &'static str {
    match header {
        0x00 => "unprogrammed",
        0x31 | 0x39 => "SSCC",
        0x32 | 0x3A => "SGLN",
        0x33 | 0x37 => "GRAI",
        0x34 | 0x38 => "GIAI",
        0x35 | 0x3D => "GID",
        0x2C..=0x2F | 0x3B..=0x3C | 0x3E..=0x3F => "other GS1 EPC",
        _ => "not a GS1 EPC",
    }
}

/// Decode an SGTIN-198 EPC: the SGTIN-96 layout (header 0x36, filter,
/// partition, company prefix and item reference) with a serial of up to
/// 20 7-bit characters instead of 38 bits. Readers send the EPC bank in
/// 16-bit words, so 198 bits arrive as 208 (52 hex digits; 56 with a
/// padding word); the bits past 198 must be zero.
pub fn decode_sgtin198(epc_hex: &str) -> Result<(String, String), SgtinError> {
    let text = epc_hex.trim();
    if !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(SgtinError::NotHex {
            text: text.to_string(),
        });
    }
    if !matches!(text.len(), 52 | 56) {
        return Err(SgtinError::WrongLength { len: text.len() });
    }
    let bits: Vec<bool> = text
        .bytes()
        .flat_map(|b| {
            let v = (b as char).to_digit(16).unwrap_or_default();
            (0..4).rev().map(move |i| v >> i & 1 == 1)
        })
        .collect();
    let header = field(&bits, 0, 8) as u8;
    if header != SGTIN198_HEADER {
        return Err(SgtinError::NotSgtin96 { header });
    }
    // The first 58 bits are laid out as in SGTIN-96: decode them with the
    // same code by framing them as an SGTIN-96 with serial 0.
    let head = field(&bits, 8, 50);
    let as96 = (u128::from(SGTIN96_HEADER) << 88) | (u128::from(head) << 38);
    let gtin = sgtin::decode_sgtin96(&format!("{as96:024X}"))?.gtin;

    let mut serial = String::new();
    let mut ended = false;
    for i in 0..MAX_SERIAL_CHARS {
        let c = field(&bits, 58 + 7 * i, 7) as u8;
        if c == 0 {
            ended = true;
        } else if ended || !is_serial_char(c) {
            return Err(SgtinError::BadGtin {
                gtin: format!("{gtin} with serial character 0x{c:02X} at {}", i + 1),
            });
        }
        if !ended {
            serial.push(char::from(c));
        }
    }
    if bits[198..].iter().any(|&b| b) || serial.is_empty() {
        return Err(SgtinError::BadGtin {
            gtin: format!("{gtin} with an empty serial or bits set past bit 198"),
        });
    }
    Ok((gtin, serial))
}

/// Encode a GTIN with the given partition, filter and serial (1 to 20
/// GS1 characters) as an SGTIN-198 EPC in upper-case hex, padded to 208
/// bits as a reader reports it. Used by simulators and tests.
pub fn encode_sgtin198(
    gtin: &str,
    partition: u8,
    filter: u8,
    serial: &str,
) -> Result<String, SgtinError> {
    let bad_serial = || SgtinError::BadGtin {
        gtin: format!("{gtin} with serial {serial:?}"),
    };
    if serial.is_empty() || serial.len() > MAX_SERIAL_CHARS || !serial.bytes().all(is_serial_char) {
        return Err(bad_serial());
    }
    // The 58 bits before the serial are those of the SGTIN-96 encoding.
    let as96 = u128::from_str_radix(&sgtin::encode_sgtin96(gtin, partition, filter, 0)?, 16)
        .map_err(|_| bad_serial())?;
    let head = (as96 >> 38) & ((1 << 50) - 1);
    let mut bits = format!("{SGTIN198_HEADER:08b}{head:050b}");
    for c in serial.bytes() {
        bits += &format!("{c:07b}");
    }
    bits.extend(std::iter::repeat_n('0', 208 - bits.len()));
    Ok(bits
        .as_bytes()
        .chunks(4)
        .map(|nibble| {
            let v = nibble
                .iter()
                .fold(0u32, |acc, b| (acc << 1) | u32::from(b - b'0'));
            char::from_digit(v, 16).unwrap_or('0').to_ascii_uppercase()
        })
        .collect())
}

/// `len` bits from `at` as a number (len at most 64).
fn field(bits: &[bool], at: usize, len: usize) -> u64 {
    bits[at..at + len]
        .iter()
        .fold(0, |acc, &b| (acc << 1) | u64::from(b))
}

/// A character of GS1 AI encodable character set 82, the only ones a
/// GS1 serial may hold.
fn is_serial_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"!\"%&'()*+,-./:;<=>?_".contains(&c)
}

/// GTIN-14 and serial of a GS1 Digital Link URI
/// (`https://id.gs1.org/01/09506000134352/21/ABC`, or any domain and path
/// prefix before `/01/`); `Ok(None)` for a URI that names no serialised
/// trade item (no `01` with a `21` after it).
pub fn digital_link(uri: &str) -> Result<Option<(String, String)>, String> {
    let rest = uri.split_once("://").map_or(uri, |(_, r)| r);
    let path = rest.split(['?', '#']).next().unwrap_or_default();
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    let Some(at) = segments.iter().position(|s| *s == "01") else {
        return Ok(None);
    };
    let gtin_text = segments.get(at + 1).copied().unwrap_or_default();
    let gtin = normalize_gtin(gtin_text).ok_or_else(|| {
        format!(
            "Digital Link GTIN {:?} is not a valid GTIN",
            shorten(gtin_text)
        )
    })?;
    // After the GTIN come key qualifiers as AI/value pairs: 22, 10, 21.
    let mut pairs = segments[at + 2..].chunks(2);
    let Some(raw) = pairs.find(|p| p[0] == "21").and_then(|p| p.get(1)) else {
        return Ok(None);
    };
    let serial =
        percent_decode(raw).ok_or_else(|| "Digital Link serial has a bad %-escape".to_string())?;
    if serial.is_empty() || serial.len() > MAX_SERIAL_CHARS || !serial.bytes().all(is_serial_char) {
        return Err(format!(
            "Digital Link serial {:?} is not 1 to 20 GS1 characters",
            shorten(&serial)
        ));
    }
    Ok(Some((gtin, serial)))
}

/// `%XX` escapes decoded; `None` for a broken escape or a result that is
/// not UTF-8.
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn product(gtin: &str, serial: &str) -> SledTag {
        SledTag::Product {
            gtin: gtin.into(),
            serial: serial.into(),
        }
    }

    /// An SGTIN-198 built bit by bit from TDS table 14-3, independent of
    /// the decoder's arithmetic: header, filter, partition, prefix, item
    /// reference, 7-bit characters, zero padding to 208 bits.
    fn sgtin198(
        filter: u8,
        partition: u8,
        cp: (u64, usize),
        ir: (u64, usize),
        serial: &str,
    ) -> String {
        let mut bits = format!("{:08b}{:03b}{:03b}", 0x36, filter, partition);
        bits += &format!("{:0w$b}", cp.0, w = cp.1);
        bits += &format!("{:0w$b}", ir.0, w = ir.1);
        for c in serial.bytes() {
            bits += &format!("{c:07b}");
        }
        while bits.len() < 208 {
            bits.push('0');
        }
        bits.as_bytes()
            .chunks(4)
            .map(|n| {
                format!(
                    "{:X}",
                    u8::from_str_radix(std::str::from_utf8(n).unwrap(), 2).unwrap()
                )
            })
            .collect()
    }

    #[test]
    fn sgtin96_tds_example_is_a_product() {
        // TDS 14.5.1's example: urn:epc:id:sgtin:0614141.812345.6789.
        assert_eq!(
            classify(" 3074257bf7194e4000001a85\r"),
            product("80614141123458", "6789")
        );
    }

    #[test]
    fn sgtin198_tds_example_decodes() {
        // urn:epc:tag:sgtin-198:3.0614141.812345.mytest, the company and
        // item of TDS's SGTIN examples (partition 5: 24-bit prefix, 20-bit
        // item reference); its first 56 bits match the SGTIN-96 example's
        // but for the header.
        let hex = sgtin198(3, 5, (614141, 24), (812345, 20), "mytest");
        assert_eq!(hex.len(), 52);
        assert!(hex.starts_with("3674257BF7194E"), "{hex}");
        assert_eq!(
            encode_sgtin198("80614141123458", 5, 3, "mytest").unwrap(),
            hex
        );
        assert_eq!(classify(&hex), product("80614141123458", "mytest"));
        // The same item as SGTIN-96 has serial 6789; as SGTIN-198 "6789" it
        // is the same tag identity.
        let as198 = sgtin198(1, 5, (614141, 24), (812345, 20), "6789");
        assert_eq!(
            classify(&as198).key(&as198),
            classify("3074257BF7194E4000001A85").key("")
        );
        // A padding word after the 208 bits is accepted.
        assert_eq!(
            classify(&format!("{hex}0000")),
            product("80614141123458", "mytest")
        );
    }

    #[test]
    fn sgtin198_rejects_bad_serials() {
        let nul_inside = sgtin198(3, 5, (614141, 24), (812345, 20), "ab\0cd");
        assert!(matches!(classify(&nul_inside), SledTag::Malformed { .. }));
        let empty = sgtin198(3, 5, (614141, 24), (812345, 20), "");
        assert!(matches!(classify(&empty), SledTag::Malformed { .. }));
        let space = sgtin198(3, 5, (614141, 24), (812345, 20), "a b");
        assert!(matches!(classify(&space), SledTag::Malformed { .. }));
        let short = &sgtin198(3, 5, (614141, 24), (812345, 20), "x")[..48];
        assert!(matches!(classify(short), SledTag::Malformed { .. }));
    }

    #[test]
    fn digital_links_name_gtin_and_serial() {
        // GS1 Digital Link standard's examples.
        assert_eq!(
            classify("https://id.gs1.org/01/09506000134352/21/ABC"),
            product("09506000134352", "ABC")
        );
        assert_eq!(
            classify("https://example.com/shop/01/09506000134352/10/LOT1/21/A%2FB?x=1"),
            product("09506000134352", "A/B")
        );
        // A GTIN-13 in the URI is the same item as its GTIN-14.
        assert_eq!(
            classify("http://id.gs1.org/01/9506000134352/21/12"),
            product("09506000134352", "12")
        );
        assert!(matches!(
            classify("https://id.gs1.org/01/09506000134352"),
            SledTag::NonProduct { .. }
        ));
        assert!(matches!(
            classify("https://id.gs1.org/00/106141412345678908"),
            SledTag::NonProduct { .. }
        ));
        for bad in [
            "https://id.gs1.org/01/09506000134353/21/ABC",
            "https://id.gs1.org/01/09506000134352/21/",
            "https://id.gs1.org/01/09506000134352/21/A%2",
            "https://id.gs1.org/01/09506000134352/21/ABCDEFGHIJKLMNOPQRSTU",
        ] {
            assert!(matches!(classify(bad), SledTag::Malformed { .. }), "{bad}");
        }
    }

    #[test]
    fn other_tags_and_garbage_are_told_apart() {
        // SSCC-96 and GRAI-96 headers, a blank tag and a chip maker's TID-like value.
        for (hex, kind) in [
            ("3174257BF4499602D2000000", "SSCC"),
            ("33742578F6C0C0001A85BAE2", "GRAI"),
            ("000000000000000000000000", "unprogrammed"),
            ("E2801160600002054CC2096F", "not a GS1 EPC"),
        ] {
            assert_eq!(
                classify(&hex.to_lowercase()),
                SledTag::NonProduct {
                    epc: hex.into(),
                    kind
                }
            );
        }
        for bad in [
            "",
            "  ",
            "xyz",
            "3074257BF7194E4000001A8",
            "30AB",
            "3074257BF7194E40000",
            "EPC;12",
        ] {
            assert!(
                matches!(classify(bad), SledTag::Malformed { .. }),
                "{bad:?}"
            );
        }
        // SGTIN-96 header with partition 7: invalid per TDS.
        assert!(matches!(
            classify("307C257BF7194E4000001A85"),
            SledTag::Malformed { .. }
        ));
        let long = "A".repeat(300);
        assert!(matches!(classify(&long), SledTag::Malformed { .. }));
        assert_eq!(
            SledTag::Malformed {
                reason: String::new()
            }
            .key(&long)
            .len(),
            64
        );
    }

    #[test]
    fn shorten_keeps_characters_whole() {
        let text = "é".repeat(40);
        assert_eq!(shorten(&text).len(), 64);
        assert_eq!(shorten("abc"), "abc");
    }
}
