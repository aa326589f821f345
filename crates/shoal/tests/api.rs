//! The admin API: every route, its status codes and the token rules, against the real binary.

mod common;

use common::*;
use protocol::AnnounceEvent;
use serde_json::json;

const TOKEN: &str = "api-test-token-9876543210";

#[test]
fn token_rules() {
    let dir = temp_dir();
    let shoal = Setup {
        token: TOKEN,
        ..Setup::default()
    }
    .start(dir.path());
    let routes = [
        ("GET", "/api/v1/stats"),
        ("GET", "/api/v1/torrents"),
        (
            "GET",
            "/api/v1/torrents/0000000000000000000000000000000000000000",
        ),
        ("GET", "/api/v1/whitelist"),
        (
            "PUT",
            "/api/v1/whitelist/0000000000000000000000000000000000000000",
        ),
        (
            "DELETE",
            "/api/v1/whitelist/0000000000000000000000000000000000000000",
        ),
        ("GET", "/api/v1/keys"),
        ("POST", "/api/v1/keys"),
        ("DELETE", "/api/v1/keys/abcdefghijklmnopqrstuvwxyz012345"),
        ("GET", "/api/v1/no-such-route"),
    ];
    for (method, path) in routes {
        let (status, body) = api(shoal.api, method, path, None, None);
        assert_eq!(status, 401, "{method} {path} without a token: {body}");
        assert_eq!(body["error"], "missing bearer token");
        assert_eq!(
            api(shoal.api, method, path, Some("wrong"), None).0,
            401,
            "{method} {path} with a wrong token"
        );
        assert_eq!(
            api(
                shoal.api,
                method,
                path,
                Some(&TOKEN[..TOKEN.len() - 1]),
                None
            )
            .0,
            401,
            "a prefix is not the token"
        );
        // A token in the URL is never read.
        let sep = if path.contains('?') { '&' } else { '?' };
        assert_eq!(
            api(
                shoal.api,
                method,
                &format!("{path}{sep}token={TOKEN}"),
                None,
                None
            )
            .0,
            401
        );
    }
    // Nothing changed through any of those.
    assert_eq!(
        api(shoal.api, "GET", "/api/v1/keys", Some(TOKEN), None),
        (200, json!([]))
    );
    assert_eq!(
        api(shoal.api, "GET", "/api/v1/whitelist", Some(TOKEN), None),
        (200, json!([]))
    );
    // Health and metrics need no token.
    let (status, health) = api(shoal.api, "GET", "/health", None, None);
    assert_eq!(
        (status, &health["database"]["reachable"]),
        (200, &json!(true))
    );
    assert!(shoal.metrics().contains("shoal_requests_total"));
    let (_, log) = shoal.stop();
    assert!(
        log.iter().all(|l| !l.contains(TOKEN)),
        "the token must never be logged"
    );
}

