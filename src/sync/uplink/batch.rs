//! Payloads for `{p}/{s}/events`: the journal after a seq as batches of
//! the HTTP push's JSON (plus `first_seq` and `last_seq`), each cut so
//! that the payload fits `max_payload_bytes`. A payload is gzip of that
//! JSON when gzip makes it smaller (central tells by the gzip magic
//! bytes). One event that fits in no payload is an error naming its seq:
//! it is never skipped, since everything after it would arrive with a gap.

use std::io::Write as _;

use rusqlite::Connection;

use super::super::push::{covered_by_drops, write_event};
use crate::db::{SqlContext, StoreError};

/// One payload, ready to publish.
#[derive(Debug, Clone, PartialEq)]
pub struct Payload {
    pub first: i64,
    pub last: i64,
    pub count: usize,
    pub gzip: bool,
    pub bytes: Vec<u8>,
}

/// What the journal after a seq gives.
#[derive(Debug, PartialEq)]
pub enum Next {
    Payload(Payload),
    /// Nothing after the seq.
    Empty,
    /// Seqs after the seq are gone and were not dropped by the quota.
    Missing {
        from: i64,
        to: i64,
    },
    /// This event alone is bigger than a payload may be.
    Oversize {
        seq: i64,
        bytes: usize,
    },
}

/// The gzip magic bytes, which start every gzip payload.
pub const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Raw JSON read per try: gzip rarely does better than this ratio on
/// events, so more would only be cut off again.
const RAW_PER_PAYLOAD: usize = 8;

/// The next payload after `after`, at most `max_events` events and
/// `max_bytes` bytes.
pub fn next(
    conn: &Connection,
    store_id: &str,
    after: i64,
    max_events: usize,
    max_bytes: usize,
) -> Result<Next, StoreError> {
    let mut st = conn
        .prepare_cached("SELECT seq, ts_ms, device, kind, data FROM journal WHERE seq > ?1 ORDER BY seq LIMIT ?2")
        .ctx("reading the outbox")?;
    let mut rows = st
        .query(rusqlite::params![after, max_events.max(1) as i64])
        .ctx("reading the outbox")?;
    let mut events: Vec<(i64, String)> = Vec::new();
    let mut skipped = Vec::new();
    let mut expected = after + 1;
    let mut raw = 0usize;
    let budget = max_bytes.saturating_mul(RAW_PER_PAYLOAD);
    while let Some(row) = rows.next().ctx("reading the outbox")? {
        let seq: i64 = row.get(0).ctx("reading the outbox")?;
        if seq != expected {
            if !events.is_empty() {
                break; // a gap ends the batch
            }
            let (from, to) = (expected, seq - 1);
            if !covered_by_drops(conn, from, to)? {
                return Ok(Next::Missing { from, to });
            }
            skipped.push((from, to));
        }
        let ts = crate::event::ts_from_millis(row.get(1).ctx("reading the outbox")?);
        let device: String = row.get(2).ctx("reading the outbox")?;
        let kind: String = row.get(3).ctx("reading the outbox")?;
        let data: String = row.get(4).ctx("reading the outbox")?;
        let mut json = String::with_capacity(data.len() + 96);
        write_event(&mut json, seq, &ts, device, &kind, &data);
        raw += json.len() + 1;
        events.push((seq, json));
        expected = seq + 1;
        if raw > budget {
            break;
        }
    }
    if events.is_empty() {
        return Ok(Next::Empty);
    }
    let mut count = events.len();
    loop {
        let (bytes, gzip) = encode(store_id, &skipped, &events[..count]);
        if bytes.len() <= max_bytes {
            return Ok(Next::Payload(Payload {
                first: events[0].0,
                last: events[count - 1].0,
                count,
                gzip,
                bytes,
            }));
        }
        if count == 1 {
            return Ok(Next::Oversize {
                seq: events[0].0,
                bytes: bytes.len(),
            });
        }
        // Shrink in proportion, with a margin, and at least by one.
        let scaled = (count as u128 * max_bytes as u128 * 9 / 10 / bytes.len() as u128) as usize;
        count = scaled.clamp(1, count - 1);
    }
}

