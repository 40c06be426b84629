//! Handheld sled counts (`POST /v1/counts/epcs`): a session gathers the
//! distinct tags a sled read in one zone over several requests; closing it
//! counts the trade items per SKU against the books and journals the count
//! like any other (`count` events, and `adjustment`s when applied).
//!
//! The session's tags live in `sled_tags` (one row per distinct tag, so a
//! repeat within or across requests, or a whole resent request, changes
//! nothing). A session not sent to for [`IDLE_LIMIT_MS`] expires and its
//! tags are dropped; closed sessions keep their tags as long, so that a
//! resent close is recognised, and their row (with the answer) for good,
//! so that a session id is never counted twice.

use std::collections::BTreeMap;

use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};

use super::catalog;
use super::counts::{self, CountLine, CountResult, CountSession};
use super::epc::SledTag;
use super::stock;
use crate::db::{SqlContext, StoreError, WriteTx};

/// How long a session may go without a request before it expires (open)
/// or its tags are dropped (closed): a day, longer than any shift.
pub const IDLE_LIMIT_MS: i64 = 24 * 3600 * 1000;

/// Most distinct entries one session may hold; a zone with more is
/// counted in several sessions.
pub const MAX_SESSION_TAGS: i64 = 1_000_000;

/// How many examples of non-product and malformed entries a report gives.
const EXAMPLES: usize = 5;

/// One request's worth of a sled session.
#[derive(Debug)]
pub struct SledBatch<'a> {
    /// Who reported it (the API uses `api`).
    pub device: &'a str,
    pub session_id: &'a str,
    pub zone: &'a str,
    /// Each entry's session key ([`SledTag::key`]) and what it is.
    pub tags: &'a [(String, SledTag)],
    /// Close the session after adding `tags`.
    pub close: Option<Closing<'a>>,
}

/// How to close: whether to bring on hand to the counted figures, and who.
#[derive(Debug, Clone, Copy)]
pub struct Closing<'a> {
    pub apply: bool,
    pub by: Option<&'a str>,
}

/// Why a batch was not taken; nothing of it was stored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SledRefusal {
    #[error(
        "session {session_id:?} is closed and this request holds tags it did not have; start a new session id for a new count"
    )]
    Closed { session_id: String },
    #[error(
        "session {session_id:?} expired after a day without requests and its tags were dropped; count again under a new session id"
    )]
    Expired { session_id: String },
    #[error(
        "session {session_id:?} counts zone {zone:?}; use a new session id to count another zone"
    )]
    OtherZone { session_id: String, zone: String },
    #[error(
        "session {session_id:?} would hold more than {MAX_SESSION_TAGS} distinct entries; close it and count the rest of the zone in a new session"
    )]
    Full { session_id: String },
}

/// Distinct entries a session holds, by kind.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionTotals {
    pub products: i64,
    pub non_product: i64,
    pub malformed: i64,
}

/// A count of entries of one kind, with a few of them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Examples {
    pub count: i64,
    pub examples: Vec<String>,
}

/// Product tags whose GTIN the catalog does not know: not counted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnknownGtin {
    pub gtin: String,
    pub tags: i64,
}

/// What closing a session found; kept with the session so that a resent
/// close gets it again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SledResult {
    /// Per SKU seen: on hand before, distinct items counted, difference.
    pub lines: Vec<CountResult>,
    /// SKUs with stock on hand that were not seen at all (only reported: a
    /// zone rarely holds all of a SKU's stock).
    pub expected_unseen: Vec<String>,
    pub unknown_gtins: Vec<UnknownGtin>,
    pub non_product: Examples,
    pub malformed: Examples,
    /// Whether on hand was brought to the counted figures.
    pub applied: bool,
    pub closed_ms: i64,
}

/// What became of a batch.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchOutcome {
    /// Entries of this request the session did not have yet.
    pub new: usize,
    pub totals: SessionTotals,
    /// Set once the session is closed (by this request or before).
    pub result: Option<SledResult>,
    /// The session was closed before this request, which brought nothing new.
    pub already_closed: bool,
}

/// The session row as far as a batch needs it.
struct Session {
    zone: String,
    state: String,
    totals: SessionTotals,
    result: Option<String>,
}

