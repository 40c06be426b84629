//! Where every device adapter hands over what its codec decoded. One unit
//! of input (an MQTT message, a serial read, a Modbus poll) becomes one
//! transaction: events journaled, tag reads turned into transitions, bad
//! input quarantined. [`Ingest::deliver`] returns only after that
//! transaction committed, so an adapter that acknowledges afterwards keeps
//! invariant 1.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use crate::codecs::{Decoded, TagRead};
use crate::db::quota::Quota;
use crate::db::writer::QUARANTINE_RAW_BYTES;
use crate::db::{StoreError, WriteTx, Writer};
use crate::domain::privacy::MemberKey;
use crate::domain::{catalog, rfid::TagTracker};
use crate::event::{EventBody, NewEvent};
use crate::health::HealthBoard;

/// Bad input is logged once per burst: the first frame of a burst, then a
/// summary when the device has been quiet for this long.
const BURST_QUIET: Duration = Duration::from_secs(10);

/// Tags flushed to the `tags` table per chunk (see [`Ingest::sweep_tags`]).
const FLUSH_CHUNK: usize = 1024;

/// One unit of input sorted for its commit (see [`Ingest::sort`]).
#[derive(Debug, Clone, Default)]
pub struct Unit {
    reads: Vec<TagRead>,
    groups: Vec<Vec<(DateTime<Utc>, EventBody)>>,
    /// Reason, the head of the raw input, and its full size.
    quarantine: Vec<(String, Vec<u8>, usize)>,
}

impl Unit {
    /// Add another unit of the same source, to commit both in one
    /// transaction (the MQTT hub commits a device's waiting messages
    /// together).
    pub fn merge(&mut self, other: Unit) {
        self.reads.extend(other.reads);
        self.groups.extend(other.groups);
        self.quarantine.extend(other.quarantine);
    }
}

/// Who the input came from.
#[derive(Debug, Clone)]
pub struct Source {
    pub device: String,
    /// The zone RFID reads from this device put a tag in.
    pub zone: String,
}

/// What a delivery did, for the adapter's own bookkeeping.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Delivered {
    pub events: usize,
    pub duplicates: usize,
    pub quarantined: usize,
}

impl Delivered {
    fn merge(&mut self, other: Delivered) {
        self.events += other.events;
        self.duplicates += other.duplicates;
        self.quarantined += other.quarantined;
    }
}

#[derive(Default)]
struct Burst {
    started: Option<Instant>,
    last: Option<Instant>,
    suppressed: u64,
}

/// Shared by all device tasks; cheap to clone.
#[derive(Clone)]
pub struct Ingest {
    writer: Writer,
    health: HealthBoard,
    tags: Arc<Mutex<TagTracker>>,
    bursts: Arc<Mutex<HashMap<String, Burst>>>,
    quota: Quota,
    member_key: MemberKey,
    clock: Clock,
}

/// The agent's clock as ingest sees it: when a read was received. The
/// offline-disk bench replaces it with a simulated one.
pub type Clock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

impl Ingest {
    /// `member_key` is the store's own (see [`MemberKey::load`]): codecs
    /// hash loyalty member ids with it.
    pub fn new(
        writer: Writer,
        health: HealthBoard,
        tags: Arc<Mutex<TagTracker>>,
        member_key: MemberKey,
    ) -> Self {
        Ingest {
            writer,
            health,
            tags,
            bursts: Arc::default(),
            quota: Quota::default(),
            member_key,
            clock: Arc::new(Utc::now),
        }
    }

    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// The key codecs hash loyalty member ids with (see domain::privacy).
    pub fn member_key(&self) -> &[u8] {
        self.member_key.as_bytes()
    }

    /// Refuse input while the disk quota is exhausted by events that must
    /// not be dropped (devices then stay unacknowledged).
    pub fn with_quota(mut self, quota: Quota) -> Self {
        self.quota = quota;
        self
    }

    pub fn writer(&self) -> &Writer {
        &self.writer
    }

    pub fn health(&self) -> &HealthBoard {
        &self.health
    }

    /// Journal one unit of decoded input and return once it is committed.
    /// An error means nothing of it was stored: do not acknowledge.
    pub async fn deliver(
        &self,
        source: &Source,
        items: Vec<Decoded>,
    ) -> Result<Delivered, StoreError> {
        match self.sort(source, items) {
            Some(unit) => self.commit(source, &unit).await,
            None => Ok(Delivered::default()),
        }
    }

