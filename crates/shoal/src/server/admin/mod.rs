//! The admin listener: `/health` and `/metrics` without a token, and the JSON API under
//! `/api/v1` behind a bearer token. Every change is written to the store first and reaches
//! the in-memory caches only once the store has accepted it.

pub mod body;
mod clients;
mod listen;

pub use self::listen::serve;
mod status;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::{Json, Router};
use protocol::{InfoHash, Key};
use serde::Deserialize;

use serde_json::{Value, json};
use store::{AnyStore, AuthKey, Connection, StoreError, WhitelistEntry};

use self::body::{NewKey, parse_new_key};
use crate::config::Secret;
use crate::tracker::Tracker;

/// JSON bodies are a few dozen bytes; anything near this is not a real client.
const MAX_BODY: usize = 16 * 1024;
const MAX_PAGE: usize = 1000;

pub struct ApiState {
    pub tracker: Arc<Tracker>,
    pub store: AnyStore,
    pub token: Secret,
    /// `api.hosts`, lower-cased.
    pub hosts: Vec<String>,
    /// The bus, in a cluster.
    pub bus: Option<Arc<crate::cluster::BusState>>,
    /// `status.sample_secs`.
    pub sample_secs: u64,
    /// The last walk over the swarm, for the status page and `/metrics` (a walk costs
    /// O(torrents): at most one per second).
    pub survey: status::Cache,
}

type Shared = State<Arc<ApiState>>;

pub fn router(state: Arc<ApiState>) -> Router {
    let v1 = Router::new()
        .route("/stats", get(stats))
        .route("/torrents", get(torrents))
        .route("/torrents/{info_hash}", get(torrent))
        .route("/torrents/{info_hash}/peers", get(peers))
        .route("/whitelist", get(whitelist))
        .route("/whitelist/{info_hash}", put(list).delete(unlist))
        .route("/keys", get(keys).post(add_key))
        .route("/keys/{key}", axum::routing::delete(remove_key))
        .route("/clients", get(clients::list))
        .route("/status", get(status::json))
        .route(
            "/clients/{prefix}",
            put(clients::put).delete(clients::remove),
        )
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such route under /api/v1") })
        .layer(middleware::from_fn_with_state(
            state.clone(),
            refuse_browsers,
        ))
        .layer(middleware::from_fn_with_state(state.clone(), require_token))
        .layer(DefaultBodyLimit::max(MAX_BODY));
    Router::new()
        .route(
            "/",
            get(status::page).layer(middleware::from_fn_with_state(
                state.clone(),
                refuse_browsers,
            )),
        )
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .nest("/api/v1", v1)
        .with_state(state)
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

/// The database failed, not the client: 503, and the caches stay as they were.
fn unavailable(e: StoreError) -> Response {
    tracing::error!("admin api: database write failed: {e}");
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        format!("database unavailable, nothing changed: {e}"),
    )
}

/// Whether a `Host` (or an origin's host) names this API in a way no web page can borrow:
/// an IP address (DNS rebinding needs a name), `localhost`, or a name in `api.hosts`.
fn host_allowed(host: &str, names: &[String]) -> bool {
    let authority: axum::http::uri::Authority = match host.parse() {
        Ok(a) => a,
        Err(_) => return false,
    };
    let name = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    name.parse::<std::net::IpAddr>().is_ok()
        || name.eq_ignore_ascii_case("localhost")
        || names.iter().any(|n| n.eq_ignore_ascii_case(name))
}

/// A web page must not drive the API (docs/design.md, "The admin API"): a foreign `Host` is DNS rebinding,
/// a foreign `Origin` is a cross-site request, and a body that is not `application/json` is
/// what a cross-site form can send without a CORS preflight (an empty body is no body: the
/// Origin check covers a bodiless cross-site POST). Runs after the token check, so that 401
/// keeps meaning "no or wrong token"; with an empty token it is the only guard.
async fn refuse_browsers(State(s): Shared, req: Request, next: Next) -> Response {
    match browser_refusal(req.headers(), &s.hosts) {
        Some(refused) => refused,
        None => next.run(req).await,
    }
}