/// Add a batch to its session (opening it on first use) and close it if
/// asked. `Ok(Err(..))` when the batch is refused; then nothing of it is
/// stored.
pub fn record_batch(
    w: &mut WriteTx<'_>,
    now_ms: i64,
    batch: &SledBatch<'_>,
) -> Result<Result<BatchOutcome, SledRefusal>, StoreError> {
    expire(w.conn(), now_ms)?;
    let id = batch.session_id;
    let session = match load(w.conn(), id)? {
        Some(s) => s,
        None => {
            w.conn()
                .prepare_cached(
                    "INSERT INTO sled_sessions (session_id, zone, state, opened_ms, touched_ms) VALUES (?1, ?2, 'open', ?3, ?3)",
                )
                .and_then(|mut st| st.execute(params![id, batch.zone, now_ms]))
                .ctx("opening a sled session")?;
            Session {
                zone: batch.zone.to_string(),
                state: "open".into(),
                totals: SessionTotals::default(),
                result: None,
            }
        }
    };
    if session.zone != batch.zone {
        return Ok(Err(SledRefusal::OtherZone {
            session_id: id.into(),
            zone: session.zone,
        }));
    }
    match session.state.as_str() {
        "expired" => {
            return Ok(Err(SledRefusal::Expired {
                session_id: id.into(),
            }));
        }
        "closed" => return resent_to_closed(w.conn(), id, batch.tags, session),
        _ => {}
    }
    if session.totals.products
        + session.totals.non_product
        + session.totals.malformed
        + batch.tags.len() as i64
        > MAX_SESSION_TAGS
    {
        return Ok(Err(SledRefusal::Full {
            session_id: id.into(),
        }));
    }

    let mut totals = session.totals;
    let mut new = 0;
    {
        let mut insert = w
            .conn()
            .prepare_cached(
                "INSERT OR IGNORE INTO sled_tags (session_id, tag, kind, gtin) VALUES (?1, ?2, ?3, ?4)",
            )
            .ctx("preparing to store sled tags")?;
        for (key, tag) in batch.tags {
            let (kind, gtin, total) = match tag {
                SledTag::Product { gtin, .. } => ("product", Some(gtin), &mut totals.products),
                SledTag::NonProduct { .. } => ("non_product", None, &mut totals.non_product),
                SledTag::Malformed { .. } => ("malformed", None, &mut totals.malformed),
            };
            let added = insert
                .execute(params![id, key, kind, gtin])
                .ctx("storing a sled tag")?;
            if added == 1 {
                new += 1;
                *total += 1;
            }
        }
    }
    w.conn()
        .prepare_cached(
            "UPDATE sled_sessions SET touched_ms = ?2, products = ?3, non_product = ?4, malformed = ?5 WHERE session_id = ?1",
        )
        .and_then(|mut st| {
            st.execute(params![
                id,
                now_ms,
                totals.products,
                totals.non_product,
                totals.malformed
            ])
        })
        .ctx("updating a sled session")?;

    let result = match batch.close {
        Some(closing) => Some(close(w, now_ms, batch, closing, &totals)?),
        None => None,
    };
    Ok(Ok(BatchOutcome {
        new,
        totals,
        result,
        already_closed: false,
    }))
}

/// A request for a closed session: a resend (all its entries are already
/// in the session) gets the closing answer again; anything new is refused,
/// since it would not be counted.
fn resent_to_closed(
    conn: &Connection,
    id: &str,
    tags: &[(String, SledTag)],
    session: Session,
) -> Result<Result<BatchOutcome, SledRefusal>, StoreError> {
    let mut known = conn
        .prepare_cached("SELECT 1 FROM sled_tags WHERE session_id = ?1 AND tag = ?2")
        .ctx("checking a resent sled request")?;
    for (key, _) in tags {
        if !known
            .exists(params![id, key])
            .ctx("checking a resent sled request")?
        {
            return Ok(Err(SledRefusal::Closed {
                session_id: id.into(),
            }));
        }
    }
    let result = match session.result.as_deref().map(serde_json::from_str) {
        Some(Ok(r)) => Some(r),
        Some(Err(e)) => {
            return Err(StoreError::Rejected(format!(
                "stored sled result of {id}: {e}"
            )));
        }
        None => None,
    };
    Ok(Ok(BatchOutcome {
        new: 0,
        totals: session.totals,
        result,
        already_closed: true,
    }))
}