    /// Count, log and sort one unit of input, once however often its
    /// commit is retried. Repeat tag reads are applied to the tag table
    /// here; `None` when nothing is left to commit.
    pub fn sort(&self, source: &Source, items: Vec<Decoded>) -> Option<Unit> {
        if items.is_empty() {
            return None;
        }
        let (mut ok, mut bad) = (0u64, 0u64);
        let mut unit = Unit::default();
        for item in items {
            match item {
                Decoded::Events(events) => {
                    ok += 1;
                    unit.groups.push(events);
                }
                Decoded::TagReads(r) => {
                    ok += r.len() as u64;
                    unit.reads.extend(r);
                }
                Decoded::Bad { reason, mut raw } => {
                    bad += 1;
                    self.log_bad(&source.device, &reason);
                    // Only the head is kept: a queue of large bad
                    // messages must not hold them whole in memory.
                    let size = raw.len();
                    raw.truncate(QUARANTINE_RAW_BYTES);
                    raw.shrink_to_fit();
                    unit.quarantine.push((reason, raw, size));
                }
            }
        }
        self.health.frames(&source.device, ok, bad);

        // Most reads in a store are repeats of tags already in the table:
        // they only touch the in-memory table and journal nothing, so there
        // is no transaction to wait for before the device is acknowledged.
        if unit.groups.is_empty() && unit.quarantine.is_empty() {
            let mut tracker = self.tags.lock().unwrap_or_else(|p| p.into_inner());
            if !unit
                .reads
                .iter()
                .any(|r| tracker.would_transition(r, &source.zone))
            {
                let heard = (self.clock)();
                for r in &unit.reads {
                    tracker.observe(r, &source.device, &source.zone, heard, &|_| None);
                }
                return None;
            }
        }
        Some(unit)
    }

    /// Journal a sorted unit in one transaction; may be retried.
    pub async fn commit(&self, source: &Source, unit: &Unit) -> Result<Delivered, StoreError> {
        if self.quota.is_full() {
            return Err(StoreError::QuotaFull);
        }
        let Unit {
            reads,
            groups,
            quarantine,
        } = unit.clone();
        let device = source.device.clone();
        let zone = source.zone.clone();
        let tags = self.tags.clone();
        let heard = (self.clock)();
        let result = self
            .writer
            .transact(move |w| {
                let mut done = Delivered::default();
                let mut refused = Vec::new();
                let mut transition_refused = false;
                // A group (one receipt, one message's events) that cannot
                // be journaled for a reason retrying cannot fix is
                // quarantined with that reason; the rest commits.
                let (d, reasons) = append_or_quarantine(
                    w,
                    &device,
                    &groups,
                    |w, group| append_group(w, &device, group),
                    |group| group_json(group),
                )?;
                done.merge(d);
                refused.extend(reasons);
                if !reads.is_empty() {
                    // The tracker is consulted inside the transaction so the
                    // catalog lookup sees committed data; transitions are
                    // journaled in the same transaction as the reads' frame.
                    let transitions: Vec<NewEvent> = {
                        let conn = w.conn();
                        let lookup = |gtin: &str| catalog::sku_for_gtin(conn, gtin).ok().flatten();
                        let mut tracker = tags.lock().unwrap_or_else(|p| p.into_inner());
                        reads
                            .iter()
                            .filter_map(|r| tracker.observe(r, &device, &zone, heard, &lookup))
                            .collect()
                    };
                    let (d, reasons) = append_or_quarantine(
                        w,
                        &device,
                        &transitions,
                        |w, t| {
                            w.append(t.clone())?;
                            Ok(Delivered {
                                events: 1,
                                ..Delivered::default()
                            })
                        },
                        |t| group_json(&[(t.ts, t.body.clone())]),
                    )?;
                    done.merge(d);
                    transition_refused = !reasons.is_empty();
                    refused.extend(reasons);
                }
                for (reason, head, size) in &quarantine {
                    w.quarantine_head(&device, reason, head, *size)?;
                    done.quarantined += 1;
                }
                Ok((done, refused, transition_refused))
            })
            .await;
        let tracker_ahead = match &result {
            Ok((_, refused, transition_refused)) => {
                if !refused.is_empty() {
                    self.health.frames(&source.device, 0, refused.len() as u64);
                }
                for reason in refused {
                    self.log_bad(&source.device, reason);
                }
                *transition_refused
            }
            Err(_) => true,
        };
        if tracker_ahead {
            // The tracker moved on for transitions that were not stored:
            // get back in step with what the database holds.
            self.reload_tags().await;
        }
        result.map(|(done, _, _)| done)
    }

    /// Housekeeping of the tag table: journal `tag_departed` for tags not
    /// heard of for `departed_after_s` and flush last-seen times. The
    /// daemon calls it every few seconds; the offline-disk bench on its
    /// simulated clock.
    pub async fn sweep_tags(&self) -> Result<(), StoreError> {
        let tags = self.tags.clone();
        let now = (self.clock)();
        self.writer
            .transact(move |w| {
                let lock = || tags.lock().unwrap_or_else(|p| p.into_inner());
                let departed = lock().sweep(w.conn(), now)?;
                for e in departed {
                    w.append(e)?;
                }
                loop {
                    let dirty = lock().take_dirty(FLUSH_CHUNK);
                    if dirty.is_empty() {
                        return Ok(());
                    }
                    crate::domain::rfid::flush(w.conn(), &dirty)?;
                }
            })
            .await
    }