#[test]
fn every_route_and_status_code() {
    let dir = temp_dir();
    let shoal = Setup {
        token: TOKEN,
        ..Setup::default()
    }
    .start(dir.path());
    let call = |method: &str, path: &str, body: Option<&str>| {
        api(shoal.api, method, path, Some(TOKEN), body)
    };

    // Torrents: fill the swarm with three torrents, one of them completed once.
    let mut c = UdpClient::new(shoal.udp[0]);
    let cid = c.connect();
    for n in 1..=3 {
        c.announce(cid, hash(n), peer_id(n), 6000, 5, AnnounceEvent::Started);
    }
    c.announce(cid, hash(2), peer_id(2), 6000, 0, AnnounceEvent::Completed);
    let (status, stats) = call("GET", "/api/v1/stats", None);
    assert_eq!(status, 200);
    assert_eq!(
        (
            stats["torrents"].as_u64(),
            stats["seeders"].as_u64(),
            stats["leechers"].as_u64()
        ),
        (Some(3), Some(1), Some(2))
    );
    assert_eq!(stats["mode"], "public");

    let (status, page) = call("GET", "/api/v1/torrents?offset=1&limit=1", None);
    assert_eq!(status, 200);
    assert_eq!(page["total"], 3);
    assert_eq!(
        page["torrents"],
        json!([{"info_hash": hash(2).to_hex(), "seeders": 1, "leechers": 0, "completed": 1}])
    );
    let (_, all) = call("GET", "/api/v1/torrents", None);
    assert_eq!(all["torrents"].as_array().unwrap().len(), 3);
    for bad in [
        "?limit=0",
        "?limit=1001",
        "?offset=-1",
        "?limit=x",
        "?page=2",
    ] {
        let (status, body) = call("GET", &format!("/api/v1/torrents{bad}"), None);
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(body["error"].is_string());
    }
    assert_eq!(
        call(
            "GET",
            &format!("/api/v1/torrents/{}", hash(2).to_hex()),
            None
        )
        .1["completed"],
        1
    );
    assert_eq!(
        call(
            "GET",
            &format!("/api/v1/torrents/{}", hash(2).to_hex().to_uppercase()),
            None
        )
        .0,
        200
    );
    assert_eq!(
        call(
            "GET",
            &format!("/api/v1/torrents/{}", hash(9).to_hex()),
            None
        )
        .0,
        404
    );
    for bad in [
        "abc",
        "zz02020202020202020202020202020202020202",
        "020202020202020202020202020202020202020202",
    ] {
        assert_eq!(
            call("GET", &format!("/api/v1/torrents/{bad}"), None).0,
            400,
            "{bad}"
        );
    }

    // Whitelist.
    let h = hash(4).to_hex();
    let (status, entry) = call("PUT", &format!("/api/v1/whitelist/{h}"), None);
    assert_eq!(status, 201);
    assert_eq!(entry["info_hash"], h);
    let (status, again) = call("PUT", &format!("/api/v1/whitelist/{h}"), None);
    assert_eq!(
        (status, &again),
        (200, &entry),
        "listing twice keeps the first entry"
    );
    assert_eq!(
        call("GET", "/api/v1/whitelist", None),
        (200, json!([entry]))
    );
    assert_eq!(call("PUT", "/api/v1/whitelist/nothex", None).0, 400);
    assert_eq!(call("DELETE", "/api/v1/whitelist/nothex", None).0, 400);
    assert_eq!(
        call("DELETE", &format!("/api/v1/whitelist/{h}"), None).0,
        204
    );
    assert_eq!(
        call("DELETE", &format!("/api/v1/whitelist/{h}"), None).0,
        404
    );
    assert_eq!(call("GET", "/api/v1/whitelist", None), (200, json!([])));

    // Keys: generate, generate with a lifetime, import, and every malformed body.
    let (status, forever) = call("POST", "/api/v1/keys", Some("{}"));
    assert_eq!(status, 201);
    assert_eq!(forever["valid_until"], json!(null));
    let (status, empty_body) = call("POST", "/api/v1/keys", None);
    assert_eq!(
        (status, &empty_body["valid_until"]),
        (201, &json!(null)),
        "no body means {{}}"
    );
    assert_ne!(forever["key"], empty_body["key"], "generated keys differ");
    let (_, timed) = call("POST", "/api/v1/keys", Some(r#"{"valid_for_secs": 60}"#));
    let until = timed["valid_until"].as_i64().unwrap();
    assert!((until - timed["created_at"].as_i64().unwrap() - 60).abs() <= 1);
    let imported = r#"{"key": "ImportedImportedImportedImported", "valid_until": 4102444800}"#;
    let (status, k) = call("POST", "/api/v1/keys", Some(imported));
    assert_eq!(
        (status, &k["key"], &k["valid_until"]),
        (
            201,
            &json!("ImportedImportedImportedImported"),
            &json!(4102444800_i64)
        )
    );
    let (status, k) = call(
        "POST",
        "/api/v1/keys",
        Some(r#"{"key": "ImportedImportedImportedImported", "valid_until": null}"#),
    );
    assert_eq!(
        (status, &k["valid_until"]),
        (201, &json!(null)),
        "importing again replaces the expiry"
    );
    for bad in [
        r#"{"key": "short"}"#,
        r#"{"key": "has-a-dash-has-a-dash-has-a-dash"}"#,
        r#"{"key": "ImportedImportedImportedImported", "valid_for_secs": 5}"#,
        r#"{"valid_until": 5}"#,
        r#"{"valid_for_secs": 0}"#,
        r#"{"valid_for_secs": -5}"#,
        r#"{"valid_for_secs": 18446744073709551615}"#,
        r#"{"lifetime": 5}"#,
        r#"{"valid_for_secs": "#,
        r#"[]"#,
    ] {
        let (status, body) = call("POST", "/api/v1/keys", Some(bad));
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(body["error"].is_string(), "{bad}: {body}");
    }
    let big = format!(r#"{{"key": "{}"}}"#, "a".repeat(64 * 1024));
    assert_eq!(
        call("POST", "/api/v1/keys", Some(&big)).0,
        413,
        "bodies over the limit are refused"
    );
    let (_, keys) = call("GET", "/api/v1/keys", None);
    assert_eq!(keys.as_array().unwrap().len(), 4);
    let k = forever["key"].as_str().unwrap();
    assert_eq!(call("DELETE", &format!("/api/v1/keys/{k}"), None).0, 204);
    assert_eq!(call("DELETE", &format!("/api/v1/keys/{k}"), None).0, 404);
    assert_eq!(call("DELETE", "/api/v1/keys/short", None).0, 400);
    assert_eq!(
        call("GET", "/api/v1/keys", None)
            .1
            .as_array()
            .unwrap()
            .len(),
        3
    );

    // Unknown routes and methods are client errors too.
    assert_eq!(call("GET", "/api/v1/nothing", None).0, 404);
    assert_eq!(call("PATCH", "/api/v1/keys", None).0, 405);
}

/// A raw request as a browser would send it: (status, body).
fn raw(addr: std::net::SocketAddr, head: &str, body: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    write!(
        s,
        "{head}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    let status = text.split(' ').nth(1).unwrap().parse().unwrap();
    (status, text)
}

/// docs/design.md, "The admin API": a web page cannot drive the API, even with the default empty token.
/// A cross-site form posts text/plain with a foreign Origin; DNS rebinding sends the
/// attacker's name as Host and would read the answer.
#[test]
fn a_web_page_cannot_drive_the_api() {
    let dir = temp_dir();
    let shoal = Setup::default().start(dir.path());
    let api_addr = shoal.api;
    let own = api_addr.to_string();
    let attack = r#"{"key": "AttackerAttackerAttackerAttacker", "valid_until": null}"#;
    let cases = [
        // A cross-site form: text/plain, the attacker's Origin, the API's own Host.
        (
            format!(
                "POST /api/v1/keys HTTP/1.1\r\nHost: {own}\r\nOrigin: http://evil.example\r\nContent-Type: text/plain"
            ),
            403,
        ),
        // The same without Origin (a privacy extension strips it): the body is not JSON.
        (
            format!("POST /api/v1/keys HTTP/1.1\r\nHost: {own}\r\nContent-Type: text/plain"),
            415,
        ),
        (
            format!(
                "POST /api/v1/keys HTTP/1.1\r\nHost: {own}\r\nContent-Type: application/x-www-form-urlencoded"
            ),
            415,
        ),
        // DNS rebinding: evil.example now resolves to 127.0.0.1.
        (
            format!(
                "POST /api/v1/keys HTTP/1.1\r\nHost: evil.example:{}\r\nOrigin: http://evil.example:{}\r\nContent-Type: application/json",
                api_addr.port(),
                api_addr.port()
            ),
            403,
        ),
        (
            format!(
                "POST /api/v1/keys HTTP/1.1\r\nHost: evil.example:{}\r\nContent-Type: application/json",
                api_addr.port()
            ),
            403,
        ),
        // An IP-literal page may post JSON only after a CORS preflight nobody answers, but
        // its Origin alone is refused too.
        (
            format!(
                "POST /api/v1/keys HTTP/1.1\r\nHost: {own}\r\nOrigin: http://203.0.113.9\r\nContent-Type: application/json"
            ),
            403,
        ),
    ];
    for (head, want) in &cases {
        let (status, text) = raw(api_addr, head, attack);
        assert_eq!(status, *want, "{head}: {text}");
    }
    for host in ["evil.example", "evil.example:80"] {
        let (status, text) = raw(
            api_addr,
            &format!("GET /api/v1/keys HTTP/1.1\r\nHost: {host}"),
            "",
        );
        assert_eq!(status, 403, "a rebound name reads nothing: {text}");
        assert!(!text.contains("Attacker"), "{text}");
    }
    let (status, keys) = api(api_addr, "GET", "/api/v1/keys", None, None);
    assert_eq!((status, keys), (200, json!([])), "no key was imported");
    // The API's own address, localhost and a same-origin JSON request still work.
    for host in [own.clone(), format!("localhost:{}", api_addr.port())] {
        let (status, text) = raw(
            api_addr,
            &format!(
                "POST /api/v1/keys HTTP/1.1\r\nHost: {host}\r\nOrigin: http://{host}\r\nContent-Type: application/json; charset=utf-8"
            ),
            "{}",
        );
        assert_eq!(status, 201, "{host}: {text}");
    }
    // /health and /metrics carry no secret and answer any Host (Prometheus scrapes by name).
    let (status, _) = raw(
        api_addr,
        "GET /metrics HTTP/1.1\r\nHost: monitor.internal",
        "",
    );
    assert_eq!(status, 200);
}

/// A name listed in api.hosts is accepted as Host; others still are not.
#[test]
fn names_in_api_hosts_are_accepted() {
    let dir = temp_dir();
    let shoal = Shoal::spawn({
        let cfg = Setup::default().write(dir.path());
        let text = std::fs::read_to_string(&cfg)
            .unwrap()
            .replace("[api]\n", "[api]\nhosts = [\"tracker.example.org\"]\n");
        std::fs::write(&cfg, text).unwrap();
        command(&["serve", "--config", cfg.to_str().unwrap()])
    });
    let port = shoal.api.port();
    for (host, want) in [
        (format!("tracker.example.org:{port}"), 200),
        (format!("TRACKER.example.org:{port}"), 200),
        (format!("other.example.org:{port}"), 403),
    ] {
        let (status, text) = raw(
            shoal.api,
            &format!("GET /api/v1/stats HTTP/1.1\r\nHost: {host}"),
            "",
        );
        assert_eq!(status, want, "{host}: {text}");
    }
}

/// An import and a removal of one key, racing: afterwards the tracker must enforce what the
/// database holds. Before, a revoked key could stay valid in memory: remove wrote the store
/// and the cache between import's store write and its cache write.
#[test]
fn racing_key_changes_leave_memory_as_the_database_says() {
    let dir = temp_dir();
    let shoal = Setup {
        mode: "private",
        ..Setup::default()
    }
    .start(dir.path());
    let url = format!("sqlite://{}/shoal.db", dir.path().display());
    let key = "RaceRaceRaceRaceRaceRaceRaceRace";
    let body = format!(r#"{{"key": "{key}", "valid_until": null}}"#);
    let (api_addr, http) = (shoal.api, shoal.http[0]);
    for round in 0..300 {
        let barrier = std::sync::Barrier::new(2);
        std::thread::scope(|s| {
            s.spawn(|| {
                barrier.wait();
                api(api_addr, "POST", "/api/v1/keys", None, Some(&body));
            });
            s.spawn(|| {
                barrier.wait();
                api(
                    api_addr,
                    "DELETE",
                    &format!("/api/v1/keys/{key}"),
                    None,
                    None,
                );
            });
        });
        let stored = common::stores::contents(&url)
            .keys
            .keys()
            .any(|k| k.to_string() == key);
        let query = started_query(hash(1), 1, 7000);
        let (_, answer) = http_get(http, &format!("/announce/{key}?{query}"));
        let accepted = bdecode(&answer).get("failure reason").is_none();
        assert_eq!(
            accepted, stored,
            "round {round}: memory and database disagree"
        );
    }
}
