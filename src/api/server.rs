//! The API's HTTP server: hyper's HTTP/1 connection driver under an accept
//! loop that bounds what clients can hold, so that no number of idle or
//! slow connections makes the API, `/healthz` included, unreachable.
//!
//! - A client has [`Limits::header_timeout`] to send a complete request
//!   head, counted from when the connection opens or its previous answer
//!   went out: this is both the header timeout (slowloris) and the idle
//!   timeout of kept-alive connections.
//! - At most [`Limits::max_connections`] connections are open (and never
//!   more than half the open-file limit), plus for a moment an eighth more
//!   while those making room close. A connection beyond the cap
//!   makes room by closing the oldest connection that is not answering a
//!   request: first those that never sent one, then idle kept-alive ones
//!   whose answers are all written. Only when no connection can go within
//!   100 ms (all are in the middle of a request) is the newcomer closed
//!   unanswered.
//! - A client that takes no byte of its answer for
//!   [`Limits::write_timeout`] loses the connection.
//! - Running out of file descriptors in `accept` closes idle connections
//!   and retries within milliseconds, instead of sleeping.
//! - On shutdown, requests in flight finish (for at most
//!   [`Limits::shutdown_grace`]); idle connections are closed.

use std::collections::BTreeMap;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tower::ServiceExt;

use super::socket::Socket;
use super::tracked::{Busy, Tracked};
use crate::shutdown::Shutdown;

/// Connections one listener keeps open at most, before the open-file
/// limit lowers it.
pub const MAX_CONNECTIONS: usize = 1024;

/// Connections the ops listener (`api.ops_listen`) keeps open at most:
/// probes and a Prometheus scraper need few.
pub const OPS_MAX_CONNECTIONS: usize = 64;

/// Time to send a complete request head, from when the connection opens
/// or goes idle.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest a client may leave its answer unread.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// Largest request head hyper buffers (request line and headers); also
/// what one slow connection can make the agent hold.
pub const MAX_HEAD_BYTES: usize = 32 * 1024;

/// Most header lines in a request.
pub const MAX_HEADERS: usize = 100;

/// How the server bounds its clients. [`Limits::default`] is what the
/// daemon uses.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// Most connections open at once (further lowered to half the
    /// process's open-file limit).
    pub max_connections: usize,
    /// Time a client has to send a complete request head, from when the
    /// connection opens or its previous answer went out.
    pub header_timeout: Duration,
    /// Longest a client may take no byte of its answer before its
    /// connection is closed.
    pub write_timeout: Duration,
    /// After shutdown, how long requests in flight get to finish before
    /// their connections are dropped.
    pub shutdown_grace: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: MAX_CONNECTIONS,
            header_timeout: HEADER_TIMEOUT,
            write_timeout: WRITE_TIMEOUT,
            shutdown_grace: super::REQUEST_TIMEOUT + Duration::from_secs(5),
        }
    }
}

/// Raise the soft open-file limit to the hard one (systemd's default soft
/// limit is 1024); returns the soft limit in force afterwards.
pub fn raise_fd_limit() -> io::Result<u64> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).map_err(io::Error::from)?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard).map_err(io::Error::from)?;
        tracing::info!(from = soft, to = hard, "open-file limit raised");
    }
    // rlim_t is u64 on 64-bit targets but u32 on 32-bit ARM (armhf
    // gateways): widen it, which is a no-op on 64-bit.
    #[allow(clippy::useless_conversion)]
    let limit = u64::from(hard.max(soft));
    Ok(limit)
}

/// Half the open-file limit: the other half is for the database, the
/// devices and central.
fn fd_budget() -> usize {
    use nix::sys::resource::{Resource, getrlimit};
    getrlimit(Resource::RLIMIT_NOFILE)
        .map(|(soft, _)| usize::try_from(soft / 2).unwrap_or(usize::MAX))
        .unwrap_or(MAX_CONNECTIONS)
}

/// Serve `app` on `listener` until `shutdown`, within `limits`.
pub async fn serve(
    app: Router,
    listener: TcpListener,
    limits: Limits,
    mut shutdown: Shutdown,
) -> io::Result<()> {
    let cap = limits.max_connections.min(fd_budget()).max(1);
    let slack = cap / 8 + 1;
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, max_connections = cap, "local API listening");
    }
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(MAX_HEAD_BYTES)
        .max_headers(MAX_HEADERS);
    let builder = Arc::new(builder);
    let registry = Registry::default();
    let mut tasks = JoinSet::new();
    let mut out_of_fds = false;
    let mut refused_full = false;
    let mut at_cap = false;
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = shutdown.wait() => break,
            Some(_) = tasks.join_next(), if !tasks.is_empty() => continue,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            // The peer gave up before we took it: nothing to do.
            Err(e) if is_peer_error(&e) => continue,
            Err(e) => {
                // Out of descriptors (or memory): make room and retry soon.
                if !out_of_fds {
                    tracing::warn!(error = %e, connections = registry.len(),
                        "the API cannot accept connections; closing idle ones");
                    out_of_fds = true;
                }
                registry.shed(SHED_BATCH);
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        out_of_fds = false;
        // Once per burst: the operator should know the API is flooded.
        let full = registry.len() >= cap;
        if full && !at_cap {
            tracing::warn!(
                connections = cap,
                "the API is at its connection cap; closing the oldest idle connections to make room"
            );
        }
        at_cap = full;
        // At the cap, the oldest connection that owes nothing makes room.
        // Those making room close within a task switch or two; should they
        // pile up (connections coming faster than that), accepting waits
        // for them, so the descriptors stay within the cap and a slack.
        if full
            && !(registry.shed(1)
                && (registry.len() < cap + slack || registry.wait_below(cap + slack).await))
        {
            if !refused_full {
                tracing::warn!(
                    connections = cap,
                    "every API connection is answering a request; refusing new ones until one finishes"
                );
                refused_full = true;
            }
            continue; // dropping the stream closes it
        }
        refused_full = false;
        let (id, conn) = registry.add();
        tasks.spawn(connection(
            stream,
            builder.clone(),
            app.clone(),
            conn,
            limits.write_timeout,
            registry.clone(),
            id,
        ));
    }
    drop(listener);
    registry.shed_all();
    let drain = async { while tasks.join_next().await.is_some() {} };
    if tokio::time::timeout(limits.shutdown_grace, drain)
        .await
        .is_err()
    {
        tracing::warn!(
            connections = tasks.len(),
            "API requests still running at shutdown; dropping them"
        );
        tasks.abort_all();
    }
    Ok(())
}

