//! RFID semantics (spec/profiles.md): reads are statistical, so the agent
//! keeps a tag state table and journals only transitions: `tag_arrived`,
//! `tag_moved`, `tag_departed`.
//!
//! The table lives in memory for speed (every read touches it) and in the
//! `tags` table for restarts and counts: transitions update the row in the
//! same transaction as their event; `last_seen`/`reads` are flushed every
//! few seconds ([`TagTracker::take_dirty`]).

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use rusqlite::{Connection, OptionalExtension, params};

use crate::db::{SqlContext, StoreError};
use crate::domain::sgtin;
use crate::event::device::TagRead;
use crate::event::{Event, EventBody, NewEvent, TagTransition, ts_from_millis};

mod slots;

use slots::{Epc, Slot, Slots};

/// The in-memory tag state table: the part of each tag's row that every
/// read needs (its zone, last sighting and counters), about 40 bytes a tag
/// with the index, so that the stock of a big store fits in a gateway's
/// memory. What only a departure needs (first sighting, reader, SKU) is
/// read back from the `tags` table, which every arrival and move writes in
/// the same transaction as its event.
pub struct TagTracker {
    /// Positions in `slots`, looked up by EPC for every read: hashed with
    /// foldhash (seeded per process), several times faster than SipHash.
    index: hashbrown::HashTable<u32>,
    slots: Slots,
    hasher: foldhash::fast::RandomState,
    /// EPCs that are not 96 bits of upper-case hex, by [`Epc::Long`] number.
    long_epcs: Vec<Box<str>>,
    free_long: Vec<u32>,
    /// Zone names by number, and their numbers.
    zones: Vec<Arc<str>>,
    zone_ids: HashMap<Arc<str>, u32, foldhash::fast::RandomState>,
    /// Agent-clock times are kept in seconds after this instant (ms).
    clock_base_ms: Option<i64>,
    dedup_window_ms: i64,
    departed_after: Duration,
}

impl TagTracker {
    pub fn new(dedup_window_ms: u64, departed_after_s: u64) -> Self {
        TagTracker {
            index: hashbrown::HashTable::new(),
            slots: Slots::default(),
            hasher: foldhash::fast::RandomState::default(),
            long_epcs: Vec::new(),
            free_long: Vec::new(),
            zones: Vec::new(),
            zone_ids: HashMap::default(),
            clock_base_ms: None,
            dedup_window_ms: i64::try_from(dedup_window_ms).unwrap_or(i64::MAX),
            departed_after: Duration::seconds(departed_after_s as i64),
        }
    }

    /// The number of a zone name.
    fn zone_id(&mut self, zone: &str) -> u32 {
        if let Some(&id) = self.zone_ids.get(zone) {
            return id;
        }
        let name: Arc<str> = Arc::from(zone);
        let id = self.zones.len() as u32;
        self.zones.push(name.clone());
        self.zone_ids.insert(name, id);
        id
    }

    fn zone_name(&self, id: u32) -> &str {
        self.zones.get(id as usize).map_or("", |z| z)
    }

    /// When the agent heard something, in whole seconds after the base
    /// (rounded up: a tag departs at most a second late, never early).
    fn heard_secs(&mut self, heard: DateTime<Utc>) -> i32 {
        let ms = heard.timestamp_millis();
        let base = *self.clock_base_ms.get_or_insert(ms);
        let secs = (ms.saturating_sub(base))
            .saturating_add(999)
            .div_euclid(1000);
        secs.clamp(i32::MIN as i64, i32::MAX as i64) as i32
    }

    fn hash_epc(&self, epc: &Epc) -> u64 {
        match epc {
            Epc::Bits96(b) => self.hasher.hash_one(b),
            Epc::Long(n) => self.hasher.hash_one(self.long_epc(*n).as_bytes()),
        }
    }

    fn long_epc(&self, n: u32) -> &str {
        self.long_epcs.get(n as usize).map_or("", |e| e)
    }

