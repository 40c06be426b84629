//! The local API served on a real loopback listener over a seeded store,
//! with reqwest as the client: shared by the API test binaries.

use std::path::PathBuf;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use storegate::api::{self, ApiState, Tokens};
use storegate::domain::counts::{self, ReceiptLine};
use storegate::domain::prices::{self, PricePull};
use storegate::event::{NewEvent, format_ts, now_millis};
use storegate::sync::Link;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::Store;

pub const STAFF: &str = "staff-token-1";
pub const CENTRAL: &str = "central-token-1";
/// The catalog's GTIN of SKU-1001, as GTIN-14 and as the GTIN-13 on the pack.
pub const GTIN14: &str = "04006381333931";
pub const GTIN13: &str = "4006381333931";

/// A store with the API served on a loopback port.
pub struct Api {
    pub store: Store,
    pub base: String,
    pub http: reqwest::Client,
    pub link: watch::Sender<Link>,
    pub staff_file: PathBuf,
    pub server: JoinHandle<std::io::Result<()>>,
    pub promo_until: DateTime<Utc>,
}

/// A response: status and JSON body (`Null` when the body is not JSON).
pub struct Answer {
    pub status: u16,
    pub body: Value,
}

impl Api {
    /// Serve the API over a seeded store: SKU-1001 (GTIN, label, promo,
    /// min stock 6, 24 received) and SKU-2002 (5 received).
    pub async fn start() -> Api {
        Api::start_with(|_| {}).await
    }

    /// [`Api::start`], with the state adjusted before serving.
    pub async fn start_with(adjust: impl FnOnce(&mut ApiState)) -> Api {
        let store = Store::new();
        let staff_file = store.dir.path().join("staff.tokens");
        let central_file = store.dir.path().join("central.tokens");
        std::fs::write(&staff_file, format!("# handhelds\n\n{STAFF}\n")).unwrap();
        std::fs::write(&central_file, format!("{CENTRAL}\n")).unwrap();

        let now = now_millis();
        let promo_until = now + chrono::Duration::days(7);
        let pull: PricePull = serde_json::from_value(json!({
            "version": 57,
            "items": [
                {"sku": "SKU-1001", "gtins": [GTIN14], "name": "Oat milk 1L",
                 "price_minor": 249, "currency": "EUR",
                 "effective_from": format_ts(&(now - chrono::Duration::days(1))),
                 "promo": {"price_minor": 199, "until": format_ts(&promo_until)},
                 "labels": ["0000021A4B3C"], "min_stock": 6},
                {"sku": "SKU-2002", "name": "Rye bread", "price_minor": 1099, "currency": "EUR",
                 "effective_from": format_ts(&(now - chrono::Duration::days(1)))}
            ]
        }))
        .unwrap();
        store
            .writer
            .transact(move |w| {
                prices::apply_pull(w.conn(), &pull, Utc::now(), "de-DE")?;
                let lines = [
                    ReceiptLine {
                        sku: "SKU-1001".into(),
                        qty: 24,
                    },
                    ReceiptLine {
                        sku: "SKU-2002".into(),
                        qty: 5,
                    },
                ];
                counts::receive(w, "test", "D-1", &lines)
            })
            .await
            .unwrap();

        let (link, link_rx) = watch::channel(Link::Unknown);
        let tokens = Tokens::new(Some(staff_file.clone()), Some(central_file));
        let mut state = ApiState::new(
            "store-0042".into(),
            store.db.clone(),
            store.writer.clone(),
            store.health.clone(),
            link_rx,
            tokens,
        );
        adjust(&mut state);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(api::serve(state, listener, store.shutdown.clone()));
        Api {
            store,
            base,
            http: reqwest::Client::new(),
            link,
            staff_file,
            server,
            promo_until,
        }
    }

    pub async fn send(&self, req: reqwest::RequestBuilder, token: Option<&str>) -> Answer {
        let req = match token {
            Some(t) => req.bearer_auth(t),
            None => req,
        };
        let response = req.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        Answer {
            status,
            body: serde_json::from_str(&text).unwrap_or(Value::Null),
        }
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> Answer {
        self.send(self.http.get(format!("{}{path}", self.base)), token)
            .await
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: Value) -> Answer {
        self.send(
            self.http.post(format!("{}{path}", self.base)).json(&body),
            token,
        )
        .await
    }

    pub async fn post_raw(&self, path: &str, token: Option<&str>, body: Vec<u8>) -> Answer {
        self.send(
            self.http
                .post(format!("{}{path}", self.base))
                .header("content-type", "application/json")
                .body(body),
            token,
        )
        .await
    }

    /// Journal events directly, as a device would.
    pub async fn append(&self, events: Vec<NewEvent>) {
        self.store.writer.append(events).await.unwrap();
    }
}

/// The error body's code, checking the body has the agreed shape.
pub fn error_code(a: &Answer) -> &str {
    let e = &a.body["error"];
    assert!(
        e["message"].as_str().is_some_and(|m| !m.is_empty()),
        "no error message in {}",
        a.body
    );
    e["code"]
        .as_str()
        .unwrap_or_else(|| panic!("no error code in {}", a.body))
}
