//! The staff page (`GET /`) in a real headless Chromium, driven through
//! chromedriver over the W3C WebDriver HTTP protocol: save the staff token,
//! scan a GTIN, see name, price and on-hand, submit a count, see on-hand
//! follow it, and find the count in the database.
//!
//! Needs `/usr/bin/chromium` and `/usr/bin/chromedriver`
//! (`apt-get install -y chromium chromium-driver`; scripts/test.sh does it).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use chrono::Utc;
use common::Store;
use serde_json::{Value, json};
use storegate::api::{self, ApiState, Tokens};
use storegate::domain::counts::{self, ReceiptLine};
use storegate::domain::prices::{self, PricePull};
use storegate::domain::stock;
use storegate::event::{EventBody, format_ts, now_millis};
use storegate::sync::Link;
use tokio::net::TcpListener;
use tokio::sync::watch;

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const STAFF: &str = "staff-token-browser";
const SKU: &str = "SKU-1001";
const GTIN: &str = "04006381333931";
const RECEIVED: i64 = 24;
const COUNTED: i64 = 17;
/// How long any one condition in the page may take to come true.
const WAIT: Duration = Duration::from_secs(15);
/// The W3C name of an element reference in WebDriver answers.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// Chromium flags for a closed network: no calls home, no sandbox (root in
/// a container), no GPU.
const CHROMIUM_ARGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
];

fn require_browser() {
    for path in [CHROMIUM, CHROMEDRIVER] {
        assert!(
            Path::new(path).exists(),
            "{path} is missing: the staff page test needs a headless browser; \
             run `apt-get install -y chromium chromium-driver` (as root)"
        );
    }
}

/// chromedriver (and the Chromium it starts) in a process group of its own,
/// with a fresh profile directory. Dropping it kills the whole group, so
/// nothing is left running when the test fails halfway; after a failure
/// the directory (with chromedriver's log) is kept for a look.
struct Driver {
    child: Child,
    base: String,
    log: PathBuf,
    dir: Option<tempfile::TempDir>,
}

impl Driver {
    async fn start(http: &reqwest::Client) -> Driver {
        use std::os::unix::process::CommandExt as _;
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("chromedriver.log");
        let port = common::free_port();
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .arg(format!("--log-path={}", log.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {CHROMEDRIVER}: {e}; run `apt-get install -y chromium chromium-driver`"
                )
            });
        let driver = Driver {
            child,
            base: format!("http://127.0.0.1:{port}"),
            log,
            dir: Some(dir),
        };
        let deadline = Instant::now() + WAIT;
        loop {
            let status = http.get(format!("{}/status", driver.base)).send().await;
            if let Ok(r) = status
                && let Ok(v) = r.json::<Value>().await
                && v["value"]["ready"] == true
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver did not become ready; see {}",
                driver.log.display()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        driver
    }

    fn profile_dir(&self) -> PathBuf {
        self.dir
            .as_ref()
            .map_or_else(PathBuf::new, |d| d.path().join("profile"))
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // Chromium runs in chromedriver's process group; in case a wrapper
        // or a newer chromedriver moves it to a group of its own, also find
        // the browser's processes by this test's unique profile directory
        // and kill their groups (never the test's own group). Chromium's
        // crash handlers exit by themselves once the browser is gone.
        let profile = self.profile_dir().display().to_string();
        let own = process_group(std::process::id());
        let mut groups: Vec<u32> = vec![self.child.id()];
        if let Ok(procs) = std::fs::read_dir("/proc") {
            for p in procs.flatten() {
                let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                    continue;
                };
                let cmdline = std::fs::read(p.path().join("cmdline")).unwrap_or_default();
                if String::from_utf8_lossy(&cmdline).contains(&profile)
                    && let Some(group) = process_group(pid)
                    && Some(group) != own
                    && !groups.contains(&group)
                {
                    groups.push(group);
                }
            }
        }
        for group in groups {
            let _ = Command::new("sh")
                .arg("-c")
                .arg(format!("kill -9 -{group} 2>/dev/null"))
                .status();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking()
            && let Some(dir) = self.dir.take()
        {
            eprintln!(
                "chromedriver log kept: {}",
                dir.keep().join("chromedriver.log").display()
            );
        }
    }
}

