//! The status page's routes on the real binary: the JSON's schema, the page's Host and
//! Origin rules, and no secret on either. (The page in a browser: scripts/e2e/ws/status.mjs.)

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;

use common::*;
use serde_json::Value;

const TOKEN: &str = "status-token-0123456789";

fn get(addr: std::net::SocketAddr, target: &str, headers: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{headers}\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out[9..12].parse().unwrap();
    (status, out)
}

#[test]
fn the_status_json_has_its_schema_and_the_page_its_rules() {
    let dir = temp_dir();
    let shoal = Setup {
        token: TOKEN,
        extra: "[status]\nsample_secs = 1\n",
        ..Setup::default()
    }
    .start(dir.path());
    http_announce(shoal.http[0], "/announce", &started(hash(1), 1, 6001)).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(2200));
    assert_eq!(api(shoal.api, "GET", "/api/v1/status", None, None).0, 401);
    let (status, v) = api(shoal.api, "GET", "/api/v1/status", Some(TOKEN), None);
    assert_eq!(status, 200);
    let is = |path: &str, f: fn(&Value) -> bool| {
        let mut at = &v;
        for k in path.split('.') {
            at = &at[k];
        }
        assert!(f(at), "{path}: {at} in {v}");
    };
    for path in [
        "uptime_secs",
        "totals.torrents",
        "totals.seeders",
        "totals.leechers",
        "totals.peers",
        "totals.counted_torrents",
        "families.ipv4",
        "families.ipv6",
        "families.webrtc",
        "history.sample_secs",
    ] {
        is(path, Value::is_u64);
    }
    for path in ["version", "mode", "database.driver"] {
        is(path, Value::is_string);
    }
    for path in ["database.up", "database.flushing"] {
        is(path, Value::is_boolean);
    }
    for path in ["history.series", "top_torrents", "clients", "refusals"] {
        is(path, Value::is_array);
    }
    assert!(v["cluster"].is_null(), "one node: {v}");
    assert_eq!(v["history"]["series"].as_array().unwrap().len(), 7);
    let http = v["history"]["series"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["protocol"] == "http" && s["action"] == "announce")
        .unwrap();
    let sum: f64 = http["per_sec"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .sum();
    assert_eq!(sum, 1.0, "{http}");
    assert_eq!(v["top_torrents"][0]["info_hash"], hash(1).to_hex());
    assert_eq!(v["families"]["ipv4"], 1);

    let (status, page) = get(shoal.api, "/", "");
    assert_eq!(status, 200);
    assert!(
        page.contains("<title>Shoal status</title>") && page.contains("<svg"),
        "{page}"
    );
    assert!(
        page.contains("default-src 'none'"),
        "the page loads nothing from elsewhere"
    );
    assert!(!page.contains(TOKEN) && !page.contains("<script"), "{page}");
    // The admin API's rules: no foreign Host (DNS rebinding), no cross-site read.
    let mut s = TcpStream::connect(shoal.api).unwrap();
    write!(
        s,
        "GET / HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 403"), "{out}");
    let (status, _) = get(shoal.api, "/", "Origin: http://evil.example\r\n");
    assert_eq!(status, 403);
    let metrics = shoal.metrics();
    for line in [
        "shoal_peers_by_family{family=\"ipv4\"} 1",
        "shoal_announces_by_client_total{client=\"shoal check\"} 1",
    ] {
        assert!(metrics.contains(line), "{line} in /metrics");
    }
}
