//! The `[control]` table of a firmware profile: how the agent starts and
//! stops a reader's reading over the reader's own management interface
//! (spec issue 17 item 2). Data, not code: a profile says which requests
//! or commands mean "start this preset" and "stop", so a new firmware with
//! the same shape of interface needs a profile, not a release.
//!
//! Two shapes exist in the field:
//! - `protocol = "http"`: a REST interface with basic auth, such as the
//!   Impinj R700 IoT device interface
//!   (`POST /api/v1/profiles/inventory/presets/{preset}/start`,
//!   `POST /api/v1/profiles/stop`, `GET /api/v1/status`).
//! - `protocol = "mqtt"`: JSON commands on a command topic answered on a
//!   response topic with the same `command_id`, such as the Zebra IoT
//!   Connector (`{"command":"start","command_id":"...","payload":{}}`,
//!   answered `{"command":"start","command_id":"...","response":"success",...}`).

use serde::Deserialize;

/// How a reader is told to start and stop reading.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "protocol", rename_all = "kebab-case")]
pub enum ControlSpec {
    Http(HttpControl),
    Mqtt(MqttControl),
}

impl ControlSpec {
    /// The protocol's name as the profile writes it.
    pub fn protocol(&self) -> &'static str {
        match self {
            ControlSpec::Http(_) => "http",
            ControlSpec::Mqtt(_) => "mqtt",
        }
    }

    /// The preset used when the device config names none.
    pub fn default_preset(&self) -> Option<&str> {
        match self {
            ControlSpec::Http(h) => h.default_preset.as_deref(),
            ControlSpec::Mqtt(m) => m.default_preset.as_deref(),
        }
    }

    /// The presets the reader knows, when the firmware fixes them (Zebra's
    /// operating modes); empty when the reader's own list decides (Impinj
    /// presets are defined on the reader).
    pub fn presets(&self) -> &[String] {
        match self {
            ControlSpec::Http(h) => &h.presets,
            ControlSpec::Mqtt(m) => &m.presets,
        }
    }

    /// Whether `preset` may be asked for: any name when the profile lists
    /// none, else one of the list.
    pub fn knows_preset(&self, preset: &str) -> bool {
        self.presets().is_empty() || self.presets().iter().any(|p| p == preset)
    }

    pub(super) fn validate(&self) -> Result<(), String> {
        match self {
            ControlSpec::Http(h) => {
                for (key, value) in [
                    ("start", &h.start),
                    ("stop", &h.stop),
                    ("status", &h.status),
                ] {
                    HttpRequest::parse(value).map_err(|e| format!("control.{key}: {e}"))?;
                }
                if !h.start.contains("{preset}") {
                    return Err(
                        "control.start: the path must contain {preset}, where the preset's name goes"
                            .into(),
                    );
                }
            }
            ControlSpec::Mqtt(m) => {
                for (key, value) in [("start", &m.start), ("stop", &m.stop)] {
                    if value.trim().is_empty() {
                        return Err(format!("control.{key}: the command name may not be empty"));
                    }
                }
            }
        }
        if let Some(p) = self.default_preset()
            && !self.knows_preset(p)
        {
            return Err(format!(
                "control.default_preset: {p:?} is not one of presets = {:?}",
                self.presets()
            ));
        }
        Ok(())
    }
}

/// A REST management interface.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpControl {
    /// `METHOD /path` that starts a preset; `{preset}` is its name.
    pub start: String,
    /// `METHOD /path` that stops reading.
    pub stop: String,
    /// `GET /path` answering a JSON object that says whether it reads.
    pub status: String,
    /// The field of the status answer that says what the reader does...
    #[serde(default = "default_status_field")]
    pub status_field: String,
    /// ...and its value while it reads.
    #[serde(default = "default_running_value")]
    pub running_value: String,
    /// The HTTP status with which the reader refuses a preset it does not
    /// have (the agent then says "unknown preset", not "refused").
    #[serde(default = "default_unknown_preset_status")]
    pub unknown_preset_status: u16,
    #[serde(default)]
    pub default_preset: Option<String>,
    #[serde(default)]
    pub presets: Vec<String>,
}

