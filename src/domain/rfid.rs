//! RFID semantics (spec/profiles.md): reads are statistical, so the agent
//! keeps a tag state table and journals only transitions: `tag_arrived`,
//! `tag_moved`, `tag_departed`.
//!
//! The table lives in memory for speed (every read touches it) and in the
//! `tags` table for restarts and counts: transitions update the row in the
//! same transaction as their event; `last_seen`/`reads` are flushed every
//! few seconds ([`TagTracker::take_dirty`]).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use rusqlite::{Connection, params};

use crate::db::{SqlContext, StoreError};
use crate::domain::sgtin;
use crate::event::device::TagRead;
use crate::event::{Event, EventBody, NewEvent, TagTransition, ts_from_millis};

/// One tag's row in memory. Kept small: a store may see tens of thousands
/// of tags. Zone, reader and SKU strings are shared (interned); GTIN and
/// serial are derived from the EPC when a transition is journaled.
#[derive(Debug, Clone, PartialEq)]
struct TagState {
    zone: Arc<str>,
    reader: Arc<str>,
    sku: Option<Arc<str>>,
    /// Reader timestamps of the first and last read, as journaled.
    first_seen: DateTime<Utc>,
    last_seen: DateTime<Utc>,
    /// When the agent last received a read of the tag, on its own clock:
    /// departures are timed by this, so a reader whose clock is off does
    /// not make every tag depart and arrive again.
    heard_ms: i64,
    reads: u32,
    best_rssi: Option<i16>,
    antenna: Option<u16>,
    /// Counters changed since the last flush to the `tags` table.
    dirty: bool,
}

/// The in-memory tag state table.
pub struct TagTracker {
    /// Looked up for every read: hashed with foldhash (seeded per
    /// process), several times faster than the default SipHash on EPCs.
    tags: HashMap<Box<str>, TagState, foldhash::fast::RandomState>,
    strings: HashSet<Arc<str>>,
    dedup_window: Duration,
    departed_after: Duration,
}

impl TagTracker {
    pub fn new(dedup_window_ms: u64, departed_after_s: u64) -> Self {
        TagTracker {
            tags: HashMap::default(),
            strings: HashSet::new(),
            dedup_window: Duration::milliseconds(dedup_window_ms as i64),
            departed_after: Duration::seconds(departed_after_s as i64),
        }
    }

    /// One shared copy of a zone, reader or SKU name.
    fn intern(&mut self, s: &str) -> Arc<str> {
        if let Some(a) = self.strings.get(s) {
            return a.clone();
        }
        let a: Arc<str> = Arc::from(s);
        self.strings.insert(a.clone());
        a
    }

    /// Reload the table after a restart (or after a failed commit, to get
    /// back in step with what was actually journaled).
    /// Tags loaded count as heard at `now`: after a restart each gets the
    /// full `departed_after` to be read again.
    pub fn load(&mut self, conn: &Connection, now: DateTime<Utc>) -> Result<(), StoreError> {
        let mut st = conn
            .prepare("SELECT epc, zone, reader, sku, first_seen_ms, last_seen_ms, reads, best_rssi FROM tags")
            .ctx("loading the tag table")?;
        let mut rows = st.query([]).ctx("loading the tag table")?;
        self.tags.clear();
        while let Some(r) = rows.next().ctx("loading the tag table")? {
            let get = |i| -> Result<String, StoreError> { r.get(i).ctx("loading the tag table") };
            let epc = get(0)?;
            let zone = self.intern(&get(1)?);
            let reader = self.intern(&get(2)?);
            let sku: Option<String> = r.get(3).ctx("loading the tag table")?;
            let sku = sku.map(|s| self.intern(&s));
            let state = TagState {
                zone,
                reader,
                sku,
                first_seen: ts_from_millis(r.get(4).ctx("loading the tag table")?),
                last_seen: ts_from_millis(r.get(5).ctx("loading the tag table")?),
                heard_ms: now.timestamp_millis(),
                reads: r
                    .get::<_, i64>(6)
                    .ctx("loading the tag table")?
                    .clamp(0, u32::MAX as i64) as u32,
                best_rssi: r
                    .get::<_, Option<i64>>(7)
                    .ctx("loading the tag table")?
                    .map(|v| v.clamp(-32768, 32767) as i16),
                antenna: None,
                dirty: false,
            };
            self.tags.insert(epc.into_boxed_str(), state);
        }
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.tags.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tags.is_empty()
    }

