//! The `http` transport with codec `openepaperlink`: an OpenEPaperLink
//! access point, polled every `poll_ms` of the profile
//! (`[openepaperlink]`; the device's own `poll_ms` is not used) with
//! `GET /get_db` (all pages). This is transport work only: what a poll
//! means for the store's labels is decided by `domain::labels::reconcile`
//! and journaled as events. A label update that the label dispatcher
//! uploaded with [`oepl_upload`] is confirmed when the AP's record of the
//! tag is no longer pending and the tag checked in after the upload (a
//! `label_ack` (ok) with the tag's battery and RSSI); a tag whose battery,
//! signal or offline state changed gets a `label_health` event, whose
//! projection records it and opens or resolves `label_offline`.
//! After [`MAX_FAILED_POLLS`] failed polls in a row the session ends.

use std::collections::HashMap;
use std::time::Duration;

use reqwest::header::{CONTENT_TYPE, HeaderValue};
use tokio::time::MissedTickBehavior;

use super::{CONNECT_TIMEOUT, describe, mark_up};
use crate::codecs::Decoded;
use crate::codecs::esl::{self, LabelSeen, LabelUpdate, OeplParams, OeplTag};
use crate::db::StoreError;
use crate::devices::{DeviceError, DeviceSpec, Ingest, deliver_until_stored};
use crate::domain::labels;
use crate::event::{EventBody, now_millis};
use crate::shutdown::Shutdown;

/// Failed polls in a row after which an access point counts as down.
pub const MAX_FAILED_POLLS: u32 = 3;
/// How long one `/get_db` page may take, body included.
const POLL_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one `/jsonupload` may take, answer included.
const UPLOAD_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest `/get_db` page that is read. An AP sends a few kB per page.
const MAX_PAGE: usize = 4 * 1024 * 1024;
/// More `/get_db` pages than any AP has tags: a `continu` that keeps
/// going (a broken AP) ends the poll instead of looping.
const MAX_PAGES: usize = 10_000;
/// How much of an error answer's body goes into the error message.
const ERROR_BODY: usize = 200;

/// Why one poll of the AP failed.
enum PollFailure {
    /// No answer in time.
    Timeout(String),
    /// No connection, or it broke.
    Link(String),
    /// An answer that is not a tag database page (also quarantined).
    Protocol(String),
}

impl PollFailure {
    fn message(&self) -> &str {
        match self {
            PollFailure::Timeout(m) | PollFailure::Link(m) | PollFailure::Protocol(m) => m,
        }
    }

    /// The error that ends the session after too many failed polls.
    fn into_error(self) -> DeviceError {
        let text = format!("{MAX_FAILED_POLLS} polls failed, last: {}", self.message());
        match self {
            PollFailure::Timeout(_) => DeviceError::Timeout(text),
            PollFailure::Link(_) => DeviceError::Lost(text),
            PollFailure::Protocol(_) => DeviceError::Protocol(text),
        }
    }

    fn from_reqwest(what: &str, e: &reqwest::Error) -> PollFailure {
        let text = format!("{what}: {}", describe(e));
        if e.is_timeout() {
            PollFailure::Timeout(text)
        } else {
            PollFailure::Link(text)
        }
    }
}

/// Poll the AP until shutdown (`Ok`) or [`MAX_FAILED_POLLS`] failed polls
/// in a row (`Err`).
pub(super) async fn session(
    spec: &DeviceSpec,
    ingest: &Ingest,
    shutdown: &mut Shutdown,
    url: &str,
    params: &OeplParams,
) -> Result<(), DeviceError> {
    let id = spec.id();
    let client = reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(POLL_TIMEOUT)
        .build()
        .map_err(|e| DeviceError::Open {
            what: url.to_string(),
            reason: describe(&e),
        })?;
    let source = spec.source();
    let mut failed_polls = 0u32;
    let mut ticks = tokio::time::interval(Duration::from_millis(params.poll_ms.max(1)));
    // A slow AP delays the next poll instead of causing a burst of them.
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = shutdown.wait() => return Ok(()),
        }
        let polled = tokio::select! {
            r = read_tag_db(&client, url) => r,
            _ = shutdown.wait() => return Ok(()),
        };
        let tags = match polled {
            Ok(tags) => tags,
            Err((failure, bad)) => {
                failed_polls += 1;
                // Logged once per outage, like the other polled devices.
                let up = ingest.health().get(id).is_some_and(|h| h.up);
                if up && failed_polls == 1 {
                    tracing::warn!(device = %id, error = failure.message(), "access point poll failed");
                } else {
                    tracing::debug!(device = %id, error = failure.message(), failed_polls, "access point poll failed");
                }
                if let Some(bad) = bad {
                    if !deliver_until_stored(ingest, &source, vec![bad], shutdown).await {
                        return Ok(());
                    }
                }
                if failed_polls >= MAX_FAILED_POLLS {
                    return Err(failure.into_error());
                }
                continue;
            }
        };
        failed_polls = 0;
        mark_up(ingest, id, url);
        let news = reconcile(ingest, tags, params.stale_after_s).await?;
        if news.is_empty() {
            // The AP answered: that is a good frame even without news.
            ingest.health().frames(id, 1, 0);
            continue;
        }
        for body in &news {
            if let EventBody::LabelAck(ack) = body {
                tracing::debug!(device = %id, label = %ack.label_id, version = ack.price_version, "label confirmed");
            }
        }
        let now = now_millis();
        let items = news
            .into_iter()
            .map(|body| Decoded::Events(vec![(now, body)]))
            .collect();
        if !deliver_until_stored(ingest, &source, items, shutdown).await {
            return Ok(());
        }
    }
}

