//! The one writer (DESIGN invariant 2). A dedicated thread owns the write
//! connection; producers send it jobs through a bounded channel and get
//! their answer only after the transaction holding their work committed
//! (invariant 1: commit before acknowledge).
//!
//! Group commit: the writer takes whatever jobs are queued, up to
//! [`MAX_GROUP_EVENTS`] events, and commits them in one transaction. There
//! is no artificial wait: a lone event commits at once, and under load the
//! queue fills while the previous group is being fsynced, so groups grow
//! exactly when it pays off. A job that fails (a projection rejecting its
//! input) is rolled back alone and the rest of the group still commits:
//! each job runs inside its own savepoint, except runs of plain appends,
//! which share one (they are data, not closures, so should one of them
//! fail the run is rolled back and run again one savepoint per append).
//! A savepoint per single-event append cost about a third of the writer's
//! time (`storegate bench journal`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Instant;

use rusqlite::{Connection, params};
use tokio::sync::{mpsc, oneshot};

use super::{SqlContext, StoreError};
use crate::event::{Event, NewEvent, Seq};

/// Most events committed in one transaction.
pub const MAX_GROUP_EVENTS: usize = 1024;
/// Jobs that may wait for the writer before producers are held back.
pub const QUEUE_DEPTH: usize = 4096;
/// Quarantine rows kept; older ones are deleted as new ones arrive.
pub const QUARANTINE_MAX_ROWS: i64 = 10_000;
/// Bytes of raw input and reasons the quarantine keeps at most.
pub const QUARANTINE_MAX_BYTES: i64 = 8 * 1024 * 1024;
/// Head of the raw input kept per quarantined unit: enough to see what
/// the device sent, not enough for a garbage stream to fill the disk.
pub const QUARANTINE_RAW_BYTES: usize = 4096;
/// Longest reason kept.
const QUARANTINE_REASON_BYTES: usize = 1024;
/// The quarantine is trimmed every this many rows.
const QUARANTINE_TRIM_EVERY: i64 = 100;
/// How deep projections may derive events from derived events.
const MAX_DERIVATION_DEPTH: usize = 4;

/// The result of appending one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    pub seq: Seq,
    /// The event's natural key was already journaled (a redelivery): nothing
    /// new was written and `seq` is the original's.
    pub duplicate: bool,
}

/// Keeps projections (stock, prices, labels, alerts) in step with the
/// journal. Called inside the transaction of every appended event; may
/// return further events caused by it (a `price_conflict` caused by a
/// `sale`), which are journaled in the same transaction.
pub trait Projector: Send {
    fn apply(&mut self, conn: &Connection, event: &Event) -> Result<Vec<NewEvent>, StoreError>;
}

/// No projections: the bare journal.
pub struct NoProjections;

impl Projector for NoProjections {
    fn apply(&mut self, _: &Connection, _: &Event) -> Result<Vec<NewEvent>, StoreError> {
        Ok(Vec::new())
    }
}

/// An event serialised on the producer's side, so that the writer thread
/// spends its time on SQLite only. Its seq is set when it is journaled.
struct PreparedEvent {
    event: Event,
    data: String,
    natural_key: Option<String>,
}

impl PreparedEvent {
    fn new(event: NewEvent) -> Self {
        PreparedEvent {
            data: event.body.data_json(),
            natural_key: event.natural_key(),
            event: event.with_seq(0),
        }
    }
}

/// What a job hands back to the writer: whether it succeeded (else its
/// savepoint is rolled back), and what to do once the commit is decided.
struct Completion {
    ok: bool,
    finish: Finish,
}

/// Told whether the group committed; replies to the producer.
type Finish = Box<dyn FnOnce(Result<(), &StoreError>) + Send>;

