//! The MQTT connection of a simulated device (Zebra reader, shelf-label
//! gateway): a plain rumqttc client that keeps reconnecting, re-subscribes
//! after each connection (the session is clean, as most devices use), and
//! hands incoming messages to the simulator.

use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, Publish, QoS};
use tokio::sync::{mpsc, watch};

/// Pause between connection attempts while the broker is away.
const RETRY: Duration = Duration::from_millis(200);

/// `mqtt://host:port` (port defaults to 1883) -> `(host, port)`.
pub fn parse_broker(url: &str) -> Result<(String, u16), String> {
    let Some(rest) = url.strip_prefix("mqtt://") else {
        return Err(format!(
            "{url:?}: the simulators speak plain MQTT; give mqtt://host:port"
        ));
    };
    let rest = rest.trim_end_matches('/');
    match rest.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() => port
            .parse()
            .map(|p| (host.trim_matches(['[', ']']).to_string(), p))
            .map_err(|_| format!("{url:?}: {port:?} is not a port number")),
        Some(_) => Err(format!("{url:?}: no host")),
        None if rest.is_empty() => Err(format!("{url:?}: no host")),
        None => Ok((rest.to_string(), 1883)),
    }
}

/// A simulator's broker connection.
pub struct Link {
    pub client: AsyncClient,
    /// Messages of the subscription, if one was asked for.
    pub incoming: mpsc::UnboundedReceiver<Publish>,
    connected: watch::Receiver<bool>,
}

impl Link {
    /// Connect to `url` as `client_id` in the background, subscribing to
    /// `subscribe` (QoS 1) after every connection. Returns at once; use
    /// [`Link::wait_connected`] to know when the broker took us (and our
    /// subscription). The
    /// connection ends when the `Link` is dropped.
    pub fn connect(url: &str, client_id: &str, subscribe: Option<String>) -> Result<Link, String> {
        let (host, port) = parse_broker(url)?;
        let mut options = MqttOptions::new(client_id, host, port);
        options.set_keep_alive(Duration::from_secs(30));
        let (client, mut eventloop) = AsyncClient::new(options, 1000);
        let (tx, incoming) = mpsc::unbounded_channel();
        let (up_tx, connected) = watch::channel(false);
        let subscriber = client.clone();
        tokio::spawn(async move {
            loop {
                let event = tokio::select! {
                    e = eventloop.poll() => e,
                    // The Link is gone: nobody reads or publishes any more.
                    _ = tx.closed() => break,
                };
                match event {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => match &subscribe {
                        Some(filter) => {
                            // try_: this task is the one that would drain a
                            // full request queue, so it must not wait on it.
                            let _ = subscriber.try_subscribe(filter.clone(), QoS::AtLeastOnce);
                        }
                        None => {
                            let _ = up_tx.send(true);
                        }
                    },
                    // Ready only once the broker confirmed the subscription:
                    // messages published before that would pass us by.
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        let _ = up_tx.send(true);
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        if tx.send(p).is_err() {
                            break;
                        }
                    }
                    Ok(_) => {}
                    Err(rumqttc::ConnectionError::RequestsDone) => break,
                    Err(_) => {
                        let _ = up_tx.send(false);
                        tokio::time::sleep(RETRY).await;
                    }
                }
            }
        });
        Ok(Link {
            client,
            incoming,
            connected,
        })
    }

    /// Wait until the broker accepted the connection and, if one was asked
    /// for, the subscription (`false` on timeout).
    pub async fn wait_connected(&self, timeout: Duration) -> bool {
        let mut connected = self.connected.clone();
        tokio::time::timeout(timeout, connected.wait_for(|up| *up))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    pub fn is_connected(&self) -> bool {
        *self.connected.borrow()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_urls() {
        assert_eq!(
            parse_broker("mqtt://127.0.0.1:1884"),
            Ok(("127.0.0.1".into(), 1884))
        );
        assert_eq!(
            parse_broker("mqtt://broker.local"),
            Ok(("broker.local".into(), 1883))
        );
        assert!(parse_broker("mqtts://x:8883").is_err());
        assert!(parse_broker("mqtt://x:port").is_err());
        assert!(parse_broker("mqtt://").is_err());
    }
}
