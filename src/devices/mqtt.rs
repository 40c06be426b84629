//! The `mqtt` transport (being written).

use super::{DeviceError, DeviceSpec, Ingest, Shutdown};

#[derive(Clone)]
pub struct Hub;

impl Hub {
    pub async fn session(
        &self,
        spec: &DeviceSpec,
        _ingest: &Ingest,
        _shutdown: &mut Shutdown,
    ) -> Result<(), DeviceError> {
        Err(DeviceError::Open {
            what: spec.config.transport.endpoint(),
            reason: "not available yet".into(),
        })
    }
}

impl Hub {
    pub async fn start(
        _config: &crate::config::MqttConfig,
        _shutdown: Shutdown,
    ) -> Result<Hub, DeviceError> {
        Ok(Hub)
    }
}