/// A job gets `None` when its group could not even begin a transaction;
/// it then only reports the failure.
type Job = Box<dyn FnOnce(Option<&mut WriteTx<'_>>) -> Completion + Send>;

enum Request {
    /// Events to journal atomically ([`Writer::append`]).
    Append {
        events: Vec<PreparedEvent>,
        reply: oneshot::Sender<Result<Vec<Appended>, StoreError>>,
    },
    /// Any other work ([`Writer::transact`]).
    Job {
        /// Events the job will append, to bound the group size.
        weight: usize,
        job: Job,
    },
}

impl Request {
    fn weight(&self) -> usize {
        match self {
            Request::Append { events, .. } => events.len(),
            Request::Job { weight, .. } => *weight,
        }
    }
}

/// The transaction a job runs in. Everything written through it commits
/// or rolls back together with the group.
pub struct WriteTx<'c> {
    conn: &'c Connection,
    projector: &'c mut dyn Projector,
    next_seq: Seq,
}

impl WriteTx<'_> {
    /// The write connection, for projection and sync-state tables.
    pub fn conn(&self) -> &Connection {
        self.conn
    }

    /// Journal one event (unless its natural key is already journaled) and
    /// run the projections on it.
    pub fn append(&mut self, event: NewEvent) -> Result<Appended, StoreError> {
        self.append_prepared(&mut PreparedEvent::new(event), 0)
    }

    /// Journal events in order; stops at the first failure.
    fn append_all(&mut self, events: &mut [PreparedEvent]) -> Result<Vec<Appended>, StoreError> {
        events
            .iter_mut()
            .map(|p| self.append_prepared(p, 0))
            .collect()
    }

    fn append_prepared(
        &mut self,
        p: &mut PreparedEvent,
        depth: usize,
    ) -> Result<Appended, StoreError> {
        p.event.body.check_bounds().map_err(|reason| {
            StoreError::Rejected(format!("{} event refused: {reason}", p.event.body.kind()))
        })?;
        let seq = self.next_seq;
        let ts_ms = p.event.ts.timestamp_millis();
        if let Some(key) = &p.natural_key {
            let inserted = self
                .conn
                .prepare_cached(
                    "INSERT INTO natural_keys (key, seq, ts_ms) VALUES (?1, ?2, ?3)
                     ON CONFLICT (key) DO NOTHING",
                )
                .and_then(|mut st| st.execute(params![key, seq, ts_ms]))
                .ctx("recording a natural key")?;
            if inserted == 0 {
                let original: Seq = self
                    .conn
                    .prepare_cached("SELECT seq FROM natural_keys WHERE key = ?1")
                    .and_then(|mut st| st.query_row([key], |r| r.get(0)))
                    .ctx("looking up a natural key")?;
                return Ok(Appended {
                    seq: original,
                    duplicate: true,
                });
            }
        }
        self.conn
            .prepare_cached(
                "INSERT INTO journal (seq, ts_ms, device, kind, data) VALUES (?1, ?2, ?3, ?4, ?5)",
            )
            .and_then(|mut st| {
                st.execute(params![
                    seq,
                    ts_ms,
                    p.event.device,
                    p.event.body.kind(),
                    p.data
                ])
            })
            .ctx("appending to the journal")?;
        self.next_seq += 1;
        p.event.seq = seq;
        let derived = self.projector.apply(self.conn, &p.event)?;
        if !derived.is_empty() {
            if depth >= MAX_DERIVATION_DEPTH {
                return Err(StoreError::Rejected(format!(
                    "projections derived events {MAX_DERIVATION_DEPTH} levels deep from seq {seq}; refusing to loop"
                )));
            }
            for d in derived {
                self.append_prepared(&mut PreparedEvent::new(d), depth + 1)?;
            }
        }
        Ok(Appended {
            seq,
            duplicate: false,
        })
    }

    /// Run `f` in a savepoint of its own: when it fails, what it wrote
    /// (journal rows and their projections) is rolled back and the error
    /// returned, while the rest of the transaction goes on. Ingest uses it
    /// to quarantine one unit of input that cannot be journaled without
    /// holding up the others committed with it.
    pub fn attempt<R>(
        &mut self,
        f: impl FnOnce(&mut WriteTx<'_>) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        run_cached(self.conn, "SAVEPOINT attempt").ctx("starting a savepoint")?;
        let seq_before = self.next_seq;
        match f(self) {
            Ok(value) => {
                run_cached(self.conn, "RELEASE attempt").ctx("releasing a savepoint")?;
                Ok(value)
            }
            Err(e) => {
                self.next_seq = seq_before;
                run_cached(self.conn, "ROLLBACK TO attempt")
                    .and_then(|()| run_cached(self.conn, "RELEASE attempt"))
                    .ctx("rolling back a savepoint")?;
                Err(e)
            }
        }
    }

    /// Keep input that did not parse, with the head of its raw bytes (at
    /// most [`QUARANTINE_RAW_BYTES`]) and its full size. Bounded in rows
    /// and bytes (see [`trim_quarantine`]).
    pub fn quarantine(&mut self, device: &str, reason: &str, raw: &[u8]) -> Result<(), StoreError> {
        self.quarantine_head(device, reason, raw, raw.len())
    }

    /// [`WriteTx::quarantine`] for input whose head was cut off already
    /// (`size` is how large the whole input was).
    pub fn quarantine_head(
        &mut self,
        device: &str,
        reason: &str,
        head: &[u8],
        size: usize,
    ) -> Result<(), StoreError> {
        let head = &head[..head.len().min(QUARANTINE_RAW_BYTES)];
        let reason = truncate_text(reason, QUARANTINE_REASON_BYTES);
        self.conn
            .prepare_cached(
                "INSERT INTO quarantine (at_ms, device, reason, raw, size) VALUES (?1, ?2, ?3, ?4, ?5)",
            )
            .and_then(|mut st| {
                st.execute(params![
                    chrono::Utc::now().timestamp_millis(),
                    device,
                    reason,
                    head,
                    size as i64
                ])
            })
            .ctx("quarantining input")?;
        if self.conn.last_insert_rowid() % QUARANTINE_TRIM_EVERY == 0 {
            trim_quarantine(self.conn, QUARANTINE_MAX_ROWS, QUARANTINE_MAX_BYTES)?;
        }
        Ok(())
    }
}

