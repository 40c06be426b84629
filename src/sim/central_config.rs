//! The reference central's per-store configs (spec/fleet.md 4): files
//! `{store}.toml` in a directory (`sim central --configs DIR`), each with
//! a version that goes up whenever its text changes.
//!
//! - `GET /v1/stores/{s}/config` with `If-None-Match: "{sha256}"`: `304`
//!   when the agent holds the current text, `404` when there is no file,
//!   else `200 {"version": N, "toml": "..."}`.
//! - `PUT /admin/stores/{s}/config` with the TOML as body: writes the
//!   file, answers `{"version": N}`, and sends `pull_config` to the store
//!   over the MQTT consumer when one runs.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::central::{Central, authorize, error};
use crate::config::layered::sha256_hex;

impl Central {
    /// Serve configs from `dir` (`{store}.toml` files).
    pub fn with_configs(self, dir: impl Into<std::path::PathBuf>) -> Central {
        self.lock().configs_dir = Some(dir.into());
        self
    }

    /// The config text of `store` and its version, bumping the version
    /// when the text changed since it was last looked at. `None`: no
    /// directory, or no file for the store.
    pub fn store_config(&self, store: &str) -> Option<(i64, String, String)> {
        let mut s = self.lock();
        let dir = s.configs_dir.clone()?;
        if !crate::config::is_store_id(store) {
            return None;
        }
        let text = std::fs::read_to_string(dir.join(format!("{store}.toml"))).ok()?;
        let sha = sha256_hex(&text);
        let entry = s
            .config_versions
            .entry(store.to_string())
            .or_insert_with(|| (String::new(), 0));
        if entry.0 != sha {
            *entry = (sha.clone(), entry.1 + 1);
        }
        Some((entry.1, sha, text))
    }

    /// Replace the config of `store`; returns its new version. Sends
    /// `pull_config` over MQTT when a consumer runs.
    pub fn set_config(&self, store: &str, text: &str) -> Result<i64, String> {
        let dir = self
            .lock()
            .configs_dir
            .clone()
            .ok_or("central serves no configs (start it with --configs DIR)")?;
        if !crate::config::is_store_id(store) {
            return Err(format!("{store:?} is not a store id"));
        }
        let path = dir.join(format!("{store}.toml"));
        let tmp = path.with_extension("toml.tmp");
        std::fs::write(&tmp, text)
            .and_then(|()| std::fs::rename(&tmp, &path))
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        let (version, _, _) = self
            .store_config(store)
            .ok_or_else(|| format!("{} vanished", path.display()))?;
        let commands = self
            .commands
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if let Some((client, prefix)) = commands {
            let _ = client.try_publish(
                format!("{prefix}/{store}/cmd"),
                rumqttc::QoS::AtLeastOnce,
                false,
                json!({"cmd": "pull_config"}).to_string(),
            );
        }
        Ok(version)
    }
}

pub(super) async fn get_config(
    State(c): State<Central>,
    Path(store): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Err((status, msg)) = authorize(&c.lock().behaviour, &headers) {
        return error(status, msg);
    }
    let Some((version, sha, toml)) = c.store_config(&store) else {
        return error(StatusCode::NOT_FOUND, "no config for this store");
    };
    let held = headers
        .get("if-none-match")
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().trim_matches('"'));
    if held == Some(sha.as_str()) {
        return StatusCode::NOT_MODIFIED.into_response();
    }
    axum::Json(json!({"version": version, "toml": toml})).into_response()
}

pub(super) async fn put_config(
    State(c): State<Central>,
    Path(store): Path<String>,
    body: Bytes,
) -> Response {
    let Ok(text) = String::from_utf8(body.to_vec()) else {
        return error(
            StatusCode::BAD_REQUEST,
            "the config must be UTF-8 TOML text",
        );
    };
    match c.set_config(&store, &text) {
        Ok(version) => axum::Json(json!({"version": version})).into_response(),
        Err(e) => error(StatusCode::BAD_REQUEST, &e),
    }
}