fn default_status_field() -> String {
    "status".into()
}

fn default_running_value() -> String {
    "running".into()
}

fn default_unknown_preset_status() -> u16 {
    404
}

/// A command/response management interface over MQTT.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttControl {
    /// The `command` that starts reading.
    pub start: String,
    /// The `command` that stops reading.
    pub stop: String,
    /// The `command` that selects the preset before `start`, if the reader
    /// has one (Zebra: `set_mode`)...
    #[serde(default)]
    pub preset_command: Option<String>,
    /// ...and the payload field that carries the preset's name.
    #[serde(default = "default_preset_field")]
    pub preset_field: String,
    #[serde(default)]
    pub default_preset: Option<String>,
    #[serde(default)]
    pub presets: Vec<String>,
}

fn default_preset_field() -> String {
    "type".into()
}

/// One request of an HTTP control: `POST /api/v1/profiles/stop`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpRequest {
    pub method: reqwest::Method,
    pub path: String,
}

impl HttpRequest {
    /// Read `METHOD /path`.
    pub fn parse(text: &str) -> Result<HttpRequest, String> {
        let Some((method, path)) = text.trim().split_once(' ') else {
            return Err(format!(
                "{text:?} is not \"METHOD /path\", e.g. \"POST /api/v1/profiles/stop\""
            ));
        };
        let method = match method {
            "GET" => reqwest::Method::GET,
            "POST" => reqwest::Method::POST,
            "PUT" => reqwest::Method::PUT,
            other => return Err(format!("method {other:?} is not GET, POST or PUT")),
        };
        let path = path.trim();
        if !path.starts_with('/') || path.contains(char::is_whitespace) {
            return Err(format!("{path:?} is not a path starting with /"));
        }
        Ok(HttpRequest {
            method,
            path: path.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(text: &str) -> Result<ControlSpec, String> {
        let v: toml::Value = toml::from_str(text).map_err(|e| e.to_string())?;
        let spec = ControlSpec::deserialize(v).map_err(|e| e.to_string())?;
        spec.validate()?;
        Ok(spec)
    }

    #[test]
    fn http_and_mqtt_controls_read_and_bad_ones_are_named() {
        let h = spec("protocol = \"http\"\nstart = \"POST /p/{preset}/start\"\nstop = \"POST /stop\"\nstatus = \"GET /status\"\n").unwrap();
        assert_eq!(h.protocol(), "http");
        assert!(h.knows_preset("anything"));
        let m = spec("protocol = \"mqtt\"\nstart = \"start\"\nstop = \"stop\"\npresets = [\"SIMPLE\"]\ndefault_preset = \"SIMPLE\"\n").unwrap();
        assert!(m.knows_preset("SIMPLE") && !m.knows_preset("PORTAL"));
        let e = spec("protocol = \"http\"\nstart = \"POST /start\"\nstop = \"POST /stop\"\nstatus = \"GET /status\"\n").unwrap_err();
        assert!(e.contains("{preset}"), "{e}");
        let e = spec("protocol = \"http\"\nstart = \"FETCH /{preset}\"\nstop = \"POST /stop\"\nstatus = \"GET /status\"\n").unwrap_err();
        assert!(e.contains("control.start: method \"FETCH\""), "{e}");
        let e = spec("protocol = \"mqtt\"\nstart = \"start\"\nstop = \"stop\"\npresets = [\"A\"]\ndefault_preset = \"B\"\n").unwrap_err();
        assert!(e.contains("default_preset"), "{e}");
        let e = spec("protocol = \"mqtt\"\nstart = \"start\"\nstop = \"stop\"\ncolour = 1\n")
            .unwrap_err();
        assert!(e.contains("colour"), "{e}");
    }
}