fn browser_refusal(headers: &header::HeaderMap, hosts: &[String]) -> Option<Response> {
    let text = |name| headers.get(name).and_then(|v| v.to_str().ok());
    let host = text(header::HOST).unwrap_or("");
    if !host_allowed(host, hosts) {
        return Some(error(
            StatusCode::FORBIDDEN,
            format!(
                "Host {host:?} is not this API's: use its IP address, localhost, or a name listed in api.hosts"
            ),
        ));
    }
    if let Some(origin) = text(header::ORIGIN) {
        let same = origin
            .split_once("://")
            .is_some_and(|(_, authority)| authority.eq_ignore_ascii_case(host));
        if !same {
            return Some(error(
                StatusCode::FORBIDDEN,
                format!("cross-origin request from {origin:?} refused"),
            ));
        }
    }
    let json = text(header::CONTENT_TYPE).is_some_and(|ct| {
        ct.split(';')
            .next()
            .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
    });
    let has_body = headers.contains_key(header::CONTENT_TYPE)
        || headers
            .get(header::CONTENT_LENGTH)
            .is_some_and(|v| v != "0")
        || headers.contains_key(header::TRANSFER_ENCODING);
    (has_body && !json).then(|| {
        error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "request bodies must be sent as Content-Type: application/json",
        )
    })
}

/// Compares in time that depends only on the expected token's length.
fn same_token(given: &[u8], expected: &[u8]) -> bool {
    let mut diff = given.len() ^ expected.len();
    for (i, e) in expected.iter().enumerate() {
        diff |= usize::from(given.get(i).copied().unwrap_or(0) ^ e);
    }
    std::hint::black_box(diff) == 0
}

/// Only the `Authorization: Bearer` header counts; a token in the URL is never read, so it
/// cannot leak into proxy logs and work. With no token configured the API is bound to
/// loopback (config refuses otherwise) and open to local users.
async fn require_token(State(s): Shared, req: Request, next: Next) -> Response {
    let expected = s.token.expose().as_bytes();
    if !expected.is_empty() {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                let (scheme, token) = v.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
            });
        let ok = given.is_some_and(|g| same_token(g.as_bytes(), expected));
        if !ok {
            let what = if given.is_none() {
                "missing bearer token"
            } else {
                "wrong token"
            };
            let mut resp = error(StatusCode::UNAUTHORIZED, what);
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
            return resp;
        }
    }
    next.run(req).await
}

async fn health(State(s): Shared) -> Response {
    let db = tokio::time::timeout(Duration::from_secs(2), s.store.ping()).await;
    let reachable = matches!(db, Ok(Ok(())));
    let m = s.tracker.metrics();
    // Reachable is not enough: a read-only file or a full disk answers SELECT 1 but refuses writes.
    let flushing = !m.flush_failing();
    let healthy = reachable && flushing;
    // Until the stream is replayed this node lacks other nodes' peers: not ready, unless
    // that takes past cluster.catch_up_timeout_ms. A bus that is down leaves the node
    // answering from its own view: degraded, still served.
    let bus = s.bus.as_ref().map(|b| b.health());
    let catching_up = bus == Some(crate::cluster::BusHealth::CatchingUp);
    let bus_degraded = matches!(bus, Some(crate::cluster::BusHealth::Degraded(_)));
    let status = if healthy && !catching_up {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let word = match () {
        _ if !healthy => "degraded",
        _ if catching_up => "catching_up",
        _ if bus_degraded => "degraded",
        _ => "ok",
    };
    let mut body = json!({
        "status": word,
        "database": {
            "driver": s.store.driver(),
            "reachable": reachable,
            "flushing": flushing,
            "flush_failures": m.flush_failures(),
            "unflushed_deltas": m.unflushed_deltas(),
        },
    });
    if let Some(b) = &s.bus {
        body["bus"] = crate::cluster::json(b, &s.tracker);
    }
    (status, Json(body)).into_response()
}

async fn metrics(State(s): Shared) -> Response {
    let db = tokio::time::timeout(Duration::from_secs(2), s.store.ping()).await;
    let up = matches!(db, Ok(Ok(()))) as u8;
    let m = s.tracker.metrics();
    let mut text = crate::tracker::metrics::Text::default();
    s.tracker.render_metrics(&mut text);
    status::render_families(&s, &mut text).await;
    text.gauge(
        "shoal_database_up",
        "1 if the database answered a ping for this scrape.",
        up,
    );
    text.gauge(
        "shoal_flush_failing",
        "1 while the last flush of download counts failed.",
        u8::from(m.flush_failing()),
    );
    if let Some(rss) = resident_bytes() {
        text.gauge(
            "process_resident_memory_bytes",
            "Resident memory size in bytes.",
            rss,
        );
    }
    if let Some(b) = &s.bus {
        crate::cluster::metrics(b, &s.tracker, &mut text);
    }
    let text = text.into_string();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

/// This process's resident set, from /proc (Linux).
fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * u64::try_from(page).ok()?)
}

