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
