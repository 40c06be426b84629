//! Reading control: the agent starts and stops readers that have a
//! management interface (profile `[control]`, device `[device.control]`),
//! issue 17 item 2.
//!
//! One task per controlled reader owns what the reader should do (the
//! wanted state) and the connection to its management interface. At start
//! (with `start_on_connect`) it wants the reader reading its preset; every
//! `check_s` it makes sure it does: over HTTP it asks the reader's status
//! and starts the preset again when the reader is idle (it rebooted, or
//! somebody stopped it locally); over MQTT, which has no status to ask,
//! it tells the reader again whenever its link to the broker came back.
//! Staff change the wanted state through the API
//! (`POST /v1/devices/{id}/reading`), which sends the task a [`Request`]
//! and returns the reader's answer.
//!
//! Failures (unreachable, refused credentials, unknown preset) go to the
//! device's health (`control_error`, and `/healthz` says degraded) and to
//! the log once per outage ([`DownLog`]). At shutdown the task leaves the
//! reader as it is: a reader that reads while the agent restarts loses
//! nothing (the broker or the reader's buffer keeps its events), and a
//! reader stopped by the agent would stay stopped if the agent does not
//! come back.

mod http;
mod mqtt;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::DeviceSpec;
use super::down_log::{DownLog, Say};
use crate::backoff::Backoff;
use crate::config::{MqttConfig, ReaderControl};
use crate::health::HealthBoard;
use crate::profiles::ControlSpec;
use crate::shutdown::Shutdown;
use http::HttpDriver;
use mqtt::MqttDriver;

/// Requests waiting for one reader's task (staff do not queue many).
const REQUESTS: usize = 8;

/// What to make a reader do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Read `preset`, or the configured one.
    Start {
        preset: Option<String>,
    },
    Stop,
}

/// A reader's answer to an action, as the API returns it.
#[derive(Debug, Clone, Serialize)]
pub struct Answer {
    pub device: String,
    /// `start` or `stop`.
    pub action: &'static str,
    /// The preset started (none for a stop, or a reader that keeps its own).
    pub preset: Option<String>,
    /// What the reader answered (its JSON, `{}` when it sent nothing).
    pub reader: Value,
}

/// Why a reader could not be made to do something.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ControlError {
    #[error("no device {0:?} is configured")]
    UnknownDevice(String),
    #[error(
        "device {0:?} has no reading control; give it a [device.control] table and a profile with [control] (docs/config.md)"
    )]
    NotControlled(String),
    #[error("unknown preset {preset:?}: {why}")]
    UnknownPreset { preset: String, why: String },
    #[error("no preset to start: name one in the request or set [device.control] preset")]
    NoPreset,
    #[error(
        "the reader refused the agent's credentials (HTTP {0}); check [device.control] credentials_file"
    )]
    Unauthorized(u16),
    #[error("cannot read the reader's credentials: {0}")]
    Credentials(String),
    #[error("cannot reach the reader: {0}")]
    Unreachable(String),
    #[error("the reader did not answer within {0} s")]
    Timeout(u64),
    #[error("the reader refused: {0}")]
    Refused(String),
    #[error("the agent is shutting down")]
    Stopped,
}

/// A request of the API to a reader's task.
struct Request {
    action: Action,
    reply: oneshot::Sender<Result<Answer, ControlError>>,
}

/// The controlled readers, by device id: the API's way to them. Cheap to
/// clone.
#[derive(Clone, Default)]
pub struct Controls {
    senders: Arc<BTreeMap<String, mpsc::Sender<Request>>>,
    /// Every configured device, to tell "unknown" from "not controlled".
    devices: Arc<Vec<String>>,
}

impl Controls {
    /// Make `device` do `action`; the reader's answer.
    pub async fn send(&self, device: &str, action: Action) -> Result<Answer, ControlError> {
        let Some(sender) = self.senders.get(device) else {
            return Err(if self.devices.iter().any(|d| d == device) {
                ControlError::NotControlled(device.to_string())
            } else {
                ControlError::UnknownDevice(device.to_string())
            });
        };
        let (reply, answer) = oneshot::channel();
        sender
            .send(Request { action, reply })
            .await
            .map_err(|_| ControlError::Stopped)?;
        answer.await.map_err(|_| ControlError::Stopped)?
    }
}

