//! The listeners: UDP, HTTP and WebSocket trackers, and the admin API with `/health` and `/metrics`.
//! Each turns its wire format into calls on `tracker::Tracker` and back.

pub mod admin;
pub mod edge;
pub mod http;
pub mod proxy;
pub mod tls;
pub mod udp;
pub mod ws;

/// Resolves once `stop` is true (or its sender is gone): a listener's signal to drain.
pub(crate) async fn stopped(stop: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}