    /// Position of the tag with this EPC.
    fn find(&self, epc: &str) -> Option<u32> {
        let (hash, bits) = match Epc::bits96(epc) {
            Some(b) => (self.hasher.hash_one(b), Some(b)),
            None => (self.hasher.hash_one(epc.as_bytes()), None),
        };
        self.index
            .find(hash, |&i| match (self.slots.get(i).epc(), bits) {
                (Epc::Bits96(have), Some(want)) => have == want,
                (Epc::Long(n), None) => self.long_epc(n) == epc,
                _ => false,
            })
            .copied()
    }

    /// Add a tag the table does not hold.
    fn insert(&mut self, epc: &str, mut slot: Slot) {
        let key = match Epc::bits96(epc) {
            Some(b) => Epc::Bits96(b),
            None => {
                let n = match self.free_long.pop() {
                    Some(n) => {
                        self.long_epcs[n as usize] = epc.into();
                        n
                    }
                    None => {
                        self.long_epcs.push(epc.into());
                        (self.long_epcs.len() - 1) as u32
                    }
                };
                Epc::Long(n)
            }
        };
        slot.set_epc(key);
        let hash = self.hash_epc(&key);
        let pos = self.slots.push(slot);
        let (slots, hasher, long) = (&self.slots, &self.hasher, &self.long_epcs);
        self.index
            .insert_unique(hash, pos, |&i| match slots.get(i).epc() {
                Epc::Bits96(b) => hasher.hash_one(b),
                Epc::Long(n) => {
                    hasher.hash_one(long.get(n as usize).map_or(&b""[..], |e| e.as_bytes()))
                }
            });
    }

    /// Remove the tag at `pos`; returns its EPC and slot.
    fn remove(&mut self, pos: u32) -> (String, Slot) {
        let slot = *self.slots.get(pos);
        let hash = self.hash_epc(&slot.epc());
        if let Ok(entry) = self.index.find_entry(hash, |&i| i == pos) {
            entry.remove();
        }
        // The last slot moves into the hole: point its index entry there.
        if let Some(moved_from) = self.slots.swap_remove(pos) {
            let moved = self.hash_epc(&self.slots.get(pos).epc());
            if let Some(i) = self.index.find_mut(moved, |&i| i == moved_from) {
                *i = pos;
            }
        }
        let epc = match slot.epc() {
            Epc::Bits96(b) => hex::encode_upper(b),
            Epc::Long(n) => {
                self.free_long.push(n);
                std::mem::take(&mut self.long_epcs[n as usize]).into()
            }
        };
        (epc, slot)
    }

    /// The EPC of the tag at `pos`.
    fn epc_at(&self, pos: u32) -> String {
        match self.slots.get(pos).epc() {
            Epc::Bits96(b) => hex::encode_upper(b),
            Epc::Long(n) => self.long_epc(n).to_string(),
        }
    }

    /// Reload the table after a restart (or after a failed commit, to get
    /// back in step with what was actually journaled).
    /// Tags loaded count as heard at `now`: after a restart each gets the
    /// full `departed_after` to be read again.
    pub fn load(&mut self, conn: &Connection, now: DateTime<Utc>) -> Result<(), StoreError> {
        let count: i64 = conn
            .query_row("SELECT count(*) FROM tags", [], |r| r.get(0))
            .ctx("loading the tag table")?;
        let mut st = conn
            .prepare("SELECT epc, zone, last_seen_ms, reads, best_rssi FROM tags")
            .ctx("loading the tag table")?;
        let mut rows = st.query([]).ctx("loading the tag table")?;
        self.index.clear();
        self.slots.clear();
        self.long_epcs.clear();
        self.free_long.clear();
        // Sized once: growing while loading would hold two tables at once.
        self.index.reserve(count.max(0) as usize, |_| 0);
        let heard = self.heard_secs(now);
        while let Some(r) = rows.next().ctx("loading the tag table")? {
            let epc: String = r.get(0).ctx("loading the tag table")?;
            let zone: String = r.get(1).ctx("loading the tag table")?;
            let zone = self.zone_id(&zone);
            let slot = Slot::new(
                zone,
                r.get(2).ctx("loading the tag table")?,
                heard,
                r.get::<_, i64>(3)
                    .ctx("loading the tag table")?
                    .clamp(0, u32::MAX as i64) as u32,
                r.get::<_, Option<i64>>(4)
                    .ctx("loading the tag table")?
                    .map(|v| v.clamp(-32768, 32767) as i16),
                None,
            );
            self.insert(&epc, slot);
        }
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.len() == 0
    }

