//! The demo's click-and-collect beats: central takes a web order for
//! pickup, the store reserves it, staff pick it through the local API (a
//! wrong item is refused), and the customer collects it (a mistyped code
//! is refused, the right one hands it over and stock moves like a sale).

use std::time::{Duration, Instant};

use chrono::Utc;
use serde_json::{Value, json};

use super::Narrator;
use super::rig::{Rig, STORE};
use crate::event::format_ts;
use crate::sim::catalog;

/// The web order of the story.
pub(super) const ORDER_ID: &str = "WEB-1001";
/// What the customer ordered.
const LINES: [(&str, i64); 2] = [("SKU-1001", 2), ("SKU-1004", 1)];
/// The customer's code, from their order confirmation. The store keeps
/// only a keyed hash of it and never logs it; the narration never shows it.
const PICKUP_CODE: &str = "4711";
/// A code the customer mistypes.
const WRONG_CODE: &str = "4117";
/// An item that is not in the order: staff grab the rye bread.
const WRONG_SKU: &str = "SKU-1002";
/// Who picks and hands over.
const STAFF: &str = "anna";

impl Rig {
    /// Central takes the web order; the store pulls it on its orders
    /// cadence (`poll_orders_s`).
    pub(super) fn web_order(&self, say: &Narrator) {
        let now = Utc::now();
        let order = json!({
            "order_id": ORDER_ID,
            "pickup_code": PICKUP_CODE,
            "status": "open",
            "promised_at": format_ts(&(now + chrono::Duration::hours(1))),
            "expires_at": format_ts(&(now + chrono::Duration::days(2))),
            "lines": LINES.iter().map(|(sku, qty)| json!({"sku": sku, "qty": qty})).collect::<Vec<_>>(),
        });
        match self.central.add_order(STORE, order) {
            Ok(_) => say.line(format!(
                "central       web order {ORDER_ID} for pickup in the store: {}",
                describe(&LINES)
            )),
            Err(e) => say.line(format!("central       the web order was not taken: {e}")),
        }
    }

