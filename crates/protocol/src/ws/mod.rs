//! The WebSocket tracker protocol of the `bittorrent-tracker` package (WebTorrent): JSON
//! text frames on one long-lived connection. Ids (`info_hash`, `peer_id`, `offer_id`,
//! `to_peer_id`) are 20 bytes written as strings of 20 code points 0–255. Offers and
//! answers (WebRTC session descriptions) are relayed as the client wrote them, never parsed.

mod endpoint;

pub use endpoint::{Endpoint, is_endpoint_ip};

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;

use crate::{AnnounceEvent, InfoHash, PeerId};

/// Twenty bytes as a string of twenty code points 0–255 (latin1 inside JSON).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Bytes20(pub [u8; 20]);

impl Bytes20 {
    fn parse(s: &str) -> Option<Bytes20> {
        let mut out = [0u8; 20];
        let mut n = 0;
        for c in s.chars() {
            let b = u8::try_from(u32::from(c)).ok()?;
            *out.get_mut(n)? = b;
            n += 1;
        }
        (n == 20).then_some(Bytes20(out))
    }

    fn text(&self) -> String {
        self.0.iter().map(|&b| char::from(b)).collect()
    }
}

impl Serialize for Bytes20 {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text())
    }
}

impl<'de> Deserialize<'de> for Bytes20 {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = std::borrow::Cow::<str>::deserialize(d)?;
        Bytes20::parse(&s).ok_or_else(|| D::Error::custom("not 20 characters of 0-255"))
    }
}

impl From<InfoHash> for Bytes20 {
    fn from(h: InfoHash) -> Self {
        Bytes20(h.0)
    }
}

impl From<PeerId> for Bytes20 {
    fn from(p: PeerId) -> Self {
        Bytes20(p.0)
    }
}

/// What a frame asks for.
#[derive(Debug)]
pub enum Request {
    Announce(Announce),
    /// An answer to an offer this connection was sent: relayed to the offerer only.
    Answer(Answer),
    Scrape(Vec<InfoHash>),
}

#[derive(Debug)]
pub struct Announce {
    pub info_hash: InfoHash,
    pub peer_id: PeerId,
    pub event: AnnounceEvent,
    pub numwant: Option<u32>,
    /// Bytes to go; None when the client does not know (`"left": null` from a magnet
    /// leecher): a leecher.
    pub left: Option<u64>,
    pub offers: Vec<Offer>,
}

#[derive(Debug)]
pub struct Offer {
    pub offer_id: Bytes20,
    pub offer: Box<RawValue>,
}

#[derive(Debug)]
pub struct Answer {
    pub info_hash: InfoHash,
    pub peer_id: PeerId,
    pub to_peer_id: PeerId,
    pub offer_id: Bytes20,
    pub answer: Box<RawValue>,
}

/// The action a reply must name: the client drops a connection whose frame names none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Announce,
    Scrape,
}

impl Action {
    pub fn name(self) -> &'static str {
        match self {
            Action::Announce => "announce",
            Action::Scrape => "scrape",
        }
    }
}

/// Why a frame was refused, with what its error frame must carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    pub action: Action,
    pub info_hash: Option<InfoHash>,
    pub kind: ParseErrorKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseErrorKind {
    /// Not JSON, or a field of the wrong JSON type.
    NotJson,
    UnknownAction,
    /// An id that is missing or not 20 characters of code points 0-255.
    BadId,
    UnknownEvent,
    /// An answer without `to_peer_id` or `offer_id`.
    BadAnswer,
    /// More info-hashes in one scrape than a tracker answers.
    TooManyInfoHashes,
}

