//! Which OpenEPaperLink access point a shelf label goes to. A store may
//! run several APs; each serves the tags in its own tag database, so a
//! label is routed to an AP whose `/get_db` lists it, not to the first one
//! configured. The listings are read again at most every `poll_ms` of the
//! AP's profile, when there is something to send or a label to find.
//!
//! An AP that fails a request is tried last until it answers again, so a
//! label listed by two APs reaches its tag through the other while one is
//! down. A label that no AP lists cannot be reached at all: the caller
//! reports it failed ([`Placement::Unlisted`]). While an AP has not
//! answered once since the start, a label it might list is not judged
//! ([`Placement::Unknown`]): it waits instead of failing.
//!
//! This is routing state, not store state: it lives in memory, is owned by
//! [`AccessPoints`] (the label sender and the API's "find this label"
//! share one handle), and nothing of it is journaled.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use tokio::sync::Mutex;

use super::DeviceError;
use super::http::{oepl_list, oepl_tag_cmd, oepl_upload};
use crate::codecs::esl::{LabelUpdate, OeplParams, normalize_mac};

/// How long a connection to an AP may take before it counts as down.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long one `/get_db` page may take.
const LIST_TIMEOUT: Duration = Duration::from_secs(10);

/// One configured access point and what it last said.
#[derive(Debug)]
struct Ap {
    /// The device id of the AP (`[[device]] id`).
    device: String,
    url: String,
    params: OeplParams,
    /// MAC -> the tag has an LED; `None` until the AP first answered.
    listing: Option<HashMap<String, bool>>,
    /// Its last request failed.
    down: bool,
    /// When `/get_db` was last tried.
    refreshed: Option<Instant>,
}

/// An access point a label can be sent to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The device id of the AP.
    pub device: String,
    pub url: String,
    pub params: OeplParams,
    /// The AP's record says the tag has an LED.
    pub has_led: bool,
    /// The AP answered its last request.
    pub up: bool,
}

/// Where a label can go, as the listings say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    /// The APs listing the label: those answering first, in config order.
    Listed(Vec<Target>),
    /// Every AP answered at least once, and none lists the label.
    Unlisted,
    /// No AP lists it, but some AP has not answered since the start.
    Unknown,
}

/// The store's OpenEPaperLink access points and which labels each lists.
/// Cheap to clone: clones share the listings.
#[derive(Debug, Clone)]
pub struct AccessPoints {
    aps: Arc<Mutex<Vec<Ap>>>,
    /// Built on first use: a store without access points (most) never
    /// pays for an HTTP client and its TLS set-up.
    client: Arc<OnceLock<reqwest::Client>>,
}

impl Default for AccessPoints {
    fn default() -> AccessPoints {
        AccessPoints::new(Vec::new())
    }
}

impl AccessPoints {
    /// The APs as `(device id, base URL, profile parameters)`, in config
    /// order (the order of preference among APs that list a label).
    pub fn new(aps: Vec<(String, String, OeplParams)>) -> AccessPoints {
        let aps = aps
            .into_iter()
            .map(|(device, url, params)| Ap {
                device,
                url,
                params,
                listing: None,
                down: false,
                refreshed: None,
            })
            .collect();
        AccessPoints {
            aps: Arc::new(Mutex::new(aps)),
            client: Arc::default(),
        }
    }

    fn client(&self) -> &reqwest::Client {
        self.client.get_or_init(|| {
            // Building a client fails only without a TLS backend; the
            // default client then still works for plain HTTP, which APs
            // speak.
            reqwest::Client::builder()
                .connect_timeout(CONNECT_TIMEOUT)
                .timeout(LIST_TIMEOUT)
                .build()
                .unwrap_or_default()
        })
    }

    /// Whether the store has no AP at all.
    pub async fn is_empty(&self) -> bool {
        self.aps.lock().await.is_empty()
    }

    /// The longest `ack_timeout_s` of the APs' profiles: how long a label
    /// behind any of them may take to confirm.
    pub async fn ack_timeout_s(&self) -> u64 {
        let aps = self.aps.lock().await;
        aps.iter()
            .map(|ap| ap.params.ack_timeout_s)
            .max()
            .unwrap_or(0)
    }

