//! Sends pending label updates to the shelf labels and turns missing
//! confirmations into timeouts. What a label should show is decided by the
//! domain (price changes, promos, conflicts); this is the mechanism: read
//! due updates from committed state, send them through the store's ESL
//! system (MQTT `esl-json`, or the OpenEPaperLink access point that lists
//! the label: `label_routes`), record them as sent. A label that no access
//! point lists is reported failed (a `label_ack` with status `failed`).

use std::sync::Arc;
use std::time::Duration;

use super::label_routes::{AccessPoints, Placement};
use super::{DeviceSpec, mqtt};
use crate::codecs::esl::{self, LabelUpdate};
use crate::config::Transport;
use crate::db::Writer;
use crate::domain::labels;
use crate::event::{EventBody, LabelAck, LabelStatus, NewEvent};
use crate::profiles::Codec;
use crate::shutdown::Shutdown;

/// The store's MQTT ESL system (`esl-json` labels).
#[derive(Debug, Clone)]
struct MqttRoute {
    topic: String,
    ack_timeout_s: u64,
}

/// Where one label goes.
enum Route<'r> {
    Mqtt(&'r MqttRoute),
    /// An OpenEPaperLink label: to whichever AP lists it.
    Oepl,
}

/// The store's ESL systems, from the configured devices.
#[derive(Debug, Clone, Default)]
pub struct Routes {
    mqtt: Vec<MqttRoute>,
    /// Whether the store has OpenEPaperLink access points at all.
    has_oepl: bool,
    /// The access points and their listings, shared with the API.
    aps: AccessPoints,
}

impl Routes {
    /// The ESL systems among `specs`: MQTT `esl-json` devices and
    /// OpenEPaperLink access points.
    pub fn from_devices(specs: &[DeviceSpec]) -> Routes {
        let mut r = Routes::default();
        let mut aps = Vec::new();
        for s in specs {
            match (&s.profile.codec, &s.config.transport) {
                (Codec::EslJson(p), Transport::Mqtt { topic, .. }) => r.mqtt.push(MqttRoute {
                    topic: topic.clone(),
                    ack_timeout_s: p.ack_timeout_s,
                }),
                (Codec::OpenEpaperLink(p), Transport::Http { url, .. }) => {
                    aps.push((s.id().to_string(), url.clone(), p.clone()))
                }
                _ => {}
            }
        }
        r.has_oepl = !aps.is_empty();
        r.aps = AccessPoints::new(aps);
        r
    }

    /// Whether the store has no ESL system.
    pub fn is_empty(&self) -> bool {
        self.mqtt.is_empty() && !self.has_oepl
    }

    /// The access points with their listings (`label_routes`), shared by
    /// the label sender and the API's "find this label".
    pub fn access_points(&self) -> AccessPoints {
        self.aps.clone()
    }

    /// A label whose id is an OpenEPaperLink MAC goes to an access point
    /// when the store has one; every other label to the MQTT ESL system.
    fn route(&self, label_id: &str) -> Option<Route<'_>> {
        let is_mac = esl::normalize_mac(label_id).is_ok();
        if is_mac && self.has_oepl {
            return Some(Route::Oepl);
        }
        match self.mqtt.first() {
            Some(m) => Some(Route::Mqtt(m)),
            None if self.has_oepl => Some(Route::Oepl),
            None => None,
        }
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
    let aps = routes.access_points();
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
        let mut unlisted: Vec<LabelUpdate> = Vec::new();
        if !due.is_empty() {
            aps.refresh().await;
        }
        for update in &due {
            let Some(route) = routes.route(&update.label_id) else {
                if !unroutable_logged {
                    tracing::warn!(label = %update.label_id, "label updates are pending but no ESL device is configured");
                    unroutable_logged = true;
                }
                continue;
            };
            let result = match route {
                Route::Mqtt(m) => send_mqtt(m, update, hub.as_ref()).await,
                Route::Oepl => match aps.place(&update.label_id).await {
                    // Every AP listing it is down: trying each label on
                    // them would hold up the others by a connect timeout
                    // apiece. The listing refresh finds them back up.
                    Placement::Listed(targets) if targets.iter().all(|t| !t.up) => {
                        failed.push(format!(
                            "{} v{}: every access point listing it is down",
                            update.label_id, update.version
                        ));
                        continue;
                    }
                    Placement::Listed(targets) => aps.upload(&targets, update).await.map(|_| ()),
                    Placement::Unlisted => {
                        unlisted.push(update.clone());
                        continue;
                    }
                    // An AP that has not answered yet may list it.
                    Placement::Unknown => continue,
                },
            };
            match result {
                Ok(()) => sent.push((update.label_id.clone(), update.version)),
                Err(e) => failed.push(format!("{} v{}: {e}", update.label_id, update.version)),
            }
        }
        if !unlisted.is_empty() {
            record_unlisted(&writer, unlisted).await;
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
        let oepl_timeout = aps.ack_timeout_s().await;
        let r = writer
            .transact(move |w| {
                let now = chrono::Utc::now();
                // Labels behind different ESL systems have different timeouts.
                if let Some(first) = routes2.mqtt.first() {
                    let mine = |label: &str| {
                        matches!(routes2.route(label), Some(Route::Mqtt(m)) if std::ptr::eq(m, first))
                    };
                    for e in labels::timed_out(w.conn(), now, first.ack_timeout_s as i64, &mine)? {
                        w.append(e)?;
                    }
                }
                if routes2.has_oepl {
                    let mine = |label: &str| matches!(routes2.route(label), Some(Route::Oepl));
                    for e in labels::timed_out(w.conn(), now, oepl_timeout as i64, &mine)? {
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

/// Journal a failed `label_ack` for each update whose label no access
/// point lists: it cannot reach its tag, and says so (`label_stale`, then
/// retried with backoff like any failed update, in case an AP learns the
/// tag).
async fn record_unlisted(writer: &Writer, unlisted: Vec<LabelUpdate>) {
    for u in &unlisted {
        tracing::warn!(label = %u.label_id, version = u.version, "no access point lists the label; its update is reported failed");
    }
    let r = writer
        .transact(move |w| {
            let now = chrono::Utc::now();
            for u in unlisted {
                w.append(NewEvent::new(
                    now,
                    "agent",
                    EventBody::LabelAck(LabelAck {
                        label_id: u.label_id,
                        sku: u.sku,
                        price_version: u.version,
                        status: LabelStatus::Failed,
                        battery_mv: None,
                        rssi: None,
                    }),
                ))?;
            }
            Ok(())
        })
        .await;
    if let Err(e) = r {
        tracing::warn!(error = %e, "cannot record label updates no access point can take");
    }
}

async fn send_mqtt(
    route: &MqttRoute,
    update: &LabelUpdate,
    hub: Option<&mqtt::Hub>,
) -> Result<(), super::DeviceError> {
    match hub {
        Some(hub) => {
            hub.publish(
                &esl::set_topic(&route.topic, &update.label_id),
                esl::set_payload(update),
            )
            .await
        }
        None => Err(super::DeviceError::Open {
            what: route.topic.clone(),
            reason: "no MQTT connection".into(),
        }),
    }
}