/// The reader control tasks of `specs` (one per device with
/// `[device.control]`) and the handle the API uses. MQTT controls need
/// the hub's broker (`hub`); without it they report the reader
/// unreachable.
pub fn build(
    specs: &[DeviceSpec],
    mqtt: &MqttConfig,
    hub: Option<&super::mqtt::Hub>,
    health: &HealthBoard,
    shutdown: &Shutdown,
) -> (Controls, Vec<ControlTask>) {
    let mut senders = BTreeMap::new();
    let mut tasks = Vec::new();
    for spec in specs {
        let (Some(config), Some(control)) = (&spec.config.control, &spec.profile.control) else {
            continue;
        };
        let driver = match control {
            ControlSpec::Http(h) => Ok(Driver::Http(HttpDriver::new(
                config.url.as_deref().unwrap_or_default(),
                h.clone(),
                config.credentials_file.clone(),
                config.timeout_s,
            ))),
            ControlSpec::Mqtt(m) => match hub {
                Some(hub) => MqttDriver::connect(
                    mqtt::Link {
                        endpoint: hub.endpoint(),
                        client_id: format!("{}-control-{}", mqtt.client_id, spec.id()),
                        command_topic: config.command_topic.clone().unwrap_or_default(),
                        response_topic: config.response_topic.clone().unwrap_or_default(),
                    },
                    m.clone(),
                    spec.id(),
                    config.timeout_s,
                    shutdown.clone(),
                )
                .map(Driver::Mqtt),
                None => Err(ControlError::Unreachable(
                    "the agent has no MQTT broker".into(),
                )),
            },
        };
        let (tx, requests) = mpsc::channel(REQUESTS);
        senders.insert(spec.id().to_string(), tx);
        tasks.push(ControlTask {
            device: spec.id().to_string(),
            spec: control.clone(),
            config: config.clone(),
            driver,
            health: health.clone(),
            requests,
            down: DownLog::default(),
        });
    }
    let devices = specs.iter().map(|s| s.id().to_string()).collect();
    (
        Controls {
            senders: Arc::new(senders),
            devices: Arc::new(devices),
        },
        tasks,
    )
}

/// How the task talks to its reader.
enum Driver {
    Http(HttpDriver),
    Mqtt(MqttDriver),
}

/// What the reader should be doing, as far as the agent is concerned.
#[derive(Debug, Clone, PartialEq)]
enum Want {
    /// Nothing asked (no `start_on_connect`): leave it as it is.
    Leave,
    /// Reading this preset (`None`: the one the reader has).
    Read(Option<String>),
    Stopped,
}

/// One controlled reader's task: see the module documentation.
pub struct ControlTask {
    device: String,
    spec: ControlSpec,
    config: ReaderControl,
    /// `Err`: it could not be set up (reported at every check).
    driver: Result<Driver, ControlError>,
    health: HealthBoard,
    requests: mpsc::Receiver<Request>,
    down: DownLog,
}

impl ControlTask {
    /// Run until shutdown.
    pub async fn run(mut self, mut shutdown: Shutdown) {
        let mut want = if self.config.start_on_connect {
            Want::Read(self.preset(None).ok().flatten())
        } else {
            Want::Leave
        };
        // Whether the reader was told (and took) what we want since the
        // last link; MQTT readers cannot be asked.
        let mut told = false;
        let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
        let check = Duration::from_secs(self.config.check_s);
        let mut next_check = Instant::now();
        loop {
            tokio::select! {
                _ = shutdown.wait() => break,
                request = self.requests.recv() => {
                    let Some(request) = request else { break };
                    let result = self.perform(&request.action).await;
                    match &result {
                        Ok(answer) => {
                            want = match &request.action {
                                Action::Start { .. } => Want::Read(answer.preset.clone()),
                                Action::Stop => Want::Stopped,
                            };
                            told = true;
                            self.succeeded(&want);
                            backoff.reset();
                            next_check = Instant::now() + check;
                        }
                        // A refused preset says nothing about the reader.
                        Err(ControlError::UnknownPreset { .. } | ControlError::NoPreset) => {}
                        Err(e) => self.failed(e),
                    }
                    let _ = request.reply.send(result);
                }
                _ = tokio::time::sleep_until(next_check) => {
                    match self.enforce(&want, &mut told).await {
                        Ok(()) => {
                            self.succeeded(&want);
                            backoff.reset();
                            next_check = Instant::now() + check;
                        }
                        Err(e) => {
                            told = false;
                            self.failed(&e);
                            next_check = Instant::now() + backoff.next_delay().min(check);
                        }
                    }
                }
            }
        }
        tracing::debug!(device = %self.device, "reader control stopped; the reader is left as it is");
    }