    /// Whether this read would be a transition (a new tag, or a move), as
    /// opposed to a repeat that only updates the table.
    pub fn would_transition(&self, read: &TagRead, zone: &str) -> bool {
        match self.tags.get(read.epc.as_str()) {
            Some(t) => &*t.zone != zone && read.ts - t.last_seen >= self.dedup_window,
            None => true,
        }
    }

    /// Take one read, received at `heard` (the agent's clock); returns the
    /// transition to journal, if any. `sku_of_gtin` maps a GTIN-14 to the
    /// catalog's SKU.
    pub fn observe(
        &mut self,
        read: &TagRead,
        reader: &str,
        zone: &str,
        heard: DateTime<Utc>,
        sku_of_gtin: &dyn Fn(&str) -> Option<String>,
    ) -> Option<NewEvent> {
        let heard_ms = heard.timestamp_millis();
        let rssi = read.rssi_dbm.map(|r| r.clamp(-32768, 32767) as i16);
        let antenna = read.antenna.map(|a| a.min(u16::MAX as u32) as u16);
        let dedup = self.dedup_window;
        match self.tags.get_mut(read.epc.as_str()) {
            Some(t) if &*t.zone == zone || read.ts - t.last_seen < dedup => {
                // Same sighting: in the same zone, or a cross-read from a
                // neighbouring zone's antenna too soon to be a real move.
                if read.ts > t.last_seen && &*t.zone == zone {
                    t.last_seen = read.ts;
                }
                t.heard_ms = t.heard_ms.max(heard_ms);
                t.reads = t.reads.saturating_add(1);
                if let Some(r) = rssi {
                    t.best_rssi = Some(t.best_rssi.map_or(r, |b| b.max(r)));
                }
                t.dirty = true;
                None
            }
            Some(_) => {
                let zone = self.intern(zone);
                let reader_name = self.intern(reader);
                let t = self.tags.get_mut(read.epc.as_str())?;
                let from_zone = std::mem::replace(&mut t.zone, zone);
                t.reader = reader_name;
                t.first_seen = read.ts;
                t.last_seen = read.ts;
                t.heard_ms = heard_ms;
                t.reads = 1;
                t.best_rssi = rssi;
                t.antenna = antenna;
                t.dirty = false;
                let mut tr = transition(&read.epc, t);
                tr.from_zone = Some(from_zone.to_string());
                Some(NewEvent::new(read.ts, reader, EventBody::TagMoved(tr)))
            }
            None => {
                let gtin = sgtin::decode_sgtin96(&read.epc).ok().map(|s| s.gtin);
                let sku = gtin
                    .as_deref()
                    .and_then(sku_of_gtin)
                    .map(|s| self.intern(&s));
                let state = TagState {
                    zone: self.intern(zone),
                    reader: self.intern(reader),
                    sku,
                    first_seen: read.ts,
                    last_seen: read.ts,
                    heard_ms,
                    reads: 1,
                    best_rssi: rssi,
                    antenna,
                    dirty: false,
                };
                let tr = transition(&read.epc, &state);
                self.tags.insert(read.epc.clone().into_boxed_str(), state);
                Some(NewEvent::new(read.ts, reader, EventBody::TagArrived(tr)))
            }
        }
    }

