//! The store's domain: stock ledger, price book, labels, RFID, alerts.

pub mod money;
pub mod sgtin;