/// Count the session's items per SKU, journal the count, keep the answer.
fn close(
    w: &mut WriteTx<'_>,
    now_ms: i64,
    batch: &SledBatch<'_>,
    closing: Closing<'_>,
    totals: &SessionTotals,
) -> Result<SledResult, StoreError> {
    let id = batch.session_id;
    let per_gtin: Vec<(String, i64)> = {
        let mut st = w
            .conn()
            .prepare_cached(
                "SELECT gtin, COUNT(*) FROM sled_tags WHERE session_id = ?1 AND kind = 'product' GROUP BY gtin ORDER BY gtin",
            )
            .ctx("counting sled tags")?;
        let rows = st
            .query_map([id], |r| Ok((r.get(0)?, r.get(1)?)))
            .ctx("counting sled tags")?;
        rows.collect::<Result<_, _>>().ctx("counting sled tags")?
    };
    let mut per_sku: BTreeMap<String, i64> = BTreeMap::new();
    let mut unknown_gtins = Vec::new();
    for (gtin, n) in per_gtin {
        match catalog::sku_for_gtin(w.conn(), &gtin)? {
            Some(sku) => *per_sku.entry(sku).or_default() += n,
            None => unknown_gtins.push(UnknownGtin { gtin, tags: n }),
        }
    }
    let lines: Vec<CountLine> = per_sku
        .iter()
        .map(|(sku, &counted)| CountLine {
            sku: sku.clone(),
            counted,
        })
        .collect();
    let session = CountSession {
        device: batch.device,
        session_id: id,
        zone: batch.zone,
        method: "rfid",
        apply: closing.apply,
        by: closing.by,
    };
    let lines = counts::record_count(w, &session, &lines)?;
    let expected_unseen = stock::all_on_hand(w.conn())?
        .into_iter()
        .filter(|(sku, n)| *n > 0 && !per_sku.contains_key(sku))
        .map(|(sku, _)| sku)
        .collect();
    let result = SledResult {
        lines,
        expected_unseen,
        unknown_gtins,
        non_product: examples(w.conn(), id, "non_product", totals.non_product)?,
        malformed: examples(w.conn(), id, "malformed", totals.malformed)?,
        applied: closing.apply,
        closed_ms: now_ms,
    };
    let json = serde_json::to_string(&result)
        .map_err(|e| StoreError::Rejected(format!("sled result of {id}: {e}")))?;
    w.conn()
        .prepare_cached(
            "UPDATE sled_sessions SET state = 'closed', result = ?2 WHERE session_id = ?1",
        )
        .and_then(|mut st| st.execute(params![id, json]))
        .ctx("closing a sled session")?;
    Ok(result)
}

/// The count of a kind of entry and a few of them.
fn examples(conn: &Connection, id: &str, kind: &str, count: i64) -> Result<Examples, StoreError> {
    let mut st = conn
        .prepare_cached(
            "SELECT tag FROM sled_tags WHERE session_id = ?1 AND kind = ?2 ORDER BY tag LIMIT ?3",
        )
        .ctx("listing sled examples")?;
    let rows = st
        .query_map(params![id, kind, EXAMPLES as i64], |r| r.get(0))
        .ctx("listing sled examples")?;
    Ok(Examples {
        count,
        examples: rows
            .collect::<Result<_, _>>()
            .ctx("listing sled examples")?,
    })
}

fn load(conn: &Connection, id: &str) -> Result<Option<Session>, StoreError> {
    conn.prepare_cached(
        "SELECT zone, state, products, non_product, malformed, result FROM sled_sessions WHERE session_id = ?1",
    )
    .and_then(|mut st| {
        st.query_row([id], |r| {
            Ok(Session {
                zone: r.get(0)?,
                state: r.get(1)?,
                totals: SessionTotals {
                    products: r.get(2)?,
                    non_product: r.get(3)?,
                    malformed: r.get(4)?,
                },
                result: r.get(5)?,
            })
        })
        .optional()
    })
    .ctx("reading a sled session")
}

/// Expire open sessions idle for [`IDLE_LIMIT_MS`] and drop the tags of
/// every session idle that long (the rows stay, so ids are not reused).
fn expire(conn: &Connection, now_ms: i64) -> Result<(), StoreError> {
    let before = now_ms.saturating_sub(IDLE_LIMIT_MS);
    conn.prepare_cached(
        "UPDATE sled_sessions SET state = 'expired' WHERE tags_dropped = 0 AND state = 'open' AND touched_ms < ?1",
    )
    .and_then(|mut st| st.execute([before]))
    .ctx("expiring sled sessions")?;
    conn.prepare_cached(
        "DELETE FROM sled_tags WHERE session_id IN (SELECT session_id FROM sled_sessions WHERE tags_dropped = 0 AND touched_ms < ?1)",
    )
    .and_then(|mut st| st.execute([before]))
    .ctx("dropping the tags of old sled sessions")?;
    conn.prepare_cached(
        "UPDATE sled_sessions SET tags_dropped = 1 WHERE tags_dropped = 0 AND touched_ms < ?1",
    )
    .and_then(|mut st| st.execute([before]))
    .ctx("dropping the tags of old sled sessions")?;
    Ok(())
}
