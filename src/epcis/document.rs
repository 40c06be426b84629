//! Journal pages -> EPCISDocuments. A document carries the ObjectEvents of
//! the mapped events in seq order, and in storegate's own terms where to
//! go on from (`storegate:nextAfter`, the seq of the last journal event
//! read, mapped or not), the oldest seq still in the journal
//! (`storegate:oldestSeq`) and how many events read had no EPCIS mapping
//! (`storegate:skipped`): those are left out, never misrepresented.

use std::collections::HashMap;
use std::io::Write;

use chrono::{DateTime, Utc};
use rusqlite::Connection;
use serde_json::{Value, json};

use super::Setup;
use super::map::{NAMESPACE_PREFIX, object_event};
use crate::db::{StoreError, journal};
use crate::domain::catalog;
use crate::event::{Event, Seq, format_ts};

/// The GS1 JSON-LD context of EPCIS 2.0.
pub const EPCIS_CONTEXT: &str = "https://ref.gs1.org/standards/epcis/2.0.0/epcis-context.jsonld";

/// Where storegate's terms (`storegate:seq`, ...) are defined.
pub const STOREGATE_CONTEXT: &str = "urn:storegate:epcis:";

/// Journal events read per query when writing a whole export.
const EXPORT_CHUNK: usize = 10_000;

/// One page of the journal as an EPCISDocument.
#[derive(Debug)]
pub struct Page {
    /// The EPCISDocument.
    pub document: Value,
    /// The seq to ask after for the next page (the `after` asked for when
    /// nothing was left).
    pub next_after: Seq,
    /// ObjectEvents in the document.
    pub mapped: usize,
    /// Journal events read without an EPCIS mapping.
    pub skipped: usize,
}

/// Up to `limit` journal events after `after` as one EPCISDocument.
pub fn page(
    conn: &Connection,
    setup: &Setup,
    after: Seq,
    limit: usize,
    now: DateTime<Utc>,
) -> Result<Page, StoreError> {
    let events = journal::events_after(conn, after, limit)?;
    let oldest = journal::oldest(conn)?;
    let next_after = events.last().map_or(after, |e| e.seq);
    let mut mapper = Mapper::new(conn, setup);
    let mut list = Vec::with_capacity(events.len());
    for e in &events {
        if let Some(o) = mapper.map(e)? {
            list.push(o);
        }
    }
    let (mapped, skipped) = (list.len(), events.len() - list.len());
    let mut document = head(now);
    if let Value::Object(m) = &mut document {
        m.insert("epcisBody".into(), json!({ "eventList": list }));
        m.insert(term("nextAfter"), next_after.into());
        m.insert(term("oldestSeq"), oldest.into());
        m.insert(term("skipped"), skipped.into());
    }
    Ok(Page {
        document,
        next_after,
        mapped,
        skipped,
    })
}

/// What [`write_export`] wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Exported {
    /// ObjectEvents written.
    pub mapped: usize,
    /// Journal events without an EPCIS mapping, left out.
    pub skipped: usize,
    /// The seq of the last journal event read (`since` when none).
    pub last_seq: Seq,
}

/// Every journal event after `since` as one EPCISDocument on `out`,
/// written as it is read (a large journal never sits in memory whole).
pub fn write_export(
    conn: &Connection,
    setup: &Setup,
    since: Seq,
    now: DateTime<Utc>,
    out: &mut dyn Write,
) -> anyhow::Result<Exported> {
    let mut head_text = serde_json::to_string(&head(now))?;
    // Open the head's object again to append the body to it.
    head_text.pop();
    write!(out, "{head_text},\"epcisBody\":{{\"eventList\":[")?;
    let mut mapper = Mapper::new(conn, setup);
    let mut done = Exported {
        last_seq: since,
        ..Exported::default()
    };
    loop {
        let batch = journal::events_after(conn, done.last_seq, EXPORT_CHUNK)?;
        let Some(last) = batch.last() else { break };
        done.last_seq = last.seq;
        for e in &batch {
            match mapper.map(e)? {
                Some(o) => {
                    if done.mapped > 0 {
                        out.write_all(b",")?;
                    }
                    serde_json::to_writer(&mut *out, &o)?;
                    done.mapped += 1;
                }
                None => done.skipped += 1,
            }
        }
    }
    let oldest = journal::oldest(conn)?;
    write!(
        out,
        "]}},{}:{},{}:{},{}:{}}}",
        json!(term("nextAfter")),
        done.last_seq,
        json!(term("oldestSeq")),
        json!(oldest),
        json!(term("skipped")),
        done.skipped
    )?;
    Ok(done)
}

/// The document without its body.
fn head(now: DateTime<Utc>) -> Value {
    json!({
        "@context": [EPCIS_CONTEXT, { NAMESPACE_PREFIX: STOREGATE_CONTEXT }],
        "type": "EPCISDocument",
        "schemaVersion": "2.0",
        "creationDate": format_ts(&now),
    })
}

fn term(name: &str) -> String {
    format!("{NAMESPACE_PREFIX}:{name}")
}

/// Maps events with the catalog at hand: a SKU's GTIN is looked up once
/// per document.
struct Mapper<'a> {
    conn: &'a Connection,
    setup: &'a Setup,
    gtins: HashMap<String, Option<String>>,
}

impl<'a> Mapper<'a> {
    fn new(conn: &'a Connection, setup: &'a Setup) -> Mapper<'a> {
        Mapper {
            conn,
            setup,
            gtins: HashMap::new(),
        }
    }

    fn map(&mut self, event: &Event) -> Result<Option<Value>, StoreError> {
        // The lookup cannot return an error through the pure mapping: the
        // first one is kept and returned after it.
        let mut failed = None;
        let (conn, gtins) = (self.conn, &mut self.gtins);
        let mapped = object_event(event, self.setup, &mut |sku| {
            if let Some(known) = gtins.get(sku) {
                return known.clone();
            }
            match catalog::gtin_for_sku(conn, sku) {
                Ok(g) => {
                    gtins.insert(sku.to_string(), g.clone());
                    g
                }
                Err(e) => {
                    failed.get_or_insert(e);
                    None
                }
            }
        });
        match failed {
            Some(e) => Err(e),
            None => Ok(mapped),
        }
    }
}
