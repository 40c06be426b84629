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