async fn stats(State(s): Shared) -> Response {
    let st = s.tracker.stats();
    let (whitelisted, keys) = s.tracker.access().counts();
    let cluster = s.bus.as_ref().map(|b| crate::cluster::json(b, &s.tracker));
    Json(json!({
        "cluster": cluster,
        "mode": s.tracker.access().mode(),
        "torrents": st.torrents,
        "counted_torrents": st.counted_torrents,
        "seeders": st.seeders,
        "leechers": st.leechers,
        "peers": st.seeders + st.leechers,
        "whitelisted": whitelisted,
        "keys": keys,
        "pending_deltas": st.pending_deltas + s.tracker.metrics().unflushed_deltas(),
        "uptime_secs": s.tracker.uptime_secs(),
    }))
    .into_response()
}

fn parse_hash(raw: &str) -> Result<InfoHash, Response> {
    InfoHash::from_hex(raw)
        .map_err(|e| error(StatusCode::BAD_REQUEST, format!("malformed info_hash: {e}")))
}

fn parse_key(raw: &str) -> Result<Key, Response> {
    raw.parse()
        .map_err(|e| error(StatusCode::BAD_REQUEST, format!("malformed key: {e}")))
}

fn torrent_json(h: &InfoHash, t: &swarm::TorrentStats) -> Value {
    json!({ "info_hash": h.to_hex(), "seeders": t.seeders, "leechers": t.leechers, "completed": t.downloaded })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Paging {
    offset: Option<usize>,
    limit: Option<usize>,
}

impl Paging {
    fn read(q: Result<Query<Paging>, QueryRejection>) -> Result<(usize, usize), Response> {
        let Query(p) = q.map_err(|e| error(StatusCode::BAD_REQUEST, e.body_text()))?;
        let (offset, limit) = (p.offset.unwrap_or(0), p.limit.unwrap_or(100));
        if !(1..=MAX_PAGE).contains(&limit) {
            return Err(error(
                StatusCode::BAD_REQUEST,
                format!("limit must be between 1 and {MAX_PAGE}"),
            ));
        }
        Ok((offset, limit))
    }
}

async fn torrents(State(s): Shared, q: Result<Query<Paging>, QueryRejection>) -> Response {
    let (offset, limit) = match Paging::read(q) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let (total, page) = s.tracker.torrents(offset, limit);
    let list: Vec<Value> = page.iter().map(|(h, t)| torrent_json(h, t)).collect();
    Json(json!({ "total": total, "offset": offset, "limit": limit, "torrents": list }))
        .into_response()
}

async fn torrent(State(s): Shared, Path(raw): Path<String>) -> Response {
    let h = match parse_hash(&raw) {
        Ok(h) => h,
        Err(r) => return r,
    };
    match s.tracker.torrent(&h) {
        Some(t) => Json(torrent_json(&h, &t)).into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            format!("torrent {h} is unknown to this tracker"),
        ),
    }
}

/// A torrent's peers as this node sees them, by endpoint: to compare nodes of a cluster,
/// or to see who is in a swarm.
async fn peers(
    State(s): Shared,
    Path(raw): Path<String>,
    q: Result<Query<Paging>, QueryRejection>,
) -> Response {
    let h = match parse_hash(&raw) {
        Ok(h) => h,
        Err(r) => return r,
    };
    let (offset, limit) = match Paging::read(q) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let all = s.tracker.peers(&h);
    let list: Vec<Value> = all
        .iter()
        .skip(offset)
        .take(limit)
        .map(|p| {
            json!({
                "addr": p.addr.to_string(),
                "peer_id": p.peer_id.iter().map(|b| format!("{b:02x}")).collect::<String>(),
                "seeder": p.seeder,
                "owned": p.owner.is_none(),
            })
        })
        .collect();
    Json(json!({ "info_hash": h.to_hex(), "total": all.len(), "offset": offset, "limit": limit, "peers": list }))
        .into_response()
}

fn entry_json(e: &WhitelistEntry) -> Value {
    json!({ "info_hash": e.info_hash.to_hex(), "added_at": e.added_at })
}