/// Every tag of the AP's database, following `continu` over all pages. A
/// failure may come with the unparsable page, to quarantine.
async fn read_tag_db(
    client: &reqwest::Client,
    base_url: &str,
) -> Result<Vec<OeplTag>, (PollFailure, Option<Decoded>)> {
    let base = base_url.trim_end_matches('/');
    let mut tags = Vec::new();
    let mut pos = 0u64;
    for _ in 0..MAX_PAGES {
        let url = format!("{base}{}", esl::get_db_path(pos));
        let mut response = client
            .get(&url)
            .send()
            .await
            .map_err(|e| (PollFailure::from_reqwest(&url, &e), None))?;
        let status = response.status();
        if !status.is_success() {
            let body = read_body(&mut response, ERROR_BODY)
                .await
                .unwrap_or_default();
            let text = format!(
                "GET {url}: HTTP {status}: {}",
                String::from_utf8_lossy(&body)
            );
            return Err((PollFailure::Protocol(text), None));
        }
        let body = match read_body(&mut response, MAX_PAGE + 1).await {
            Ok(body) if body.len() > MAX_PAGE => {
                let text = format!("GET {url}: answer longer than {MAX_PAGE} bytes");
                return Err((PollFailure::Protocol(text), None));
            }
            Ok(body) => body,
            Err(e) => return Err((PollFailure::from_reqwest(&url, &e), None)),
        };
        let page = match esl::parse_get_db(&body) {
            Ok(page) => page,
            Err(reason) => {
                let failure = PollFailure::Protocol(format!("GET {url}: {reason}"));
                let bad = Decoded::Bad {
                    reason: format!("get_db pos={pos}: {reason}"),
                    raw: body,
                };
                return Err((failure, Some(bad)));
            }
        };
        tags.extend(page.tags);
        if page.continu == 0 {
            return Ok(tags);
        }
        // `continu` is the position of the next page: one that does not
        // move forward would have us read the same pages forever.
        if page.continu <= pos {
            let text = format!("GET {url}: continu {} does not move past pos", page.continu);
            return Err((PollFailure::Protocol(text), None));
        }
        pos = page.continu;
    }
    let text = format!("GET {base}/get_db: more than {MAX_PAGES} pages");
    Err((PollFailure::Protocol(text), None))
}

/// Up to `limit` bytes of a response body (the rest is left unread).
async fn read_body(
    response: &mut reqwest::Response,
    limit: usize,
) -> Result<Vec<u8>, reqwest::Error> {
    let mut body = Vec::new();
    while body.len() < limit {
        match response.chunk().await? {
            Some(chunk) => {
                let take = chunk.len().min(limit - body.len());
                body.extend_from_slice(&chunk[..take]);
            }
            None => break,
        }
    }
    Ok(body)
}

/// What one poll of the AP means for the store's labels, decided by
/// `domain::labels::reconcile` over a read of the labels table (no writes
/// here: the events are journaled through ingest like any device input):
/// `label_ack` (ok) for sent updates the tags now show, `label_health` for
/// tags whose battery, signal or offline state changed.
async fn reconcile(
    ingest: &Ingest,
    tags: Vec<OeplTag>,
    stale_after_s: u64,
) -> Result<Vec<EventBody>, StoreError> {
    // A record the AP copied from another AP (`isexternal`) is that AP's
    // to report: two sessions reporting one tag would contradict each other.
    let seen: HashMap<String, LabelSeen> = tags
        .iter()
        .filter(|t| !t.external)
        .map(|t| (t.mac.clone(), t.seen()))
        .collect();
    ingest
        .writer()
        .transact(move |w| {
            // Labels of other kinds (esl-json ids) are no MACs, and tags
            // of another AP are not in this one's database: not ours.
            let ours = |label_id: &str| {
                esl::normalize_mac(label_id)
                    .ok()
                    .and_then(|mac| seen.get(&mac).cloned())
            };
            labels::reconcile(w.conn(), &ours, now_millis(), stale_after_s)
        })
        .await
}

