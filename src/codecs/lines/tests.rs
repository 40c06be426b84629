use chrono::{DateTime, TimeZone, Utc};
use serde::Deserialize;

use super::escpos::{ESC, GS, LF, Stripped, Stripper};
use super::receipt::MAX_RECEIPT_BYTES;
use super::text::decode;
use super::*;
use crate::codecs::Decoded;
use crate::event::{EventBody, SaleLine};

/// A copy of `samples/escpos-receipt.bin` (shared device samples), kept
/// inline so the tests do not depend on a path outside the repository.
const SAMPLE: &[u8] = b"\x1bE\x01\x1ba\x01\x1bt\x00STORE 0042\n\x1bE\x00\x1ba\x00\
RECEIPT 000123  POS 1\n\
SKU-1001 Oat milk 1L      2 x 2.49   4.98\n\
SKU-1002 Rye bread        1 x 3.10   3.10\n\
TOTAL 8.08\n\
\x1ba\x01\x1dh@\x1dw\x03\x1df\x00\x1dH\x02\x1dk\x024006381333931\x00\x1bd\x06\x1dV\x00";

/// The `[lines]` table of the spec, verbatim.
const SPEC_PROFILE: &str = r#"
[lines]
strip_escpos = true
encoding = "utf-8"
currency = "EUR"
decimal_separator = "."
receipt_start = '^RECEIPT\s+(?P<receipt_id>\S+)'
item = '^(?P<sku>[A-Z0-9-]+)\s+.*?\s(?P<qty>-?\d+)\s*[xX]\s*(?P<unit_price>\d+[.,]\d{2})\s+-?\d+[.,]\d{2}$'
total = '^TOTAL\s+(?P<total>-?\d+[.,]\d{2})$'
receipt_end = "cut"            # "cut" (GS V), or a regex
"#;

#[derive(Deserialize)]
struct Profile {
    lines: LinesParams,
}

fn spec_params() -> LinesParams {
    toml::from_str::<Profile>(SPEC_PROFILE).unwrap().lines
}

fn decoder() -> LinesDecoder {
    LinesDecoder::new(spec_params().compile().unwrap(), "pos-1")
}

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 22, 10, 15, 30).unwrap()
}

fn sale(receipt_id: &str, line: u32, sku: &str, qty: i64, price: i64) -> SaleLine {
    SaleLine {
        receipt_id: receipt_id.to_string(),
        line,
        sku: sku.to_string(),
        gtin: None,
        qty,
        unit_price_minor: price,
        currency: "EUR".to_string(),
        pos: "pos-1".to_string(),
        member_hash: None,
    }
}

fn sample_events() -> Vec<Decoded> {
    vec![Decoded::Events(vec![
        (
            now(),
            EventBody::Sale(sale("000123", 1, "SKU-1001", 2, 249)),
        ),
        (
            now(),
            EventBody::Sale(sale("000123", 2, "SKU-1002", 1, 310)),
        ),
    ])]
}

/// Feed `input` through the stripper alone: the text and the number
/// of cuts.
fn strip(input: &[u8]) -> (String, usize) {
    let mut s = Stripper::default();
    let mut text = Vec::new();
    let mut cuts = 0;
    for &b in input {
        match s.push(b) {
            Stripped::Text(c) => text.push(c),
            Stripped::Cut => cuts += 1,
            Stripped::Nothing => {}
        }
    }
    (String::from_utf8_lossy(&text).into_owned(), cuts)
}

/// Every Bad in `out`.
fn bads(out: &[Decoded]) -> Vec<(String, Vec<u8>)> {
    out.iter()
        .filter_map(|d| match d {
            Decoded::Bad { reason, raw } => Some((reason.clone(), raw.clone())),
            _ => None,
        })
        .collect()
}