    /// The preset a start means: the asked one, else the device's, else
    /// the profile's default; refused when the profile lists its presets
    /// and this is not one of them.
    fn preset(&self, asked: Option<&str>) -> Result<Option<String>, ControlError> {
        let preset = asked
            .or(self.config.preset.as_deref())
            .or(self.spec.default_preset());
        match preset {
            Some(p) if !self.spec.knows_preset(p) => Err(ControlError::UnknownPreset {
                preset: p.to_string(),
                why: format!("this reader's presets are {:?}", self.spec.presets()),
            }),
            Some(p) => Ok(Some(p.to_string())),
            None if matches!(self.spec, ControlSpec::Http(_)) => Err(ControlError::NoPreset),
            None => Ok(None),
        }
    }

    async fn perform(&mut self, action: &Action) -> Result<Answer, ControlError> {
        let (name, preset) = match action {
            Action::Start { preset } => ("start", self.preset(preset.as_deref())?),
            Action::Stop => ("stop", None),
        };
        let reader = match (self.driver.as_mut().map_err(|e| e.clone())?, action) {
            (Driver::Http(h), Action::Start { .. }) => {
                h.start(preset.as_deref().unwrap_or_default()).await?
            }
            (Driver::Http(h), Action::Stop) => h.stop().await?,
            (Driver::Mqtt(m), Action::Start { .. }) => m.start(preset.as_deref()).await?,
            (Driver::Mqtt(m), Action::Stop) => m.stop().await?,
        };
        tracing::info!(device = %self.device, action = name, preset = ?preset, "reader control: done");
        Ok(Answer {
            device: self.device.clone(),
            action: name,
            preset,
            reader,
        })
    }

    /// Make the reader do what is wanted, if it does not already.
    async fn enforce(&mut self, want: &Want, told: &mut bool) -> Result<(), ControlError> {
        if *want == Want::Leave {
            return Ok(());
        }
        let reading = match self.driver.as_mut().map_err(|e| e.clone())? {
            Driver::Http(h) => Some(h.is_reading().await?),
            Driver::Mqtt(m) => {
                if m.relinked() {
                    *told = false;
                }
                None
            }
        };
        let action = match (want, reading) {
            (Want::Read(p), Some(false)) => Action::Start { preset: p.clone() },
            (Want::Read(p), None) if !*told => Action::Start { preset: p.clone() },
            (Want::Stopped, Some(true)) => Action::Stop,
            (Want::Stopped, None) if !*told => Action::Stop,
            _ => return Ok(()),
        };
        if reading.is_some() {
            tracing::info!(device = %self.device, ?action, "reader is not doing what it was told (rebooted?); telling it again");
        }
        self.perform(&action).await?;
        *told = true;
        Ok(())
    }

    fn succeeded(&mut self, want: &Want) {
        let reading = match want {
            Want::Leave => None,
            Want::Read(Some(p)) => Some(format!("running {p}")),
            Want::Read(None) => Some("running".to_string()),
            Want::Stopped => Some("stopped".to_string()),
        };
        if self.health.set_control(&self.device, reading, None) {
            tracing::warn!(device = %self.device, "reader control works again");
        }
        self.down.up();
    }

    fn failed(&mut self, e: &ControlError) {
        self.health
            .set_control(&self.device, None, Some(e.to_string()));
        match self.down.failed(std::time::Instant::now()) {
            Say::Down => {
                tracing::warn!(device = %self.device, error = %e, "cannot control the reader's reading; retrying with backoff")
            }
            Say::StillDown(d) => tracing::warn!(
                device = %self.device,
                error = %e,
                down_for_s = d.as_secs(),
                "still cannot control the reader's reading"
            ),
            Say::Quiet => {
                tracing::debug!(device = %self.device, error = %e, "reader control still failing")
            }
        }
    }
}
