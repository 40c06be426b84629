//! The HTTP side of the sync API (spec/sync-api.md): one reqwest client
//! with rustls (system roots plus an optional `central.ca_file`), the
//! bearer token from `central.token_file` re-read whenever the file
//! changes, and the response cases mapped to what the caller must do.

use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use reqwest::StatusCode;
use reqwest::header::{HeaderMap, HeaderValue};

use crate::config::CentralConfig;

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("central.ca_file {path}: {reason}")]
    CaFile { path: PathBuf, reason: String },
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
    #[error("{0}")]
    Transport(String),
}

/// What central said to a push, as the pusher must act on it.
#[derive(Debug, Clone, PartialEq)]
pub enum PushReply {
    /// 200: stored through this seq.
    Acked(i64),
    /// 409: central already has events through this seq.
    AlreadyHave(i64),
    /// 413: the batch was too large.
    TooLarge,
    /// 401/403: the token is wrong or lacks rights.
    Unauthorized(u16),
    /// 429/5xx: back off (honouring Retry-After when given).
    RetryLater {
        status: u16,
        retry_after: Option<Duration>,
    },
    /// Anything else, or a 200 whose body does not parse.
    Unexpected { status: u16, body: String },
}

struct Token {
    modified: Option<SystemTime>,
    value: Option<String>,
}

pub struct Central {
    http: reqwest::Client,
    base: String,
    store_id: String,
    token_file: Option<PathBuf>,
    token: Mutex<Token>,
}

/// Request timeout: a push of a few MiB on a slow store uplink.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

impl Central {
    pub fn new(config: &CentralConfig, store_id: &str) -> Result<Central, SyncError> {
        let mut builder = reqwest::Client::builder()
            .user_agent(format!("storegate/{}", crate::VERSION))
            .connect_timeout(Duration::from_secs(10))
            .timeout(REQUEST_TIMEOUT);
        if let Some(path) = &config.ca_file {
            let pem = std::fs::read(path).map_err(|e| SyncError::CaFile {
                path: path.clone(),
                reason: e.to_string(),
            })?;
            let certs =
                reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| SyncError::CaFile {
                    path: path.clone(),
                    reason: format!("not a PEM certificate bundle: {e}"),
                })?;
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        let http = builder
            .build()
            .map_err(|e| SyncError::Client(e.to_string()))?;
        Ok(Central {
            http,
            base: config.url.trim_end_matches('/').to_string(),
            store_id: store_id.to_string(),
            token_file: config.token_file.clone(),
            token: Mutex::new(Token {
                modified: None,
                value: None,
            }),
        })
    }

    /// The bearer token, re-read when the file changed (rotation on disk).
    /// Never logged.
    fn token(&self) -> Option<String> {
        let path = self.token_file.as_ref()?;
        let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok();
        let mut t = self.token.lock().unwrap_or_else(|p| p.into_inner());
        if t.value.is_none() || modified != t.modified {
            match std::fs::read_to_string(path) {
                Ok(text) => {
                    t.value = Some(text.trim().to_string());
                    t.modified = modified;
                }
                Err(e) => {
                    tracing::error!(file = %path.display(), error = %e, "cannot read central.token_file");
                }
            }
        }
        t.value.clone()
    }

