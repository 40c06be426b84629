//! One connection to one broker: subscribe to the ack and command topics
//! at every CONNACK, publish the heartbeat retained, keep up to
//! `inflight_batches` batches out, act on central's acks, resend on
//! timeout, and say goodbye (retained offline status) at shutdown.

use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, ConnectionError, Event, EventLoop, MqttOptions, Packet, QoS};
use serde_json::Value;

use super::batch::{self, Next};
use super::commands::Dispatcher;
use super::window::{AckEffect, Window};
use super::{Topics, Uplink};
use crate::shutdown::Shutdown;
use crate::sync::push::{Link, record_skip};
use crate::sync::state;

/// Requests queued for the client: a full window, the heartbeat, acks.
const REQUESTS: usize = 64;
/// How long an event too big for any payload waits before another try.
const OVERSIZE_RETRY: Duration = Duration::from_secs(60);
/// How long the goodbye may take at shutdown.
const GOODBYE: Duration = Duration::from_secs(2);

/// How a connection ended.
pub(super) enum Ended {
    Shutdown,
    /// Lost (or never made); `connected`: a CONNACK was received;
    /// `refused`: the broker refused the CONNECT.
    Lost {
        connected: bool,
        refused: bool,
    },
}

/// What lives across connections.
pub(super) struct Ctx {
    pub(super) uplink: Uplink,
    pub(super) topics: Topics,
    window: Window,
    commands: Dispatcher,
    push_now: bool,
    oversize: Option<(i64, Instant)>,
    status_dirty: bool,
}

impl Ctx {
    pub(super) fn new(uplink: Uplink, topics: Topics, acked: i64) -> Ctx {
        let window = Window::new(acked, uplink.config.inflight_batches);
        let commands = Dispatcher::new(uplink.triggers.clone());
        Ctx {
            uplink,
            topics,
            window,
            commands,
            push_now: false,
            oversize: None,
            status_dirty: true,
        }
    }

    /// The connection is gone.
    pub(super) fn lost(&mut self) {
        self.uplink.link.send_replace(Link::Offline);
        self.uplink.stats.update(|s| {
            s.connected = false;
            s.broker = None;
        });
        self.status_dirty = true;
        self.write_status_file();
    }

    fn sync_stats(&mut self) {
        let unacked = self.window.unacked();
        self.uplink.stats.update(|s| s.unacked_batches = unacked);
        self.status_dirty = true;
    }

    pub(super) fn write_status_file(&mut self) {
        if !self.status_dirty {
            return;
        }
        self.status_dirty = false;
        let path = super::status_file(&self.uplink.db_path);
        let tmp = path.with_extension("tmp");
        let json = serde_json::to_vec_pretty(&self.uplink.stats.snapshot()).unwrap_or_default();
        if let Err(e) = std::fs::write(&tmp, json).and_then(|()| std::fs::rename(&tmp, &path)) {
            tracing::debug!(error = %e, file = %path.display(), "cannot write the uplink status file");
        }
    }
}

pub(super) async fn run(
    ctx: &mut Ctx,
    options: MqttOptions,
    broker: &str,
    shutdown: &mut Shutdown,
) -> Ended {
    let (client, mut eventloop) = AsyncClient::new(options, REQUESTS);
    let mut connected = false;
    let mut head = ctx.uplink.writer.head();
    let mut heartbeat = ctx.uplink.heartbeat.clone();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        if connected {
            fill(ctx, &client).await;
        }
        tokio::select! {
            event = eventloop.poll() => match event {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    connected = true;
                    on_connect(ctx, &client, broker);
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    on_message(ctx, &p.topic, &p.payload).await;
                }
                Ok(_) => {}
                Err(e) => {
                    let refused = refused_by_broker(&e);
                    if refused {
                        tracing::error!(broker, error = %e, "central's broker refused the connection; check central.username, central.password_file and the client certificate");
                    } else if connected {
                        tracing::warn!(broker, error = %e, "lost the connection to central's broker; trying the next");
                    } else {
                        tracing::warn!(broker, error = %e, "cannot reach central's broker; trying the next");
                    }
                    return Ended::Lost { connected, refused };
                }
            },
            _ = head.changed() => {}
            _ = tick.tick() => {
                if connected && ctx.window.timed_out(Instant::now(), Duration::from_secs(ctx.uplink.config.ack_timeout_s)) {
                    tracing::warn!(
                        from = ctx.window.acked() + 1,
                        ack_timeout_s = ctx.uplink.config.ack_timeout_s,
                        "no ack from central in time; sending again from its last ack"
                    );
                    rewind(ctx);
                }
                ctx.write_status_file();
            }
            changed = heartbeat.changed() => {
                if changed.is_ok() && connected {
                    publish_heartbeat(ctx, &client);
                }
            }
            _ = shutdown.wait() => {
                if connected {
                    goodbye(ctx, &client, &mut eventloop).await;
                }
                return Ended::Shutdown;
            }
        }
        if std::mem::take(&mut ctx.push_now) {
            tracing::info!(
                from = ctx.window.acked() + 1,
                "push_now: sending from central's last ack"
            );
            rewind(ctx);
        }
    }
}