/// Every tag record of the AP at `base_url` (all `/get_db` pages): the
/// label router's view of which labels the AP serves. The error says which
/// request failed and how.
pub async fn oepl_list(client: &reqwest::Client, base_url: &str) -> Result<Vec<OeplTag>, String> {
    read_tag_db(client, base_url)
        .await
        .map_err(|(failure, _)| failure.message().to_string())
}

/// Send a label update to an OpenEPaperLink AP: `POST {base_url}/jsonupload`
/// with the form fields `mac` and `json` (the profile's drawing with the
/// update's values). Called by the label dispatcher; the update counts as
/// sent only when this returns `Ok` (the AP then holds it for the tag).
pub async fn oepl_upload(
    client: &reqwest::Client,
    base_url: &str,
    params: &OeplParams,
    update: &LabelUpdate,
) -> Result<(), DeviceError> {
    let url = format!("{}/jsonupload", base_url.trim_end_matches('/'));
    post_form(client, url, &esl::upload_form(update, &params.template)).await
}

/// Send a tag command of the AP's web interface: `POST {base_url}/tag_cmd`
/// with `mac` and `cmd` (`ledflash` flashes the tag's LED the next time it
/// checks in). `Ok` once the AP accepted it.
pub async fn oepl_tag_cmd(
    client: &reqwest::Client,
    base_url: &str,
    mac: &str,
    cmd: &str,
) -> Result<(), DeviceError> {
    let url = format!("{}/tag_cmd", base_url.trim_end_matches('/'));
    let fields = [
        ("mac".to_string(), mac.to_string()),
        ("cmd".to_string(), cmd.to_string()),
    ];
    post_form(client, url, &fields).await
}

/// `POST` a form to the AP; any 2xx is success, anything else an error
/// with the head of the answer.
async fn post_form(
    client: &reqwest::Client,
    url: String,
    fields: &[(String, String)],
) -> Result<(), DeviceError> {
    let sent = client
        .post(&url)
        .header(
            CONTENT_TYPE,
            HeaderValue::from_static("application/x-www-form-urlencoded"),
        )
        .body(form_urlencoded(fields))
        .timeout(UPLOAD_TIMEOUT)
        .send()
        .await;
    let mut response = match sent {
        Ok(response) => response,
        Err(e) if e.is_timeout() => {
            return Err(DeviceError::Timeout(format!(
                "POST {url}: {}",
                describe(&e)
            )));
        }
        Err(e) if e.is_connect() => {
            return Err(DeviceError::Open {
                what: url,
                reason: describe(&e),
            });
        }
        Err(e) => return Err(DeviceError::Lost(format!("POST {url}: {}", describe(&e)))),
    };
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    let body = read_body(&mut response, ERROR_BODY)
        .await
        .unwrap_or_default();
    Err(DeviceError::Protocol(format!(
        "POST {url}: HTTP {status}: {}",
        String::from_utf8_lossy(&body)
    )))
}

/// `application/x-www-form-urlencoded` as browsers write it (the WHATWG
/// URL standard): `name=value` pairs joined by `&`, space as `+`, every
/// byte but ASCII alphanumerics and `*-._` percent-encoded. reqwest's own
/// `.form()` needs a crate feature this build does not have.
fn form_urlencoded(fields: &[(String, String)]) -> String {
    fn encode(out: &mut String, text: &str) {
        for byte in text.bytes() {
            match byte {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'*' | b'-' | b'.' | b'_' => {
                    out.push(char::from(byte));
                }
                b' ' => out.push('+'),
                _ => out.push_str(&format!("%{byte:02X}")),
            }
        }
    }
    let mut out = String::new();
    for (i, (name, value)) in fields.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        encode(&mut out, name);
        out.push('=');
        encode(&mut out, value);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_encoding() {
        let fields = vec![
            ("mac".to_string(), "0000021A4B3C5D6E".to_string()),
            (
                "json".to_string(),
                "[{\"t\":\"a b&c=d+e%\"}] 2,49\u{a0}€".to_string(),
            ),
        ];
        assert_eq!(
            form_urlencoded(&fields),
            "mac=0000021A4B3C5D6E&json=%5B%7B%22t%22%3A%22a+b%26c%3Dd%2Be%25%22%7D%5D+2%2C49%C2%A0%E2%82%AC"
        );
        assert_eq!(form_urlencoded(&[]), "");
    }
}