/// The receipt ids of every Events in `out`, one per receipt.
fn receipt_ids(out: &[Decoded]) -> Vec<String> {
    out.iter()
        .filter_map(|d| match d {
            Decoded::Events(ev) => match ev.first().map(|(_, b)| b) {
                Some(EventBody::Sale(l)) | Some(EventBody::Return(l)) => Some(l.receipt_id.clone()),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

/// A receipt in the sample's layout with the given item lines and
/// total, ended by a cut.
fn receipt(id: &str, items: &[&str], total: &str) -> Vec<u8> {
    let mut out = format!("\x1b@RECEIPT {id}\n").into_bytes();
    for item in items {
        out.extend_from_slice(item.as_bytes());
        out.push(b'\n');
    }
    out.extend_from_slice(format!("TOTAL {total}\n\x1bd\x03\x1dV\x42\x0a").as_bytes());
    out
}

#[test]
fn inline_sample_matches_the_shared_file_when_present() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shared/samples/escpos-receipt.bin"
    );
    if let Ok(bytes) = std::fs::read(path) {
        assert_eq!(bytes, SAMPLE);
    }
}

#[test]
fn spec_profile_parses_and_compiles() {
    let p = spec_params();
    assert!(p.strip_escpos);
    assert_eq!(p.encoding, Encoding::Utf8);
    assert_eq!(p.decimal_separator, '.');
    assert_eq!(p.receipt_end, "cut");
    assert!(p.compile().is_ok());
}

#[test]
fn params_defaults_and_unknown_keys() {
    let p: LinesParams =
        toml::from_str(r#"item = '^(?P<sku>\S+)\s+(?P<qty>\d+)\s+(?P<unit_price>\d+\.\d\d)$'"#)
            .unwrap();
    assert!(p.strip_escpos);
    assert_eq!(p.encoding, Encoding::Utf8);
    assert_eq!(p.currency, "EUR");
    assert_eq!(p.decimal_separator, '.');
    assert_eq!(p.receipt_start, None);
    assert_eq!(p.total, None);
    assert_eq!(p.receipt_end, "cut");
    assert!(p.compile().is_ok());

    let p: LinesParams = toml::from_str(
        "item = 'x'\nencoding = \"cp437\"\ndecimal_separator = \",\"\ncurrency = \"DKK\"",
    )
    .unwrap();
    assert_eq!(p.encoding, Encoding::Cp437);
    assert_eq!(p.decimal_separator, ',');
    assert!(toml::from_str::<LinesParams>("item = 'x'\nencoding = \"latin1\"").is_ok());
    assert!(toml::from_str::<LinesParams>("item = 'x'\nencoding = \"ebcdic\"").is_err());
    assert!(toml::from_str::<LinesParams>("item = 'x'\nitems = 'y'").is_err());
    // `item` is required.
    assert!(toml::from_str::<LinesParams>("total = 'x'").is_err());
}

#[test]
fn compile_errors_name_the_key() {
    let base = spec_params();
    let err = |p: LinesParams| p.compile().unwrap_err();

    let mut p = base.clone();
    p.item = "(".to_string();
    assert!(err(p).starts_with("lines.item: bad regex"));

    let mut p = base.clone();
    p.item = r"^(?P<sku>\S+) (?P<qty>\d+)$".to_string();
    assert!(err(p).contains("lines.item: regex needs a named group (?P<unit_price>"));

    let mut p = base.clone();
    p.item = r"^(?P<name>\S+) (?P<qty>\d+) (?P<unit_price>\S+)$".to_string();
    assert!(err(p).contains("(?P<sku>...) or (?P<gtin>...)"));

    let mut p = base.clone();
    p.receipt_start = Some(r"^RECEIPT (?P<id>\S+)".to_string());
    assert!(err(p).starts_with("lines.receipt_start:"));

    let mut p = base.clone();
    p.total = Some(r"^TOTAL (\S+)".to_string());
    assert!(err(p).starts_with("lines.total:"));

    let mut p = base.clone();
    p.receipt_end = "[".to_string();
    assert!(err(p).starts_with("lines.receipt_end: bad regex"));

    let mut p = base.clone();
    p.receipt_end = ".*".to_string();
    assert!(err(p).contains("empty line"));

    let mut p = base.clone();
    p.strip_escpos = false;
    assert!(err(p).starts_with("lines.receipt_end:"));

    let mut p = base.clone();
    p.decimal_separator = ';';
    assert!(err(p).starts_with("lines.decimal_separator:"));

    let mut p = base;
    p.currency = "euro".to_string();
    assert!(err(p).starts_with("lines.currency:"));
}

#[test]
fn stripper_reduces_the_sample_to_text_and_one_cut() {
    let (text, cuts) = strip(SAMPLE);
    assert_eq!(
        text,
        "STORE 0042\nRECEIPT 000123  POS 1\n\
         SKU-1001 Oat milk 1L      2 x 2.49   4.98\n\
         SKU-1002 Rye bread        1 x 3.10   3.10\nTOTAL 8.08\n"
    );
    assert_eq!(cuts, 1);
}

#[test]
fn stripper_skips_arguments_that_look_like_text_or_newlines() {
    // ESC d 10 feeds ten lines: its argument is LF but not a line end.
    // GS V 66 10: partial cut after feeding, the last byte is LF too.
    // ESC D with tab stops 10 and 20; CR dropped; HT becomes a space.
    let input = b"A\x1bd\x0aB\x1bD\x0a\x14\x00C\tD\r\n\x1dV\x42\x0aE\n";
    let (text, cuts) = strip(input);
    assert_eq!(text, "ABC D\nE\n");
    assert_eq!(cuts, 1);
    // Unknown ESC / GS sequences drop two bytes.
    assert_eq!(strip(b"\x1by\x1dyok\n").0, "ok\n");
    // Older ESC i / ESC m cuts count as cuts.
    assert_eq!(strip(b"x\x1bi\x1bm").1, 2);
    // GS V 0 / 1 / 48 / 49 cut at once; the next byte is text.
    assert_eq!(strip(b"\x1dV\x31Z"), ("Z".to_string(), 1));
}

/// GS v 0 raster image whose data is full of LF and ESC bytes.
fn raster() -> Vec<u8> {
    // 3 bytes wide, 4 rows: 12 data bytes.
    let mut out = vec![GS, b'v', b'0', 0, 3, 0, 4, 0];
    out.extend_from_slice(&[LF, ESC, b'@', LF, GS, b'V', 0, LF, b'T', b'O', LF, 0xFF]);
    out
}

/// Barcodes in both forms, a QR code, and an ESC * bit image, all with
/// data that contains LF.
fn barcodes() -> Vec<u8> {
    let mut out = b"\x1dk\x024006381333931\x00".to_vec();
    // CODE128 (m = 73) with n = 6 data bytes, including LF and ESC.
    out.extend_from_slice(&[GS, b'k', 73, 6, b'{', b'B', LF, ESC, b'd', LF]);
    // QR code store: GS ( k pL pH cn fn m d...
    out.extend_from_slice(&[GS, b'(', b'k', 7, 0, 49, 80, 48, LF, b'Q', LF, b'R']);
    // ESC * 33 nL nH: 24-dot image of 2 columns = 6 bytes.
    out.extend_from_slice(&[ESC, b'*', 33, 2, 0, LF, LF, LF, ESC, GS, 0]);
    out
}

#[test]
fn stripper_skips_image_and_barcode_data() {
    let mut input = b"before\n".to_vec();
    input.extend(raster());
    input.extend(barcodes());
    input.extend_from_slice(b"after\n");
    assert_eq!(strip(&input), ("before\nafter\n".to_string(), 0));
}

#[test]
fn stripper_refuses_absurd_lengths() {
    // A raster image claiming 65535 x 65535 bytes is corruption: text
    // resumes right after the header instead of being swallowed.
    let input = [GS, b'v', b'0', 0, 0xFF, 0xFF, 0xFF, 0xFF, b'o', b'k'];
    assert_eq!(strip(&input).0, "ok");
    // A barcode whose NUL was lost is given up after 255 bytes.
    let mut input = vec![GS, b'k', 4];
    input.extend(std::iter::repeat_n(b'A', 300));
    assert_eq!(strip(&input).0, "A".repeat(45));
}

#[test]
fn sample_fed_whole() {
    let mut d = decoder();
    assert_eq!(d.feed(SAMPLE, now()), sample_events());
    assert!(d.flush(now()).is_empty());
}

#[test]
fn sample_fed_byte_by_byte() {
    let mut d = decoder();
    let mut out = Vec::new();
    for b in SAMPLE {
        out.extend(d.feed(&[*b], now()));
    }
    assert_eq!(out, sample_events());
}

#[test]
fn sample_split_at_every_offset() {
    for cut in 0..=SAMPLE.len() {
        let mut d = decoder();
        let mut out = d.feed(&SAMPLE[..cut], now());
        out.extend(d.feed(&SAMPLE[cut..], now()));
        assert_eq!(out, sample_events(), "cut at {cut}");
    }
}

#[test]
fn receipt_with_raster_image_and_barcodes() {
    let mut input = b"\x1b@\x1ba\x01".to_vec();
    input.extend(raster());
    input.extend_from_slice(b"\x1ba\x00RECEIPT 000123\n");
    input.extend_from_slice(b"SKU-1001 Oat milk 1L      2 x 2.49   4.98\n");
    input.extend(raster());
    input.extend_from_slice(b"SKU-1002 Rye bread        1 x 3.10   3.10\n");
    input.extend_from_slice(b"TOTAL 8.08\n");
    input.extend(barcodes());
    input.extend_from_slice(b"\x1dV\x41\x03");
    for cut in [0, 5, 9, 20, input.len() / 2, input.len() - 2, input.len()] {
        let mut d = decoder();
        let mut out = d.feed(&input[..cut], now());
        out.extend(d.feed(&input[cut..], now()));
        assert_eq!(out, sample_events(), "cut at {cut}");
    }
}

#[test]
fn totals_that_do_not_add_up_quarantine_the_receipt() {
    let input = receipt(
        "R-7",
        &[
            "SKU-1001 Oat milk 1L      2 x 2.49   4.98",
            "SKU-1002 Rye bread        1 x 3.09   3.09",
        ],
        "8.08",
    );
    let out = decoder().feed(&input, now());
    assert_eq!(
        out,
        vec![Decoded::Bad {
            reason: "receipt R-7: items add up to 8.07 but the printed total is 8.08".to_string(),
            raw: input,
        }]
    );
}

#[test]
fn a_bad_price_quarantines_the_whole_receipt() {
    // Comma where the profile says '.': not silently misread.
    let input = receipt(
        "R-8",
        &[
            "SKU-1001 Oat milk 1L      2 x 2.49   4.98",
            "SKU-1002 Rye bread        1 x 3,10   3.10",
        ],
        "8.08",
    );
    let out = decoder().feed(&input, now());
    let b = bads(&out);
    assert_eq!(out.len(), 1);
    assert!(b[0].0.starts_with("receipt R-8: item line"), "{}", b[0].0);
    assert!(b[0].0.contains("3,10"), "{}", b[0].0);
    assert_eq!(b[0].1, input);
}

#[test]
fn return_lines() {
    let input = receipt(
        "R-9",
        &[
            "SKU-1001 Oat milk 1L     -1 x 2.49  -2.49",
            "SKU-1002 Rye bread        1 x 3.10   3.10",
        ],
        "0.61",
    );
    let out = decoder().feed(&input, now());
    assert_eq!(
        out,
        vec![Decoded::Events(vec![
            (now(), EventBody::Return(sale("R-9", 1, "SKU-1001", 1, 249))),
            (now(), EventBody::Sale(sale("R-9", 2, "SKU-1002", 1, 310))),
        ])]
    );
}

#[test]
fn negative_unit_price_is_a_return_too() {
    let mut p = spec_params();
    p.item = r"^(?P<sku>\S+)\s+(?P<qty>-?\d+)\s+(?P<unit_price>-?\d+\.\d\d)$".to_string();
    let mut d = LinesDecoder::new(p.compile().unwrap(), "pos-1");
    let out = d.feed(
        b"RECEIPT R-10\nSKU-1 2 -1.50\nTOTAL -3.00\n\x1dV\x00",
        now(),
    );
    assert_eq!(
        out,
        vec![Decoded::Events(vec![(
            now(),
            EventBody::Return(sale("R-10", 1, "SKU-1", 2, 150))
        )])]
    );
}

#[test]
fn zero_quantity_is_refused() {
    let input = receipt("R-11", &["SKU-1 Thing 0 x 1.00   0.00"], "0.00");
    let b = bads(&decoder().feed(&input, now()));
    assert_eq!(b.len(), 1);
    assert!(b[0].0.contains("not usable"), "{}", b[0].0);
}

#[test]
fn without_receipt_start_the_id_is_a_deterministic_hash() {
    let mut p = spec_params();
    p.receipt_start = None;
    let compiled = p.compile().unwrap();
    let run = |device: &str, at: DateTime<Utc>| {
        let mut d = LinesDecoder::new(compiled.clone(), device);
        receipt_ids(&d.feed(SAMPLE, at))
    };
    let first = run("pos-1", now());
    assert_eq!(first.len(), 1);
    assert!(first[0].starts_with("H-"));
    assert_eq!(first[0].len(), 18);
    // The same stream replayed the same day: same id.
    assert_eq!(run("pos-1", now() + chrono::Duration::hours(3)), first);
    // Another till, or another day: another id.
    assert_ne!(run("pos-2", now()), first);
    assert_ne!(run("pos-1", now() + chrono::Duration::days(1)), first);
    // Printer commands around the same text do not change it.
    let (text, _) = strip(SAMPLE);
    let mut d = LinesDecoder::new(compiled.clone(), "pos-1");
    let plain = [text.as_bytes(), b"\x1dV\x00"].concat();
    assert_eq!(receipt_ids(&d.feed(&plain, now())), first);
    // The receipt text itself matters.
    let mut d = LinesDecoder::new(compiled, "pos-1");
    let other = [b"STORE 0043\n".as_slice(), &SAMPLE[20..]].concat();
    assert_ne!(receipt_ids(&d.feed(&other, now())), first);
}

#[test]
fn two_receipts_back_to_back() {
    let first = receipt(
        "R-1",
        &["SKU-1001 Oat milk 1L      2 x 2.49   4.98"],
        "4.98",
    );
    let second = receipt(
        "R-2",
        &["SKU-1002 Rye bread        1 x 3.10   3.10"],
        "3.10",
    );
    let input = [first.clone(), second.clone()].concat();
    let out = decoder().feed(&input, now());
    assert_eq!(
        out,
        vec![
            Decoded::Events(vec![(
                now(),
                EventBody::Sale(sale("R-1", 1, "SKU-1001", 2, 249))
            )]),
            Decoded::Events(vec![(
                now(),
                EventBody::Sale(sale("R-2", 1, "SKU-1002", 1, 310))
            )]),
        ]
    );
    // The raw bytes are split at the cut: a bad second receipt carries
    // exactly its own bytes.
    let bad_second = receipt(
        "R-2",
        &["SKU-1002 Rye bread        1 x 3.10   3.10"],
        "3.11",
    );
    let out = decoder().feed(&[first, bad_second.clone()].concat(), now());
    assert_eq!(
        bads(&out),
        vec![(
            "receipt R-2: items add up to 3.10 but the printed total is 3.11".to_string(),
            bad_second
        )]
    );
}

#[test]
fn receipts_without_items_produce_nothing() {
    let mut d = decoder();
    assert!(
        d.feed(b"\x1b@X-REPORT\nCASH 120.00\n\x1dV\x00", now())
            .is_empty()
    );
    assert!(d.feed(b"\x1dV\x00\x1dV\x01", now()).is_empty());
    assert!(
        d.feed(b"RECEIPT R-5\nTOTAL 0.00\n\x1dV\x00", now())
            .is_empty()
    );
    assert!(d.flush(now()).is_empty());
}

#[test]
fn a_new_receipt_before_the_old_one_ended_quarantines_the_old_one() {
    let unfinished = b"RECEIPT R-1\nSKU-1001 Oat milk 1L      2 x 2.49   4.98\n".to_vec();
    let next = receipt(
        "R-2",
        &["SKU-1002 Rye bread        1 x 3.10   3.10"],
        "3.10",
    );
    let out = decoder().feed(&[unfinished.clone(), next].concat(), now());
    assert_eq!(out.len(), 2);
    let b = bads(&out);
    assert_eq!(b[0].1, unfinished);
    assert!(
        b[0].0.contains("R-1") && b[0].0.contains("R-2"),
        "{}",
        b[0].0
    );
    assert_eq!(receipt_ids(&out), vec!["R-2"]);
}

#[test]
fn a_repeated_receipt_header_is_not_a_new_receipt() {
    let mut input = b"RECEIPT R-3\nSKU-1001 Oat milk 1L      2 x 2.49   4.98\n".to_vec();
    input.extend_from_slice(b"TOTAL 4.98\nRECEIPT R-3\n\x1dV\x00");
    let out = decoder().feed(&input, now());
    assert_eq!(receipt_ids(&out), vec!["R-3"]);
}

#[test]
fn plain_text_journal_with_an_end_line_and_crlf() {
    let mut p = spec_params();
    p.strip_escpos = false;
    p.receipt_end = "^=+$".to_string();
    let mut d = LinesDecoder::new(p.compile().unwrap(), "pos-1");
    let input = "  RECEIPT 000123  \r\n\
                 SKU-1001 Oat milk 1L      2 x 2.49   4.98   \r\n\
                 SKU-1002 Rye bread        1 x 3.10   3.10\r\n\
                 TOTAL 8.08\r\n\
                 ======\r\n";
    assert_eq!(d.feed(input.as_bytes(), now()), sample_events());
}

#[test]
fn gtin_only_items() {
    let mut p = spec_params();
    p.item = r"^(?P<gtin>\d{13})\s+(?P<qty>\d+)\s*x\s*(?P<unit_price>\d+\.\d\d)$".to_string();
    let mut d = LinesDecoder::new(p.compile().unwrap(), "pos-1");
    let out = d.feed(b"RECEIPT R-4\n4006381333931 2 x 1.25\n\x1dV\x00", now());
    let mut line = sale("R-4", 1, "", 2, 125);
    line.gtin = Some("4006381333931".to_string());
    assert_eq!(
        out,
        vec![Decoded::Events(vec![(now(), EventBody::Sale(line))])]
    );
}

#[test]
fn cp437_and_latin1_text() {
    assert_eq!(decode(b"K\x84se \x9c\xe1\xf8", Encoding::Cp437), "Käse £ß°");
    assert_eq!(decode(&[0xC4, 0xFF, 0x80], Encoding::Cp437), "─\u{A0}Ç");
    assert_eq!(
        decode(b"K\xe4se \xa3\xdf\xb0", Encoding::Latin1),
        "Käse £ß°"
    );
    assert_eq!(decode("Käse".as_bytes(), Encoding::Utf8), "Käse");
    assert_eq!(decode(b"K\xe4se", Encoding::Utf8), "K\u{FFFD}se");

    // End to end: the end line only matches when decoded correctly.
    for (encoding, ue) in [(Encoding::Cp437, 0x81u8), (Encoding::Latin1, 0xFC)] {
        let mut p = spec_params();
        p.encoding = encoding;
        p.receipt_end = "^Danke für Ihren Einkauf$".to_string();
        let mut d = LinesDecoder::new(p.compile().unwrap(), "pos-1");
        let mut input = strip(SAMPLE).0.into_bytes();
        input.extend_from_slice(b"Danke f");
        input.push(ue);
        input.extend_from_slice(b"r Ihren Einkauf\n");
        assert_eq!(d.feed(&input, now()), sample_events(), "{encoding:?}");
    }
}

#[test]
fn flush_reads_the_last_line_and_quarantines_an_unfinished_receipt() {
    let mut p = spec_params();
    p.receipt_end = "^TOTAL".to_string();
    let mut d = LinesDecoder::new(p.compile().unwrap(), "pos-1");
    let (text, _) = strip(SAMPLE);
    let unterminated = text.trim_end();
    assert!(d.feed(unterminated.as_bytes(), now()).is_empty());
    assert_eq!(d.flush(now()), sample_events());

    let mut d = decoder();
    let partial = b"RECEIPT R-6\nSKU-1001 Oat milk 1L      2 x 2.49   4.98\n";
    assert!(d.feed(partial, now()).is_empty());
    let out = d.flush(now());
    assert_eq!(bads(&out).len(), 1);
    assert_eq!(bads(&out)[0].1, partial);
}

#[test]
fn an_endless_receipt_is_quarantined_and_the_decoder_recovers() {
    let mut d = decoder();
    let mut input = b"RECEIPT R-1\n".to_vec();
    let item = b"SKU-1001 Oat milk 1L      2 x 2.49   4.98\n";
    while input.len() < MAX_RECEIPT_BYTES + 1000 {
        input.extend_from_slice(item);
    }
    let out = d.feed(&input, now());
    let b = bads(&out);
    assert_eq!(out.len(), 1);
    assert_eq!(b[0].1.len(), MAX_RECEIPT_BYTES);
    assert!(b[0].0.contains("longer than"), "{}", b[0].0);
    // The rest of it up to the cut is quarantined too; the next receipt
    // is read normally.
    let out = d.feed(&[b"\x1dV\x00".as_slice(), SAMPLE].concat(), now());
    assert_eq!(out.len(), 2);
    assert!(matches!(&out[0], Decoded::Bad { .. }));
    assert_eq!(out[1..], sample_events()[..]);
    assert!(d.receipt.raw.len() < MAX_RECEIPT_BYTES);
}

#[test]
fn a_receipt_start_recovers_from_an_endless_receipt() {
    let mut d = decoder();
    let out = d.feed(&vec![b'x'; MAX_RECEIPT_BYTES + 10], now());
    assert_eq!(bads(&out).len(), 1);
    let out = d.feed(&[b"\n".as_slice(), SAMPLE].concat(), now());
    assert_eq!(out.len(), 2, "{out:?}");
    assert!(matches!(&out[0], Decoded::Bad { .. }));
    assert_eq!(out[1..], sample_events()[..]);
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

    /// Bytes biased towards command prefixes, line feeds and text.
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        const PICK: &[u8] = b"\x1b\x1d\x1c\n\r\t\x00 RECEIPT TOTAL SKU-1 2 x 2.49 0123456789";
        (0..n)
            .map(|_| {
                let r = self.next();
                if r % 2 == 0 {
                    PICK[usize::from(self.next()) % PICK.len()]
                } else {
                    self.next()
                }
            })
            .collect()
    }
}

#[test]
fn random_input_never_panics() {
    let mut rng = Lcg(0xC0FFEE);
    for encoding in [Encoding::Utf8, Encoding::Cp437, Encoding::Latin1] {
        let mut p = spec_params();
        p.encoding = encoding;
        let mut d = LinesDecoder::new(p.compile().unwrap(), "pos-1");
        for _ in 0..500 {
            let n = usize::from(rng.next());
            let chunk = rng.bytes(n);
            for out in d.feed(&chunk, now()) {
                if let Decoded::Events(ev) = out {
                    assert!(!ev.is_empty());
                }
            }
            assert!(d.receipt.raw.len() < MAX_RECEIPT_BYTES);
        }
        d.flush(now());
        // After a flush the decoder reads a clean receipt again.
        assert_eq!(d.feed(SAMPLE, now()), sample_events());
    }
}
