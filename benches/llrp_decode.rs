//! LLRP RO_ACCESS_REPORTs decoded per second (issue 17's figure): the
//! splitter, the TLV/TV walk and the conversion to tag reads, over a
//! stream of reports captured from llrpkit's emulator (one tag each, as
//! `report_every_n_tags = 1` makes readers send) and over reports of 50
//! tags each: `cargo bench --bench llrp_decode`.

use std::time::Instant;

use storegate::codecs::llrp::{ReaderMessage, Splitter, decode, tag_reads};

/// The captured frame `name` (src/codecs/llrp/testdata/capture.hex).
fn captured(name: &str) -> Vec<u8> {
    let text = include_str!("../src/codecs/llrp/testdata/capture.hex");
    let hex = text
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no frame {name}"));
    hex::decode(hex).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// One RO_ACCESS_REPORT holding the TagReportData of `one` `n` times.
fn report_of(one: &[u8], n: usize) -> Vec<u8> {
    let trd = &one[10..];
    let len = 10 + trd.len() * n;
    let mut m = one[..2].to_vec();
    m.extend_from_slice(&(len as u32).to_be_bytes());
    m.extend_from_slice(&0u32.to_be_bytes());
    for _ in 0..n {
        m.extend_from_slice(trd);
    }
    m
}

fn main() {
    // `cargo test --all-targets` runs this too, without `--bench`: then a
    // short pass only checks that every report decodes.
    let benching = std::env::args().any(|a| a == "--bench");
    let reports = if benching { 200_000 } else { 100 };
    let single = captured("report_epc96");
    let epcdata = captured("report_epcdata");
    let now = chrono::Utc::now();
    for (label, tags_per_report, frame) in [
        ("EPC-96, 1 tag/report", 1, single.clone()),
        ("EPCData 128-bit, 1 tag/report", 1, epcdata),
        ("EPC-96, 50 tags/report", 50, report_of(&single, 50)),
    ] {
        let count = (reports / tags_per_report).max(1);
        let stream: Vec<u8> = frame
            .iter()
            .copied()
            .cycle()
            .take(frame.len() * count)
            .collect();
        let mut best = f64::MAX;
        for _ in 0..3 {
            let started = Instant::now();
            let mut splitter = Splitter::new();
            let (mut decoded, mut reads) = (0usize, 0usize);
            // 16 KiB reads, as the transport does.
            for chunk in stream.chunks(16 * 1024) {
                splitter.push(chunk);
                while let Ok(Some(f)) = splitter.next_frame() {
                    if let Ok(ReaderMessage::Report(tags)) = decode(&f) {
                        decoded += 1;
                        reads += tag_reads(&tags, now).len();
                    }
                }
            }
            assert_eq!(decoded, count, "every report decodes");
            assert_eq!(reads, count * tags_per_report, "every tag is a read");
            best = best.min(started.elapsed().as_secs_f64());
        }
        println!(
            "llrp {label}: {:.0} reports/s, {:.0} tag reads/s ({count} reports, best of 3)",
            count as f64 / best,
            (count * tags_per_report) as f64 / best
        );
    }
}
