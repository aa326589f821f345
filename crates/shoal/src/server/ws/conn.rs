//! One WebSocket connection: frames in, answers and relayed offers out, until the client
//! leaves, idles past `ws.idle_timeout_ms`, stops reading, or the tracker stops. Its peers
//! leave their swarms when it closes.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use protocol::ws::{self, Action, Endpoint, ParseErrorKind, Request};
use protocol::{AnnounceEvent, InfoHash, PeerId};
use tokio::sync::watch;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use super::Setup;
use super::hub::{Frame, Offerer, Queue};
use super::relay::Message as Relayed;
use crate::server::stopped;
use crate::tracker::{ErrorKind, PeerAnnounce, Protocol::Ws, Refused};

/// A frame refused: counted as `kind`, answered with an error frame naming its action and
/// torrent (or, for an answer nobody waits for, not answered: the reference tracker only
/// logs those).
struct Failure {
    action: Action,
    info_hash: Option<InfoHash>,
    kind: ErrorKind,
    reason: String,
    reply: bool,
    /// Already counted where it was decided (`Tracker`'s refusals).
    counted: bool,
}

impl Failure {
    fn new(action: Action, h: InfoHash, kind: ErrorKind, reason: impl Into<String>) -> Self {
        Failure {
            action,
            info_hash: Some(h),
            kind,
            reason: reason.into(),
            reply: true,
            counted: false,
        }
    }

    fn refused(action: Action, h: Option<InfoHash>, r: Refused) -> Self {
        Failure {
            action,
            info_hash: h,
            kind: r.kind(),
            reason: r.to_string(),
            reply: true,
            counted: true,
        }
    }
}

struct Conn<'a> {
    setup: &'a Setup,
    /// This connection's number on this node.
    me: u32,
    key: Option<Vec<u8>>,
    /// The peers this connection announced, by torrent and peer id (a pooled socket may
    /// carry several peers, even of one torrent).
    peers: HashSet<(InfoHash, PeerId)>,
    /// Each peer id's place on the connection: the port of its endpoint.
    slots: HashMap<PeerId, u16>,
}

pub async fn run<IO>(
    ws: WebSocketStream<IO>,
    setup: &Setup,
    key: Option<Vec<u8>>,
    mut stop: watch::Receiver<bool>,
) where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let c = &setup.config;
    let (me, mut queue) = setup
        .hub
        .open(c.max_queued_frames.get(), c.max_queued_bytes.get());
    let counters = setup.tracker.ws_counters();
    counters.opened();
    let mut conn = Conn {
        setup,
        me,
        key,
        peers: HashSet::new(),
        slots: HashMap::new(),
    };
    let (mut sink, mut frames) = ws.split();
    let idle = Duration::from_millis(c.idle_timeout_ms.get());
    let write_timeout = Duration::from_millis(c.write_timeout_ms.get());
    let mut until = tokio::time::Instant::now() + idle;
    let why = loop {
        let out: Vec<Frame> = tokio::select! {
            m = frames.next() => match m {
                Some(Ok(Message::Text(t))) => {
                    until = tokio::time::Instant::now() + idle;
                    conn.frame(t.as_str())
                }
                Some(Ok(Message::Binary(_))) => {
                    until = tokio::time::Instant::now() + idle;
                    conn.fail(not_json())
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {
                    until = tokio::time::Instant::now() + idle;
                    Vec::new()
                }
                Some(Ok(Message::Close(_))) | None => break None,
                Some(Err(WsError::Capacity(_))) => break Some(ErrorKind::FrameTooLarge),
                Some(Err(_)) => break None,
            },
            Some(f) = queue.recv() => queue.drain_into(vec![f], BATCH),
            _ = tokio::time::sleep_until(until) => break Some(ErrorKind::IdleTimeout),
            () = stopped(&mut stop) => {
                let _ = tokio::time::timeout(write_timeout, sink.send(Message::Close(None))).await;
                break None;
            }
        };
        if let Err(kind) = write(&mut sink, out, write_timeout).await {
            break kind;
        }
    };
    if let Some(kind) = why {
        setup.tracker.count_error(Ws, None, kind);
    }
    conn.close(&mut queue);
    counters.closed();
}