/// The batch document, and gzip of it when that is smaller.
fn encode(store_id: &str, skipped: &[(i64, i64)], events: &[(i64, String)]) -> (Vec<u8>, bool) {
    let first = events.first().map_or(0, |e| e.0);
    let last = events.last().map_or(0, |e| e.0);
    let size: usize = events.iter().map(|e| e.1.len() + 1).sum();
    let mut doc = String::with_capacity(size + 256);
    doc.push_str(&format!(
        "{{\"store_id\":{},\"agent_version\":\"{}\",\"first_seq\":{first},\"last_seq\":{last},\"skipped\":{},\"events\":[",
        serde_json::Value::String(store_id.to_string()),
        crate::VERSION,
        serde_json::to_string(skipped).unwrap_or_else(|_| "[]".into()),
    ));
    for (i, (_, e)) in events.iter().enumerate() {
        if i > 0 {
            doc.push(',');
        }
        doc.push_str(e);
    }
    doc.push_str("]}");
    let mut gz = flate2::write::GzEncoder::new(
        Vec::with_capacity(doc.len() / 4),
        flate2::Compression::default(),
    );
    // Writing to memory cannot fail; if it did, the plain JSON is right.
    match gz.write_all(doc.as_bytes()).and_then(|()| gz.finish()) {
        Ok(compressed) if compressed.len() < doc.len() => (compressed, true),
        _ => (doc.into_bytes(), false),
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read as _;

    use super::*;
    use crate::config::Durability;

    fn journal(rows: &[(i64, String)]) -> (tempfile::TempDir, Connection) {
        let dir = tempfile::tempdir().unwrap();
        let conn = crate::db::open_write(&dir.path().join("t.db"), Durability::Normal).unwrap();
        for (seq, data) in rows {
            conn.execute(
                "INSERT INTO journal (seq, ts_ms, device, kind, data) VALUES (?1, 0, 'd', 'reading', ?2)",
                rusqlite::params![seq, data],
            )
            .unwrap();
        }
        (dir, conn)
    }

    fn doc(p: &Payload) -> serde_json::Value {
        let raw = if p.bytes.starts_with(&GZIP_MAGIC) {
            assert!(p.gzip);
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(&p.bytes[..])
                .read_to_end(&mut out)
                .unwrap();
            out
        } else {
            assert!(!p.gzip);
            p.bytes.clone()
        };
        serde_json::from_slice(&raw).unwrap()
    }

    fn payload(n: Next) -> Payload {
        match n {
            Next::Payload(p) => p,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn batches_are_cut_to_fit_and_carry_their_bounds() {
        let rows: Vec<(i64, String)> = (1..=300)
            .map(|i| {
                (
                    i,
                    format!(
                        "{{\"name\":\"r{}\",\"value\":{i},\"unit\":\"C\"}}",
                        i * 7919 % 1000
                    ),
                )
            })
            .collect();
        let (_d, conn) = journal(&rows);
        let mut after = 0;
        let mut payloads = 0;
        while after < 300 {
            let p = payload(next(&conn, "s1", after, 5000, 1024).unwrap());
            assert!(p.bytes.len() <= 1024, "{}", p.bytes.len());
            let d = doc(&p);
            assert_eq!(d["first_seq"], after + 1);
            assert_eq!(d["last_seq"], p.last);
            assert_eq!(d["events"].as_array().unwrap().len(), p.count);
            assert_eq!(d["events"][0]["seq"], after + 1);
            after = p.last;
            payloads += 1;
        }
        assert!(payloads > 1);
        assert_eq!(next(&conn, "s1", 300, 5000, 1024).unwrap(), Next::Empty);
    }

    #[test]
    fn a_dropped_range_is_announced_and_a_missing_one_reported() {
        let (_d, conn) = journal(&[(1, "{}".into()), (5, "{}".into()), (6, "{}".into())]);
        assert_eq!(
            next(&conn, "s1", 1, 10, 4096).unwrap(),
            Next::Missing { from: 2, to: 4 }
        );
        conn.execute("INSERT INTO dropped_ranges VALUES (2, 4, 0)", [])
            .unwrap();
        let p = payload(next(&conn, "s1", 1, 10, 4096).unwrap());
        assert_eq!((p.first, p.last), (5, 6));
        assert_eq!(doc(&p)["skipped"], serde_json::json!([[2, 4]]));
    }

    #[test]
    fn an_event_bigger_than_any_payload_is_named() {
        // Pseudo-random letters: gzip cannot get them under 1 KiB.
        let mut x = 42u64;
        let big: String = (0..3000)
            .map(|_| {
                x = x
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                char::from(b'A' + ((x >> 33) % 26) as u8)
            })
            .collect();
        let (_d, conn) = journal(&[(1, "{}".into()), (2, format!("{{\"m\":\"{big}\"}}"))]);
        let p = payload(next(&conn, "s1", 0, 10, 1024).unwrap());
        assert_eq!((p.first, p.last), (1, 1));
        assert!(matches!(
            next(&conn, "s1", 1, 10, 1024).unwrap(),
            Next::Oversize { seq: 2, .. }
        ));
    }
}
