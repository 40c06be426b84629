//! Reading control over a REST management interface with basic auth (the
//! Impinj R700 IoT device interface): one request per action, the
//! reader's HTTP status turned into a [`ControlError`] that says what to
//! do about it.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};

use super::ControlError;
use crate::profiles::control::{HttpControl, HttpRequest};

/// At most this much of a refusal's body goes into an error message.
const BODY_IN_MESSAGE: usize = 300;

/// One reader's REST management interface.
pub struct HttpDriver {
    client: reqwest::Client,
    base: String,
    spec: HttpControl,
    credentials_file: Option<PathBuf>,
    timeout_s: u64,
}

impl HttpDriver {
    pub fn new(
        base: &str,
        spec: HttpControl,
        credentials_file: Option<PathBuf>,
        timeout_s: u64,
    ) -> HttpDriver {
        HttpDriver {
            client: reqwest::Client::new(),
            base: base.trim_end_matches('/').to_string(),
            spec,
            credentials_file,
            timeout_s,
        }
    }

    /// Start `preset`; the reader's answer.
    pub async fn start(&self, preset: &str) -> Result<Value, ControlError> {
        self.call(&self.spec.start.clone(), Some(preset)).await
    }

    /// Stop reading; the reader's answer.
    pub async fn stop(&self) -> Result<Value, ControlError> {
        self.call(&self.spec.stop.clone(), None).await
    }

    /// Whether the reader reads now, from its status answer.
    pub async fn is_reading(&self) -> Result<bool, ControlError> {
        let status = self.call(&self.spec.status.clone(), None).await?;
        match status.get(&self.spec.status_field).and_then(Value::as_str) {
            Some(s) => Ok(s == self.spec.running_value),
            None => Err(ControlError::Refused(format!(
                "its status answer has no text field {:?}: {}",
                self.spec.status_field,
                short(&status.to_string())
            ))),
        }
    }

    async fn call(&self, request: &str, preset: Option<&str>) -> Result<Value, ControlError> {
        // The profile was validated when it was loaded.
        let request = HttpRequest::parse(request).map_err(ControlError::Refused)?;
        let path = match preset {
            Some(p) => request.path.replace("{preset}", p),
            None => request.path,
        };
        let url = format!("{}{path}", self.base);
        let mut builder = self
            .client
            .request(request.method, &url)
            .timeout(Duration::from_secs(self.timeout_s));
        if let Some(file) = &self.credentials_file {
            // Read at every request: a fixed file takes effect without a restart.
            let (user, password) = read_credentials(file)?;
            builder = builder.basic_auth(user, Some(password));
        }
        let response = builder.send().await.map_err(|e| {
            if e.is_timeout() {
                ControlError::Timeout(self.timeout_s)
            } else {
                ControlError::Unreachable(format!("{url}: {}", without_url(&e)))
            }
        })?;
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        if status.is_success() {
            return Ok(if body.trim().is_empty() {
                json!({})
            } else {
                serde_json::from_str(&body).unwrap_or(Value::String(short(&body)))
            });
        }
        Err(match status.as_u16() {
            401 | 403 => ControlError::Unauthorized(status.as_u16()),
            s if preset.is_some() && s == self.spec.unknown_preset_status => {
                ControlError::UnknownPreset {
                    preset: preset.unwrap_or_default().to_string(),
                    why: format!("the reader answered HTTP {s}: {}", short(&body)),
                }
            }
            _ => ControlError::Refused(format!("HTTP {status} to {url}: {}", short(&body))),
        })
    }
}

/// `user:password` from the first line of `file`.
fn read_credentials(file: &PathBuf) -> Result<(String, String), ControlError> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| ControlError::Credentials(format!("{}: {e}", file.display())))?;
    let line = text.lines().next().unwrap_or_default().trim();
    match line.split_once(':') {
        Some((user, password)) if !user.is_empty() => Ok((user.to_string(), password.to_string())),
        _ => Err(ControlError::Credentials(format!(
            "{}: the first line must be user:password",
            file.display()
        ))),
    }
}

/// reqwest's message without the URL it repeats (the caller names it).
fn without_url(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    if let Some(source) = std::error::Error::source(e) {
        text = format!("{text}: {source}");
    }
    text
}

fn short(text: &str) -> String {
    let text = text.trim();
    match text.char_indices().nth(BODY_IN_MESSAGE) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text.to_string(),
    }
}