impl ParseErrorKind {
    pub fn message(self) -> &'static str {
        match self {
            ParseErrorKind::NotJson => "the frame is not a JSON tracker message",
            ParseErrorKind::UnknownAction => "action must be announce or scrape",
            ParseErrorKind::BadId => {
                "info_hash, peer_id and offer ids must be 20-character strings"
            }
            ParseErrorKind::UnknownEvent => "event must be started, stopped, completed or update",
            ParseErrorKind::BadAnswer => "an answer needs to_peer_id and offer_id",
            ParseErrorKind::TooManyInfoHashes => "too many info_hashes in one scrape",
        }
    }
}

/// The most info-hashes one scrape frame may ask for.
pub const MAX_SCRAPE: usize = 64;

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

/// An offer as sent; one without a 20-byte `offer_id` or an `offer` is skipped (the
/// reference client's own tests send such stubs), not a reason to refuse the announce.
#[derive(Deserialize)]
struct RawOffer {
    offer_id: Option<String>,
    offer: Option<Box<RawValue>>,
}

/// A frame with every field loosely typed, so that a bad id still lets the error frame
/// name the action and the info-hash.
#[derive(Deserialize)]
struct Raw {
    action: Option<String>,
    info_hash: Option<OneOrMany>,
    peer_id: Option<String>,
    event: Option<String>,
    numwant: Option<f64>,
    left: Option<f64>,
    offers: Option<Vec<RawOffer>>,
    answer: Option<Box<RawValue>>,
    offer_id: Option<String>,
    to_peer_id: Option<String>,
}

fn id(s: Option<&String>) -> Option<[u8; 20]> {
    s.and_then(|s| Bytes20::parse(s)).map(|b| b.0)
}

/// Reads one text frame.
pub fn parse(text: &str) -> Result<Request, ParseError> {
    let raw: Raw = serde_json::from_str(text).map_err(|_| ParseError {
        action: Action::Announce,
        info_hash: None,
        kind: ParseErrorKind::NotJson,
    })?;
    let action = match raw.action.as_deref() {
        Some("announce") => Action::Announce,
        Some("scrape") => Action::Scrape,
        _ => Action::Announce,
    };
    let one = match &raw.info_hash {
        Some(OneOrMany::One(s)) => id(Some(s)).map(InfoHash),
        _ => None,
    };
    let fail = |kind| ParseError {
        action,
        info_hash: one,
        kind,
    };
    match raw.action.as_deref() {
        Some("announce") => {}
        Some("scrape") => {
            let hashes = match &raw.info_hash {
                Some(OneOrMany::One(_)) => vec![one.ok_or(fail(ParseErrorKind::BadId))?],
                Some(OneOrMany::Many(v)) if v.len() > MAX_SCRAPE => {
                    return Err(fail(ParseErrorKind::TooManyInfoHashes));
                }
                Some(OneOrMany::Many(v)) => v
                    .iter()
                    .map(|s| id(Some(s)).map(InfoHash))
                    .collect::<Option<Vec<_>>>()
                    .ok_or(fail(ParseErrorKind::BadId))?,
                // The reference server scrapes everything here; one frame's answer must
                // stay small, so nothing is named, nothing is counted.
                None => Vec::new(),
            };
            return Ok(Request::Scrape(hashes));
        }
        _ => return Err(fail(ParseErrorKind::UnknownAction)),
    }
    let info_hash = one.ok_or(fail(ParseErrorKind::BadId))?;
    let peer_id = PeerId(id(raw.peer_id.as_ref()).ok_or(fail(ParseErrorKind::BadId))?);
    if let Some(answer) = raw.answer {
        let (Some(to), Some(offer)) = (raw.to_peer_id.as_ref(), raw.offer_id.as_ref()) else {
            return Err(fail(ParseErrorKind::BadAnswer));
        };
        return Ok(Request::Answer(Answer {
            info_hash,
            peer_id,
            to_peer_id: PeerId(id(Some(to)).ok_or(fail(ParseErrorKind::BadId))?),
            offer_id: Bytes20(id(Some(offer)).ok_or(fail(ParseErrorKind::BadId))?),
            answer,
        }));
    }
    let event = match raw.event.as_deref() {
        None | Some("") | Some("update") | Some("empty") => AnnounceEvent::None,
        Some("started") => AnnounceEvent::Started,
        Some("stopped") => AnnounceEvent::Stopped,
        Some("completed") => AnnounceEvent::Completed,
        Some(_) => return Err(fail(ParseErrorKind::UnknownEvent)),
    };
    let offers = raw
        .offers
        .unwrap_or_default()
        .into_iter()
        .filter_map(|o| {
            Some(Offer {
                offer_id: Bytes20(id(o.offer_id.as_ref())?),
                offer: o.offer?,
            })
        })
        .collect();
    Ok(Request::Announce(Announce {
        info_hash,
        peer_id,
        event,
        // Saturating casts: a negative or huge number is no error, just its bound.
        numwant: raw.numwant.map(|n| n as u32),
        left: raw.left.filter(|l| l.is_finite()).map(|l| l as u64),
        offers,
    }))
}