    /// Tags not heard of for `departed_after` as of `now` (the agent's
    /// clock) leave the table.
    pub fn sweep(&mut self, now: DateTime<Utc>) -> Vec<NewEvent> {
        let cutoff = (now - self.departed_after).timestamp_millis();
        let gone: Vec<Box<str>> = self
            .tags
            .iter()
            .filter(|(_, t)| t.heard_ms <= cutoff)
            .map(|(epc, _)| epc.clone())
            .collect();
        let mut events = Vec::with_capacity(gone.len());
        for epc in gone {
            if let Some(t) = self.tags.remove(&epc) {
                events.push(NewEvent::new(
                    now,
                    &*t.reader,
                    EventBody::TagDeparted(transition(&epc, &t)),
                ));
            }
        }
        events
    }

    /// `(epc, last_seen_ms, reads, best_rssi)` of up to `max` tags whose
    /// counters changed since they were last taken, for the periodic flush
    /// to the `tags` table. Called until it returns nothing: taking them in
    /// bounded chunks keeps a flush of every tag in a busy store from
    /// holding a copy of the whole table in memory at once.
    pub fn take_dirty(&mut self, max: usize) -> Vec<(String, i64, i64, Option<i32>)> {
        self.tags
            .iter_mut()
            .filter(|(_, t)| t.dirty)
            .take(max)
            .map(|(epc, t)| {
                t.dirty = false;
                (
                    epc.to_string(),
                    t.last_seen.timestamp_millis(),
                    i64::from(t.reads),
                    t.best_rssi.map(i32::from),
                )
            })
            .collect()
    }
}

fn transition(epc: &str, t: &TagState) -> TagTransition {
    let decoded = sgtin::decode_sgtin96(epc).ok();
    TagTransition {
        epc: epc.to_string(),
        gtin: decoded.as_ref().map(|s| s.gtin.clone()),
        serial: decoded.map(|s| s.serial.to_string()),
        sku: t.sku.as_deref().map(String::from),
        zone: t.zone.to_string(),
        from_zone: None,
        reader: t.reader.to_string(),
        antenna: t.antenna.map(u32::from),
        rssi_dbm: t.best_rssi.map(i32::from),
        first_seen: t.first_seen,
        last_seen: t.last_seen,
    }
}

/// Projection: keep the `tags` table in step with tag events.
pub fn apply(conn: &Connection, event: &Event) -> Result<(), StoreError> {
    match &event.body {
        EventBody::TagArrived(t) | EventBody::TagMoved(t) => conn
            .prepare_cached(
                "INSERT INTO tags (epc, zone, reader, gtin, serial, sku, first_seen_ms, last_seen_ms, reads, best_rssi)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 1, ?9)
                 ON CONFLICT (epc) DO UPDATE SET zone = excluded.zone, reader = excluded.reader,
                   first_seen_ms = excluded.first_seen_ms, last_seen_ms = excluded.last_seen_ms,
                   reads = 1, best_rssi = excluded.best_rssi",
            )
            .and_then(|mut st| {
                st.execute(params![
                    t.epc,
                    t.zone,
                    t.reader,
                    t.gtin,
                    t.serial,
                    t.sku,
                    t.first_seen.timestamp_millis(),
                    t.last_seen.timestamp_millis(),
                    t.rssi_dbm
                ])
            })
            .map(|_| ())
            .ctx("recording a tag"),
        EventBody::TagDeparted(t) => conn
            .prepare_cached("DELETE FROM tags WHERE epc = ?1")
            .and_then(|mut st| st.execute([&t.epc]))
            .map(|_| ())
            .ctx("removing a departed tag"),
        _ => Ok(()),
    }
}

