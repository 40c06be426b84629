//! The `modbus` transport (being written).

use super::{DeviceError, DeviceSpec, Ingest, Shutdown};

pub async fn session(
    spec: &DeviceSpec,
    _ingest: &Ingest,
    _shutdown: &mut Shutdown,
) -> Result<(), DeviceError> {
    Err(DeviceError::Open {
        what: spec.config.transport.endpoint(),
        reason: "not available yet".into(),
    })
}