    /// Wait (bounded) until the store has reserved the order and say so.
    /// Returns whether it did.
    pub(super) async fn await_reserved(&self, say: &Narrator, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        loop {
            if let Ok((200, order)) = self.api_get(&format!("/v1/orders/{ORDER_ID}")).await {
                if order.get("state").and_then(Value::as_str) == Some("open") {
                    let held = self.availability(LINES[0].0).await;
                    say.line(format!(
                        "store         {ORDER_ID} pulled and reserved: {} held back from sale{held}",
                        describe(&LINES)
                    ));
                    return true;
                }
            }
            if Instant::now() > deadline {
                say.line(format!(
                    "store         {ORDER_ID} not reserved within {} s (see the agent log); no pickup today",
                    within.as_secs()
                ));
                return false;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// `" (SKU-1001 on hand 64, reserved 2, available 62)"`, or nothing
    /// when the API does not say.
    async fn availability(&self, sku: &str) -> String {
        let Ok((200, v)) = self.api_get(&format!("/v1/skus/{sku}")).await else {
            return String::new();
        };
        let n = |k: &str| v.get(k).and_then(Value::as_i64);
        match (n("on_hand"), n("reserved"), n("available")) {
            (Some(on_hand), Some(reserved), Some(available)) => {
                format!(" ({sku} on hand {on_hand}, reserved {reserved}, available {available})")
            }
            _ => String::new(),
        }
    }

    /// Staff pick the order with the handheld's scanner (a wrong item
    /// first), then the customer collects it (a mistyped code first).
    /// Each refusal is narrated with the API's own message; anything
    /// unexpected ends the beat, narrated, and the story carries on.
    pub(super) async fn pick_and_hand_over(&self, say: &Narrator) {
        if let Err(e) = self.pick(say).await {
            say.line(format!(
                "staff         {ORDER_ID}: {e}; the pick stops here"
            ));
            return;
        }
        if let Err(e) = self.hand_over(say).await {
            say.line(format!(
                "customer      {ORDER_ID}: {e}; the handover stops here"
            ));
        }
    }

    async fn pick(&self, say: &Narrator) -> Result<(), String> {
        let scan = format!("/v1/orders/{ORDER_ID}/scan");
        // The wrong item: refused, nothing counted.
        let wrong = catalog::item(WRONG_SKU).ok_or("the wrong item is not in the catalog")?;
        match self.api_post(&scan, json!({"code": wrong.gtin})).await? {
            (409, answer) => say.line(format!(
                "staff         scans {WRONG_SKU} into {ORDER_ID}: refused (HTTP 409 {})",
                refusal(&answer)
            )),
            (status, answer) => say.line(format!(
                "staff         scans {WRONG_SKU} into {ORDER_ID}: unexpectedly HTTP {status}: {}",
                refusal(&answer)
            )),
        }
        // The right items, one scan per unit.
        let mut scans = 0;
        for (sku, qty) in LINES {
            let item = catalog::item(sku).ok_or("an ordered item is not in the catalog")?;
            for _ in 0..qty {
                match self.api_post(&scan, json!({"code": item.gtin})).await? {
                    (200, _) => scans += 1,
                    (status, answer) => {
                        return Err(format!(
                            "scanning {sku} was refused (HTTP {status} {})",
                            refusal(&answer)
                        ));
                    }
                }
            }
        }
        let path = format!("/v1/orders/{ORDER_ID}/picked");
        match self.api_post(&path, json!({"by": STAFF})).await? {
            (200, answer) => {
                let short = answer.get("short").and_then(Value::as_i64).unwrap_or(0);
                say.line(format!(
                    "staff         {STAFF} scans {scans} right items and finishes the pick (short {short}): {ORDER_ID} waits for the customer"
                ));
            }
            (status, answer) => {
                return Err(format!(
                    "finishing the pick was refused (HTTP {status} {})",
                    refusal(&answer)
                ));
            }
        }
        // The picked items leave the shelf for the pickup counter.
        for (sku, qty) in LINES {
            self.take_from_shelf(sku, qty);
        }
        Ok(())
    }

    async fn hand_over(&self, say: &Narrator) -> Result<(), String> {
        let path = format!("/v1/orders/{ORDER_ID}/handover");
        match self
            .api_post(&path, json!({"pickup_code": WRONG_CODE, "by": STAFF}))
            .await?
        {
            (422, answer) => say.line(format!(
                "customer      comes for {ORDER_ID} and mistypes the code: refused (HTTP 422 {})",
                refusal(&answer)
            )),
            (status, answer) => say.line(format!(
                "customer      a mistyped code for {ORDER_ID}: unexpectedly HTTP {status}: {}",
                refusal(&answer)
            )),
        }
        match self
            .api_post(&path, json!({"pickup_code": PICKUP_CODE, "by": STAFF}))
            .await?
        {
            (200, _) => {
                say.line(format!(
                    "customer      shows the code from the confirmation: {ORDER_ID} handed over, {} leave the stock like a sale",
                    describe(&LINES)
                ));
                Ok(())
            }
            (status, answer) => Err(format!(
                "the right code was refused (HTTP {status} {})",
                refusal(&answer)
            )),
        }
    }
}

/// `"2 x SKU-1001, 1 x SKU-1004"`.
fn describe(lines: &[(&str, i64)]) -> String {
    lines
        .iter()
        .map(|(sku, qty)| format!("{qty} x {sku}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// An API refusal as `code: message`, else the answer in one short line.
pub(super) fn refusal(answer: &Value) -> String {
    let error = answer.get("error");
    let text = |k: &str| error.and_then(|e| e.get(k)).and_then(Value::as_str);
    match (text("code"), text("message")) {
        (Some(code), Some(message)) => format!("{code}: {message}"),
        _ => answer.to_string().chars().take(160).collect(),
    }
}
