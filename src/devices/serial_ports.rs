//! The serial ports this machine has, for `storegate check` to list when a
//! configured `port` does not exist: the kernel's names (`serialport`'s
//! enumeration, a scan of /sys/class/tty without libudev) and the stable
//! names udev makes for USB adapters in /dev/serial/by-id, which survive
//! replugging and are what a config should use.

use std::path::{Path, PathBuf};

/// One serial port: its device file and the /dev/serial/by-id names that
/// point at it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SerialPortName {
    pub path: PathBuf,
    pub by_id: Vec<PathBuf>,
}

impl std::fmt::Display for SerialPortName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.by_id.as_slice() {
            [] => write!(f, "{}", self.path.display()),
            names => {
                let names: Vec<String> = names.iter().map(|n| n.display().to_string()).collect();
                write!(f, "{} ({})", names.join(", "), self.path.display())
            }
        }
    }
}

/// Where udev puts the stable names of USB serial adapters.
pub const BY_ID_DIR: &str = "/dev/serial/by-id";

/// Every serial port the kernel has, sorted by path, each with its
/// by-id names. Empty where the kernel offers no /sys/class/tty (not
/// Linux, or a sandbox without /sys).
pub fn available() -> Vec<SerialPortName> {
    let mut ports: Vec<SerialPortName> = Vec::new();
    // serialport's scan panics when /sys/class/tty is missing.
    if Path::new("/sys/class/tty").is_dir() {
        if let Ok(found) = serialport::available_ports() {
            ports.extend(found.into_iter().map(|p| SerialPortName {
                path: PathBuf::from(p.port_name),
                by_id: Vec::new(),
            }));
        }
    }
    // i.MX UARTs sit on the platform bus, which serialport's scan leaves
    // out (on PCs it holds only placeholder ttyS ports).
    ports.extend(platform_uarts(Path::new("/sys/class/tty"), "ttymxc"));
    for link in by_id_links(Path::new(BY_ID_DIR)) {
        let Ok(target) = std::fs::canonicalize(&link) else {
            continue;
        };
        match ports.iter_mut().find(|p| p.path == target) {
            Some(p) => p.by_id.push(link),
            None => ports.push(SerialPortName {
                path: target,
                by_id: vec![link],
            }),
        }
    }
    ports.sort_by(|a, b| a.path.cmp(&b.path));
    ports.dedup_by(|a, b| a.path == b.path);
    for p in &mut ports {
        p.by_id.sort();
    }
    ports
}

/// The UARTs named `prefix*` that the kernel has (a /sys/class/tty entry
/// with a device behind it and a /dev node).
fn platform_uarts(sys: &Path, prefix: &str) -> Vec<SerialPortName> {
    let Ok(entries) = std::fs::read_dir(sys) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
        .filter(|e| e.path().join("device").exists())
        .map(|e| Path::new("/dev").join(e.file_name()))
        .filter(|dev| dev.exists())
        .map(|path| SerialPortName {
            path,
            by_id: Vec::new(),
        })
        .collect()
}

/// The entries of a by-id directory (absent when nothing USB is plugged).
fn by_id_links(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries.flatten().map(|e| e.path()).collect()
}

/// What to say about a configured port that does not exist: the ports
/// that do, or that there are none.
pub fn missing_port_hint(ports: &[SerialPortName]) -> String {
    if ports.is_empty() {
        "this machine has no serial ports right now (is the USB adapter plugged in?)".to_string()
    } else {
        let names: Vec<String> = ports.iter().map(ToString::to_string).collect();
        format!(
            "serial ports on this machine: {} (prefer a {BY_ID_DIR} name: it survives replugging)",
            names.join(", ")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_port_shows_its_stable_names_first() {
        let p = SerialPortName {
            path: "/dev/ttyUSB0".into(),
            by_id: vec!["/dev/serial/by-id/usb-FTDI_FT232R-if00-port0".into()],
        };
        assert_eq!(
            p.to_string(),
            "/dev/serial/by-id/usb-FTDI_FT232R-if00-port0 (/dev/ttyUSB0)"
        );
    }

    #[test]
    fn every_listed_port_exists() {
        for p in available() {
            assert!(p.path.exists(), "{p}");
        }
    }
}
