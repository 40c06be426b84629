//! A Modbus device for tests: a real tokio-modbus server with an
//! in-memory register map the test changes, makes raise exceptions, or
//! makes go silent.

use std::collections::HashMap;
use std::future::{Ready, ready};
use std::sync::{Arc, Mutex};

use tokio_modbus::prelude::{ExceptionCode, Request, Response, SlaveRequest};
use tokio_modbus::server::Service;

use super::free_port;

/// What the simulated device does with a request for its unit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Behaviour {
    /// Answer from the register map.
    Answer,
    /// Answer every request with this exception.
    Exception(ExceptionCode),
    /// Never answer (a device that hung or lost power behind a gateway).
    Silent,
}

/// The simulated device's state, shared between the server and the test.
pub struct State {
    pub holding: HashMap<u16, u16>,
    pub input: HashMap<u16, u16>,
    pub behaviour: Behaviour,
    /// Requests for our unit received so far.
    pub requests: u64,
    /// Exceptions sent so far.
    pub exceptions: u64,
}

/// A Modbus device (server side) with an in-memory register map. Only
/// registers that were set exist; reading any other one is answered with
/// "illegal data address", as a real device does.
#[derive(Clone)]
pub struct Device {
    pub unit: u8,
    state: Arc<Mutex<State>>,
}

impl Device {
    pub fn new(unit: u8) -> Device {
        Device {
            unit,
            state: Arc::new(Mutex::new(State {
                holding: HashMap::new(),
                input: HashMap::new(),
                behaviour: Behaviour::Answer,
                requests: 0,
                exceptions: 0,
            })),
        }
    }

    pub fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap()
    }

    pub fn set_holding(&self, address: u16, words: &[u16]) {
        let mut s = self.state();
        for (a, w) in (address..).zip(words) {
            s.holding.insert(a, *w);
        }
    }

    pub fn set_input(&self, address: u16, words: &[u16]) {
        let mut s = self.state();
        for (a, w) in (address..).zip(words) {
            s.input.insert(a, *w);
        }
    }

    pub fn behave(&self, b: Behaviour) {
        self.state().behaviour = b;
    }

    pub fn requests(&self) -> u64 {
        self.state().requests
    }

    pub fn exceptions(&self) -> u64 {
        self.state().exceptions
    }

    pub fn answer(&self, req: SlaveRequest<'static>) -> Result<Option<Response>, ExceptionCode> {
        if req.slave != self.unit {
            return Ok(None); // another device on the bus
        }
        let mut s = self.state();
        s.requests += 1;
        match s.behaviour {
            Behaviour::Answer => {}
            Behaviour::Silent => return Ok(None),
            Behaviour::Exception(code) => {
                s.exceptions += 1;
                return Err(code);
            }
        }
        let answer = match req.request {
            Request::ReadHoldingRegisters(start, n) => {
                read(&s.holding, start, n).map(Response::ReadHoldingRegisters)
            }
            Request::ReadInputRegisters(start, n) => {
                read(&s.input, start, n).map(Response::ReadInputRegisters)
            }
            _ => Err(ExceptionCode::IllegalFunction),
        };
        if answer.is_err() {
            s.exceptions += 1;
        }
        answer.map(Some)
    }
}

fn read(map: &HashMap<u16, u16>, start: u16, n: u16) -> Result<Vec<u16>, ExceptionCode> {
    (u32::from(start)..u32::from(start) + u32::from(n))
        .map(|a| {
            u16::try_from(a)
                .ok()
                .and_then(|a| map.get(&a).copied())
                .ok_or(ExceptionCode::IllegalDataAddress)
        })
        .collect()
}

impl Service for Device {
    type Request = SlaveRequest<'static>;
    type Response = Option<Response>;
    type Exception = ExceptionCode;
    type Future = Ready<Result<Option<Response>, ExceptionCode>>;

    fn call(&self, req: Self::Request) -> Self::Future {
        ready(self.answer(req))
    }
}

/// Serve `device` over Modbus TCP on a free local port; returns its
/// `host:port`. The server lives as long as the test's runtime.
pub async fn serve_tcp(device: &Device) -> String {
    let address = format!("127.0.0.1:{}", free_port());
    let listener = tokio::net::TcpListener::bind(&address).await.unwrap();
    let server = tokio_modbus::server::tcp::Server::new(listener);
    let device = device.clone();
    tokio::spawn(async move {
        let on_connected = move |stream, peer| {
            let device = device.clone();
            async move {
                tokio_modbus::server::tcp::accept_tcp_connection(stream, peer, move |_| {
                    Ok(Some(device.clone()))
                })
            }
        };
        let _ = server.serve(&on_connected, |_| {}).await;
    });
    address
}