async fn whitelist(State(s): Shared) -> Response {
    Json(
        s.tracker
            .access()
            .whitelist()
            .iter()
            .map(entry_json)
            .collect::<Vec<_>>(),
    )
    .into_response()
}

async fn list(State(s): Shared, Path(raw): Path<String>) -> Response {
    let h = match parse_hash(&raw) {
        Ok(h) => h,
        Err(r) => return r,
    };
    let entry = WhitelistEntry {
        info_hash: h,
        added_at: crate::os::unix_secs(),
    };
    // The store keeps the first added_at of an info-hash listed twice; show what it holds.
    let (stored, created) = match s.tracker.access().list(&s.store, entry).await {
        Ok(r) => r,
        Err(e) => return unavailable(e),
    };
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    (status, Json(entry_json(&stored))).into_response()
}

async fn unlist(State(s): Shared, Path(raw): Path<String>) -> Response {
    let h = match parse_hash(&raw) {
        Ok(h) => h,
        Err(r) => return r,
    };
    match s.tracker.access().unlist(&s.store, &h).await {
        Ok(removed) => {
            if removed {
                StatusCode::NO_CONTENT.into_response()
            } else {
                error(
                    StatusCode::NOT_FOUND,
                    format!("{h} is not on the whitelist"),
                )
            }
        }
        Err(e) => unavailable(e),
    }
}

fn key_json(k: &AuthKey) -> Value {
    json!({ "key": k.key.as_str(), "valid_until": k.valid_until, "created_at": k.created_at })
}

async fn keys(State(s): Shared) -> Response {
    Json(
        s.tracker
            .access()
            .keys()
            .iter()
            .map(key_json)
            .collect::<Vec<_>>(),
    )
    .into_response()
}

async fn add_key(
    State(s): Shared,
    body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    let body = match body {
        Ok(b) => b,
        Err(e) => return error(e.status(), e.body_text()),
    };
    let req = match parse_new_key(&body) {
        Ok(r) => r,
        Err(why) => return error(StatusCode::BAD_REQUEST, why),
    };
    let now = crate::os::unix_secs();
    let key = match req {
        NewKey::Import { key, valid_until } => AuthKey {
            key,
            valid_until,
            created_at: now,
        },
        NewKey::Generate { valid_for_secs } => {
            let valid_until = match valid_for_secs.map(|l| now.checked_add(l as i64)) {
                Some(None) => return error(StatusCode::BAD_REQUEST, "valid_for_secs is too large"),
                other => other.flatten(),
            };
            match random_key() {
                Ok(key) => AuthKey {
                    key,
                    valid_until,
                    created_at: now,
                },
                Err(e) => {
                    return error(
                        StatusCode::SERVICE_UNAVAILABLE,
                        format!("no randomness for a key: {e}"),
                    );
                }
            }
        }
    };
    if let Err(e) = s.tracker.access().add_key(&s.store, key).await {
        return unavailable(e);
    }
    (StatusCode::CREATED, Json(key_json(&key))).into_response()
}

fn random_key() -> Result<Key, getrandom::Error> {
    let mut failure = None;
    let key = Key::from_random(|buf| {
        if let Err(e) = getrandom::fill(buf) {
            failure = Some(e);
            // Whatever follows is discarded below; filling keeps from_random finite.
            buf.fill(0);
        }
    });
    failure.map_or(Ok(key), Err)
}

async fn remove_key(State(s): Shared, Path(raw): Path<String>) -> Response {
    let key = match parse_key(&raw) {
        Ok(k) => k,
        Err(r) => return r,
    };
    match s.tracker.access().remove_key(&s.store, &key).await {
        Ok(removed) => {
            if removed {
                StatusCode::NO_CONTENT.into_response()
            } else {
                error(StatusCode::NOT_FOUND, "no such key")
            }
        }
        Err(e) => unavailable(e),
    }
}

#[cfg(test)]
mod tests {
    use super::same_token;

    #[test]
    fn token_comparison() {
        assert!(same_token(b"s3cret-token", b"s3cret-token"));
        assert!(!same_token(b"s3cret-toke", b"s3cret-token"));
        assert!(!same_token(b"s3cret-token!", b"s3cret-token"));
        assert!(!same_token(b"S3cret-token", b"s3cret-token"));
        assert!(!same_token(b"", b"s3cret-token"));
    }
}
