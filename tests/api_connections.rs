//! The local API under connections that never finish a request: the real
//! daemon (`storegate run`) on loopback, with the open-file limit systemd
//! gives a service by default (1024), flooded with idle and slowloris
//! connections while a probe keeps asking `/healthz`.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::free_port;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Connections that connect and send nothing.
const IDLE: usize = 2_000;
/// Connections that send a request head one byte a second.
const SLOWLORIS: usize = 1_000;
/// The daemon's hard open-file limit (systemd's default soft limit); it
/// starts with a soft limit of a quarter of that, and raises it.
const DAEMON_NOFILE: u64 = 1024;
/// The longest `/healthz` may take to answer during the flood.
const PROBE_DEADLINE: Duration = Duration::from_secs(3);

/// The daemon, killed when dropped.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count)
}

/// The soft open-file limit of a process.
fn soft_nofile(pid: u32) -> Option<u64> {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn start_daemon(dir: &Path, port: u16) -> Daemon {
    let config = dir.join("store.toml");
    std::fs::write(
        &config,
        format!(
            "store_id = \"store-conn\"\ndata_dir = {:?}\nprofiles_dir = {:?}\n[api]\nlisten = \"127.0.0.1:{port}\"\n",
            dir.join("data"),
            dir.join("profiles"),
        ),
    )
    .unwrap();
    let nofile = format!("--nofile={}:{DAEMON_NOFILE}", DAEMON_NOFILE / 4);
    Daemon(
        Command::new("prlimit")
            .arg(nofile)
            .arg("--")
            .arg(env!("CARGO_BIN_EXE_storegate"))
            .args(["run", "--config", config.to_str().unwrap()])
            .env("STOREGATE_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("daemon.log")).unwrap())
            .spawn()
            .expect("prlimit (util-linux) runs the daemon with a set open-file limit"),
    )
}

/// One `/healthz` on a fresh connection, retried until it answers 200 or
/// [`PROBE_DEADLINE`] passes. Returns how long it took.
async fn probe(http: &reqwest::Client, url: &str) -> Result<Duration, String> {
    let start = Instant::now();
    let mut last = String::new();
    while start.elapsed() < PROBE_DEADLINE {
        let left = PROBE_DEADLINE.saturating_sub(start.elapsed());
        match tokio::time::timeout(left, http.get(url).send()).await {
            Ok(Ok(r)) if r.status() == 200 => return Ok(start.elapsed()),
            Ok(Ok(r)) => last = format!("status {}", r.status()),
            Ok(Err(e)) => last = format!("{e:?}"),
            Err(_) => last = "no answer".into(),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(last)
}

/// Connect, with a deadline (a server that stopped accepting leaves
/// connects hanging in its backlog).
async fn connect(addr: &str) -> Option<TcpStream> {
    tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(addr))
        .await
        .ok()?
        .ok()
}

/// Wait until the server closes `stream` (EOF or reset); false if it
/// still holds it after `limit`.
async fn closed_within(mut stream: TcpStream, limit: Duration) -> bool {
    let mut buf = [0u8; 512];
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0) | Err(_)) => return true,
            // An answer (a 408 or error body) before the close is fine.
            Ok(Ok(_)) => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_slowloris_connections_cannot_take_the_api_down() {
    // The test itself holds thousands of sockets.
    let own_limit = storegate::api::server::raise_fd_limit().unwrap();
    assert!(
        own_limit >= (IDLE + SLOWLORIS + 256) as u64,
        "the test needs an open-file limit of {} (ulimit -Hn is {own_limit})",
        IDLE + SLOWLORIS + 256
    );
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let url = format!("http://{addr}/healthz");
    let daemon = start_daemon(dir.path(), port);
    let pid = daemon.0.id();
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let before = Instant::now();
    while probe(&http, &url).await.is_err() {
        assert!(
            before.elapsed() < Duration::from_secs(30),
            "the daemon did not start:\n{}",
            std::fs::read_to_string(dir.path().join("daemon.log")).unwrap_or_default()
        );
    }
    let (fds_before, rss_before) = (open_fds(pid), rss_kib(pid));
    assert_eq!(
        soft_nofile(pid),
        Some(DAEMON_NOFILE),
        "the daemon raises its soft open-file limit to the hard one"
    );

    // The flood: idle connections held open, slowloris ones trickling a
    // head that never ends; both stop by themselves.
    let opened = Arc::new(AtomicUsize::new(0));
    let flood = {
        let addr = addr.clone();
        let opened = opened.clone();
        tokio::spawn(async move {
            let mut idle = Vec::with_capacity(IDLE);
            let mut slow = Vec::with_capacity(SLOWLORIS);
            for i in 0..IDLE + SLOWLORIS {
                let Some(mut stream) = connect(&addr).await else {
                    continue;
                };
                opened.fetch_add(1, Ordering::Relaxed);
                if i % 3 == 2 && slow.len() < SLOWLORIS {
                    slow.push(tokio::spawn(async move {
                        let _ = stream
                            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
                            .await;
                        // At most a minute of one byte a second; true when
                        // the daemon closed the connection before.
                        for _ in 0..60 {
                            tokio::time::sleep(Duration::from_secs(1)).await;
                            if stream.write_all(b"X").await.is_err() {
                                return true;
                            }
                        }
                        false
                    }));
                } else {
                    idle.push(stream);
                }
            }
            (idle, slow)
        })
    };

    // Probe /healthz and sample the daemon while the flood runs.
    let mut worst = Duration::ZERO;
    let mut probes = 0;
    let (mut max_fds, mut max_rss) = (fds_before, rss_before);
    let flood_started = Instant::now();
    // Until the flood is opened and past the header timeout, so that the
    // probes also run while the server closes what it holds.
    while !flood.is_finished() || flood_started.elapsed() < Duration::from_secs(15) {
        match probe(&http, &url).await {
            Ok(took) => worst = worst.max(took),
            Err(last) => panic!(
                "/healthz did not answer within {PROBE_DEADLINE:?} after {} connections (last: {last}); daemon fds {}, log:\n{}",
                opened.load(Ordering::Relaxed),
                open_fds(pid),
                std::fs::read_to_string(dir.path().join("daemon.log")).unwrap_or_default()
            ),
        }
        probes += 1;
        max_fds = max_fds.max(open_fds(pid));
        max_rss = max_rss.max(rss_kib(pid));
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(
            flood_started.elapsed() < Duration::from_secs(300),
            "the flood did not finish"
        );
    }
    let (idle, slow) = flood.await.unwrap();
    let opened = opened.load(Ordering::Relaxed);
    eprintln!(
        "{opened} connections opened; {probes} probes of /healthz, slowest {worst:?}; daemon fds {fds_before} -> max {max_fds}, RSS {rss_before} -> max {max_rss} KiB"
    );
    assert!(opened >= IDLE, "only {opened} connections could be opened");
    // The cap is half the open-file limit, plus an eighth while those
    // making room close; the rest is the daemon's own.
    let cap = (DAEMON_NOFILE / 2) as usize;
    assert!(
        max_fds <= cap + cap / 8 + 1 + fds_before + 16,
        "the daemon held {max_fds} descriptors (cap {cap}, {fds_before} before)"
    );
    assert!(
        max_rss <= rss_before + 32 * 1024,
        "RSS grew from {rss_before} to {max_rss} KiB"
    );

    // Every connection the flood still holds is closed by the daemon:
    // none sent a whole head within the header timeout (10 s).
    let checks: Vec<_> = idle
        .into_iter()
        .map(|s| tokio::spawn(closed_within(s, Duration::from_secs(30))))
        .chain(slow)
        .collect();
    let held = checks.len();
    let mut still_open = 0;
    for c in checks {
        if !c.await.unwrap() {
            still_open += 1;
        }
    }
    assert_eq!(
        still_open, 0,
        "{still_open} of {held} connections left open"
    );
    assert!(probe(&http, &url).await.is_ok());
    let fds_after = open_fds(pid);
    assert!(
        fds_after <= fds_before + 16,
        "{fds_after} descriptors after the flood, {fds_before} before"
    );
}

/// The API served in this process with small limits, so that the rules
/// show in a second rather than a minute.
async fn small_api(max_connections: usize, header_timeout: Duration) -> common::api::Api {
    common::api::Api::start_with(move |s| {
        s.limits.max_connections = max_connections;
        s.limits.header_timeout = header_timeout;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_and_idle_kept_alive_connections_are_closed_after_the_header_timeout() {
    let api = small_api(64, Duration::from_millis(500)).await;
    let addr = api.base.trim_start_matches("http://").to_string();
    // Connected, nothing sent.
    let silent = TcpStream::connect(&addr).await.unwrap();
    // Half a head, never finished.
    let mut slow = TcpStream::connect(&addr).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    // One whole request answered, then idle.
    let mut kept = TcpStream::connect(&addr).await.unwrap();
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 12];
    kept.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"HTTP/1.1 200");
    for (what, stream) in [("silent", silent), ("slow", slow), ("kept-alive", kept)] {
        assert!(
            closed_within(stream, Duration::from_secs(10)).await,
            "the {what} connection is still open"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_cap_the_oldest_silent_connection_makes_room_for_a_probe() {
    let api = small_api(4, Duration::from_secs(60)).await;
    let addr = api.base.trim_start_matches("http://").to_string();
    let mut silent = Vec::new();
    for _ in 0..4 {
        silent.push(TcpStream::connect(&addr).await.unwrap());
    }
    // A fifth connection gets its answer, again and again: each time the
    // probe has gone, its place is free again.
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    for _ in 0..3 {
        let r = http.get(format!("{}/healthz", api.base)).send().await;
        assert_eq!(r.map(|r| r.status().as_u16()).ok(), Some(200));
    }
    // The oldest made room, long before its header timeout; the newest
    // are left alone. (How many went depends on how soon the server saw
    // each probe leave.)
    let mut closed = Vec::new();
    for s in silent {
        closed.push(closed_within(s, Duration::from_secs(1)).await);
    }
    assert!(closed[0] && !closed[3], "{closed:?}");
    assert!(
        closed.is_sorted_by(|a, b| a >= b),
        "oldest first: {closed:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_requests_in_flight_and_is_not_held_by_half_heads() {
    let entered = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let in_handler = entered.clone();
    let mut api = common::api::Api::start_with(move |s| {
        s.limits.header_timeout = Duration::from_secs(120);
        s.metrics = Arc::new(move || {
            in_handler.store(true, Ordering::Release);
            std::thread::sleep(Duration::from_millis(800));
            "# slow\n".to_string()
        });
    })
    .await;
    let addr = api.base.trim_start_matches("http://").to_string();
    let mut half = TcpStream::connect(&addr).await.unwrap();
    half.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let slow = tokio::spawn(api.http.get(format!("{}/metrics", api.base)).send());
    // The request is in the handler (sleeping) when shutdown comes.
    common::wait_for_async("the request in its handler", || {
        entered.load(Ordering::Acquire).then_some(())
    })
    .await;
    api.store.stop();
    let answer = slow
        .await
        .unwrap()
        .expect("the request in flight is answered");
    assert_eq!(answer.status().as_u16(), 200);
    assert_eq!(answer.text().await.unwrap(), "# slow\n");
    let server = std::mem::replace(&mut api.server, tokio::spawn(async { Ok(()) }));
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("the server stops although a head was never finished")
        .unwrap()
        .unwrap();
    assert!(closed_within(half, Duration::from_secs(1)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_its_answer_loses_the_connection() {
    const BIG: usize = 32 * 1024 * 1024;
    let api = common::api::Api::start_with(|s| {
        s.limits.write_timeout = Duration::from_secs(1);
        s.metrics = Arc::new(|| "#".repeat(BIG));
    })
    .await;
    let addr = api.base.trim_start_matches("http://").to_string();
    let mut stream = TcpStream::connect(&addr).await.unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    // The stall itself: the answer (far more than the socket buffers
    // hold) is left unread for four times the write timeout.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let mut received = 0usize;
    let mut buf = vec![0u8; 64 * 1024];
    let ended = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => received += n,
            }
        }
    })
    .await;
    assert!(
        ended.is_ok(),
        "the connection is still open after {received} bytes"
    );
    assert!(
        received < BIG,
        "the whole answer ({received} bytes) was sent"
    );
    // The server goes on.
    assert_eq!(api.get("/healthz", None).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ops_listener_keeps_its_own_small_cap() {
    let store = common::Store::new();
    let (_link, link_rx) = tokio::sync::watch::channel(storegate::sync::Link::Unknown);
    let state = storegate::api::ApiState::new(
        "store-ops".into(),
        store.db.clone(),
        store.writer.clone(),
        store.health.clone(),
        link_rx,
        storegate::api::Tokens::new(None, None),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let _server = tokio::spawn(storegate::api::serve_ops(
        state,
        listener,
        store.shutdown.clone(),
    ));
    let cap = storegate::api::server::OPS_MAX_CONNECTIONS;
    let mut silent = Vec::new();
    for _ in 0..cap {
        silent.push(TcpStream::connect(&addr).await.unwrap());
    }
    let r = reqwest::get(format!("http://{addr}/healthz"))
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    // The cap was reached: the oldest silent connection made room.
    let oldest = silent.remove(0);
    assert!(closed_within(oldest, Duration::from_secs(5)).await);
    let newest = silent.pop().unwrap();
    assert!(!closed_within(newest, Duration::from_millis(500)).await);
}