/// Writes `frames`; a reader that takes none within `limit` is cut.
async fn write<S>(
    sink: &mut S,
    frames: Vec<Frame>,
    limit: Duration,
) -> Result<(), Option<ErrorKind>>
where
    S: futures_util::Sink<Message, Error = WsError> + Unpin,
{
    if frames.is_empty() {
        return Ok(());
    }
    // One flush for the lot: fewer TLS records and system calls when frames queue up.
    let all = async {
        for f in frames {
            sink.feed(Message::text(f)).await?;
        }
        sink.flush().await
    };
    match tokio::time::timeout(limit, all).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(None),
        Err(_) => Err(Some(ErrorKind::SlowReader)),
    }
}

/// Frames written with one flush at most, when that many wait.
const BATCH: usize = 64;

fn not_json() -> Failure {
    Failure {
        action: Action::Announce,
        info_hash: None,
        kind: ErrorKind::NotJson,
        reason: ParseErrorKind::NotJson.message().into(),
        reply: true,
        counted: false,
    }
}

impl Conn<'_> {
    /// One text frame: the frames to send back on this connection.
    fn frame(&mut self, text: &str) -> Vec<Frame> {
        let r = match ws::parse(text) {
            Ok(Request::Announce(a)) => self.announce(a),
            Ok(Request::Answer(a)) => self.answer(a).map(|()| Vec::new()),
            Ok(Request::Scrape(hashes)) => self.scrape(&hashes).map(|f| vec![f]),
            Err(e) => Err(Failure {
                action: e.action,
                info_hash: e.info_hash,
                kind: e.kind.into(),
                reason: e.kind.message().into(),
                reply: true,
                counted: false,
            }),
        };
        r.unwrap_or_else(|f| self.fail(f))
    }

    fn fail(&self, f: Failure) -> Vec<Frame> {
        let action = match f.action {
            Action::Announce => crate::tracker::Action::Announce,
            Action::Scrape => crate::tracker::Action::Scrape,
        };
        if !f.counted {
            self.setup.tracker.count_error(Ws, Some(action), f.kind);
        }
        match f.reply {
            true => vec![ws::failure(f.action, f.info_hash, &f.reason)],
            false => Vec::new(),
        }
    }

    fn announce(&mut self, mut a: ws::Announce) -> Result<Vec<Frame>, Failure> {
        let (h, me) = (a.info_hash, self.me);
        let limits = &self.setup.config;
        let known = self.peers.contains(&(h, a.peer_id));
        let max = limits.max_torrents_per_connection.get();
        let new_id = !self.slots.contains_key(&a.peer_id);
        if !known && (self.peers.len() >= max || (new_id && self.slots.len() >= max)) {
            let why = "too many torrents on one connection";
            return Err(Failure::new(
                Action::Announce,
                h,
                ErrorKind::ConnectionTorrents,
                why,
            ));
        }
        let hub = &self.setup.hub;
        if !hub.hold(h, a.peer_id, me) {
            let why = "that peer id is in use by another connection";
            return Err(Failure::new(
                Action::Announce,
                h,
                ErrorKind::PeerIdInUse,
                why,
            ));
        }
        a.offers.truncate(limits.max_offers.get());
        let addr = self.endpoint(a.peer_id).addr();
        let announce = PeerAnnounce {
            info_hash: h,
            peer_id: a.peer_id,
            ip: addr.ip(),
            port: addr.port(),
            // Without `left` (a magnet leecher sends null): a leecher, unless it says it
            // completed, as the reference tracker reads it.
            left: match (a.left, a.event) {
                (Some(left), _) => left,
                (None, AnnounceEvent::Completed) => 0,
                (None, _) => u64::MAX,
            },
            event: a.event,
            numwant: Some(a.offers.len() as u32),
            key: self.key.as_deref(),
        };
        let tracker = &self.setup.tracker;
        let mut peers = Vec::new();
        let answer = match tracker.announce(Ws, &announce, tracker.now(), &mut peers) {
            Ok(answer) => answer,
            Err(r) => {
                if !known {
                    hub.release(h, a.peer_id, me);
                }
                return Err(Failure::refused(Action::Announce, Some(h), r));
            }
        };
        if a.event == AnnounceEvent::Stopped {
            self.peers.remove(&(h, a.peer_id));
            hub.release(h, a.peer_id, me);
        } else {
            self.peers.insert((h, a.peer_id));
        }
        tracing::debug!(conn = me, event = ?a.event, offers = a.offers.len(), peers = peers.len(), "ws announce");
        let reply = ws::announce_reply(h, answer.interval, answer.seeders, answer.leechers);
        self.relay_offers(h, a.peer_id, &peers, &a.offers);
        Ok(vec![reply])
    }

    /// The endpoint of `peer_id` on this connection: one slot per peer id, kept while the
    /// connection lives (at most `ws.max_torrents_per_connection` of them, below 65536).
    fn endpoint(&mut self, peer_id: PeerId) -> Endpoint {
        let next = self.slots.len() as u16 + 1;
        let slot = *self.slots.entry(peer_id).or_insert(next);
        self.setup.hub.endpoint(self.me, slot)
    }

    /// Each offer to a different peer of the swarm, in the order the swarm handed them out.
    fn relay_offers(
        &self,
        h: InfoHash,
        from: PeerId,
        peers: &[protocol::ResponsePeer],
        offers: &[ws::Offer],
    ) {
        let (hub, counters) = (&self.setup.hub, self.setup.tracker.ws_counters());
        let offerer = Offerer {
            node: hub.node(),
            conn: self.me,
            peer: from,
        };
        for (peer, offer) in peers.iter().zip(offers) {
            let Some(to) = Endpoint::of(&peer.addr) else {
                continue;
            };
            let frame = ws::offer(h, from, offer);
            let sent = if hub.is_mine(to) {
                hub.offer(to.conn, (h, offer.offer_id), offerer, frame)
                    .is_ok()
            } else {
                // Held by another node of the cluster: through the bus to that node.
                self.setup.relay.as_ref().is_some_and(|r| {
                    let m = Relayed::Offer {
                        to: to.conn,
                        info_hash: h,
                        offer_id: offer.offer_id,
                        from: offerer,
                        frame,
                    };
                    r.send(to.node, &m)
                })
            };
            tracing::debug!(conn = self.me, to = %peer.addr, sent, "ws offer");
            match sent {
                true => counters.offer_relayed(),
                false => counters.relay_dropped(),
            }
        }
    }

    /// An answer goes to the connection that made the offer, if this connection was sent
    /// that offer, answers as the peer it announced, and the offer has not expired.
    fn answer(&self, a: ws::Answer) -> Result<(), Failure> {
        let hub = &self.setup.hub;
        let unknown = || Failure {
            reply: false,
            ..Failure::new(Action::Announce, a.info_hash, ErrorKind::UnknownOffer, "")
        };
        if !self.peers.contains(&(a.info_hash, a.peer_id)) {
            tracing::debug!(
                conn = self.me,
                "ws answer from a peer this connection did not announce"
            );
            return Err(unknown());
        }
        let to = hub
            .answer(self.me, (a.info_hash, a.offer_id), a.to_peer_id)
            .ok_or_else(unknown)?;
        tracing::debug!(conn = self.me, to.node, to.conn, "ws answer");
        let counters = self.setup.tracker.ws_counters();
        let frame = ws::answer(&a);
        let sent = if to.node == hub.node() {
            hub.send(to.conn, frame).is_ok()
        } else {
            let m = Relayed::Answer { to: to.conn, frame };
            self.setup
                .relay
                .as_ref()
                .is_some_and(|r| r.send(to.node, &m))
        };
        match sent {
            true => counters.answer_relayed(),
            false => counters.relay_dropped(),
        }
        Ok(())
    }

    fn scrape(&self, hashes: &[InfoHash]) -> Result<Frame, Failure> {
        let tracker = &self.setup.tracker;
        let counts = tracker
            .scrape(Ws, hashes, self.key.as_deref(), tracker.now())
            .map_err(|r| Failure::refused(Action::Scrape, hashes.first().copied(), r))?;
        Ok(ws::scrape_reply(hashes.iter().zip(counts).map(|(h, c)| {
            (
                *h,
                ws::Counts {
                    complete: c.seeders,
                    incomplete: c.leechers,
                    downloaded: c.downloaded,
                },
            )
        })))
    }

    /// The connection is gone: its peers leave their swarms, its peer ids are free.
    fn close(&mut self, queue: &mut Queue) {
        queue.close();
        let tracker = &self.setup.tracker;
        let peers: Vec<_> = self.peers.drain().collect();
        for &(h, peer_id) in &peers {
            let at = self.endpoint(peer_id).addr();
            tracker.leave(h, peer_id, at);
        }
        self.setup.hub.close(self.me, peers.into_iter());
    }
}
