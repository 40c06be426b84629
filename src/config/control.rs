//! A device's `[device.control]` table: where and how the agent reaches
//! the reader's management interface to start and stop its reading (the
//! profile's `[control]` says which requests; these keys say where, with
//! which credentials, which preset, and whether to start at all).
//! Whether the keys fit the profile is checked with the profiles
//! (`profiles::check_devices`).

use std::path::PathBuf;

use toml::{Table, Value};

use super::{Fields, Problem};

/// The keys of `[device.control]` (docs/config.md).
#[derive(Debug, Clone, PartialEq)]
pub struct ReaderControl {
    /// Base URL of an HTTP management interface, e.g. `http://10.0.0.7`.
    pub url: Option<String>,
    /// A file with one line `user:password` for HTTP basic auth.
    pub credentials_file: Option<PathBuf>,
    /// MQTT: where commands go and where their answers come back.
    pub command_topic: Option<String>,
    pub response_topic: Option<String>,
    /// The preset to start; the profile's `default_preset` when unset.
    pub preset: Option<String>,
    /// Start reading when the agent starts (and again after the reader
    /// rebooted or the link came back).
    pub start_on_connect: bool,
    /// How often the agent checks that the reader still reads.
    pub check_s: u64,
    /// How long a request or command may take to be answered.
    pub timeout_s: u64,
}

/// Read `control` of the device table `f`, if present.
pub(super) fn read_control(f: &mut Fields, p: &mut Vec<Problem>) -> Option<ReaderControl> {
    let table: &Table = f.table(p, "control")?;
    let mut c = Fields::new(table, f.key("control"));
    let url = c.string(p, "url");
    if let Some(u) = &url
        && !(u.starts_with("http://") || u.starts_with("https://"))
    {
        c.problem(
            p,
            "url",
            format!("{u:?} is not an http:// or https:// URL; write e.g. \"http://192.168.10.71\""),
        );
    }
    let credentials_file = c.string(p, "credentials_file").map(PathBuf::from);
    let command_topic = c.string(p, "command_topic");
    let response_topic = c.string(p, "response_topic");
    for (key, topic) in [
        ("command_topic", &command_topic),
        ("response_topic", &response_topic),
    ] {
        if let Some(t) = topic
            && (t.is_empty() || t.contains(['+', '#']))
        {
            c.problem(
                p,
                key,
                format!("{t:?} must be one topic, without wildcards, e.g. \"fx9600/mgmt/cmd\""),
            );
        }
    }
    let preset = c.string(p, "preset");
    if let Some(name) = &preset
        && (name.is_empty() || name.contains(['/', '?', '#', ' ']))
    {
        c.problem(
            p,
            "preset",
            format!("{name:?} is not a preset name (no spaces, '/', '?' or '#')"),
        );
    }
    let start_on_connect = match c.get("start_on_connect") {
        None => true,
        Some(Value::Boolean(b)) => *b,
        Some(v) => {
            c.wrong_type(p, "start_on_connect", v, "true or false");
            true
        }
    };
    let check_s = c.integer(p, "check_s", 30, 1..=3600);
    // Two commands (preset, start) must fit the API's 10 s request limit.
    let timeout_s = c.integer(p, "timeout_s", 4, 1..=4);
    c.finish(p, "keys of [device.control]");
    Some(ReaderControl {
        url,
        credentials_file,
        command_topic,
        response_topic,
        preset,
        start_on_connect,
        check_s,
        timeout_s,
    })
}