/// The broker said no: a CONNACK refusal, or a TLS alert from it (a
/// client certificate it does not trust: with TLS 1.3 the alert comes
/// after the handshake, as an error on the first read). Either needs a
/// human, so it is logged as an error and retried slowly.
fn refused_by_broker(e: &ConnectionError) -> bool {
    matches!(e, ConnectionError::ConnectionRefused(_))
        || e.to_string().contains("received fatal alert")
}

fn rewind(ctx: &mut Ctx) {
    ctx.window.rewind();
    ctx.uplink.stats.update(|s| s.resends += 1);
    ctx.sync_stats();
}

fn on_connect(ctx: &mut Ctx, client: &AsyncClient, broker: &str) {
    tracing::info!(broker, "connected to central's broker");
    for topic in [&ctx.topics.ack, &ctx.topics.cmd, &ctx.topics.all_cmd] {
        if let Err(e) = client.try_subscribe(topic.as_str(), QoS::AtLeastOnce) {
            tracing::warn!(topic, error = %e, "cannot subscribe");
        }
    }
    publish_heartbeat(ctx, client);
    // Whatever was out may be lost with the old connection.
    ctx.window.rewind();
    ctx.uplink.link.send_replace(Link::Online);
    let broker = broker.to_string();
    ctx.uplink.stats.update(|s| {
        s.connected = true;
        s.broker = Some(broker);
        s.connections += 1;
    });
    ctx.sync_stats();
}

fn publish_heartbeat(ctx: &Ctx, client: &AsyncClient) {
    let Some(body) = ctx.uplink.heartbeat.borrow().clone() else {
        return;
    };
    let mut payload = body.to_string();
    let limit = ctx.uplink.config.max_payload_bytes;
    if payload.len() > limit {
        // A long list of down devices: the counts stay, the ids go (a
        // packet over the client's limit would cost the connection).
        let mut short = (*body).clone();
        short["devices"]["down_ids"] = serde_json::json!([]);
        short["truncated"] = serde_json::json!(true);
        payload = short.to_string();
        if payload.len() > limit {
            tracing::warn!(
                bytes = payload.len(),
                limit,
                "the heartbeat does not fit max_payload_bytes; not sent"
            );
            return;
        }
    }
    if let Err(e) = client.try_publish(&ctx.topics.status, QoS::AtLeastOnce, true, payload) {
        tracing::debug!(error = %e, "cannot queue the heartbeat");
    }
}

async fn on_message(ctx: &mut Ctx, topic: &str, payload: &[u8]) {
    if topic == ctx.topics.ack {
        let n = serde_json::from_slice::<Value>(payload)
            .ok()
            .and_then(|v| v.get("acked_through")?.as_i64());
        let Some(n) = n else {
            tracing::warn!(topic, body = %String::from_utf8_lossy(&payload[..payload.len().min(200)]), "an ack without acked_through; ignoring it");
            return;
        };
        match ctx.window.on_ack(n) {
            AckEffect::Advanced(a) => record_ack(ctx, a).await,
            AckEffect::AdvancedAndResend(a) => {
                tracing::info!(
                    acked_through = a,
                    "central took part of a batch; sending the rest again"
                );
                ctx.uplink.stats.update(|s| s.resends += 1);
                record_ack(ctx, a).await;
            }
            AckEffect::Resend => {
                tracing::info!(
                    acked_through = n,
                    "central lacks what follows its ack; sending again from there"
                );
                ctx.uplink.stats.update(|s| s.resends += 1);
            }
            AckEffect::Ignored => {}
        }
        ctx.sync_stats();
    } else if (topic == ctx.topics.cmd || topic == ctx.topics.all_cmd)
        && ctx.commands.handle(topic, payload)
    {
        ctx.push_now = true;
    }
}

/// Central acknowledged through `acked`: record it as the HTTP pusher does
/// (retention trims by it).
async fn record_ack(ctx: &mut Ctx, acked: i64) {
    let at = crate::event::format_ts(&chrono::Utc::now());
    ctx.uplink.stats.update(|s| {
        s.last_ack = Some(acked);
        s.last_ack_at = Some(at);
    });
    let result = ctx
        .uplink
        .writer
        .transact(move |w| state::record_success(w.conn(), Some(acked)))
        .await;
    if let Err(e) = result {
        tracing::error!(error = %e, "cannot record central's ack");
    }
    ctx.uplink.link.send_replace(Link::Online);
}

