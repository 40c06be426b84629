//! The HTTP transports against real HTTP servers (axum on loopback): an
//! Impinj R700 streaming newline-delimited JSON from
//! `GET /api/v1/data/stream`, and an OpenEPaperLink access point with
//! `POST /jsonupload` and a paginated `GET /get_db`. The test plays the
//! device through state it shares with the server.

mod common;

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::Router;
use axum::extract::{Form, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::Utc;
use common::{Store, free_port, wait_for_async};
use serde_json::{Value, json};
use storegate::codecs::esl::{LabelUpdate, OeplParams};
use storegate::devices::http::oepl_upload;
use storegate::devices::{DeviceError, DeviceSpec, run_device};
use storegate::domain::{labels, prices};
use storegate::event::{EventBody, LabelAck, LabelStatus, TagTransition};
use storegate::profiles::Codec;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio::time::Sleep;

// ---------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------

/// Run the device the way the daemon does (runner with reconnects).
fn start(store: &Store, spec: DeviceSpec) -> JoinHandle<()> {
    tokio::spawn(run_device(
        spec,
        store.ingest.clone(),
        None,
        store.shutdown.clone(),
    ))
}

/// Trigger shutdown and check the device task ends by itself.
async fn stop(mut store: Store, task: JoinHandle<()>) {
    store.stop();
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("device task ends on shutdown")
        .unwrap();
}

/// Whether the store's health board shows the device up.
fn is_up(store: &Store, id: &str) -> bool {
    store.health.get(id).is_some_and(|h| h.up)
}

/// Serve `router` on a free loopback port; returns `http://127.0.0.1:port`.
/// The server lives as long as the test's runtime.
async fn serve(router: Router, trickle: bool) -> String {
    let address = format!("127.0.0.1:{}", free_port());
    let listener = TcpListener::bind(&address).await.unwrap();
    if trickle {
        tokio::spawn(async move { axum::serve(TrickleListener(listener), router).await });
    } else {
        tokio::spawn(async move { axum::serve(listener, router).await });
    }
    format!("http://{address}")
}

/// Bytes per write of a [`Trickle`] connection.
const PIECE: usize = 16;
/// Pause after each write of a [`Trickle`] connection.
const PAUSE: Duration = Duration::from_millis(1);

/// A listener whose connections send at most [`PIECE`] bytes per write and
/// pause after each: every line of a stream then reaches the agent split
/// across many reads, as from a reader on a slow network.
struct TrickleListener(TcpListener);

impl axum::serve::Listener for TrickleListener {
    type Io = Trickle;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Trickle, SocketAddr) {
        loop {
            if let Ok((stream, addr)) = self.0.accept().await {
                // Without it, Nagle's algorithm would merge the pieces.
                stream.set_nodelay(true).unwrap();
                let conn = Trickle {
                    inner: stream,
                    pause: None,
                };
                return (conn, addr);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.0.local_addr()
    }
}

/// See [`TrickleListener`].
struct Trickle {
    inner: TcpStream,
    pause: Option<Pin<Box<Sleep>>>,
}

impl AsyncRead for Trickle {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Trickle {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if let Some(pause) = self.pause.as_mut() {
            ready!(pause.as_mut().poll(cx));
            self.pause = None;
        }
        let piece = &buf[..buf.len().min(PIECE)];
        let written = ready!(Pin::new(&mut self.inner).poll_write(cx, piece));
        self.pause = Some(Box::pin(tokio::time::sleep(PAUSE)));
        Poll::Ready(written)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

// ---------------------------------------------------------------------------
// Impinj R700 event stream
// ---------------------------------------------------------------------------

/// The simulated reader: one answer per request to the stream, in order;
/// when they run out, empty streams (the agent keeps reconnecting).
struct Reader {
    answers: VecDeque<(StatusCode, String)>,
    requests: usize,
}

async fn data_stream(State(reader): State<Arc<Mutex<Reader>>>) -> Response {
    let mut reader = reader.lock().unwrap();
    reader.requests += 1;
    let (status, body) = reader
        .answers
        .pop_front()
        .unwrap_or((StatusCode::OK, String::new()));
    (status, [("content-type", "application/x-ndjson")], body).into_response()
}

/// A tagInventory event with `epcHex` enabled, of the GS1 SGTIN-96
/// example EPC (`epc` is the same EPC in base64).
const TAG_HEX: &str = r#"{"timestamp":"2024-05-10T08:00:01.1Z","hostname":"impinj-14-aa-01","eventType":"tagInventory","tagInventoryEvent":{"epc":"MHQle/cZTkAAABqF","epcHex":"3074257BF7194E4000001A85","antennaPort":2,"peakRssiCdbm":-5525,"frequency":902750,"transmitPowerCdbm":3000}}"#;
/// A tagInventory event with the base64 `epc` only (URL-safe alphabet).
const TAG_BASE64: &str = r#"{"timestamp":"2021-02-02T22:18:35.658476625Z","hostname":"impinj-14-1f-23","eventType":"tagInventory","tagInventoryEvent":{"epc":"4oARYGAAAgpmgfI_","pc":"NAA=","antennaPort":1,"antennaName":"Portal1","peakRssiCdbm":-4050,"frequency":915750,"transmitPowerCdbm":3000}}"#;
/// Sent as the last line of a stream, without a newline.
const TAG_LAST: &str = r#"{"timestamp":"2024-05-10T08:00:02Z","hostname":"impinj-14-aa-01","eventType":"tagInventory","tagInventoryEvent":{"epcHex":"e2801160600002000000abcd","antennaPort":1,"peakRssiCdbm":-6000}}"#;
/// Not a read: ignored, not quarantined.
const STATUS: &str = r#"{"timestamp":"2024-05-10T08:00:00Z","hostname":"impinj-14-aa-01","eventType":"inventoryStatus","inventoryStatusEvent":{"inventoryStatus":"running"}}"#;
/// A line cut short.
const GARBAGE: &str = r#"{"timestamp":"2024-05-10T08:00:03Z","eventType":"tagInventory","tagInventoryEvent":{"epcHex":"30"#;

fn arrivals(events: &[storegate::event::Event]) -> Vec<TagTransition> {
    events
        .iter()
        .filter_map(|e| match &e.body {
            EventBody::TagArrived(t) => Some(t.clone()),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn impinj_stream_split_lines_and_reconnects() {
    let store = Store::new();
    // A refused first request, then two streams that each end. Lines end
    // in CRLF or LF; blank lines are keepalives.
    let first = format!("\r\n{TAG_HEX}\r\n{STATUS}\n{GARBAGE}\n");
    let second = format!("{TAG_BASE64}\n\n{TAG_LAST}");
    let reader = Arc::new(Mutex::new(Reader {
        answers: VecDeque::from([
            (StatusCode::SERVICE_UNAVAILABLE, "starting up".to_string()),
            (StatusCode::OK, first),
            (StatusCode::OK, second),
        ]),
        requests: 0,
    }));
    let router = Router::new()
        .route("/api/v1/data/stream", get(data_stream))
        .with_state(reader.clone());
    let base = serve(router, true).await;
    let spec = store.device(
        &format!(
            r#"
id = "portal-1"
profile = "impinj-iot"
transport = "http-stream"
url = "{base}/api/v1/data/stream"
zone = "backroom"
"#
        ),
        None,
    );
    let task = start(&store, spec);

    // The third tag is only in the second stream: reading it means the
    // agent reconnected after the first stream ended.
    let arrived = wait_for_async("three tags arrived", || {
        let a = arrivals(&store.events());
        (a.len() >= 3).then_some(a)
    })
    .await;
    let epcs: Vec<&str> = arrived.iter().map(|t| t.epc.as_str()).collect();
    assert_eq!(
        epcs,
        [
            "3074257BF7194E4000001A85",
            "E28011606000020A6681F23F",
            "E2801160600002000000ABCD"
        ]
    );
    // The SGTIN-96 example decodes to its GTIN.
    assert_eq!(arrived[0].gtin.as_deref(), Some("80614141123458"));
    assert_eq!(arrived[0].antenna, Some(2));
    assert_eq!(arrived[0].rssi_dbm, Some(-55));
    assert_eq!(arrived[1].gtin, None);
    for t in &arrived {
        assert_eq!(t.zone, "backroom");
        assert_eq!(t.reader, "portal-1");
    }

    // Only the cut line is quarantined; the inventoryStatus event is not.
    let quarantine = store.quarantine();
    assert_eq!(quarantine.len(), 1, "{quarantine:?}");
    assert_eq!(quarantine[0].0, "portal-1");
    assert_eq!(quarantine[0].2, GARBAGE.as_bytes());

    let requests = reader.lock().unwrap().requests;
    assert!(requests >= 3, "{requests} requests");
    stop(store, task).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn impinj_stream_overlong_line_is_quarantined() {
    let store = Store::new();
    // Longer than the agent's line limit, then a good line.
    let long = format!(
        "{{\"x\":\"{}\"}}",
        "a".repeat(storegate::devices::http::MAX_LINE)
    );
    let body = format!("{long}\n{TAG_HEX}\n");
    let reader = Arc::new(Mutex::new(Reader {
        answers: VecDeque::from([(StatusCode::OK, body)]),
        requests: 0,
    }));
    let router = Router::new()
        .route("/api/v1/data/stream", get(data_stream))
        .with_state(reader);
    // Without trickling: 1 MiB in 16-byte pieces would take a minute.
    let base = serve(router, false).await;
    let spec = store.device(
        &format!(
            "id = \"portal-2\"\nprofile = \"impinj-iot\"\ntransport = \"http-stream\"\n\
             url = \"{base}/api/v1/data/stream\"\n"
        ),
        None,
    );
    let task = start(&store, spec);

    let arrived = wait_for_async("the tag after the long line", || {
        let a = arrivals(&store.events());
        (!a.is_empty()).then_some(a)
    })
    .await;
    assert_eq!(arrived[0].epc, "3074257BF7194E4000001A85");
    let quarantine = store.quarantine();
    assert_eq!(quarantine.len(), 1, "{quarantine:?}");
    assert!(
        quarantine[0].1.contains("longer than"),
        "{}",
        quarantine[0].1
    );
    assert!(quarantine[0].2.starts_with(b"{\"x\":\"aaa"));
    assert!(quarantine[0].2.len() < 10_000);
    stop(store, task).await;
}

// ---------------------------------------------------------------------------
// OpenEPaperLink access point
// ---------------------------------------------------------------------------

/// The label of the test's SKU.
const MAC: &str = "0000021A4B3C5D6E";
/// Another tag of the AP that the store has no label row for.
const OTHER_MAC: &str = "0000021A4B3C5D6F";
/// A tag with content pending that the store knows nothing about.
const PENDING_MAC: &str = "0000021A4B3C5D70";

/// One tag record of the AP.
#[derive(Clone)]
struct Tag {
    mac: String,
    pending: bool,
    lastseen: i64,
    battery_mv: i64,
    rssi: i64,
}

/// The simulated AP's state.
#[derive(Default)]
struct Ap {
    tags: Vec<Tag>,
    /// Form fields of every `/jsonupload`.
    uploads: Vec<HashMap<String, String>>,
    /// `pos` of every `/get_db` request.
    pages: Vec<u64>,
    /// Answer `/get_db` with garbage.
    broken: bool,
    /// Refuse `/jsonupload`.
    refuse_uploads: bool,
}

type SharedAp = Arc<Mutex<Ap>>;

fn lock(ap: &SharedAp) -> MutexGuard<'_, Ap> {
    ap.lock().unwrap()
}

/// A tag record shaped like the AP's (/work/shared/samples/oepl-get_db.json).
fn record(tag: &Tag) -> Value {
    json!({"mac": tag.mac, "hash": "5f3a9c0e1d2b4a6f8e7d6c5b4a392817", "lastseen": tag.lastseen,
           "nextupdate": 1763809200, "nextcheckin": 1763805640, "pending": tag.pending,
           "alias": "A1-03", "contentMode": 19, "LQI": 98, "RSSI": tag.rssi, "temperature": 21,
           "batteryMv": tag.battery_mv, "hwType": 1, "wakeupReason": 0, "capabilities": 0,
           "modecfgjson": "", "isexternal": false, "apip": "0.0.0.0", "rotate": 0, "lut": 0,
           "invert": 0, "updatecount": 14, "updatelast": 1763805590, "ch": 11, "ver": 31})
}

/// `GET /get_db?pos=N`: one tag per page, so that every poll reads several
/// pages; `continu` is the next page's `pos`, 0 on the last page.
async fn get_db(State(ap): State<SharedAp>, Query(q): Query<HashMap<String, String>>) -> Response {
    let mut ap = lock(&ap);
    let pos: u64 = q.get("pos").and_then(|p| p.parse().ok()).unwrap_or(0);
    ap.pages.push(pos);
    if ap.broken {
        return (StatusCode::OK, "<html><body>rebooting</body></html>").into_response();
    }
    let tags: Vec<Value> = ap
        .tags
        .iter()
        .skip(pos as usize)
        .take(1)
        .map(record)
        .collect();
    let next = pos + 1;
    let continu = if (next as usize) < ap.tags.len() {
        next
    } else {
        0
    };
    axum::Json(json!({"tags": tags, "continu": continu})).into_response()
}

/// `POST /jsonupload`: the tag gets the content the next time it checks in.
async fn jsonupload(
    State(ap): State<SharedAp>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let mut ap = lock(&ap);
    if ap.refuse_uploads {
        let message = format!("Error: {}", "no such tag ".repeat(30));
        return (StatusCode::BAD_REQUEST, message).into_response();
    }
    let mac = form.get("mac").cloned().unwrap_or_default();
    if let Some(tag) = ap.tags.iter_mut().find(|t| t.mac == mac) {
        tag.pending = true;
    }
    ap.uploads.push(form);
    (StatusCode::OK, "ok").into_response()
}

async fn serve_ap(ap: SharedAp) -> String {
    let router = Router::new()
        .route("/get_db", get(get_db))
        .route("/jsonupload", post(jsonupload))
        .with_state(ap);
    serve(router, false).await
}

/// The AP with the three tags, all checked in at the sample's time.
fn new_ap() -> SharedAp {
    let tag = |mac: &str, pending| Tag {
        mac: mac.to_string(),
        pending,
        lastseen: 1_763_805_600,
        battery_mv: 2950,
        rssi: -61,
    };
    Arc::new(Mutex::new(Ap {
        tags: vec![
            tag(OTHER_MAC, false),
            tag(MAC, false),
            tag(PENDING_MAC, true),
        ],
        ..Ap::default()
    }))
}

fn ap_device(store: &Store, url: &str, profiles: &Path) -> (DeviceSpec, OeplParams) {
    let spec = store.device(
        &format!("id = \"ap-1\"\nprofile = \"openepaperlink-ap\"\ntransport = \"http\"\nurl = \"{url}\"\n"),
        Some(profiles),
    );
    let Codec::OpenEpaperLink(params) = &spec.profile.codec else {
        panic!("not the openepaperlink codec");
    };
    assert_eq!(params.poll_ms, 50);
    let params = params.clone();
    (spec, params)
}

/// Put SKU-1001 with the label `MAC` in the price book; returns the
/// label's pending update.
async fn price_book(store: &Store) -> LabelUpdate {
    let pull: prices::PricePull = serde_json::from_value(json!({
        "version": 7,
        "items": [{"sku": "SKU-1001", "name": "Oat milk 1L & more", "price_minor": 249,
                   "currency": "EUR", "effective_from": "2020-01-01T00:00:00Z",
                   "labels": [MAC]}]
    }))
    .unwrap();
    let now = Utc::now();
    store
        .writer
        .transact(move |w| prices::apply_pull(w.conn(), &pull, now, "de-DE"))
        .await
        .unwrap();
    let due = store
        .writer
        .transact(move |w| labels::due(w.conn(), now))
        .await
        .unwrap();
    assert_eq!(due.len(), 1, "{due:?}");
    due[0].clone()
}

fn label_acks(events: &[storegate::event::Event]) -> Vec<(String, LabelAck)> {
    events
        .iter()
        .filter_map(|e| match &e.body {
            EventBody::LabelAck(a) => Some((e.device.clone(), a.clone())),
            _ => None,
        })
        .collect()
}

/// Wait until the agent started `polls` more full reads of the AP's
/// database (each starts at `pos=0`).
async fn wait_polls(ap: &SharedAp, polls: usize) {
    let start = |ap: &SharedAp| lock(ap).pages.iter().filter(|p| **p == 0).count();
    let target = start(ap) + polls;
    wait_for_async("polls of the access point", || {
        (start(ap) >= target).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openepaperlink_upload_then_check_in_confirms_the_label() {
    let store = Store::new();
    let ap = new_ap();
    let url = serve_ap(ap.clone()).await;
    let profiles = tempfile::tempdir().unwrap();
    common::fast_oepl_profile(profiles.path());
    let (spec, params) = ap_device(&store, &url, profiles.path());
    let update = price_book(&store).await;
    let task = start(&store, spec);
    wait_for_async("access point up", || is_up(&store, "ap-1").then_some(())).await;

    // The label dispatcher's part: upload, then record the update as sent.
    let client = reqwest::Client::new();
    oepl_upload(&client, &url, &params, &update).await.unwrap();
    let sent_at = Utc::now();
    let (label, version) = (update.label_id.clone(), update.version);
    store
        .writer
        .transact(move |w| labels::mark_sent(w.conn(), &label, version, sent_at))
        .await
        .unwrap();

    // What the AP received: the MAC and a drawing with the price.
    {
        let ap = lock(&ap);
        assert_eq!(ap.uploads.len(), 1);
        let form = &ap.uploads[0];
        assert_eq!(form.get("mac").map(String::as_str), Some(MAC));
        let drawing: Value = serde_json::from_str(&form["json"]).unwrap();
        let texts: Vec<&str> = drawing
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|cmd| cmd["text"][2].as_str())
            .collect();
        assert!(texts.contains(&"2,49\u{a0}€"), "{texts:?}");
        assert_eq!(update.price_text, "2,49\u{a0}€");
        assert!(texts.contains(&"Oat milk 1L & more"), "{texts:?}");
        assert!(texts.contains(&"SKU-1001"), "{texts:?}");
    }

    // The tag checks in after the upload but is still fetching the
    // content: nothing is confirmed while the AP says it is pending.
    {
        let mut ap = lock(&ap);
        let tag = ap.tags.iter_mut().find(|t| t.mac == MAC).unwrap();
        assert!(tag.pending);
        tag.lastseen = sent_at.timestamp() + 1;
    }
    wait_polls(&ap, 3).await;
    assert!(label_acks(&store.events()).is_empty());
    // Every poll read all three pages.
    let pages = lock(&ap).pages.clone();
    for pos in [0, 1, 2] {
        assert!(pages.contains(&pos), "{pages:?}");
    }
    assert!(!pages.contains(&3), "{pages:?}");

    // The tag has its content.
    {
        let mut ap = lock(&ap);
        let tag = ap.tags.iter_mut().find(|t| t.mac == MAC).unwrap();
        tag.pending = false;
    }
    let acks = wait_for_async("label_ack", || {
        let acks = label_acks(&store.events());
        (!acks.is_empty()).then_some(acks)
    })
    .await;
    assert_eq!(
        acks,
        [(
            "ap-1".to_string(),
            LabelAck {
                label_id: MAC.into(),
                sku: "SKU-1001".into(),
                price_version: update.version,
                status: LabelStatus::Ok,
                battery_mv: Some(2950),
                rssi: Some(-61),
            }
        )]
    );
    let conn = storegate::db::open_read(&store.db).unwrap();
    let shown = labels::labels_of(&conn, "SKU-1001").unwrap();
    assert_eq!(shown.len(), 1);
    assert_eq!(shown[0].state, "ok");
    assert_eq!(shown[0].shows_version, Some(update.version));
    assert_eq!(shown[0].shows_price_minor, Some(249));
    assert_eq!(shown[0].battery_mv, Some(2950));

    // Later polls see the same check-in: the label is not acknowledged again.
    wait_polls(&ap, 3).await;
    assert_eq!(label_acks(&store.events()).len(), 1);
    assert!(store.quarantine().is_empty());
    stop(store, task).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openepaperlink_garbage_is_quarantined_and_marks_the_ap_down() {
    let store = Store::new();
    let ap = new_ap();
    let url = serve_ap(ap.clone()).await;
    let profiles = tempfile::tempdir().unwrap();
    common::fast_oepl_profile(profiles.path());
    let (spec, _) = ap_device(&store, &url, profiles.path());
    let task = start(&store, spec);
    wait_for_async("access point up", || is_up(&store, "ap-1").then_some(())).await;

    lock(&ap).broken = true;
    wait_for_async("access point down", || {
        (!is_up(&store, "ap-1")).then_some(())
    })
    .await;
    let quarantine = store.quarantine();
    assert!(quarantine.len() >= 3, "{quarantine:?}");
    assert_eq!(quarantine[0].0, "ap-1");
    assert!(quarantine[0].1.contains("not JSON"), "{}", quarantine[0].1);
    assert_eq!(quarantine[0].2, b"<html><body>rebooting</body></html>");
    let error = store.health.get("ap-1").unwrap().last_error.unwrap();
    assert!(error.contains("3 polls failed"), "{error}");

    lock(&ap).broken = false;
    wait_for_async("access point up again", || {
        is_up(&store, "ap-1").then_some(())
    })
    .await;
    stop(store, task).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openepaperlink_refused_upload_is_an_error_with_the_answer() {
    let ap = new_ap();
    lock(&ap).refuse_uploads = true;
    let url = serve_ap(ap.clone()).await;
    let params: OeplParams =
        toml::from_str(r#"template = '[{"text": [0, 0, "{price_text}"]}]'"#).unwrap();
    let update = LabelUpdate {
        label_id: MAC.into(),
        sku: "SKU-1001".into(),
        name: "Oat milk 1L".into(),
        price_minor: 249,
        currency: "EUR".into(),
        price_text: "2,49\u{a0}€".into(),
        promo: None,
        version: 1,
    };
    let client = reqwest::Client::new();
    match oepl_upload(&client, &url, &params, &update).await {
        Err(DeviceError::Protocol(message)) => {
            assert!(message.contains("400"), "{message}");
            assert!(message.contains("Error: no such tag"), "{message}");
            // Only the head of the answer.
            assert!(message.len() < 300, "{message}");
        }
        other => panic!("{other:?}"),
    }

    // Nobody listening: an error, not a hang.
    let closed = format!("http://127.0.0.1:{}", free_port());
    let result = tokio::time::timeout(
        Duration::from_secs(15),
        oepl_upload(&client, &closed, &params, &update),
    )
    .await
    .expect("the upload gives up");
    assert!(result.is_err(), "{result:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openepaperlink_label_that_stops_checking_in_raises_label_offline() {
    let store = Store::new();
    let ap = new_ap(); // every tag last checked in at the sample's time, long ago
    let url = serve_ap(ap.clone()).await;
    let profiles = tempfile::tempdir().unwrap();
    common::fast_oepl_profile(profiles.path());
    let (spec, _) = ap_device(&store, &url, profiles.path());
    price_book(&store).await;
    let task = start(&store, spec);
    let offline = offline_labels;
    wait_for_async("label_offline for the silent label", || {
        (offline(&store) == vec![MAC.to_string()]).then_some(())
    })
    .await;
    // Only the store's own label: the AP's other tags are not ours.
    // It checks in again: the alert resolves, and its health is recorded.
    {
        let mut a = lock(&ap);
        for tag in a.tags.iter_mut().filter(|t| t.mac == MAC) {
            tag.lastseen = Utc::now().timestamp();
        }
    }
    wait_for_async("label_offline resolved", || {
        offline(&store).is_empty().then_some(())
    })
    .await;
    let conn = storegate::db::open_read(&store.db).unwrap();
    let l = labels::labels_of(&conn, "SKU-1001").unwrap();
    assert!(l[0].battery_mv.is_some(), "{l:?}");
    stop(store, task).await;
}

/// The subjects of the open `label_offline` alerts.
fn offline_labels(store: &Store) -> Vec<String> {
    let conn = storegate::db::open_read(&store.db).unwrap();
    storegate::domain::alerts::open_alerts(&conn)
        .unwrap()
        .into_iter()
        .filter(|a| a.code == "label_offline")
        .map(|a| a.subject)
        .collect()
}

/// The label of SKU-1001 as the API shows it.
fn the_label(store: &Store) -> labels::LabelView {
    let conn = storegate::db::open_read(&store.db).unwrap();
    let mut shown = labels::labels_of(&conn, "SKU-1001").unwrap();
    assert_eq!(shown.len(), 1, "{shown:?}");
    shown.remove(0)
}

/// What the AP told the store (the price the label shows, its battery and
/// signal, that it went offline) is journaled, so `storegate rebuild`
/// (`domain::rebuild`) recomputes the same labels table and alerts from
/// the journal; and health is journaled when it changes, not every poll.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openepaperlink_label_state_survives_a_rebuild() {
    let mut store = Store::new();
    let ap = new_ap();
    let url = serve_ap(ap.clone()).await;
    let profiles = tempfile::tempdir().unwrap();
    common::fast_oepl_profile(profiles.path());
    let (spec, _) = ap_device(&store, &url, profiles.path());
    let update = price_book(&store).await;
    // The update went out a minute ago, and the tag has fetched it since.
    let sent_at = Utc::now() - chrono::Duration::seconds(60);
    let (label, version) = (update.label_id.clone(), update.version);
    store
        .writer
        .transact(move |w| labels::mark_sent(w.conn(), &label, version, sent_at))
        .await
        .unwrap();
    {
        let mut a = lock(&ap);
        let tag = a.tags.iter_mut().find(|t| t.mac == MAC).unwrap();
        tag.lastseen = Utc::now().timestamp() - 30;
    }
    let task = start(&store, spec);
    wait_for_async("the label confirmed", || {
        (the_label(&store).state == "ok").then_some(())
    })
    .await;

    // Its battery runs down and its signal weakens.
    {
        let mut a = lock(&ap);
        let tag = a.tags.iter_mut().find(|t| t.mac == MAC).unwrap();
        tag.battery_mv = 2700;
        tag.rssi = -75;
    }
    wait_for_async("the new battery and signal", || {
        let l = the_label(&store);
        (l.battery_mv == Some(2700) && l.rssi == Some(-75)).then_some(())
    })
    .await;
    // Then it stops checking in (the profile's stale_after_s is 3600).
    {
        let mut a = lock(&ap);
        let tag = a.tags.iter_mut().find(|t| t.mac == MAC).unwrap();
        tag.lastseen = Utc::now().timestamp() - 2 * 3600;
    }
    wait_for_async("label_offline", || {
        (offline_labels(&store) == [MAC]).then_some(())
    })
    .await;
    wait_polls(&ap, 3).await;
    store.stop();
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("device task ends on shutdown")
        .unwrap();

    let before = the_label(&store);
    assert_eq!(before.state, "ok");
    assert_eq!(before.shows_version, Some(version));
    assert_eq!(before.shows_price_minor, Some(249));
    assert_eq!((before.battery_mv, before.rssi), (Some(2700), Some(-75)));

    let replayed = store
        .writer
        .transact(|w| storegate::domain::rebuild(w.conn()))
        .await
        .unwrap();
    assert!(replayed > 0);
    assert_eq!(the_label(&store), before, "the label after the rebuild");
    assert_eq!(
        offline_labels(&store),
        [MAC],
        "label_offline after the rebuild"
    );

    // One label_health per change, however many polls: the first report,
    // the weaker battery and signal, going offline.
    let health: Vec<Value> = store
        .events()
        .iter()
        .filter(|e| e.body.kind() == "label_health")
        .map(|e| serde_json::from_str(&e.body.data_json()).unwrap())
        .collect();
    let summary: Vec<_> = health
        .iter()
        .map(|h| {
            (
                h["battery_mv"].clone(),
                h["rssi"].clone(),
                h["offline"].clone(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (json!(2950), json!(-61), json!(false)),
            (json!(2700), json!(-75), json!(false)),
            (json!(2700), json!(-75), json!(true)),
        ]
    );
    assert!(health.iter().all(|h| h["label_id"] == MAC), "{health:?}");
    // The last check-in as the last of them said, after the rebuild too.
    let conn = storegate::db::open_read(&store.db).unwrap();
    let last_seen_ms: i64 = conn
        .query_row(
            "SELECT last_seen_ms FROM labels WHERE label_id = ?1",
            [MAC],
            |r| r.get(0),
        )
        .unwrap();
    let said =
        chrono::DateTime::parse_from_rfc3339(health[2]["last_seen"].as_str().unwrap()).unwrap();
    assert_eq!(last_seen_ms, said.timestamp_millis());
    assert!(store.quarantine().is_empty());
}
