//! Simulated Modbus TCP devices: the load-cell smart shelf (profile
//! `loadcell-shelf-modbus`: 8 slots, grams as big-endian i32 in holding
//! registers 0..15) and the XY-MD02 temperature/humidity sensor (profile
//! `xy-md02`: input registers 1 and 2, x10, signed). Both are register maps
//! served by a tokio-modbus server; the demo's story (or the standalone
//! simulator) changes the values and the agent polls them.

use std::collections::BTreeMap;
use std::future::{Ready, ready};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::net::TcpListener;
use tokio_modbus::prelude::{ExceptionCode, Request, Response, SlaveRequest};
use tokio_modbus::server::Service;

use super::say::Say;

/// Slots of the load-cell shelf profile.
pub const SHELF_SLOTS: u16 = 8;

#[derive(Debug, Default)]
struct Maps {
    holding: BTreeMap<u16, u16>,
    input: BTreeMap<u16, u16>,
}

/// A device's registers. Only registers that were set exist; reading any
/// other is answered "illegal data address", as real devices do. Cheap to
/// clone; clones share the registers.
#[derive(Debug, Clone, Default)]
pub struct Registers(Arc<Mutex<Maps>>);

impl Registers {
    fn lock(&self) -> MutexGuard<'_, Maps> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn set_holding(&self, address: u16, words: &[u16]) {
        let mut m = self.lock();
        for (a, w) in (address..).zip(words) {
            m.holding.insert(a, *w);
        }
    }

    pub fn set_input(&self, address: u16, words: &[u16]) {
        let mut m = self.lock();
        for (a, w) in (address..).zip(words) {
            m.input.insert(a, *w);
        }
    }

    fn answer(&self, request: &Request<'_>) -> Result<Response, ExceptionCode> {
        let m = self.lock();
        match request {
            Request::ReadHoldingRegisters(start, n) => {
                read(&m.holding, *start, *n).map(Response::ReadHoldingRegisters)
            }
            Request::ReadInputRegisters(start, n) => {
                read(&m.input, *start, *n).map(Response::ReadInputRegisters)
            }
            _ => Err(ExceptionCode::IllegalFunction),
        }
    }
}

fn read(map: &BTreeMap<u16, u16>, start: u16, n: u16) -> Result<Vec<u16>, ExceptionCode> {
    (u32::from(start)..u32::from(start) + u32::from(n))
        .map(|a| {
            u16::try_from(a)
                .ok()
                .and_then(|a| map.get(&a).copied())
                .ok_or(ExceptionCode::IllegalDataAddress)
        })
        .collect()
}

/// One client connection's view of the registers. Modbus TCP devices
/// commonly ignore the unit id, and so does this one.
#[derive(Clone)]
struct Server {
    registers: Registers,
}

impl Service for Server {
    type Request = SlaveRequest<'static>;
    type Response = Option<Response>;
    type Exception = ExceptionCode;
    type Future = Ready<Result<Option<Response>, ExceptionCode>>;

    fn call(&self, req: Self::Request) -> Self::Future {
        ready(self.registers.answer(&req.request).map(Some))
    }
}

/// Serve `registers` over Modbus TCP on `listener` until the task is
/// dropped; reports each client that connects.
pub async fn serve(listener: TcpListener, registers: Registers, say: Say) -> std::io::Result<()> {
    let server = tokio_modbus::server::tcp::Server::new(listener);
    let on_connected = move |stream, peer: SocketAddr| {
        let service = Server {
            registers: registers.clone(),
        };
        say.line(format!("client {peer} connected"));
        async move {
            tokio_modbus::server::tcp::accept_tcp_connection(stream, peer, move |_| {
                Ok(Some(service.clone()))
            })
        }
    };
    server.serve(&on_connected, |_| {}).await
}

/// Grams of `units` items, with a few grams of load-cell noise (below
/// the profile's 5 g `min_change`, so noise alone journals nothing).
pub fn weight(unit_weight_g: i64, units: i64) -> i32 {
    let noise = if units > 0 {
        rand::random_range(-3..=3)
    } else {
        0
    };
    i32::try_from(unit_weight_g * units + noise).unwrap_or(i32::MAX)
}

/// The load-cell shelf: grams per slot.
#[derive(Debug, Clone)]
pub struct Shelf {
    pub registers: Registers,
    grams: Arc<Mutex<[i32; SHELF_SLOTS as usize]>>,
    say: Say,
}

impl Shelf {
    /// An empty shelf (every slot reads 0 g).
    pub fn new(say: Say) -> Shelf {
        let registers = Registers::default();
        registers.set_holding(0, &[0; 2 * SHELF_SLOTS as usize]);
        Shelf {
            registers,
            grams: Arc::default(),
            say,
        }
    }

    /// Put `grams` on `slot` (slots past the shelf's 8 are ignored).
    pub fn set_grams(&self, slot: u16, grams: i32) {
        let Some(g) = self
            .grams
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_mut(usize::from(slot))
            .map(|g| {
                *g = grams;
                *g
            })
        else {
            return;
        };
        let bits = g as u32;
        self.registers
            .set_holding(slot * 2, &[(bits >> 16) as u16, bits as u16]);
        self.say.line(format!("slot {slot}: {g} g"));
    }

    pub fn grams(&self, slot: u16) -> i32 {
        self.grams
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(usize::from(slot))
            .copied()
            .unwrap_or_default()
    }
}

/// The XY-MD02 sensor: temperature and humidity.
#[derive(Debug, Clone)]
pub struct Climate {
    pub registers: Registers,
    say: Say,
}

impl Climate {
    pub fn new(temperature_c: f64, humidity_pct: f64, say: Say) -> Climate {
        let registers = Registers::default();
        // Register 0 exists on the real device too (a reserved word), so a
        // read plan that starts at 0 works.
        registers.set_input(0, &[0]);
        let c = Climate { registers, say };
        c.set(temperature_c, humidity_pct);
        c
    }

    /// Set the values the sensor reports (x10, signed, as it stores them).
    pub fn set(&self, temperature_c: f64, humidity_pct: f64) {
        let word = |v: f64| (v * 10.0).round() as i16 as u16;
        self.registers
            .set_input(1, &[word(temperature_c), word(humidity_pct)]);
        self.say.line(format!(
            "temperature {temperature_c:.1} C, humidity {humidity_pct:.1} %"
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shelf_slots_are_big_endian_i32() {
        let shelf = Shelf::new(Say::quiet());
        shelf.set_grams(1, 4160);
        shelf.set_grams(2, -2);
        let r = shelf
            .registers
            .answer(&Request::ReadHoldingRegisters(0, 16))
            .unwrap();
        let Response::ReadHoldingRegisters(words) = r else {
            panic!("{r:?}")
        };
        assert_eq!(&words[2..6], &[0, 4160, 0xFFFF, 0xFFFE]);
        assert_eq!(shelf.grams(1), 4160);
        shelf.set_grams(9, 5); // no such slot: ignored
    }

    #[test]
    fn climate_values_are_signed_tenths() {
        let c = Climate::new(-3.5, 61.2, Say::quiet());
        let r = c
            .registers
            .answer(&Request::ReadInputRegisters(1, 2))
            .unwrap();
        assert_eq!(r, Response::ReadInputRegisters(vec![-35i16 as u16, 612]));
        assert!(
            c.registers
                .answer(&Request::ReadInputRegisters(2, 2))
                .is_err()
        );
    }
}
