//! Serial lines for the serial simulators (M100 module, POS printer tap).
//!
//! Without hardware, a pseudo-terminal stands in for the USB serial
//! adapter: the simulator holds the master side and the agent opens the
//! slave's path (`/dev/pts/N`) exactly as it would open `/dev/ttyUSB0`.
//! With hardware (or a socat pair), the simulator opens a port by path.
//! Both give a [`SerialStream`], so a simulator does not care which.

use std::path::{Path, PathBuf};

use tokio_serial::{SerialPort, SerialPortBuilderExt, SerialStream};

/// A pseudo-terminal pair. Needs a running tokio runtime.
pub struct Pty {
    /// The simulator's side: bytes written here arrive at the slave.
    pub master: SerialStream,
    pub slave: Slave,
}

/// The agent's side of a [`Pty`], held open for as long as the simulator
/// runs: with no slave open the kernel hangs the master up (reads fail
/// with EIO), and the agent closes and reopens the port on reconnects.
pub struct Slave {
    _stream: SerialStream,
    /// Where the agent opens it, e.g. `/dev/pts/7`.
    pub path: PathBuf,
}

impl Pty {
    /// A fresh pair in raw mode (no echo, no line editing: binary frames
    /// pass untouched).
    pub fn open() -> std::io::Result<Pty> {
        let (master, slave) = SerialStream::pair().map_err(std::io::Error::other)?;
        let path = slave
            .name()
            .map(PathBuf::from)
            .ok_or_else(|| std::io::Error::other("the pseudo-terminal has no name"))?;
        Ok(Pty {
            master,
            slave: Slave {
                _stream: slave,
                path,
            },
        })
    }
}

/// Open an existing serial port (a real adapter, or the device end of a
/// socat pair) for a simulator, 8N1 at `baud`.
pub fn open_port(path: &Path, baud: u32) -> std::io::Result<SerialStream> {
    tokio_serial::new(path.to_string_lossy(), baud)
        .open_native_async()
        .map_err(|e| std::io::Error::other(format!("{}: {e}", path.display())))
}
