//! The admin listener: health and metrics (the token-protected `/api/v1` joins it later).

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use store::Store;

use crate::metrics::Gauges;
use crate::tracker::Tracker;

pub struct ApiState<S> {
    pub tracker: Arc<Tracker>,
    pub store: S,
}

pub fn router<S: Store + Clone>(state: Arc<ApiState<S>>) -> Router {
    Router::new().route("/health", get(health::<S>)).route("/metrics", get(metrics::<S>)).with_state(state)
}

async fn health<S: Store>(State(s): State<Arc<ApiState<S>>>) -> impl IntoResponse {
    let db = tokio::time::timeout(Duration::from_secs(2), s.store.ping()).await;
    let reachable = matches!(db, Ok(Ok(())));
    let status = if reachable { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let body = serde_json::json!({
        "status": if reachable { "ok" } else { "degraded" },
        "database": { "driver": s.store.driver(), "reachable": reachable },
    });
    (status, axum::Json(body))
}

async fn metrics<S: Store>(State(s): State<Arc<ApiState<S>>>) -> impl IntoResponse {
    let st = s.tracker.swarm.stats();
    let g = Gauges {
        torrents: st.torrents,
        counted_torrents: st.counted_torrents,
        seeders: st.seeders,
        leechers: st.leechers,
        pending_deltas: st.pending_deltas,
    };
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], s.tracker.metrics.render(&g))
}