    fn headers(&self) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(token) = self.token() {
            if let Ok(mut v) = HeaderValue::from_str(&format!("Bearer {token}")) {
                v.set_sensitive(true);
                h.insert(reqwest::header::AUTHORIZATION, v);
            }
        }
        h
    }

    pub fn store_id(&self) -> &str {
        &self.store_id
    }

    /// POST one batch; `body` is the JSON document, sent gzip-compressed.
    pub async fn push(&self, first: i64, last: i64, body: &[u8]) -> Result<PushReply, SyncError> {
        let mut gz = flate2::write::GzEncoder::new(
            Vec::with_capacity(body.len() / 4),
            flate2::Compression::fast(),
        );
        gz.write_all(body)
            .map_err(|e| SyncError::Transport(format!("gzip: {e}")))?;
        let compressed = gz
            .finish()
            .map_err(|e| SyncError::Transport(format!("gzip: {e}")))?;
        let url = format!("{}/v1/stores/{}/events", self.base, self.store_id);
        let response = self
            .http
            .post(&url)
            .headers(self.headers())
            .header(
                "Idempotency-Key",
                format!("{}:{first}-{last}", self.store_id),
            )
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(reqwest::header::CONTENT_ENCODING, "gzip")
            .body(compressed)
            .send()
            .await
            .map_err(|e| SyncError::Transport(describe(&e)))?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let text = response.text().await.unwrap_or_default();
        let acked = || {
            serde_json::from_str::<serde_json::Value>(&text)
                .ok()
                .and_then(|v| v.get("acked_through")?.as_i64())
        };
        Ok(match status {
            StatusCode::OK => match acked() {
                Some(n) => PushReply::Acked(n),
                None => PushReply::Unexpected {
                    status: 200,
                    body: snippet(&text),
                },
            },
            StatusCode::CONFLICT => match acked() {
                Some(n) => PushReply::AlreadyHave(n),
                None => PushReply::Unexpected {
                    status: 409,
                    body: snippet(&text),
                },
            },
            StatusCode::PAYLOAD_TOO_LARGE => PushReply::TooLarge,
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                PushReply::Unauthorized(status.as_u16())
            }
            s if s == StatusCode::TOO_MANY_REQUESTS || s.is_server_error() => {
                PushReply::RetryLater {
                    status: s.as_u16(),
                    retry_after,
                }
            }
            s => PushReply::Unexpected {
                status: s.as_u16(),
                body: snippet(&text),
            },
        })
    }

    /// `PUT /v1/stores/{s}/status`: the heartbeat (spec/fleet.md 3).
    /// Returns the status code.
    pub async fn put_status(&self, body: &serde_json::Value) -> Result<u16, SyncError> {
        let url = format!("{}/v1/stores/{}/status", self.base, self.store_id);
        let response = self
            .http
            .put(&url)
            .headers(self.headers())
            .json(body)
            .send()
            .await
            .map_err(|e| SyncError::Transport(describe(&e)))?;
        Ok(response.status().as_u16())
    }

    /// Whether there is an HTTP side at all (over MQTT the url is only
    /// needed for the bulk pulls, and may be absent).
    pub fn has_url(&self) -> bool {
        !self.base.is_empty()
    }

    /// GET a pull endpoint (`prices` or `stock`) since a version.
    pub async fn pull(&self, what: &str, since: i64) -> Result<(u16, String), SyncError> {
        let url = format!(
            "{}/v1/stores/{}/{what}?since={since}",
            self.base, self.store_id
        );
        let response = self
            .http
            .get(&url)
            .headers(self.headers())
            .send()
            .await
            .map_err(|e| SyncError::Transport(describe(&e)))?;
        let status = response.status().as_u16();
        let text = response
            .text()
            .await
            .map_err(|e| SyncError::Transport(describe(&e)))?;
        Ok((status, text))
    }
}

impl Central {
    /// `GET /v1/stores/{s}/config` (spec/fleet.md 4) with
    /// `If-None-Match: "{sha256}"` when the agent holds one. Returns the
    /// status code and the body.
    pub async fn get_config(&self, sha256: Option<&str>) -> Result<(u16, String), SyncError> {
        let url = format!("{}/v1/stores/{}/config", self.base, self.store_id);
        let mut request = self.http.get(&url).headers(self.headers());
        if let Some(sha) = sha256 {
            request = request.header(reqwest::header::IF_NONE_MATCH, format!("\"{sha}\""));
        }
        let response = request
            .send()
            .await
            .map_err(|e| SyncError::Transport(describe(&e)))?;
        let status = response.status().as_u16();
        let text = response
            .text()
            .await
            .map_err(|e| SyncError::Transport(describe(&e)))?;
        Ok((status, text))
    }
}

/// The first 200 bytes of a body, for logs.
pub fn snippet(text: &str) -> String {
    let mut end = text.len().min(200);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
}

fn describe(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    };
    // The URL in reqwest's message carries no token (it is a header).
    let mut msg = format!("{kind}: {e}");
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        msg.push_str(&format!(": {s}"));
        source = s.source();
    }
    msg
}