/// Keep the newest quarantine rows within `max_rows` and `max_bytes` (raw
/// bytes and reasons); returns the rows deleted.
pub fn trim_quarantine(
    conn: &Connection,
    max_rows: i64,
    max_bytes: i64,
) -> Result<usize, StoreError> {
    conn.prepare_cached(
        "DELETE FROM quarantine WHERE id <= (
           SELECT max(id) FROM (
             SELECT id, row_number() OVER w AS n,
                    sum(length(raw) + length(reason)) OVER w AS bytes
             FROM quarantine WINDOW w AS (ORDER BY id DESC)
           ) WHERE n > ?1 OR bytes > ?2)",
    )
    .and_then(|mut st| st.execute(params![max_rows, max_bytes]))
    .ctx("trimming the quarantine")
}

/// `text` cut to at most `max` bytes, on a character boundary.
fn truncate_text(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Counters the writer keeps for metrics and the watchdog.
#[derive(Debug, Default)]
pub struct WriterStats {
    pub groups: AtomicU64,
    pub events: AtomicU64,
    pub failed_groups: AtomicU64,
    /// Every commit group's duration, for the `/metrics` histogram.
    pub commit_times: super::latency::LatencyHistogram,
}

/// A cheap, clonable handle to submit work to the writer.
#[derive(Clone)]
pub struct Writer {
    tx: mpsc::Sender<Request>,
    stats: Arc<WriterStats>,
    head: tokio::sync::watch::Receiver<Seq>,
}

/// The writer's thread; join it after the last [`Writer`] handle is gone
/// (or after [`Writer::stop`]) to be sure everything queued was committed.
pub struct WriterThread(JoinHandle<()>);

impl WriterThread {
    pub fn join(self) {
        if self.0.join().is_err() {
            tracing::error!("the journal writer thread panicked");
        }
    }
}

impl Writer {
    /// Start the writer thread on a connection from [`super::open_write`].
    pub fn spawn(
        conn: Connection,
        projector: Box<dyn Projector>,
    ) -> Result<(Writer, WriterThread), StoreError> {
        let next_seq: Seq = conn
            .query_row(
                "SELECT COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'journal'), 0) + 1",
                [],
                |r| r.get(0),
            )
            .ctx("reading the journal head")?;
        let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
        let stats = Arc::new(WriterStats::default());
        let thread_stats = stats.clone();
        let (head_tx, head) = tokio::sync::watch::channel(next_seq - 1);
        // Replies go out from the runtime's own threads when there is one:
        // waking hundreds of producers one by one from the writer's thread
        // (a futex wake each) cost it more than their inserts.
        let replies = tokio::runtime::Handle::try_current().ok();
        let handle = std::thread::Builder::new()
            .name("journal-writer".into())
            .spawn(move || {
                writer_loop(
                    conn,
                    projector,
                    next_seq,
                    rx,
                    &thread_stats,
                    &head_tx,
                    replies,
                )
            })
            .map_err(|e| StoreError::Rejected(format!("cannot start the writer thread: {e}")))?;
        Ok((Writer { tx, stats, head }, WriterThread(handle)))
    }

    /// The last committed seq, updated after every commit: the pusher
    /// waits on it to push as soon as there is something to push.
    pub fn head(&self) -> tokio::sync::watch::Receiver<Seq> {
        self.head.clone()
    }

    pub fn stats(&self) -> &Arc<WriterStats> {
        &self.stats
    }

    /// Journal events atomically (all or none) and return their seqs once
    /// committed. Duplicates (by natural key) come back marked as such.
    pub async fn append(&self, events: Vec<NewEvent>) -> Result<Vec<Appended>, StoreError> {
        let events: Vec<PreparedEvent> = events.into_iter().map(PreparedEvent::new).collect();
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Request::Append { events, reply })
            .await
            .map_err(|_| StoreError::WriterStopped)?;
        answer.await.map_err(|_| StoreError::WriterStopped)?
    }

    /// Run `f` inside a commit group and return its result once committed.
    /// The way every other part of the house writes to the database.
    pub async fn transact<R, F>(&self, f: F) -> Result<R, StoreError>
    where
        F: FnOnce(&mut WriteTx<'_>) -> Result<R, StoreError> + Send + 'static,
        R: Send + 'static,
    {
        self.submit(1, f).await
    }

    /// [`Writer::transact`] for callers outside the async runtime.
    pub fn blocking_transact<R, F>(&self, f: F) -> Result<R, StoreError>
    where
        F: FnOnce(&mut WriteTx<'_>) -> Result<R, StoreError> + Send + 'static,
        R: Send + 'static,
    {
        let (request, reply) = Self::request(1, f);
        self.tx
            .blocking_send(request)
            .map_err(|_| StoreError::WriterStopped)?;
        reply
            .blocking_recv()
            .map_err(|_| StoreError::WriterStopped)?
    }

    async fn submit<R, F>(&self, weight: usize, f: F) -> Result<R, StoreError>
    where
        F: FnOnce(&mut WriteTx<'_>) -> Result<R, StoreError> + Send + 'static,
        R: Send + 'static,
    {
        let (request, reply) = Self::request(weight, f);
        self.tx
            .send(request)
            .await
            .map_err(|_| StoreError::WriterStopped)?;
        reply.await.map_err(|_| StoreError::WriterStopped)?
    }

    fn request<R, F>(weight: usize, f: F) -> (Request, oneshot::Receiver<Result<R, StoreError>>)
    where
        F: FnOnce(&mut WriteTx<'_>) -> Result<R, StoreError> + Send + 'static,
        R: Send + 'static,
    {
        let (reply_tx, reply_rx) = oneshot::channel();
        let job: Job = Box::new(move |w| match w.map(f) {
            Some(Ok(value)) => Completion {
                ok: true,
                finish: Box::new(move |commit| {
                    let _ = reply_tx.send(match commit {
                        Ok(()) => Ok(value),
                        Err(e) => Err(StoreError::Commit(e.to_string())),
                    });
                }),
            },
            Some(Err(e)) => Completion {
                ok: false,
                finish: Box::new(move |_| {
                    let _ = reply_tx.send(Err(e));
                }),
            },
            None => Completion {
                ok: false,
                finish: Box::new(move |commit| {
                    let reason = commit.err().map(|e| e.to_string()).unwrap_or_default();
                    let _ = reply_tx.send(Err(StoreError::Commit(reason)));
                }),
            },
        });
        (Request::Job { weight, job }, reply_rx)
    }
}

fn writer_loop(
    conn: Connection,
    mut projector: Box<dyn Projector>,
    mut next_seq: Seq,
    mut rx: mpsc::Receiver<Request>,
    stats: &WriterStats,
    head: &tokio::sync::watch::Sender<Seq>,
    replies: Option<tokio::runtime::Handle>,
) {
    let mut group: Vec<Request> = Vec::with_capacity(64);
    while let Some(first) = rx.blocking_recv() {
        let mut weight = first.weight();
        group.push(first);
        while weight < MAX_GROUP_EVENTS {
            match rx.try_recv() {
                Ok(r) => {
                    weight += r.weight();
                    group.push(r);
                }
                Err(_) => break,
            }
        }
        let started = Instant::now();
        let before = next_seq;
        let outcome = commit_group(&conn, projector.as_mut(), &mut next_seq, &mut group);
        stats.commit_times.observe(started.elapsed());
        match outcome {
            Ok(completions) => {
                stats.groups.fetch_add(1, Ordering::Relaxed);
                stats
                    .events
                    .fetch_add((next_seq - before) as u64, Ordering::Relaxed);
                if next_seq != before {
                    head.send_replace(next_seq - 1);
                }
                let many = completions.len() > 1;
                let reply = move || {
                    for c in completions {
                        (c.finish)(Ok(()));
                    }
                };
                match &replies {
                    // One wake of the runtime per group instead of one per
                    // producer. A runtime that is shutting down drops the
                    // task, and its producers learn the writer stopped.
                    Some(rt) if many => drop(rt.spawn(async move { reply() })),
                    _ => reply(),
                }
            }
            Err((e, completions)) => {
                stats.failed_groups.fetch_add(1, Ordering::Relaxed);
                next_seq = before;
                tracing::error!(error = %e, "journal commit failed; producers keep their input and retry");
                for c in completions {
                    (c.finish)(Err(&e));
                }
            }
        }
    }
    tracing::debug!("journal writer stopped: every handle is gone");
}

/// Run a group of jobs in one transaction. On success the completions are
/// returned for the caller to fire after COMMIT; on failure nothing was
/// stored and every completion learns why.
fn commit_group(
    conn: &Connection,
    projector: &mut dyn Projector,
    next_seq: &mut Seq,
    group: &mut Vec<Request>,
) -> Result<Vec<Completion>, (StoreError, Vec<Completion>)> {
    let mut completions = Vec::with_capacity(group.len());
    if let Err(e) = conn
        .execute_batch("BEGIN IMMEDIATE")
        .ctx("starting a commit group")
    {
        for request in group.drain(..) {
            completions.push(refused(request));
        }
        return Err((e, completions));
    }
    let mut requests = group.drain(..).peekable();
    let mut appends = Vec::new();
    while let Some(request) = requests.next() {
        let mut w = WriteTx {
            conn,
            projector: &mut *projector,
            next_seq: *next_seq,
        };
        let closed = match request {
            Request::Append { events, reply } => {
                appends.push((events, reply));
                while let Some(Request::Append { .. }) = requests.peek() {
                    if let Some(Request::Append { events, reply }) = requests.next() {
                        appends.push((events, reply));
                    }
                }
                append_run(&mut w, &mut appends, &mut completions)
            }
            Request::Job { job, .. } => in_savepoint(&mut w, "job", |w| {
                let completion = job(Some(w));
                let ok = completion.ok;
                completions.push(completion);
                ok
            }),
        };
        *next_seq = w.next_seq;
        if let Err(e) = closed {
            let _ = conn.execute_batch("ROLLBACK");
            // The jobs not run yet learn why, as the ones that ran do.
            completions.extend(requests.map(refused));
            return Err((
                StoreError::Sqlite {
                    context: "closing a job's savepoint",
                    source: e,
                },
                completions,
            ));
        }
    }
    match conn.execute_batch("COMMIT") {
        Ok(()) => Ok(completions),
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK");
            Err((
                StoreError::Sqlite {
                    context: "committing a group",
                    source: e,
                },
                completions,
            ))
        }
    }
}

/// Journal a run of consecutive appends under one savepoint. Should one
/// of them fail, the run is rolled back and each append runs again in a
/// savepoint of its own, so that only the failing one is refused.
fn append_run(
    w: &mut WriteTx<'_>,
    run: &mut Vec<(Vec<PreparedEvent>, AppendReply)>,
    completions: &mut Vec<Completion>,
) -> rusqlite::Result<()> {
    let mut results = Vec::with_capacity(run.len());
    in_savepoint(w, "appends", |w| {
        for (events, _) in run.iter_mut() {
            match w.append_all(events) {
                Ok(appended) => results.push(appended),
                Err(_) => return false,
            }
        }
        true
    })?;
    if results.len() == run.len() {
        for ((_, reply), appended) in run.drain(..).zip(results) {
            completions.push(answer(reply, Ok(appended)));
        }
        return Ok(());
    }
    for (mut events, reply) in run.drain(..) {
        let mut result = None;
        in_savepoint(w, "job", |w| {
            let r = w.append_all(&mut events);
            let ok = r.is_ok();
            result = Some(r);
            ok
        })?;
        if let Some(r) = result {
            completions.push(answer(reply, r));
        }
    }
    Ok(())
}

type AppendReply = oneshot::Sender<Result<Vec<Appended>, StoreError>>;

/// Run `f` in a savepoint named `name`, kept when `f` says it succeeded
/// and rolled back (with the seqs it took) when not.
fn in_savepoint(
    w: &mut WriteTx<'_>,
    name: &'static str,
    f: impl FnOnce(&mut WriteTx<'_>) -> bool,
) -> rusqlite::Result<()> {
    // Cached statements: parsing SAVEPOINT/RELEASE for every job cost
    // more than the insert it protects.
    let (begin, release, rollback) = match name {
        "appends" => (
            "SAVEPOINT appends",
            "RELEASE appends",
            "ROLLBACK TO appends",
        ),
        _ => ("SAVEPOINT job", "RELEASE job", "ROLLBACK TO job"),
    };
    run_cached(w.conn, begin)?;
    let seq_before = w.next_seq;
    if f(w) {
        run_cached(w.conn, release)
    } else {
        w.next_seq = seq_before;
        run_cached(w.conn, rollback).and_then(|()| run_cached(w.conn, release))
    }
}

/// The completion of an append: replies once the commit is decided.
fn answer(reply: AppendReply, result: Result<Vec<Appended>, StoreError>) -> Completion {
    match result {
        Ok(appended) => Completion {
            ok: true,
            finish: Box::new(move |commit| {
                let _ = reply.send(match commit {
                    Ok(()) => Ok(appended),
                    Err(e) => Err(StoreError::Commit(e.to_string())),
                });
            }),
        },
        Err(e) => Completion {
            ok: false,
            finish: Box::new(move |_| {
                let _ = reply.send(Err(e));
            }),
        },
    }
}

/// The completion of a request its group could not run.
fn refused(request: Request) -> Completion {
    match request {
        Request::Job { job, .. } => job(None),
        Request::Append { reply, .. } => Completion {
            ok: false,
            finish: Box::new(move |commit| {
                let reason = commit.err().map(|e| e.to_string()).unwrap_or_default();
                let _ = reply.send(Err(StoreError::Commit(reason)));
            }),
        },
    }
}

fn run_cached(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(|_| ())
}