    /// Whether this read would be a transition (a new tag, or a move), as
    /// opposed to a repeat that only updates the table.
    pub fn would_transition(&self, read: &TagRead, zone: &str) -> bool {
        match self.find(&read.epc) {
            Some(pos) => {
                let t = self.slots.get(pos);
                self.zone_name(t.zone) != zone
                    && read.ts.timestamp_millis().saturating_sub(t.last_seen_ms())
                        >= self.dedup_window_ms
            }
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
        let heard = self.heard_secs(heard);
        let rssi = read.rssi_dbm.map(|r| r.clamp(-32768, 32767) as i16);
        let antenna = read.antenna.map(|a| a.min(u16::MAX as u32) as u16);
        let read_ms = read.ts.timestamp_millis();
        let zone_id = self.zone_id(zone);
        let Some(pos) = self.find(&read.epc) else {
            let gtin = sgtin::decode_sgtin96(&read.epc).ok().map(|s| s.gtin);
            let sku = gtin.as_deref().and_then(sku_of_gtin);
            self.insert(
                &read.epc,
                Slot::new(zone_id, read_ms, heard, 1, rssi, antenna),
            );
            let tr = arrival(read, reader, zone, sku);
            return Some(NewEvent::new(read.ts, reader, EventBody::TagArrived(tr)));
        };
        let dedup = self.dedup_window_ms;
        let t = self.slots.get_mut(pos);
        if t.zone == zone_id || read_ms.saturating_sub(t.last_seen_ms()) < dedup {
            // Same sighting: in the same zone, or a cross-read from a
            // neighbouring zone's antenna too soon to be a real move.
            if read_ms > t.last_seen_ms() && t.zone == zone_id {
                t.set_last_seen_ms(read_ms);
            }
            t.heard_s = t.heard_s.max(heard);
            t.reads = t.reads.saturating_add(1);
            if let Some(r) = rssi {
                t.set_best_rssi(Some(t.best_rssi().map_or(r, |b| b.max(r))));
            }
            t.set_dirty(true);
            return None;
        }
        let from_zone = t.zone;
        *t = Slot::new(zone_id, read_ms, heard, 1, rssi, antenna).with_epc_of(t);
        let gtin = sgtin::decode_sgtin96(&read.epc).ok().map(|s| s.gtin);
        let sku = gtin.as_deref().and_then(sku_of_gtin);
        let mut tr = arrival(read, reader, zone, sku);
        tr.from_zone = Some(self.zone_name(from_zone).to_string());
        Some(NewEvent::new(read.ts, reader, EventBody::TagMoved(tr)))
    }

    /// Tags not heard of for `departed_after` as of `now` (the agent's
    /// clock) leave the table. Their first sighting, reader and SKU are
    /// read from the `tags` table (see [`apply`]).
    pub fn sweep(
        &mut self,
        conn: &Connection,
        now: DateTime<Utc>,
    ) -> Result<Vec<NewEvent>, StoreError> {
        let cutoff_ms = (now - self.departed_after).timestamp_millis();
        let Some(base) = self.clock_base_ms else {
            return Ok(Vec::new());
        };
        let gone: Vec<u32> = (0..self.slots.len() as u32)
            .filter(|&pos| {
                base.saturating_add(i64::from(self.slots.get(pos).heard_s) * 1000) <= cutoff_ms
            })
            .collect();
        let mut cold = conn
            .prepare_cached("SELECT reader, sku, first_seen_ms FROM tags WHERE epc = ?1")
            .ctx("reading a departing tag")?;
        let mut events = Vec::with_capacity(gone.len());
        // From the highest position down: a removal moves only the last
        // slot, which is never one still to be removed below it.
        for pos in gone.into_iter().rev() {
            let (epc, t) = self.remove(pos);
            let row: Option<(String, Option<String>, i64)> = cold
                .query_row([&epc], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .optional()
                .ctx("reading a departing tag")?;
            // The row is written with every arrival and move; without it
            // (never expected) the departure still says what is known.
            let (reader, sku, first_seen_ms) =
                row.unwrap_or((String::new(), None, t.last_seen_ms()));
            let decoded = sgtin::decode_sgtin96(&epc).ok();
            let tr = TagTransition {
                gtin: decoded.as_ref().map(|s| s.gtin.clone()),
                serial: decoded.map(|s| s.serial.to_string()),
                sku,
                zone: self.zone_name(t.zone).to_string(),
                from_zone: None,
                reader: reader.clone(),
                antenna: t.antenna().map(u32::from),
                rssi_dbm: t.best_rssi().map(i32::from),
                first_seen: ts_from_millis(first_seen_ms),
                last_seen: ts_from_millis(t.last_seen_ms()),
                epc,
            };
            events.push(NewEvent::new(now, &reader, EventBody::TagDeparted(tr)));
        }
        Ok(events)
    }

    /// `(epc, last_seen_ms, reads, best_rssi)` of up to `max` tags whose
    /// counters changed since they were last taken, for the periodic flush
    /// to the `tags` table. Called until it returns nothing: taking them in
    /// bounded chunks keeps a flush of every tag in a busy store from
    /// holding a copy of the whole table in memory at once.
    pub fn take_dirty(&mut self, max: usize) -> Vec<(String, i64, i64, Option<i32>)> {
        let mut out = Vec::new();
        for pos in 0..self.slots.len() as u32 {
            if out.len() >= max {
                break;
            }
            if !self.slots.get(pos).dirty() {
                continue;
            }
            let epc = self.epc_at(pos);
            let t = self.slots.get_mut(pos);
            t.set_dirty(false);
            out.push((
                epc,
                t.last_seen_ms(),
                i64::from(t.reads),
                t.best_rssi().map(i32::from),
            ));
        }
        out
    }
}

/// The transition a read makes when it is an arrival (or, with
/// `from_zone` set by the caller, a move).
fn arrival(read: &TagRead, reader: &str, zone: &str, sku: Option<String>) -> TagTransition {
    let decoded = sgtin::decode_sgtin96(&read.epc).ok();
    TagTransition {
        epc: read.epc.clone(),
        gtin: decoded.as_ref().map(|s| s.gtin.clone()),
        serial: decoded.map(|s| s.serial.to_string()),
        sku,
        zone: zone.to_string(),
        from_zone: None,
        reader: reader.to_string(),
        antenna: read.antenna.map(|a| a.min(u16::MAX as u32)),
        rssi_dbm: read.rssi_dbm.map(|r| r.clamp(-32768, 32767)),
        first_seen: read.ts,
        last_seen: read.ts,
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
                   sku = excluded.sku, first_seen_ms = excluded.first_seen_ms, last_seen_ms = excluded.last_seen_ms,
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

    /// A real database whose `tags` table follows the transitions given
    /// to [`Journal::keep`], as the writer's projections keep it.
    struct Journal {
        _dir: tempfile::TempDir,
        conn: Connection,
    }

    impl Journal {
        fn new() -> Journal {
            let dir = tempfile::tempdir().unwrap();
            let conn = crate::db::open_write(
                &dir.path().join("storegate.db"),
                crate::config::Durability::Normal,
            )
            .unwrap();
            Journal { _dir: dir, conn }
        }

        /// Project `e` (a transition from `observe`) and hand it back.
        fn keep(&self, e: Option<NewEvent>) -> Option<NewEvent> {
            if let Some(e) = &e {
                let event = Event {
                    seq: 1,
                    ts: e.ts,
                    device: e.device.clone(),
                    body: e.body.clone(),
                };
                apply(&self.conn, &event).unwrap();
            }
            e
        }
    }

    #[test]
    fn transitions_only() {
        let db = Journal::new();
        let mut t = TagTracker::new(5000, 600);
        let sgtin = "3074257BF7194E4000001A85";
        let e = db
            .keep(t.observe(&read(sgtin, 0), "door", "backroom", at(0), &|g| {
                (g == "80614141123458").then(|| "SKU-9".to_string())
            }))
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
        let e = db
            .keep(t.observe(&read(sgtin, 120), "floor", "salesfloor", at(120), &no_sku))
            .unwrap();
        match e.body {
            EventBody::TagMoved(tr) => {
                assert_eq!(tr.from_zone.as_deref(), Some("backroom"));
                assert_eq!(tr.zone, "salesfloor");
            }
            other => panic!("{other:?}"),
        }
        assert!(
            t.sweep(&db.conn, ts_from_millis(1_700_000_000_000 + 700 * 1000))
                .unwrap()
                .is_empty()
        );
        let gone = t
            .sweep(&db.conn, ts_from_millis(1_700_000_000_000 + 720 * 1000))
            .unwrap();
        assert_eq!(gone.len(), 1);
        assert!(matches!(&gone[0].body, EventBody::TagDeparted(tr) if tr.zone == "salesfloor"));
        assert!(t.is_empty());
    }

    #[test]
    fn departures_follow_the_agents_clock_not_the_readers() {
        // A reader whose clock is a day behind: its reads look a day old.
        let db = Journal::new();
        let mut t = TagTracker::new(5000, 600);
        let now = at(86_400);
        assert!(
            db.keep(t.observe(
                &read("E2801160600002000000ABCD", 0),
                "door",
                "floor",
                now,
                &no_sku
            ))
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
        assert!(t.sweep(&db.conn, now).unwrap().is_empty());
        assert!(
            t.sweep(&db.conn, now + Duration::seconds(599))
                .unwrap()
                .is_empty()
        );
        let gone = t.sweep(&db.conn, now + Duration::seconds(600)).unwrap();
        assert_eq!(gone.len(), 1);
        // The event still carries the reader's own timestamps.
        assert!(matches!(&gone[0].body, EventBody::TagDeparted(tr) if tr.last_seen == at(9)));
        // What only departures need comes back from the `tags` table.
        assert!(matches!(&gone[0].body, EventBody::TagDeparted(tr)
            if tr.first_seen == at(0) && tr.reader == "door" && tr.antenna == Some(1)));
        assert_eq!(gone[0].device, "door");
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

    #[test]
    fn many_tags_depart_and_the_rest_stay_findable() {
        // Compact and long EPCs, half of them heard again later: after the
        // sweep removed the others (moving slots around), every remaining
        // tag is still found, and each departure names its own EPC.
        let db = Journal::new();
        let mut t = TagTracker::new(5000, 600);
        let epc = |i: usize| match i % 3 {
            0 => format!("3074257BF7194E{:010X}", (1u64 << 38) | i as u64),
            1 => format!("E280{i:08X}"),
            _ => format!("e2801160600002{i:010x}"),
        };
        for i in 0..3000 {
            assert!(
                db.keep(t.observe(&read(&epc(i), 0), "r", "z", at(0), &no_sku))
                    .is_some()
            );
        }
        for i in (0..3000).filter(|i| i % 2 == 0) {
            assert!(
                t.observe(&read(&epc(i), 300), "r", "z", at(300), &no_sku)
                    .is_none()
            );
        }
        let gone = t.sweep(&db.conn, at(600)).unwrap();
        let mut gone: Vec<String> = gone
            .into_iter()
            .map(|e| match e.body {
                EventBody::TagDeparted(tr) => tr.epc,
                other => panic!("{other:?}"),
            })
            .collect();
        gone.sort();
        let mut want: Vec<String> = (0..3000).filter(|i| i % 2 == 1).map(epc).collect();
        want.sort();
        assert_eq!(gone, want);
        assert_eq!(t.len(), 1500);
        for i in (0..3000).filter(|i| i % 2 == 0) {
            assert!(!t.would_transition(&read(&epc(i), 301), "z"), "{}", epc(i));
        }
        for i in (0..3000).filter(|i| i % 2 == 1) {
            assert!(t.would_transition(&read(&epc(i), 301), "z"), "{}", epc(i));
        }
    }
}
