//! The status page: `GET /` (HTML a person reads, server-rendered SVG charts, nothing
//! loaded from elsewhere, no script) and `GET /api/v1/status` (the same facts as JSON).
//! Neither shows a key, a token or a password; `/` follows the admin API's Host and Origin
//! rules, `/api/v1/status` its token too.

mod page;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use store::{Connection, TorrentMetricsStore};

use super::{ApiState, Shared, torrent_json};
use crate::tracker::history::SERIES;

/// Torrents in the page's table.
const TOP: usize = 20;
/// A walk over the swarm is reused this long.
const FRESH: Duration = Duration::from_secs(1);

/// The last `Tracker::survey`, shared by the page and `/metrics`.
#[derive(Default)]
pub struct Cache(Mutex<Option<(Instant, Arc<swarm::Survey>)>>);

impl Cache {
    pub async fn get(&self, tracker: &Arc<crate::tracker::Tracker>) -> Arc<swarm::Survey> {
        if let Some((at, s)) = &*self.0.lock().unwrap_or_else(|e| e.into_inner())
            && at.elapsed() < FRESH
        {
            return s.clone();
        }
        let t = tracker.clone();
        let survey = tokio::task::spawn_blocking(move || t.survey(TOP))
            .await
            .unwrap_or_default();
        let survey = Arc::new(survey);
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some((Instant::now(), survey.clone()));
        survey
    }
}

/// Everything the page shows, as JSON (the page renders this very value).
pub async fn snapshot(s: &ApiState) -> Value {
    let t = &s.tracker;
    let db_up = matches!(
        tokio::time::timeout(Duration::from_secs(2), s.store.ping()).await,
        Ok(Ok(()))
    );
    let downloads =
        match tokio::time::timeout(Duration::from_secs(2), s.store.load_global_downloads()).await {
            Ok(Ok(n)) => Some(n.unwrap_or(0)),
            _ => None,
        };
    let survey = s.survey.get(&s.tracker).await;
    let st = t.stats();
    let step = s.sample_secs as f64;
    let samples = t.history();
    let series: Vec<Value> = SERIES
        .iter()
        .enumerate()
        .map(|(i, (p, a))| {
            let per_sec: Vec<f64> = samples
                .iter()
                .map(|x| (f64::from(x[i]) / step * 100.0).round() / 100.0)
                .collect();
            json!({ "protocol": p.label(), "action": format!("{a:?}").to_lowercase(), "per_sec": per_sec })
        })
        .collect();
    let mut clients: Vec<(&str, u64)> = t.software().into_iter().filter(|(_, n)| *n > 0).collect();
    clients.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let announces: u64 = clients.iter().map(|(_, n)| n).sum();
    let clients: Vec<Value> = clients
        .iter()
        .map(|(name, n)| {
            json!({ "name": name, "announces": n, "share": *n as f64 / announces.max(1) as f64 })
        })
        .collect();
    let refusals: Vec<Value> = t
        .metrics()
        .error_totals()
        .into_iter()
        .map(|(p, kind, n)| json!({ "protocol": p, "kind": kind, "count": n }))
        .collect();
    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "mode": t.access().mode(),
        "uptime_secs": t.uptime_secs(),
        "database": { "driver": s.store.driver(), "up": db_up, "flushing": !t.metrics().flush_failing() },
        "cluster": s.bus.as_ref().map(|b| crate::cluster::json(b, t)),
        "totals": {
            "torrents": st.torrents,
            "seeders": st.seeders,
            "leechers": st.leechers,
            "peers": st.seeders + st.leechers,
            "counted_torrents": st.counted_torrents,
            "downloads": downloads,
        },
        "families": { "ipv4": survey.v4, "ipv6": survey.v6, "webrtc": survey.rtc },
        "history": { "sample_secs": s.sample_secs, "series": series },
        "top_torrents": survey.top.iter().map(|(h, st)| torrent_json(h, st)).collect::<Vec<_>>(),
        "clients": clients,
        "refusals": refusals,
    })
}

pub async fn json(State(s): Shared) -> Response {
    Json(snapshot(&s).await).into_response()
}

pub async fn page(State(s): Shared) -> Response {
    let v = snapshot(&s).await;
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            // Nothing from elsewhere, no script, no framing: the page is data.
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; frame-ancestors 'none'",
            ),
        ],
        page::render(&v),
    )
        .into_response()
}

/// `shoal_peers_by_family{family}` for `/metrics`, from the same walk.
pub async fn render_families(s: &ApiState, out: &mut crate::tracker::metrics::Text) {
    let survey = s.survey.get(&s.tracker).await;
    out.family(
        "shoal_peers_by_family",
        "gauge",
        "Peers by address family: ipv4, ipv6, webrtc (WebSocket peers).",
    );
    for (family, n) in [
        ("ipv4", survey.v4),
        ("ipv6", survey.v6),
        ("webrtc", survey.rtc),
    ] {
        out.sample("shoal_peers_by_family", &[("family", family)], n);
    }
}