/// Publish batches while the window has room and the journal has events.
async fn fill(ctx: &mut Ctx, client: &AsyncClient) {
    if ctx
        .oversize
        .is_some_and(|(_, at)| at.elapsed() < OVERSIZE_RETRY)
    {
        return;
    }
    while ctx.window.can_send() && ctx.window.next() <= *ctx.uplink.writer.head().borrow() {
        let after = ctx.window.next() - 1;
        let reader = ctx.uplink.reader.clone();
        let store_id = ctx.uplink.store_id.clone();
        let (max_events, max_bytes) = (ctx.uplink.batch_max, ctx.uplink.config.max_payload_bytes);
        let built = tokio::task::spawn_blocking(move || {
            let conn = reader.lock().unwrap_or_else(|p| p.into_inner());
            batch::next(&conn, &store_id, after, max_events, max_bytes)
        })
        .await;
        let next = match built {
            Ok(Ok(n)) => n,
            Ok(Err(e)) => {
                tracing::error!(error = %e, "cannot read the outbox");
                return;
            }
            Err(e) => {
                tracing::error!(error = %e, "outbox reader task failed");
                return;
            }
        };
        match next {
            Next::Payload(p) => {
                if ctx.oversize.take().is_some() {
                    ctx.uplink.health.set_problem("uplink", None);
                    ctx.uplink.stats.update(|s| s.oversize_seq = None);
                }
                if let Err(e) =
                    client.try_publish(&ctx.topics.events, QoS::AtLeastOnce, false, p.bytes)
                {
                    // The request queue is full: the next round tries again.
                    tracing::debug!(error = %e, "cannot queue a batch yet");
                    return;
                }
                tracing::debug!(
                    first = p.first,
                    last = p.last,
                    count = p.count,
                    gzip = p.gzip,
                    "batch published"
                );
                ctx.window.sent(p.first, p.last, Instant::now());
                ctx.uplink.stats.update(|s| s.batches_sent += 1);
                ctx.sync_stats();
            }
            Next::Empty => return,
            Next::Missing { from, to } => {
                tracing::error!(
                    from,
                    to,
                    "events to send are no longer in the journal; skipping them"
                );
                record_skip(&ctx.uplink.writer, from, to).await;
                // The next round (at the latest the next tick) goes on
                // after the recorded range.
                return;
            }
            Next::Oversize { seq, bytes } => {
                oversize(ctx, seq, bytes).await;
                return;
            }
        }
    }
}

/// An event bigger than any payload: never dropped, never skipped; the
/// push waits on it, loudly, and tries again later.
async fn oversize(ctx: &mut Ctx, seq: i64, bytes: usize) {
    let limit = ctx.uplink.config.max_payload_bytes;
    let message = format!(
        "event {seq} is {bytes} bytes as a batch, over central.max_payload_bytes ({limit}); the push to central waits on it (raise the limit if the broker allows)"
    );
    let first = ctx.oversize.is_none_or(|(s, _)| s != seq);
    ctx.oversize = Some((seq, Instant::now()));
    ctx.uplink.stats.update(|s| s.oversize_seq = Some(seq));
    ctx.uplink
        .health
        .set_problem("uplink", Some(message.clone()));
    tracing::error!(seq, bytes, limit, "{message}");
    if !first {
        return;
    }
    let result = ctx
        .uplink
        .writer
        .transact(move |w| {
            let mut context = serde_json::Map::new();
            context.insert("seq".into(), seq.into());
            context.insert("bytes".into(), bytes.into());
            context.insert("max_payload_bytes".into(), limit.into());
            crate::domain::alerts::raise(
                w,
                "agent",
                "uplink_oversize",
                &seq.to_string(),
                crate::event::Severity::Critical,
                message,
                context,
            )
            .map(|_| ())
        })
        .await;
    if let Err(e) = result {
        tracing::error!(error = %e, "cannot raise the oversize alert");
    }
}

/// Shutdown: the retained status says offline (the will is only for a
/// lost connection), then DISCONNECT.
async fn goodbye(ctx: &Ctx, client: &AsyncClient, eventloop: &mut EventLoop) {
    let body = super::super::heartbeat::offline(&ctx.uplink.store_id).to_string();
    let _ = client.try_publish(&ctx.topics.status, QoS::AtLeastOnce, true, body);
    let _ = client.try_disconnect();
    let _ = tokio::time::timeout(GOODBYE, async { while eventloop.poll().await.is_ok() {} }).await;
}