    /// Read `/get_db` of every AP whose listing is older than its
    /// `poll_ms` (or that has none). The requests run without holding the
    /// listings, so a slow AP does not hold up a look-up.
    pub async fn refresh(&self) {
        let due: Vec<(usize, String)> = {
            let aps = self.aps.lock().await;
            aps.iter()
                .enumerate()
                .filter(|(_, ap)| {
                    ap.refreshed
                        .is_none_or(|at| at.elapsed() >= Duration::from_millis(ap.params.poll_ms))
                })
                .map(|(i, ap)| (i, ap.url.clone()))
                .collect()
        };
        for (i, url) in due {
            let listed = oepl_list(self.client(), &url).await;
            let mut aps = self.aps.lock().await;
            let Some(ap) = aps.get_mut(i) else { continue };
            ap.refreshed = Some(Instant::now());
            match listed {
                Ok(tags) => {
                    if ap.down {
                        tracing::info!(device = %ap.device, "access point lists its labels again");
                    }
                    ap.down = false;
                    // A copy of another AP's record is that AP's label.
                    let listing = tags
                        .into_iter()
                        .filter(|t| !t.external)
                        .map(|t| (t.mac, t.has_led))
                        .collect();
                    ap.listing = Some(listing);
                }
                Err(e) => {
                    if !ap.down {
                        tracing::warn!(device = %ap.device, error = %e, "cannot read the access point's labels; its labels go through another AP that lists them");
                    }
                    ap.down = true;
                }
            }
        }
    }

    /// Where the label `label_id` can go, as the last listings say.
    pub async fn place(&self, label_id: &str) -> Placement {
        let Ok(mac) = normalize_mac(label_id) else {
            return Placement::Unlisted;
        };
        let aps = self.aps.lock().await;
        let mut listed: Vec<(bool, Target)> = aps
            .iter()
            .filter_map(|ap| {
                let has_led = *ap.listing.as_ref()?.get(&mac)?;
                Some((
                    ap.down,
                    Target {
                        device: ap.device.clone(),
                        url: ap.url.clone(),
                        params: ap.params.clone(),
                        has_led,
                        up: !ap.down,
                    },
                ))
            })
            .collect();
        if !listed.is_empty() {
            // Stable: config order among the answering APs, then the rest.
            listed.sort_by_key(|(down, _)| *down);
            return Placement::Listed(listed.into_iter().map(|(_, t)| t).collect());
        }
        if aps.iter().any(|ap| ap.listing.is_none()) {
            Placement::Unknown
        } else {
            Placement::Unlisted
        }
    }

    /// Record that a request to the AP `device` failed: it is tried last,
    /// and its listing is read again on the next refresh.
    pub async fn mark_down(&self, device: &str) {
        let mut aps = self.aps.lock().await;
        if let Some(ap) = aps.iter_mut().find(|ap| ap.device == device) {
            ap.down = true;
            ap.refreshed = None;
        }
    }

    /// Upload `update` to the first of `targets` that takes it; the AP
    /// that did, or the last error (every AP that failed is marked down).
    pub async fn upload(
        &self,
        targets: &[Target],
        update: &LabelUpdate,
    ) -> Result<String, DeviceError> {
        self.first_that_takes(targets, |t| async move {
            oepl_upload(self.client(), &t.url, &t.params, update).await
        })
        .await
    }

    /// Send the tag command `cmd` for `mac` to the first of `targets` that
    /// takes it; the AP that did, or the last error.
    pub async fn tag_cmd(
        &self,
        targets: &[Target],
        mac: &str,
        cmd: &str,
    ) -> Result<String, DeviceError> {
        self.first_that_takes(targets, |t| async move {
            oepl_tag_cmd(self.client(), &t.url, mac, cmd).await
        })
        .await
    }

    async fn first_that_takes<'t, F, Fut>(
        &self,
        targets: &'t [Target],
        send: F,
    ) -> Result<String, DeviceError>
    where
        F: Fn(&'t Target) -> Fut,
        Fut: std::future::Future<Output = Result<(), DeviceError>>,
    {
        let mut last = DeviceError::Open {
            what: "an access point".into(),
            reason: "no access point lists the label".into(),
        };
        for target in targets {
            match send(target).await {
                Ok(()) => return Ok(target.device.clone()),
                Err(e) => {
                    tracing::debug!(device = %target.device, error = %e, "access point refused or unreachable; trying the next that lists the label");
                    self.mark_down(&target.device).await;
                    last = e;
                }
            }
        }
        Err(last)
    }
}
