//! The listeners: UDP and HTTP trackers, and the admin API with `/health` and `/metrics`.
//! Each turns its wire format into calls on `tracker::Tracker` and back.

pub mod admin;
pub mod http;
pub mod proxy;
pub mod tls;
pub mod udp;