/// The answer to an announce.
pub fn announce_reply(
    info_hash: InfoHash,
    interval: u32,
    complete: u32,
    incomplete: u32,
) -> String {
    #[derive(Serialize)]
    struct Reply {
        action: &'static str,
        info_hash: Bytes20,
        interval: u32,
        complete: u32,
        incomplete: u32,
    }
    json(&Reply {
        action: "announce",
        info_hash: info_hash.into(),
        interval,
        complete,
        incomplete,
    })
}

/// An offer forwarded to one peer of the swarm, from `from`.
pub fn offer(info_hash: InfoHash, from: PeerId, offer: &Offer) -> String {
    #[derive(Serialize)]
    struct Forward<'a> {
        action: &'static str,
        info_hash: Bytes20,
        peer_id: Bytes20,
        offer_id: Bytes20,
        offer: &'a RawValue,
    }
    json(&Forward {
        action: "announce",
        info_hash: info_hash.into(),
        peer_id: from.into(),
        offer_id: offer.offer_id,
        offer: &offer.offer,
    })
}

/// An answer relayed to the peer that made the offer.
pub fn answer(a: &Answer) -> String {
    #[derive(Serialize)]
    struct Forward<'a> {
        action: &'static str,
        info_hash: Bytes20,
        peer_id: Bytes20,
        offer_id: Bytes20,
        answer: &'a RawValue,
    }
    json(&Forward {
        action: "announce",
        info_hash: a.info_hash.into(),
        peer_id: a.peer_id.into(),
        offer_id: a.offer_id,
        answer: &a.answer,
    })
}

/// Counts of one torrent in a scrape's answer.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Counts {
    pub complete: u32,
    pub incomplete: u32,
    pub downloaded: u64,
}

pub fn scrape_reply(files: impl IntoIterator<Item = (InfoHash, Counts)>) -> String {
    let files: serde_json::Map<String, serde_json::Value> = files
        .into_iter()
        .map(|(h, c)| {
            (
                Bytes20::from(h).text(),
                serde_json::to_value(c).expect("counts serialise"),
            )
        })
        .collect();
    json(&serde_json::json!({ "action": "scrape", "files": files }))
}

/// An error frame: always with `action`, and with `info_hash` when the frame named one,
/// or the reference client tears down its shared socket.
pub fn failure(action: Action, info_hash: Option<InfoHash>, reason: &str) -> String {
    #[derive(Serialize)]
    struct Failure<'a> {
        action: &'static str,
        #[serde(skip_serializing_if = "Option::is_none")]
        info_hash: Option<Bytes20>,
        #[serde(rename = "failure reason")]
        reason: &'a str,
    }
    json(&Failure {
        action: action.name(),
        info_hash: info_hash.map(Bytes20::from),
        reason,
    })
}

fn json(v: &impl Serialize) -> String {
    serde_json::to_string(v).expect("a reply serialises")
}

#[cfg(test)]
mod tests;