    async fn reload_tags(&self) {
        let tags = self.tags.clone();
        let now = (self.clock)();
        let _ = self
            .writer
            .transact(move |w| {
                tags.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .load(w.conn(), now)?;
                Ok(())
            })
            .await;
    }

    /// Log the first bad frame of a burst; count the rest and summarise
    /// them when the next burst starts.
    fn log_bad(&self, device: &str, reason: &str) {
        let now = Instant::now();
        let mut bursts = self.bursts.lock().unwrap_or_else(|p| p.into_inner());
        let b = bursts.entry(device.to_string()).or_default();
        let new_burst = b
            .last
            .is_none_or(|last| now.duration_since(last) > BURST_QUIET);
        if new_burst {
            if b.suppressed > 0 {
                tracing::warn!(
                    device,
                    suppressed = b.suppressed,
                    "previous burst of bad input ended"
                );
            }
            tracing::warn!(
                device,
                reason,
                "bad input quarantined (further bad input in this burst is counted, not logged)"
            );
            b.started = Some(now);
            b.suppressed = 0;
        } else {
            b.suppressed += 1;
        }
        b.last = Some(now);
    }
}

/// Journal `items` in one savepoint; when that fails for a reason retrying
/// cannot fix, journal each alone and quarantine (with `raw` and the
/// reason) those that fail. Returns what was journaled and the reasons of
/// what was quarantined. The common case costs one savepoint, not one per
/// item; a storage error is returned for the whole unit to be retried.
fn append_or_quarantine<T>(
    w: &mut WriteTx<'_>,
    device: &str,
    items: &[T],
    append: impl Fn(&mut WriteTx<'_>, &T) -> Result<Delivered, StoreError>,
    raw: impl Fn(&T) -> Vec<u8>,
) -> Result<(Delivered, Vec<String>), StoreError> {
    let mut done = Delivered::default();
    if items.is_empty() {
        return Ok((done, Vec::new()));
    }
    let together = w.attempt(|w| {
        let mut d = Delivered::default();
        for item in items {
            d.merge(append(w, item)?);
        }
        Ok(d)
    });
    match together {
        Ok(d) => return Ok((d, Vec::new())),
        Err(e) if e.is_retryable() => return Err(e),
        Err(_) => {}
    }
    let mut reasons = Vec::new();
    for item in items {
        match w.attempt(|w| append(w, item)) {
            Ok(d) => done.merge(d),
            Err(e) if e.is_retryable() => return Err(e),
            Err(e) => {
                let reason = format!("cannot be journaled: {e}");
                w.quarantine(device, &reason, &raw(item))?;
                done.quarantined += 1;
                reasons.push(reason);
            }
        }
    }
    Ok((done, reasons))
}

/// Journal one group of decoded events (a receipt, one message's events).
fn append_group(
    w: &mut WriteTx<'_>,
    device: &str,
    group: &[(DateTime<Utc>, EventBody)],
) -> Result<Delivered, StoreError> {
    let mut done = Delivered::default();
    for (ts, body) in group {
        let mut body = body.clone();
        resolve_sku(w.conn(), &mut body)?;
        if w.append(NewEvent::new(*ts, device, body))?.duplicate {
            done.duplicates += 1;
        } else {
            done.events += 1;
        }
    }
    Ok(done)
}

/// A group of events as JSON, kept in the quarantine when the group could
/// not be journaled (the decoded form: the raw bytes are gone by then).
fn group_json(group: &[(DateTime<Utc>, EventBody)]) -> Vec<u8> {
    let events: Vec<serde_json::Value> = group
        .iter()
        .map(|(ts, body)| {
            let mut v = serde_json::to_value(body).unwrap_or_default();
            if let Some(m) = v.as_object_mut() {
                m.insert("ts".into(), crate::event::format_ts(ts).into());
            }
            v
        })
        .collect();
    serde_json::to_vec(&events).unwrap_or_default()
}

/// Fill in SKUs the device could not know: a sale line that named only a
/// GTIN gets its SKU from the catalog (an unknown GTIN stands in as the
/// SKU so the line is not lost; central can map it later), a label
/// confirmation gets the SKU the label belongs to.
fn resolve_sku(conn: &rusqlite::Connection, body: &mut EventBody) -> Result<(), StoreError> {
    match body {
        EventBody::Sale(l) | EventBody::Return(l) if l.sku.is_empty() => {
            if let Some(gtin) = l.gtin.clone() {
                l.sku = catalog::sku_for_gtin(conn, &gtin)?.unwrap_or(gtin);
            }
        }
        EventBody::LabelAck(a) if a.sku.is_empty() => {
            a.sku = crate::domain::labels::sku_of(conn, &a.label_id)?.unwrap_or_default();
        }
        _ => {}
    }
    Ok(())
}
