//! The `http` and `http-stream` transports (spec/profiles.md "Transports"):
//! devices with an HTTP API that the agent reads as a client. One
//! [`session`] picks the transport by the device's transport and its
//! profile's codec:
//!
//! - `http-stream` + codec `json` (`http/stream.rs`): a reader that
//!   streams newline-delimited JSON, such as the Impinj R700.
//! - `http` + codec `openepaperlink` (`http/openepaperlink.rs`): an
//!   OpenEPaperLink access point, polled for its tag database; label
//!   updates go to it with [`oepl_upload`].
//!
//! The two share only how a client connects and reports: the connect
//! timeout, `describe` for errors and marking the device up.
//!
//! Everything that comes from the device is data: a line or a body that
//! does not parse is quarantined, never a panic.

mod openepaperlink;
mod stream;

use std::error::Error as _;

use super::{CONNECT_TIMEOUT, DeviceError, DeviceSpec, Ingest};
use crate::config::Transport;
use crate::profiles::Codec;
use crate::shutdown::Shutdown;

pub use openepaperlink::{MAX_FAILED_POLLS, oepl_list, oepl_tag_cmd, oepl_upload};
pub use stream::MAX_LINE;

/// Run one session of an HTTP device until shutdown (`Ok`) or until the
/// connection is lost or the device fails (`Err`); the runner reconnects.
pub async fn session(
    spec: &DeviceSpec,
    ingest: &Ingest,
    shutdown: &mut Shutdown,
) -> Result<(), DeviceError> {
    let unsupported = |transport: &str| DeviceError::Open {
        what: spec.config.transport.endpoint(),
        reason: format!(
            "profile {} uses codec {}, which is not read over {transport}",
            spec.profile.name,
            spec.profile.codec.name()
        ),
    };
    match (&spec.config.transport, &spec.profile.codec) {
        (Transport::HttpStream { url }, Codec::Json(_)) => {
            stream::session(spec, ingest, shutdown, url).await
        }
        (Transport::Http { url, .. }, Codec::OpenEpaperLink(params)) => {
            openepaperlink::session(spec, ingest, shutdown, url, params).await
        }
        (Transport::HttpStream { .. }, _) => Err(unsupported("http-stream")),
        (Transport::Http { .. }, _) => Err(unsupported("http")),
        _ => Err(DeviceError::Open {
            what: spec.config.transport.endpoint(),
            reason: "not an HTTP device".into(),
        }),
    }
}

/// A reqwest error with its causes ("error sending request: connection
/// refused"): reqwest's own message alone rarely says what went wrong.
fn describe(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Mark the device up, logging only the change.
fn mark_up(ingest: &Ingest, id: &str, endpoint: &str) {
    if ingest.health().set_up(id, true, None) {
        tracing::info!(device = %id, endpoint = %endpoint, "device up");
    }
}
