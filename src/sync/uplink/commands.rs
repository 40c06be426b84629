//! Commands from central on `{p}/{s}/cmd` and `{p}/all/cmd`
//! (spec/fleet.md section 2): `{"cmd": "pull_prices" | "pull_stock" |
//! "pull_config" | "pull_orders" | "push_now"}`.

use std::collections::HashSet;
use std::sync::Arc;

use tokio::sync::Notify;

/// What a command asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    PullPrices,
    PullStock,
    /// Central-managed configuration (fleet.md 4): pull it now.
    PullConfig,
    /// Click-and-collect orders (sync-api.md 6): pull them now.
    PullOrders,
    PushNow,
}

/// A command's body, or what it names when it is none of the above.
pub fn parse(payload: &[u8]) -> Result<Command, String> {
    let doc: serde_json::Value = serde_json::from_slice(payload).map_err(|_| {
        format!(
            "not JSON: {}",
            String::from_utf8_lossy(&payload[..payload.len().min(64)])
        )
    })?;
    let name = doc
        .get("cmd")
        .and_then(|c| c.as_str())
        .ok_or_else(|| "no \"cmd\"".to_string())?;
    Ok(match name {
        "pull_prices" => Command::PullPrices,
        "pull_stock" => Command::PullStock,
        "pull_config" => Command::PullConfig,
        "pull_orders" => Command::PullOrders,
        "push_now" => Command::PushNow,
        other => return Err(other.chars().take(64).collect()),
    })
}

/// The pullers' wake-ups, given to `sync::pull::run_triggered`.
#[derive(Clone, Default)]
pub struct Triggers {
    pub prices: Arc<Notify>,
    pub stock: Arc<Notify>,
    /// Wakes the config puller (`sync::config_pull`).
    pub config: Arc<Notify>,
    /// Wakes the pickup orders puller.
    pub orders: Arc<Notify>,
    /// False when there is no central url to pull from.
    pub can_pull: bool,
}

/// Acts on commands; remembers which unknown ones were logged.
#[derive(Default)]
pub struct Dispatcher {
    pub triggers: Triggers,
    unknown: HashSet<String>,
}

impl Dispatcher {
    pub fn new(triggers: Triggers) -> Dispatcher {
        Dispatcher {
            triggers,
            unknown: HashSet::new(),
        }
    }

    /// Handle one message; returns true for `push_now` (the uplink's own).
    pub fn handle(&mut self, topic: &str, payload: &[u8]) -> bool {
        let command = match parse(payload) {
            Ok(c) => c,
            Err(what) => {
                // Logged once per distinct unknown command, then ignored.
                if self.unknown.len() < 64 && self.unknown.insert(what.clone()) {
                    tracing::warn!(topic, command = %what, "unknown command from central; ignoring it");
                }
                return false;
            }
        };
        tracing::info!(topic, ?command, "command from central");
        let pull = |n: &Notify, what: &str| {
            if self.triggers.can_pull {
                n.notify_one();
            } else {
                tracing::warn!(what, "cannot pull: no central.url configured");
            }
        };
        match command {
            Command::PullPrices => pull(&self.triggers.prices, "prices"),
            Command::PullStock => pull(&self.triggers.stock, "stock"),
            Command::PullConfig => pull(&self.triggers.config, "config"),
            Command::PullOrders => pull(&self.triggers.orders, "orders"),
            Command::PushNow => return true,
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_parse() {
        assert_eq!(parse(br#"{"cmd":"pull_prices"}"#), Ok(Command::PullPrices));
        assert_eq!(parse(br#"{"cmd":"push_now","x":1}"#), Ok(Command::PushNow));
        assert_eq!(parse(br#"{"cmd":"reboot"}"#), Err("reboot".into()));
        assert!(parse(b"garbage").is_err());
    }

    #[tokio::test]
    async fn pull_orders_wakes_the_orders_puller() {
        let triggers = Triggers {
            can_pull: true,
            ..Triggers::default()
        };
        let mut dispatcher = Dispatcher::new(triggers.clone());
        assert!(!dispatcher.handle("storegate/v1/s/cmd", br#"{"cmd":"pull_orders"}"#));
        let woken = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            triggers.orders.notified(),
        )
        .await;
        assert!(woken.is_ok(), "the orders puller was not woken");
    }
}
