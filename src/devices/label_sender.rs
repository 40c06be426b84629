//! Sends pending label updates to the shelf labels and turns missing
//! confirmations into timeouts. What a label should show is decided by the
//! domain (price changes, promos, conflicts); this is the mechanism: read
//! due updates from committed state, send them through the store's ESL
//! system (MQTT `esl-json` or an OpenEPaperLink access point), record them
//! as sent.

use std::sync::Arc;
use std::time::Duration;

use super::{DeviceSpec, http, mqtt};
use crate::codecs::esl::{self, LabelUpdate};
use crate::config::Transport;
use crate::db::Writer;
use crate::domain::labels;
use crate::profiles::Codec;
use crate::shutdown::Shutdown;

/// Where labels are sent.
#[derive(Debug, Clone)]
enum Route {
    Mqtt {
        topic: String,
        ack_timeout_s: u64,
    },
    Oepl {
        url: String,
        params: esl::OeplParams,
    },
}

impl Route {
    fn ack_timeout_s(&self) -> i64 {
        match self {
            Route::Mqtt { ack_timeout_s, .. } => *ack_timeout_s as i64,
            Route::Oepl { params, .. } => params.ack_timeout_s as i64,
        }
    }
}

/// The store's ESL systems, from the configured devices.
#[derive(Debug, Clone, Default)]
pub struct Routes {
    mqtt: Vec<Route>,
    oepl: Vec<Route>,
}

impl Routes {
    pub fn from_devices(specs: &[DeviceSpec]) -> Routes {
        let mut r = Routes::default();
        for s in specs {
            match (&s.profile.codec, &s.config.transport) {
                (Codec::EslJson(p), Transport::Mqtt { topic, .. }) => r.mqtt.push(Route::Mqtt {
                    topic: topic.clone(),
                    ack_timeout_s: p.ack_timeout_s,
                }),
                (Codec::OpenEpaperLink(p), Transport::Http { url, .. }) => {
                    r.oepl.push(Route::Oepl {
                        url: url.clone(),
                        params: p.clone(),
                    })
                }
                _ => {}
            }
        }
        r
    }

    pub fn is_empty(&self) -> bool {
        self.mqtt.is_empty() && self.oepl.is_empty()
    }

    /// A label whose id is an OpenEPaperLink MAC goes to the access point
    /// when the store has one; every other label to the MQTT ESL system.
    fn route(&self, label_id: &str) -> Option<&Route> {
        let is_mac = esl::normalize_mac(label_id).is_ok();
        if is_mac && !self.oepl.is_empty() {
            return self.oepl.first();
        }
        self.mqtt.first().or_else(|| self.oepl.first())
    }
}

/// Run until shutdown; `wake` is notified when label updates became due.
pub async fn run(
    writer: Writer,
    routes: Routes,
    hub: Option<mqtt::Hub>,
    wake: Arc<tokio::sync::Notify>,
    mut shutdown: Shutdown,
) {
    let client = reqwest::Client::new();
    let mut unroutable_logged = false;
    let mut sending_failed = false;
    loop {
        let due = writer
            .transact(|w| labels::due(w.conn(), chrono::Utc::now()))
            .await
            .unwrap_or_else(|e| {
                tracing::warn!(error = %e, "cannot read due label updates");
                Vec::new()
            });
        let mut sent: Vec<(String, i64)> = Vec::new();
        let mut failed: Vec<String> = Vec::new();
        for update in &due {
            let Some(route) = routes.route(&update.label_id) else {
                if !unroutable_logged {
                    tracing::warn!(label = %update.label_id, "label updates are pending but no ESL device is configured");
                    unroutable_logged = true;
                }
                continue;
            };
            match send(route, update, hub.as_ref(), &client).await {
                Ok(()) => sent.push((update.label_id.clone(), update.version)),
                Err(e) => failed.push(format!("{} v{}: {e}", update.label_id, update.version)),
            }
        }
        // One line per episode, not one per label and round: a broker
        // that is down would otherwise log every pending label every round.
        match (failed.first(), sending_failed) {
            (Some(first), false) => {
                tracing::warn!(failed = failed.len(), first = %first, "cannot send label updates; retrying (logged once until they go through)");
                sending_failed = true;
            }
            (Some(first), true) => {
                tracing::debug!(failed = failed.len(), first = %first, "label updates still failing")
            }
            (None, true) if !sent.is_empty() => {
                tracing::info!(sent = sent.len(), "label updates go through again");
                sending_failed = false;
            }
            _ => {}
        }
        if !sent.is_empty() {
            let n = sent.len();
            let r = writer
                .transact(move |w| {
                    let now = chrono::Utc::now();
                    for (label, version) in &sent {
                        labels::mark_sent(w.conn(), label, *version, now)?;
                    }
                    Ok(())
                })
                .await;
            match r {
                Ok(()) => tracing::debug!(labels = n, "label updates sent"),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot record sent label updates; they will be sent again")
                }
            }
        }
        let routes2 = routes.clone();
        let r = writer
            .transact(move |w| {
                let now = chrono::Utc::now();
                for group in [&routes2.mqtt, &routes2.oepl] {
                    let Some(first) = group.first() else { continue };
                    let timeout = first.ack_timeout_s();
                    let mine =
                        |label: &str| routes2.route(label).is_some_and(|r| std::ptr::eq(r, first));
                    for e in labels::timed_out(w.conn(), now, timeout, &mine)? {
                        w.append(e)?;
                    }
                }
                Ok(())
            })
            .await;
        if let Err(e) = r {
            tracing::warn!(error = %e, "cannot record label timeouts");
        }
        tokio::select! {
            _ = wake.notified() => {}
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = shutdown.wait() => break,
        }
    }
}

async fn send(
    route: &Route,
    update: &LabelUpdate,
    hub: Option<&mqtt::Hub>,
    client: &reqwest::Client,
) -> Result<(), super::DeviceError> {
    match route {
        Route::Mqtt { topic, .. } => match hub {
            Some(hub) => {
                hub.publish(
                    &esl::set_topic(topic, &update.label_id),
                    esl::set_payload(update),
                )
                .await
            }
            None => Err(super::DeviceError::Open {
                what: topic.clone(),
                reason: "no MQTT connection".into(),
            }),
        },
        Route::Oepl { url, params } => http::oepl_upload(client, url, params, update).await,
    }
}