/// Connections closed at once when `accept` runs out of descriptors.
const SHED_BATCH: usize = 32;

/// Errors of one incoming connection rather than of the listener.
fn is_peer_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// Serve one connection until it ends, or is told to close.
async fn connection(
    stream: TcpStream,
    builder: Arc<http1::Builder>,
    app: Router,
    state: Arc<ConnState>,
    write_timeout: Duration,
    registry: Registry,
    id: u64,
) {
    // Leaves the registry however the task ends, so that the count stays
    // true.
    let _registered = Registered { registry, id };
    let _ = stream.set_nodelay(true);
    let service = {
        let state = state.clone();
        hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
            // Counted busy from here until its answer's body is dropped.
            let busy = Busy::enter(&state.busy, &state.served);
            let app = app.clone();
            async move {
                let response = app.oneshot(req.map(Body::new)).await;
                response.map(|r| r.map(|body| Body::new(Tracked::new(body, busy))))
            }
        })
    };
    let socket = Socket::new(stream, state.served.clone(), write_timeout);
    let flushed = socket.flushed();
    let conn = builder.serve_connection(TokioIo::new(socket), service);
    tokio::pin!(conn);
    let mut graceful = false;
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "API connection ended");
                }
                break;
            }
            () = state.close.notified(), if !graceful => {
                // Nothing asked, or every answer is in the kernel's hands:
                // nothing is owed, close at once (mid-head or not).
                let owes = state.served.load(Ordering::Acquire)
                    && (state.busy.load(Ordering::Acquire) > 0 || !flushed.load(Ordering::Acquire));
                if !owes {
                    break;
                }
                // Finishes the request in flight and its answer, then closes.
                conn.as_mut().graceful_shutdown();
                graceful = true;
            }
        }
    }
}

/// A connection's place in the registry, given up when dropped.
struct Registered {
    registry: Registry,
    id: u64,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.registry.remove(self.id);
    }
}

/// What the accept loop knows of one connection.
#[derive(Debug, Default)]
struct ConnState {
    /// A request was handed to the router (so its answer must not be cut).
    served: Arc<AtomicBool>,
    /// Requests whose answer has not been written out yet.
    busy: Arc<AtomicUsize>,
    /// Told to close: not chosen again.
    closing: AtomicBool,
    close: Notify,
}

/// The open connections, oldest first.
#[derive(Debug, Clone, Default)]
struct Registry(Arc<(Mutex<RegistryInner>, Notify)>);

/// How long a new connection at the cap waits for the one that makes room.
const ROOM_WAIT: Duration = Duration::from_millis(100);

#[derive(Debug, Default)]
struct RegistryInner {
    next_id: u64,
    conns: BTreeMap<u64, Arc<ConnState>>,
}

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, RegistryInner> {
        // The map stays consistent whatever a panicking holder did.
        self.0.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Wait (up to [`ROOM_WAIT`]) until fewer than `n` connections are
    /// open; false if they still are not.
    async fn wait_below(&self, n: usize) -> bool {
        let deadline = tokio::time::Instant::now() + ROOM_WAIT;
        while self.len() >= n {
            if tokio::time::timeout_at(deadline, self.0.1.notified())
                .await
                .is_err()
            {
                return self.len() < n;
            }
        }
        true
    }

    fn add(&self) -> (u64, Arc<ConnState>) {
        let mut r = self.lock();
        let id = r.next_id;
        r.next_id += 1;
        let state = Arc::new(ConnState::default());
        r.conns.insert(id, state.clone());
        (id, state)
    }

    fn remove(&self, id: u64) {
        let mut r = self.lock();
        r.conns.remove(&id);
        drop(r);
        self.0.1.notify_one();
    }

    fn len(&self) -> usize {
        self.lock().conns.len()
    }

    /// Tell up to `n` connections that are not answering a request to
    /// close, oldest first, those that never sent a request before idle
    /// kept-alive ones. Returns whether any was told.
    fn shed(&self, n: usize) -> bool {
        let r = self.lock();
        let idle = |c: &&Arc<ConnState>| {
            !c.closing.load(Ordering::Relaxed) && c.busy.load(Ordering::Acquire) == 0
        };
        let never_asked = r
            .conns
            .values()
            .filter(idle)
            .filter(|c| !c.served.load(Ordering::Acquire));
        let kept_alive = r
            .conns
            .values()
            .filter(idle)
            .filter(|c| c.served.load(Ordering::Acquire));
        let victims: Vec<_> = never_asked.chain(kept_alive).take(n).cloned().collect();
        for c in &victims {
            c.closing.store(true, Ordering::Relaxed);
            c.close.notify_one();
        }
        !victims.is_empty()
    }

    /// Tell every connection to close (shutdown): idle ones close, busy
    /// ones finish their request first.
    fn shed_all(&self) {
        let r = self.lock();
        for c in r.conns.values() {
            c.close.notify_one();
        }
    }
}