/// The process group of `pid`, from /proc/{pid}/stat (the field after
/// state, which follows the parenthesised command name).
fn process_group(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_name = &stat[stat.rfind(')')? + 1..];
    after_name.split_whitespace().nth(2)?.parse().ok()
}

/// One WebDriver session.
struct Browser {
    http: reqwest::Client,
    session: String,
    log: PathBuf,
}

impl Browser {
    async fn open(http: &reqwest::Client, driver: &Driver) -> Browser {
        let mut args: Vec<String> = CHROMIUM_ARGS.iter().map(|s| s.to_string()).collect();
        args.push(format!(
            "--user-data-dir={}",
            driver.profile_dir().display()
        ));
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": CHROMIUM, "args": args},
        }}});
        let r = http
            .post(format!("{}/session", driver.base))
            .json(&caps)
            .send()
            .await
            .expect("POST /session to chromedriver");
        let v: Value = r.json().await.unwrap();
        let Some(id) = v["value"]["sessionId"].as_str() else {
            panic!(
                "chromedriver could not start Chromium: {v}; see {}",
                driver.log.display()
            );
        };
        Browser {
            http: http.clone(),
            session: format!("{}/session/{id}", driver.base),
            log: driver.log.clone(),
        }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}{path}", self.session);
        let mut req = self.http.request(method.clone(), &url);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = r.status();
        let v: Value = r
            .json()
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: not JSON: {e}"));
        assert!(
            status.is_success(),
            "WebDriver {method} {path}: {status} {}; see {}",
            v["value"],
            self.log.display()
        );
        v["value"].clone()
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }

    async fn get(&self, path: &str) -> Value {
        self.call(reqwest::Method::GET, path, None).await
    }

    async fn find(&self, css: &str) -> String {
        let v = self
            .post("/element", json!({"using": "css selector", "value": css}))
            .await;
        v[ELEMENT]
            .as_str()
            .unwrap_or_else(|| panic!("no element id for {css}: {v}"))
            .to_string()
    }

    /// Type into an element, as the keyboard (or a scanner) does.
    async fn type_into(&self, css: &str, text: &str) {
        let id = self.find(css).await;
        self.post(&format!("/element/{id}/value"), json!({"text": text}))
            .await;
    }

    async fn click(&self, css: &str) {
        let id = self.find(css).await;
        self.post(&format!("/element/{id}/click"), json!({})).await;
    }

    /// The rendered text of an element ("" while it is hidden).
    async fn text(&self, css: &str) -> String {
        let id = self.find(css).await;
        self.get(&format!("/element/{id}/text"))
            .await
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    async fn script(&self, script: &str) -> Value {
        self.post("/execute/sync", json!({"script": script, "args": []}))
            .await
    }

    /// Poll the text of `css` until `ok` holds, failing after [`WAIT`] with
    /// what the page shows.
    async fn wait_text(&self, css: &str, what: &str, ok: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let t = self.text(css).await;
            if ok(&t) {
                return t;
            }
            if Instant::now() >= deadline {
                let message = self.text("#message").await;
                panic!("timed out waiting for {what}: {css} shows {t:?}, message {message:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn screenshot(&self, to: &Path) {
        let b64 = self.get("/screenshot").await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(b64.as_str().expect("screenshot is base64 text"))
            .expect("screenshot decodes");
        std::fs::write(to, png).unwrap();
        println!("staff page screenshot: {}", to.display());
    }

    async fn close(self) {
        let _ = self.http.delete(&self.session).send().await;
    }
}

/// A store with one SKU (GTIN, EUR 2.49, a label) and 24 received, and the
/// API serving it; returns the store and the page's address.
async fn serve_store() -> (Store, String) {
    let store = Store::new();
    let staff_file = store.dir.path().join("staff.tokens");
    std::fs::write(&staff_file, format!("{STAFF}\n")).unwrap();

    let now = now_millis();
    let pull: PricePull = serde_json::from_value(json!({
        "version": 1,
        "items": [
            {"sku": SKU, "gtins": [GTIN], "name": "Oat milk 1L",
             "price_minor": 249, "currency": "EUR",
             "effective_from": format_ts(&(now - chrono::Duration::days(1))),
             "labels": ["0000021A4B3C"], "min_stock": 6}
        ]
    }))
    .unwrap();
    store
        .writer
        .transact(move |w| {
            prices::apply_pull(w.conn(), &pull, Utc::now(), "de-DE")?;
            let lines = [ReceiptLine {
                sku: SKU.into(),
                qty: RECEIVED,
            }];
            counts::receive(w, "test", "D-1", &lines)
        })
        .await
        .unwrap();

    let (_link, link_rx) = watch::channel(Link::Online);
    let state = ApiState::new(
        "store-browser".into(),
        store.db.clone(),
        store.writer.clone(),
        store.health.clone(),
        link_rx,
        Tokens::new(Some(staff_file), None),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(api::serve(state, listener, store.shutdown.clone()));
    (store, base)
}

/// chromedriver and a phone-sized browser on the staff page at `base`,
/// with the staff token saved the way staff do it: a fresh browser has no
/// token, so the page asks for it first.
async fn open_staff_page(base: &str) -> (Driver, Browser) {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let driver = Driver::start(&http).await;
    let browser = Browser::open(&http, &driver).await;
    browser
        .post("/window/rect", json!({"width": 390, "height": 844}))
        .await;
    browser
        .post("/url", json!({"url": format!("{base}/")}))
        .await;
    browser
        .wait_text("#token-form", "the token form", |t| {
            t.contains("Staff token")
        })
        .await;
    browser.type_into("#token", STAFF).await;
    browser.click("#save-token").await;
    browser
        .wait_text("#message", "the token to be saved", |t| {
            t.contains("Token saved")
        })
        .await;
    assert_eq!(
        browser.text("#token-form").await,
        "",
        "token form stays open"
    );
    (driver, browser)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn staff_page_scans_shows_and_counts_in_a_real_browser() {
    require_browser();
    let (store, base) = serve_store().await;

    let (driver, browser) = open_staff_page(&base).await;

    // A handheld scanner types the digits and presses Enter.
    browser.type_into("#code", &format!("{GTIN}\n")).await;
    browser
        .wait_text("#name", "the product name", |t| t == "Oat milk 1L")
        .await;
    let price = browser.text("#price").await;
    let digits: String = price.chars().filter(char::is_ascii_digit).collect();
    assert_eq!(digits, "249", "price shows 2 and 49: {price:?}");
    assert!(
        price.contains("2,49") || price.contains("2.49"),
        "price {price:?}"
    );
    assert!(
        price.contains('€') || price.contains("EUR"),
        "price {price:?}"
    );
    let on_hand = browser.text("#on-hand").await;
    assert_eq!(on_hand, RECEIVED.to_string(), "on hand after the scan");
    let sku_line = browser.text("#sku").await;
    assert!(
        sku_line.contains(SKU) && sku_line.contains(GTIN),
        "sku line {sku_line:?}"
    );
    let labels = browser.text("#labels").await;
    assert!(labels.contains("0000021A4B3C"), "labels {labels:?}");
    assert_eq!(
        browser.text("#message").await,
        "",
        "no error after the scan"
    );

    // Count the shelf and submit.
    browser.type_into("#counted", &COUNTED.to_string()).await;
    browser.type_into("#zone", "A1").await;
    browser.click("#submit-count").await;
    browser
        .wait_text("#on-hand", "on hand to follow the count", |t| {
            t == COUNTED.to_string()
        })
        .await;
    let message = browser
        .wait_text("#message", "the count's confirmation", |t| {
            t.starts_with("Counted")
        })
        .await;
    assert!(
        message.contains(&format!("Counted {COUNTED}"))
            && message.contains(&format!("expected {RECEIVED}")),
        "message {message:?}"
    );
    let last = browser.text("#last-count").await;
    assert!(
        last.contains(&format!("Last count: {COUNTED}")),
        "last count {last:?}"
    );

    // Fits a phone: nothing wider than the screen.
    let fits = browser
        .script("return document.documentElement.scrollWidth <= window.innerWidth;")
        .await;
    assert_eq!(fits, true, "the page scrolls sideways on a phone");

    let shot = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("staff-page.png");
    browser.screenshot(&shot).await;
    browser.close().await;
    drop(driver);

    // The database agrees with the page.
    let conn = storegate::db::open_read(&store.db).unwrap();
    assert_eq!(stock::on_hand(&conn, SKU).unwrap(), COUNTED);
    let events = store.events();
    assert!(
        events.iter().any(|e| matches!(
            &e.body,
            EventBody::Count(c) if c.sku == SKU && c.counted == COUNTED
                && c.expected == RECEIVED && c.zone == "A1"
        )),
        "no count event in {events:?}"
    );
}

/// A sled export as a handheld writes it: CSV with a TagID column, 30
/// items of the SKU (some read twice), an SSCC, a garbage line and a blank
/// line; the page sends it, closes the count and shows per SKU.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn staff_page_uploads_a_sled_export_in_a_real_browser() {
    require_browser();
    let (store, base) = serve_store().await;
    const ITEMS: u64 = 30;
    let mut csv = String::from("TagID,RSSI,Antenna\r\n");
    for serial in (1..=ITEMS).chain(1..=5) {
        let epc = storegate::domain::sgtin::encode_sgtin96(GTIN, 5, 1, serial).unwrap();
        csv += &format!("{epc},-52,1\r\n");
    }
    csv += "3174257BF4499602D2000000,-60,2\r\n\r\ngarbage!!,-70,1\r\n";
    // Line of "garbage!!" in the file: header, 35 EPCs, SSCC, blank.
    let garbage_line = 1 + 35 + 1 + 1 + 1;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sled-export.csv");
    std::fs::write(&file, csv).unwrap();

    let (driver, browser) = open_staff_page(&base).await;
    // WebDriver "types" a path into a file input to choose that file.
    browser
        .type_into("#sled-file", &file.display().to_string())
        .await;
    let zone = browser.find("#sled-zone").await;
    browser
        .post(&format!("/element/{zone}/clear"), json!({}))
        .await;
    browser.type_into("#sled-zone", "salesfloor").await;
    browser.click("#sled-upload").await;
    let summary = browser
        .wait_text("#sled-summary", "the sled count's summary", |t| {
            t.starts_with("Counted")
        })
        .await;
    assert_eq!(
        summary,
        format!("Counted {ITEMS} items in 1 SKUs; 1 non-product tags, 1 malformed lines ignored")
    );
    let result = browser.text("#sled-result").await;
    let delta = ITEMS as i64 - RECEIVED;
    assert!(
        result.contains(&format!(
            "{SKU}: counted {ITEMS}, expected {RECEIVED} (+{delta})"
        )),
        "result {result:?}"
    );
    assert!(
        result.contains(&format!("Malformed line {garbage_line}: garbage!!")),
        "result {result:?}"
    );
    let message = browser.text("#message").await;
    assert!(message.contains("closed"), "message {message:?}");
    let fits = browser
        .script("return document.documentElement.scrollWidth <= window.innerWidth;")
        .await;
    assert_eq!(fits, true, "the page scrolls sideways on a phone");
    browser
        .script("document.getElementById('sled').scrollIntoView(); return true;")
        .await;
    let shot = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("staff-sled.png");
    browser.screenshot(&shot).await;
    browser.close().await;
    drop(driver);

    // Journaled and applied, as the page said.
    let conn = storegate::db::open_read(&store.db).unwrap();
    assert_eq!(stock::on_hand(&conn, SKU).unwrap(), ITEMS as i64);
    let events = store.events();
    assert!(
        events.iter().any(|e| matches!(
            &e.body,
            EventBody::Count(c) if c.sku == SKU && c.counted == ITEMS as i64
                && c.expected == RECEIVED && c.zone == "salesfloor" && c.method == "rfid"
        )),
        "no sled count event in {events:?}"
    );
}

// ===== Pickup orders (click-and-collect, issue 18 item 3) =====

/// A pickup order in the page: open it, scan its two items (one by the
/// barcode, one by the RFID tag, the tag read twice), a wrong code is
/// refused, the right one hands it over; on hand follows like a sale.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn staff_page_picks_and_hands_over_a_pickup_order_in_a_real_browser() {
    use storegate::domain::pickup::{self, OrdersPull};
    require_browser();
    let (store, base) = serve_store().await;
    let web77 = common::pickup::order(
        "WEB-77",
        "K4711",
        chrono::Duration::days(2),
        json!([{"sku": SKU, "qty": 2}]),
    );
    let pull: OrdersPull =
        serde_json::from_value(json!({"version": 1, "orders": [web77]})).unwrap();
    store
        .writer
        .transact(move |w| pickup::apply_pull(w, &pull, Utc::now()))
        .await
        .unwrap();

    let (driver, browser) = open_staff_page(&base).await;
    browser.type_into("#code", &format!("{GTIN}\n")).await;
    browser
        .wait_text("#available", "the reservation beside on hand", |t| {
            t == format!("{} (2 reserved)", RECEIVED - 2)
        })
        .await;
    browser.click("#pickup-refresh").await;
    browser
        .wait_text("#pickup-list", "the order in the list", |t| {
            t.contains("WEB-77")
        })
        .await;
    browser
        .click("button.pickup-open[data-order='WEB-77']")
        .await;
    browser
        .wait_text("#pickup-lines", "the order's line", |t| {
            t.contains("0 of 2")
        })
        .await;
    let tag = storegate::domain::sgtin::encode_sgtin96(GTIN, 5, 1, 42).unwrap();
    for (code, shows) in [(GTIN.to_string(), "1 of 2"), (tag.clone(), "2 of 2")] {
        browser
            .type_into("#pickup-scan", &format!("{code}\n"))
            .await;
        browser
            .wait_text("#pickup-lines", "the scan to count", |t| t.contains(shows))
            .await;
    }
    browser.type_into("#pickup-scan", &format!("{tag}\n")).await;
    browser
        .wait_text("#pickup-message", "the repeat read to be recognised", |t| {
            t.contains("scanned already")
        })
        .await;
    // A third item is a surplus: refused where staff look.
    let extra = storegate::domain::sgtin::encode_sgtin96(GTIN, 5, 1, 43).unwrap();
    browser
        .type_into("#pickup-scan", &format!("{extra}\n"))
        .await;
    browser
        .wait_text("#pickup-message", "the surplus refused", |t| {
            t.starts_with("surplus: order WEB-77 needs 2")
        })
        .await;
    browser
        .script("document.getElementById('pickup').scrollIntoView(); return true;")
        .await;
    let shot = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("staff-pickup-picking.png");
    browser.screenshot(&shot).await;
    browser.click("#pickup-done").await;
    browser
        .wait_text("#pickup-message", "the pick to be recorded", |t| {
            t == "Picked complete"
        })
        .await;
    browser.type_into("#pickup-code", "0000\n").await;
    browser
        .wait_text("#pickup-message", "the wrong code refused", |t| {
            t.contains("not the pickup code of order WEB-77")
        })
        .await;
    browser.type_into("#pickup-code", "K4711\n").await;
    browser
        .wait_text("#pickup-message", "the handover", |t| {
            t == "Handed over: order WEB-77"
        })
        .await;
    let state = browser.text("#pickup-state").await;
    assert!(state.starts_with("handed over"), "state {state:?}");
    let fits = browser
        .script("return document.documentElement.scrollWidth <= window.innerWidth;")
        .await;
    assert_eq!(fits, true, "the page scrolls sideways on a phone");
    browser
        .script("document.getElementById('pickup').scrollIntoView(); return true;")
        .await;
    let shot = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("staff-pickup.png");
    browser.screenshot(&shot).await;
    browser.close().await;
    drop(driver);

    // Stock moved like a sale, and the handover is journaled.
    let conn = storegate::db::open_read(&store.db).unwrap();
    assert_eq!(stock::on_hand(&conn, SKU).unwrap(), RECEIVED - 2);
    assert_eq!(pickup::reserved(&conn, SKU).unwrap(), 0);
    let events = store.events();
    assert!(
        events.iter().any(|e| matches!(
            &e.body,
            EventBody::OrderHandedOver(h) if h.order_id == "WEB-77" && h.lines[0].qty == 2
        )),
        "no handover in {events:?}"
    );
}
// ===== end of pickup orders =====

// ===== Staff tasks (issue 18 item 2) =====

/// A journaled event as a device (or the RFID count) would send it.
fn device_event(device: &str, body: EventBody) -> storegate::event::NewEvent {
    storegate::event::NewEvent::new(now_millis(), device, body)
}

fn rfid_count(session: &str, zone: &str, counted: i64) -> EventBody {
    EventBody::Count(storegate::event::Count {
        session_id: session.into(),
        zone: zone.into(),
        sku: SKU.into(),
        counted,
        expected: RECEIVED,
        method: "rfid".into(),
    })
}

/// The page opens on the task list of the staff member's zone: an RFID
/// count off the books in A1 (a count task), the books below the minimum
/// (a refill task anyone may do), not B2's count. A task's screen takes
/// it, a scan confirms the right item or says it is wrong, scans count
/// the item and the count settles the task; the list refreshes by itself
/// when a new task opens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn staff_page_task_list_in_a_real_browser() {
    require_browser();
    let (store, base) = serve_store().await;
    store
        .writer
        .append(vec![device_event("rfid", rfid_count("R-B2", "B2", 30))])
        .await
        .unwrap();
    // 20 sold: 4 on hand, minimum 6 -> low_stock -> refill (no zone).
    store
        .writer
        .append(vec![device_event(
            "pos-1",
            EventBody::Sale(storegate::event::SaleLine {
                receipt_id: "R-1".into(),
                line: 1,
                sku: SKU.into(),
                gtin: None,
                qty: 20,
                unit_price_minor: 249,
                currency: "EUR".into(),
                pos: "1".into(),
                member_hash: None,
            }),
        )])
        .await
        .unwrap();
    store
        .writer
        .append(vec![device_event("rfid", rfid_count("R-A1", "A1", 20))])
        .await
        .unwrap();

    let (driver, browser) = open_staff_page(&base).await;
    browser.type_into("#tasks-zone", "A1\n").await;
    browser.type_into("#tasks-by", "anna").await;
    // The change event of the zone field (leaving it) refreshes the list.
    browser.click("#tasks h2").await;
    let list = browser
        .wait_text("#task-list", "A1's tasks", |t| {
            t.contains("Count SKU-1001 · A1") && t.contains("Refill SKU-1001")
        })
        .await;
    assert!(!list.contains("B2"), "another zone's task shows: {list:?}");
    // Most urgent first, newest first: the A1 count opened last.
    let first = browser.text("#task-list li:first-child").await;
    assert!(first.starts_with("Count SKU-1001"), "first task {first:?}");
    let fits = browser
        .script("return document.documentElement.scrollWidth <= window.innerWidth;")
        .await;
    assert_eq!(fits, true, "the task list scrolls sideways on a phone");
    let shot = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("staff-tasks.png");
    browser.screenshot(&shot).await;

    // The count task's screen: take it, scan a wrong code, then the item
    // three times, and send the count.
    browser.click("#task-list li:first-child button").await;
    browser
        .wait_text("#task-title", "the count task's screen", |t| {
            t.starts_with("Count SKU-1001")
        })
        .await;
    browser.click("#task-take").await;
    browser
        .wait_text("#task-facts", "the task taken", |t| {
            t.contains("taken by anna")
        })
        .await;
    browser.type_into("#task-scan", "SKU-2002\n").await;
    browser
        .wait_text("#task-scan-result", "an unknown code refused", |t| {
            !t.is_empty() && !t.starts_with("Right item")
        })
        .await;
    for n in 1..=3 {
        browser.type_into("#task-scan", &format!("{GTIN}\n")).await;
        browser
            .wait_text("#task-counted", "the scan counted", |t| t == n.to_string())
            .await;
    }
    let scanned = browser.text("#task-scan-result").await;
    assert!(scanned.starts_with("Right item: SKU-1001"), "{scanned:?}");
    let camera = browser
        .script(
            "return [typeof BarcodeDetector !== 'undefined', document.getElementById('task-camera').hidden];",
        )
        .await;
    assert_eq!(
        camera[0],
        !camera[1].as_bool().unwrap(),
        "the camera button shows exactly where BarcodeDetector exists: {camera}"
    );
    let shot = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("staff-task-count.png");
    browser.screenshot(&shot).await;
    browser.click("#task-send-count").await;
    browser
        .wait_text("#task-facts", "the count settling the task", |t| {
            t.contains("done")
        })
        .await;
    browser.click("#task-back").await;
    browser
        .wait_text("#task-list", "the list without the count", |t| {
            t.contains("Refill SKU-1001") && !t.contains("Count SKU-1001")
        })
        .await;

    // The refill: the right item scanned, then done (the books' refill
    // has no clock check: filling the shelf leaves on hand as it is).
    browser.click("#task-list li:first-child button").await;
    browser
        .wait_text("#task-title", "the refill task's screen", |t| {
            t.starts_with("Refill SKU-1001")
        })
        .await;
    browser.type_into("#task-scan", "SKU-1001\n").await;
    browser
        .wait_text("#task-scan-result", "the right item", |t| {
            t.starts_with("Right item: SKU-1001")
        })
        .await;
    browser.click("#task-done").await;
    browser
        .wait_text("#task-facts", "the refill done", |t| t.ends_with("done"))
        .await;
    assert_eq!(browser.text("#message").await, "Done");
    browser.click("#task-back").await;
    browser
        .wait_text("#task-list", "an empty list", |t| {
            t.starts_with("Nothing to do in A1")
        })
        .await;

    // A new task in A1 shows up without a touch.
    store
        .writer
        .append(vec![device_event("rfid", rfid_count("R-A1-2", "A1", 9))])
        .await
        .unwrap();
    browser
        .wait_text("#task-list", "the list to refresh by itself", |t| {
            t.contains("Count SKU-1001 · A1")
        })
        .await;
    browser.close().await;
    drop(driver);

    // The journal agrees with the page.
    let events = store.events();
    assert!(
        events.iter().any(|e| matches!(&e.body,
            EventBody::TaskTaken(t) if t.by == "anna")),
        "no task_taken in {events:?}"
    );
    assert!(
        events.iter().any(|e| matches!(&e.body,
            EventBody::Count(c) if c.method == "scan" && c.counted == 3 && c.zone == "A1")),
        "no scan count in {events:?}"
    );
    assert!(
        events.iter().any(|e| matches!(&e.body,
            EventBody::TaskDone(t) if t.confirmed_by.as_deref() == Some("count"))),
        "the count did not settle the task: {events:?}"
    );
}

// ===== Shelf labels (issue 18 item 4) =====

/// Binding a label from the staff page: scan the label, then the item;
/// the binding is journaled and the label's price update is due at once;
/// then unbind it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn staff_page_binds_a_label_in_a_real_browser() {
    require_browser();
    let (store, base) = serve_store().await;
    const LABEL: &str = "0000021A4B3C5D99";
    let (driver, browser) = open_staff_page(&base).await;

    browser.type_into("#label-id", &format!("{LABEL}\n")).await;
    browser.type_into("#label-item", &format!("{GTIN}\n")).await;
    let result = browser
        .wait_text("#label-result", "the binding's answer", |t| {
            t.starts_with("Label")
        })
        .await;
    assert!(
        result.contains(LABEL) && result.contains("Oat milk 1L") && result.contains(SKU),
        "result {result:?}"
    );
    // In the label's locale (this store's projections run without one).
    assert!(
        result.contains("2,49") || result.contains("2.49"),
        "the price it is to show: {result:?}"
    );
    assert!(result.contains("pending"), "result {result:?}");
    let fits = browser
        .script("return document.documentElement.scrollWidth <= window.innerWidth;")
        .await;
    assert_eq!(fits, true, "the page scrolls sideways on a phone");
    browser
        .script("document.getElementById('label-ops').scrollIntoView(); return true;")
        .await;
    let shot = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("staff-label.png");
    browser.screenshot(&shot).await;

    // Journaled, and the label's update is due now.
    assert!(
        store.events().iter().any(|e| matches!(
            &e.body,
            EventBody::LabelBound(b) if b.label_id == LABEL && b.sku == SKU
                && b.gtin.as_deref() == Some(GTIN)
        )),
        "no label_bound event"
    );
    let due = store
        .writer
        .transact(|w| storegate::domain::labels::due(w.conn(), Utc::now()))
        .await
        .unwrap();
    assert!(
        due.iter()
            .any(|u| u.label_id == LABEL && u.price_minor == 249),
        "{due:?}"
    );

    // Unbind it again: scan the label, press Unbind.
    browser.type_into("#label-id", LABEL).await;
    browser.click("#label-unbind").await;
    browser
        .wait_text("#label-result", "the unbinding's answer", |t| {
            t.contains("unbound")
        })
        .await;
    // A second unbind is refused with the API's reason, on the page.
    browser.type_into("#label-id", LABEL).await;
    browser.click("#label-unbind").await;
    browser
        .wait_text("#message", "the refusal", |t| t.contains("not bound"))
        .await;
    browser.close().await;
    drop(driver);
    assert!(
        store
            .events()
            .iter()
            .any(|e| matches!(&e.body, EventBody::LabelUnbound(u) if u.label_id == LABEL)),
        "no label_unbound event"
    );
}
// ===== end of shelf labels =====