/// Write flushed counters (see [`TagTracker::take_dirty`]).
pub fn flush(
    conn: &Connection,
    rows: &[(String, i64, i64, Option<i32>)],
) -> Result<(), StoreError> {
    let mut st = conn
        .prepare_cached("UPDATE tags SET last_seen_ms = MAX(last_seen_ms, ?2), reads = ?3, best_rssi = ?4 WHERE epc = ?1")
        .ctx("flushing tag sightings")?;
    for (epc, last, reads, rssi) in rows {
        st.execute(params![epc, last, reads, rssi])
            .ctx("flushing tag sightings")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(epc: &str, secs: i64) -> TagRead {
        TagRead {
            epc: epc.into(),
            antenna: Some(1),
            rssi_dbm: Some(-50),
            ts: ts_from_millis(1_700_000_000_000 + secs * 1000),
        }
    }

    fn at(secs: i64) -> DateTime<Utc> {
        ts_from_millis(1_700_000_000_000 + secs * 1000)
    }

    fn no_sku(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn transitions_only() {
        let mut t = TagTracker::new(5000, 600);
        let sgtin = "3074257BF7194E4000001A85";
        let e = t
            .observe(&read(sgtin, 0), "door", "backroom", at(0), &|g| {
                (g == "80614141123458").then(|| "SKU-9".to_string())
            })
            .unwrap();
        match e.body {
            EventBody::TagArrived(tr) => {
                assert_eq!(tr.gtin.as_deref(), Some("80614141123458"));
                assert_eq!(tr.serial.as_deref(), Some("6789"));
                assert_eq!(tr.sku.as_deref(), Some("SKU-9"));
                assert_eq!(tr.zone, "backroom");
            }
            other => panic!("{other:?}"),
        }
        // Repeated reads in the same zone: nothing to journal.
        for s in 1..100 {
            assert!(
                t.observe(&read(sgtin, s), "door", "backroom", at(s), &no_sku)
                    .is_none()
            );
        }
        // A cross-read from another zone inside the dedup window is no move.
        assert!(
            t.observe(&read(sgtin, 101), "floor", "salesfloor", at(101), &no_sku)
                .is_none()
        );
        // Later it is.
        let e = t
            .observe(&read(sgtin, 120), "floor", "salesfloor", at(120), &no_sku)
            .unwrap();
        match e.body {
            EventBody::TagMoved(tr) => {
                assert_eq!(tr.from_zone.as_deref(), Some("backroom"));
                assert_eq!(tr.zone, "salesfloor");
            }
            other => panic!("{other:?}"),
        }
        assert!(
            t.sweep(ts_from_millis(1_700_000_000_000 + 700 * 1000))
                .is_empty()
        );
        let gone = t.sweep(ts_from_millis(1_700_000_000_000 + 720 * 1000));
        assert_eq!(gone.len(), 1);
        assert!(matches!(&gone[0].body, EventBody::TagDeparted(tr) if tr.zone == "salesfloor"));
        assert!(t.is_empty());
    }

    #[test]
    fn departures_follow_the_agents_clock_not_the_readers() {
        // A reader whose clock is a day behind: its reads look a day old.
        let mut t = TagTracker::new(5000, 600);
        let now = at(86_400);
        assert!(
            t.observe(
                &read("E2801160600002000000ABCD", 0),
                "door",
                "floor",
                now,
                &no_sku
            )
            .is_some()
        );
        for s in 1..10 {
            t.observe(
                &read("E2801160600002000000ABCD", s),
                "door",
                "floor",
                now,
                &no_sku,
            );
        }
        // Just read, however old its timestamp says it is: still here.
        assert!(t.sweep(now).is_empty());
        assert!(t.sweep(now + Duration::seconds(599)).is_empty());
        let gone = t.sweep(now + Duration::seconds(600));
        assert_eq!(gone.len(), 1);
        // The event still carries the reader's own timestamps.
        assert!(matches!(&gone[0].body, EventBody::TagDeparted(tr) if tr.last_seen == at(9)));
    }

    #[test]
    fn non_sgtin_epcs_keep_only_the_epc() {
        let mut t = TagTracker::new(5000, 600);
        let e = t
            .observe(
                &read("E28011606000020A6681F23F", 0),
                "r",
                "z",
                at(0),
                &no_sku,
            )
            .unwrap();
        assert!(
            matches!(e.body, EventBody::TagArrived(tr) if tr.gtin.is_none() && tr.sku.is_none())
        );
    }
}
