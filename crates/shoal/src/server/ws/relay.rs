//! Offers and answers for a WebSocket peer held by another node of the cluster, through
//! the same Redis: every node subscribes to its own channel (`shoal:ws:<node>`, the node
//! half of its endpoints) and publishes to the holder's. Pub/sub stores nothing: a message
//! for a node that is gone is lost, as its offer would have expired unanswered. The queue
//! to the publisher is bounded; past it, and while Redis is away, messages are dropped and
//! counted, never waited for (docs/design.md, "WebSocket").

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use protocol::ws::Bytes20;
use protocol::{InfoHash, PeerId};
use tokio::sync::mpsc;

use super::hub::{Frame, Hub, Offerer};
use crate::cluster::Bus;
use crate::tracker::Tracker;

/// Messages waiting for the publisher.
const QUEUE: usize = 16_384;

pub fn channel(node: u32) -> String {
    format!("shoal:ws:{node:08x}")
}

/// What travels between nodes.
#[derive(Debug, PartialEq, Eq)]
pub enum Message {
    /// An offer for connection `to` of the receiving node, from `from`.
    Offer {
        to: u32,
        info_hash: InfoHash,
        offer_id: Bytes20,
        from: Offerer,
        frame: Frame,
    },
    /// An answer for connection `to`, which made the offer.
    Answer { to: u32, frame: Frame },
}

impl Message {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(128);
        match self {
            Message::Offer {
                to,
                info_hash,
                offer_id,
                from,
                frame,
            } => {
                out.push(1);
                out.extend_from_slice(&to.to_be_bytes());
                out.extend_from_slice(&info_hash.0);
                out.extend_from_slice(&offer_id.0);
                out.extend_from_slice(&from.node.to_be_bytes());
                out.extend_from_slice(&from.conn.to_be_bytes());
                out.extend_from_slice(&from.peer.0);
                out.extend_from_slice(frame.as_bytes());
            }
            Message::Answer { to, frame } => {
                out.push(2);
                out.extend_from_slice(&to.to_be_bytes());
                out.extend_from_slice(frame.as_bytes());
            }
        }
        out
    }

    pub fn decode(b: &[u8]) -> Option<Message> {
        let (&kind, rest) = b.split_first()?;
        let u32_at = |b: &[u8], at: usize| -> Option<u32> {
            Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
        };
        let id_at =
            |b: &[u8], at: usize| -> Option<[u8; 20]> { b.get(at..at + 20)?.try_into().ok() };
        let text = |b: &[u8]| String::from_utf8(b.to_vec()).ok();
        match kind {
            1 => Some(Message::Offer {
                to: u32_at(rest, 0)?,
                info_hash: InfoHash(id_at(rest, 4)?),
                offer_id: Bytes20(id_at(rest, 24)?),
                from: Offerer {
                    node: u32_at(rest, 44)?,
                    conn: u32_at(rest, 48)?,
                    peer: PeerId(id_at(rest, 52)?),
                },
                frame: text(rest.get(72..)?)?,
            }),
            2 => Some(Message::Answer {
                to: u32_at(rest, 0)?,
                frame: text(rest.get(4..)?)?,
            }),
            _ => None,
        }
    }
}

/// The sending side, handed to every connection.
#[derive(Clone)]
pub struct Relay {
    tx: mpsc::Sender<(u32, Vec<u8>)>,
}

impl Relay {
    /// Queues `m` for `node`; false if the queue is full (Redis slow or away).
    pub fn send(&self, node: u32, m: &Message) -> bool {
        self.tx.try_send((node, m.encode())).is_ok()
    }
}

/// Starts this node's subscriber and publisher; they run until aborted.
pub fn start(
    bus: Bus,
    hub: Arc<Hub>,
    tracker: Arc<Tracker>,
    tasks: &mut tokio::task::JoinSet<()>,
) -> Relay {
    let (tx, rx) = mpsc::channel(QUEUE);
    tasks.spawn(publish(bus.clone(), rx, tracker.clone()));
    tasks.spawn(subscribe(bus, hub, tracker));
    Relay { tx }
}

async fn publish(bus: Bus, mut rx: mpsc::Receiver<(u32, Vec<u8>)>, tracker: Arc<Tracker>) {
    let mut conn = None;
    while let Some((node, payload)) = rx.recv().await {
        if conn.is_none() {
            conn = crate::cluster::connect(&bus).await.ok();
        }
        let Some(c) = conn.as_mut() else {
            tracker.ws_counters().relay_dropped();
            continue;
        };
        let sent: redis::RedisResult<i64> = redis::cmd("PUBLISH")
            .arg(channel(node))
            .arg(payload)
            .query_async(c)
            .await;
        if sent.is_err() {
            tracker.ws_counters().relay_dropped();
            conn = None;
        }
    }
}

async fn subscribe(bus: Bus, hub: Arc<Hub>, tracker: Arc<Tracker>) {
    let me = channel(hub.node());
    loop {
        let pubsub = bus.pubsub().await;
        match pubsub {
            Ok(mut p) => match p.subscribe(&me).await {
                Ok(()) => {
                    let mut messages = p.on_message();
                    while let Some(m) = messages.next().await {
                        match Message::decode(m.get_payload_bytes()) {
                            Some(m) => deliver(&hub, &tracker, m),
                            None => tracing::debug!("a ws relay message that does not decode"),
                        }
                    }
                }
                Err(e) => tracing::debug!("ws relay: cannot subscribe: {e}"),
            },
            Err(e) => tracing::debug!("ws relay: cannot reach the bus: {e}"),
        }
        // The bus's own tasks log its state; retry quietly.
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

fn deliver(hub: &Hub, tracker: &Tracker, m: Message) {
    let counters = tracker.ws_counters();
    let delivered = match m {
        Message::Offer {
            to,
            info_hash,
            offer_id,
            from,
            frame,
        } => hub.offer(to, (info_hash, offer_id), from, frame).is_ok(),
        Message::Answer { to, frame } => hub.send(to, frame).is_ok(),
    };
    if !delivered {
        counters.relay_dropped();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_survive_encoding_and_garbage_is_none() {
        let offer = Message::Offer {
            to: 7,
            info_hash: InfoHash([1; 20]),
            offer_id: Bytes20([2; 20]),
            from: Offerer {
                node: 0xdead_beef,
                conn: 3,
                peer: PeerId([4; 20]),
            },
            frame: "{\"offer\":\"é\"}".into(),
        };
        let answer = Message::Answer {
            to: 9,
            frame: "{}".into(),
        };
        for m in [offer, answer] {
            assert_eq!(Message::decode(&m.encode()), Some(m));
        }
        for bad in [
            &[][..],
            &[1, 0, 0],
            &[3, 0, 0, 0, 0],
            &[2, 0, 0, 0, 1, 0xff],
        ] {
            assert_eq!(Message::decode(bad), None, "{bad:?}");
        }
    }
}
