//! The WebSocket (WebTorrent) tracker against the real binary: announces and offers,
//! answers only to their offerer, scrapes, error frames, limits, modes, and its peers kept
//! apart from UDP/HTTP peers while counted with them.

mod common;

use std::net::TcpStream;
use std::time::Duration;

use common::tls::*;
use common::ws::*;
use common::*;
use serde_json::json;

const H: [u8; 20] = [0xAB; 20];

fn ws_shoal(dir: &std::path::Path, ws_extra: &str, extra: &str) -> Shoal {
    Shoal::start(
        dir,
        &format!("[ws]\nbind = [\"127.0.0.1:0\"]\n{ws_extra}\n{extra}"),
    )
}

/// Whether nothing arrives within `ms` (the connection stays open).
fn no_frame_within(c: &mut WsClient<TcpStream>, ms: u64) -> bool {
    let tcp = c.ws.get_ref();
    tcp.set_read_timeout(Some(Duration::from_millis(ms)))
        .unwrap();
    let got = c.try_recv();
    c.ws.get_ref()
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    got.is_none()
}

fn metric(shoal: &Shoal, line_start: &str) -> u64 {
    let (_, body) = http_get(shoal.api, "/metrics");
    let text = String::from_utf8(body).unwrap();
    text.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .map_or(0, |v| v.parse().unwrap())
}

#[test]
fn an_offer_reaches_one_peer_and_its_answer_only_the_offerer() {
    let dir = temp_dir();
    let shoal = ws_shoal(dir.path(), "", "");
    let mut seeder = ws_connect(shoal.ws[0]);
    let r = seeder.announce(&H, &id(1), json!({"event": "completed", "left": 0}));
    let reply = seeder.recv();
    assert_eq!(reply["action"], "announce", "{reply} after {r}");
    assert_eq!(reply["info_hash"].as_str().unwrap(), latin1(&H));
    assert_eq!(
        (reply["complete"].as_u64(), reply["incomplete"].as_u64()),
        (Some(1), Some(0))
    );
    assert!(reply["interval"].as_u64().unwrap() > 0);

    let mut leecher = ws_connect(shoal.ws[0]);
    leecher.announce(
        &H,
        &id(2),
        json!({"event": "started", "left": null, "numwant": 2, "offers": offers(7, 2)}),
    );
    let reply = leecher.recv();
    assert_eq!(
        (reply["complete"].as_u64(), reply["incomplete"].as_u64()),
        (Some(1), Some(1))
    );

    // One seeder, two offers: the seeder gets exactly one, with the leecher's id.
    let offer = seeder.recv();
    assert_eq!(offer["action"], "announce");
    assert_eq!(offer["peer_id"].as_str().unwrap(), latin1(&id(2)));
    assert_eq!(offer["info_hash"].as_str().unwrap(), latin1(&H));
    assert!(
        offer["offer"]["sdp"]
            .as_str()
            .unwrap()
            .starts_with("v=0 offer 7/"),
        "{offer}"
    );
    assert!(
        no_frame_within(&mut seeder, 300),
        "a second offer to the same peer"
    );
    let offer_id = offer["offer_id"].as_str().unwrap().to_string();

    // A third connection that was not sent the offer cannot answer it.
    let mut thief = ws_connect(shoal.ws[0]);
    thief.announce(&H, &id(3), json!({"left": 0}));
    thief.recv();
    let answer = |to: &[u8; 20], from: &[u8; 20], oid: &str| {
        json!({"action": "announce", "info_hash": latin1(&H), "peer_id": latin1(from),
               "to_peer_id": latin1(to), "offer_id": oid, "answer": {"type": "answer", "sdp": "v=0 answer"}})
    };
    thief.send(&answer(&id(2), &id(3), &offer_id));
    assert!(
        no_frame_within(&mut leecher, 300),
        "an answer from a peer never offered to"
    );
    // Nor can the seeder answer as someone else.
    seeder.send(&answer(&id(2), &id(9), &offer_id));
    assert!(
        no_frame_within(&mut leecher, 300),
        "an answer under another peer id"
    );

    seeder.send(&answer(&id(2), &id(1), &offer_id));
    let got = leecher.recv();
    assert_eq!(got["action"], "announce");
    assert_eq!(got["answer"]["sdp"], "v=0 answer");
    assert_eq!(got["peer_id"].as_str().unwrap(), latin1(&id(1)));
    assert_eq!(got["offer_id"].as_str().unwrap(), offer_id);
    seeder.send(&answer(&id(2), &id(1), &offer_id));
    assert!(
        no_frame_within(&mut leecher, 300),
        "an offer is answered once"
    );
    assert!(metric(&shoal, "shoal_ws_offers_relayed_total") >= 1);
    assert_eq!(metric(&shoal, "shoal_ws_answers_relayed_total"), 1);
    assert!(
        metric(
            &shoal,
            "shoal_errors_total{protocol=\"ws\",kind=\"unknown_offer\"}"
        ) >= 3
    );
    assert_eq!(metric(&shoal, "shoal_ws_connections"), 3);
}

#[test]
fn offers_go_to_distinct_peers_and_expire_unanswered() {
    let dir = temp_dir();
    let shoal = ws_shoal(dir.path(), "offer_timeout_ms = 300", "");
    let mut seeders: Vec<_> = (1..=3)
        .map(|n| {
            let mut c = ws_connect(shoal.ws[0]);
            c.announce(&H, &id(n), json!({"left": 0}));
            c.recv();
            c
        })
        .collect();
    let mut leecher = ws_connect(shoal.ws[0]);
    leecher.announce(
        &H,
        &id(9),
        json!({"left": 100, "numwant": 5, "offers": offers(4, 5)}),
    );
    assert_eq!(leecher.recv()["complete"], 3);
    let mut ids: Vec<String> = seeders
        .iter_mut()
        .map(|s| s.recv()["offer_id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 3, "three peers, three different offers");
    std::thread::sleep(Duration::from_millis(500));
    seeders[0].send(&json!({"action": "announce", "info_hash": latin1(&H), "peer_id": latin1(&id(1)),
        "to_peer_id": latin1(&id(9)), "offer_id": ids[0], "answer": {"type": "answer", "sdp": "late"}}));
    assert!(
        no_frame_within(&mut leecher, 300),
        "an answer after the offer expired"
    );
}

#[test]
fn stopped_and_a_closed_socket_remove_peers_and_free_their_ids() {
    let dir = temp_dir();
    let shoal = ws_shoal(dir.path(), "", "");
    let mut a = ws_connect(shoal.ws[0]);
    a.announce(&H, &id(1), json!({"left": 0}));
    a.recv();
    let h2 = [0xCD; 20];
    a.announce(&h2, &id(1), json!({"left": 5}));
    a.recv();
    let mut b = ws_connect(shoal.ws[0]);
    b.announce(&H, &id(1), json!({"left": 0}));
    let refused = b.recv();
    assert_eq!(refused["action"], "announce", "{refused}");
    assert_eq!(refused["info_hash"].as_str().unwrap(), latin1(&H));
    assert!(
        refused["failure reason"]
            .as_str()
            .unwrap()
            .contains("in use")
    );
    let s = b.scrape(&[H, h2]);
    assert_eq!(s["files"][latin1(&H)]["complete"], 1);
    assert_eq!(s["files"][latin1(&h2)]["incomplete"], 1);

    a.announce(&h2, &id(1), json!({"event": "stopped", "left": 5}));
    a.recv();
    assert_eq!(b.scrape(&[h2])["files"][latin1(&h2)]["incomplete"], 0);
    drop(a);
    wait_until(
        "a closed socket's peers to leave",
        Duration::from_secs(5),
        || b.scrape(&[H])["files"][latin1(&H)]["complete"] == 0,
    );
    b.announce(&H, &id(1), json!({"left": 0}));
    assert_eq!(
        b.recv()["complete"],
        1,
        "the id is free once its connection closed"
    );
}

#[test]
fn every_byte_value_and_every_scrape_shape() {
    let dir = temp_dir();
    let shoal = ws_shoal(dir.path(), "", "");
    let mut c = ws_connect(shoal.ws[0]);
    let mut hashes = Vec::new();
    for start in (0..=255u8).step_by(20) {
        let mut h = [0u8; 20];
        for (i, b) in h.iter_mut().enumerate() {
            *b = start.wrapping_add(i as u8);
        }
        c.announce(&h, &h, json!({"left": 1}));
        let r = c.recv();
        assert_eq!(
            r["info_hash"].as_str().unwrap(),
            latin1(&h),
            "bytes from {start}"
        );
        assert_eq!(r["incomplete"], 1);
        hashes.push(h);
    }
    let all = c.scrape(&hashes);
    assert_eq!(all["action"], "scrape");
    for h in &hashes {
        assert_eq!(all["files"][latin1(h)]["incomplete"], 1);
    }
    c.send(&json!({"action": "scrape", "info_hash": latin1(&hashes[0])}));
    assert_eq!(
        c.recv()["files"].as_object().unwrap().len(),
        1,
        "one hash as a string"
    );
    let unknown = c.scrape(&[[0xEE; 20]]);
    assert_eq!(unknown["files"][latin1(&[0xEE; 20])]["complete"], 0);
}

#[test]
fn every_error_frame_names_its_action() {
    let dir = temp_dir();
    let shoal = ws_shoal(dir.path(), "", "");
    let mut c = ws_connect(shoal.ws[0]);
    for (frame, action) in [
        ("not json".to_string(), "announce"),
        (json!({"action": "dance"}).to_string(), "announce"),
        (json!({"action": "announce", "info_hash": "short", "peer_id": latin1(&id(1))}).to_string(), "announce"),
        (json!({"action": "scrape", "info_hash": ["short"]}).to_string(), "scrape"),
        (json!({"action": "announce", "info_hash": latin1(&H), "peer_id": latin1(&id(1)), "event": "paused"}).to_string(), "announce"),
    ] {
        c.send_text(&frame).unwrap();
        let r = c.recv();
        assert_eq!(r["action"], action, "{frame} -> {r}");
        assert!(r["failure reason"].is_string(), "{r}");
    }
    // The connection survived every one of them.
    c.announce(&H, &id(1), json!({"left": 0}));
    assert_eq!(c.recv()["complete"], 1);
    assert!(
        metric(
            &shoal,
            "shoal_errors_total{protocol=\"ws\",kind=\"not_json\"}"
        ) >= 1
    );
}

#[test]
fn websocket_peers_and_native_peers_are_counted_together_and_never_mixed() {
    let dir = temp_dir();
    let shoal = ws_shoal(dir.path(), "", "");
    let ih = protocol::InfoHash(H);
    http_announce(shoal.http[0], "/announce", &started(ih, 1, 6881)).unwrap();
    let mut c = ws_connect(shoal.ws[0]);
    c.announce(&H, &id(1), json!({"left": 0}));
    let r = c.recv();
    assert_eq!(
        (r["complete"].as_u64(), r["incomplete"].as_u64()),
        (Some(1), Some(1)),
        "{r}"
    );
    // The browser's offer finds no WebRTC peer: the HTTP peer is not one.
    let mut c2 = ws_connect(shoal.ws[0]);
    c2.announce(&H, &id(2), json!({"left": 9, "offers": offers(1, 3)}));
    c2.recv();
    let v = http_announce(shoal.http[0], "/announce", &started(ih, 3, 6883)).unwrap();
    assert_eq!(
        v.get("peers").unwrap().as_bytes().unwrap().len(),
        6,
        "only the HTTP peer"
    );
    let (_, body) = http_get(
        shoal.http[0],
        &format!("/scrape?info_hash={}", protocol::percent::encode(&H)),
    );
    let text = String::from_utf8_lossy(&body);
    assert!(
        text.contains("8:completei1e") && text.contains("10:incompletei3e"),
        "{text}"
    );
    let udp = udp_scrape(shoal.udp[0], ih).unwrap();
    assert_eq!(
        (udp.seeders, udp.leechers),
        (1, 3),
        "one set of numbers for every protocol"
    );
}

#[test]
fn a_completed_download_is_counted_and_survives_a_restart() {
    let dir = temp_dir();
    let shoal = ws_shoal(dir.path(), "", "");
    let mut c = ws_connect(shoal.ws[0]);
    c.announce(&H, &id(1), json!({"event": "started", "left": 10}));
    c.recv();
    c.announce(&H, &id(1), json!({"event": "completed", "left": 0}));
    c.recv();
    assert_eq!(c.scrape(&[H])["files"][latin1(&H)]["downloaded"], 1);
    // A seeder's first announce saying completed downloaded nothing here.
    let mut s = ws_connect(shoal.ws[0]);
    s.announce(&H, &id(2), json!({"event": "completed", "left": 0}));
    s.recv();
    assert_eq!(s.scrape(&[H])["files"][latin1(&H)]["downloaded"], 1);
    drop((c, s));
    let (status, _) = shoal.stop();
    assert!(status.success());
    let again = ws_shoal(dir.path(), "", "");
    let mut c = ws_connect(again.ws[0]);
    assert_eq!(c.scrape(&[H])["files"][latin1(&H)]["downloaded"], 1);
}

#[test]
fn private_and_listed_modes_hold_for_websocket_peers() {
    let dir = temp_dir();
    let token = "test-token-0123456789";
    let shoal = Setup {
        extra: "[ws]\nbind = [\"127.0.0.1:0\"]\n",
        ..Setup::mode("private_listed", token)
    }
    .start(dir.path());
    let (status, v) = api(shoal.api, "POST", "/api/v1/keys", Some(token), Some("{}"));
    assert_eq!(status, 201, "{v}");
    let key = v["key"].as_str().unwrap().to_string();
    let mut keyed = ws_open(shoal.ws[0], &format!("/announce/{key}"), &[]).unwrap();
    keyed.announce(&H, &id(1), json!({"left": 0}));
    let r = keyed.recv();
    assert!(
        r["failure reason"].as_str().unwrap().contains("not"),
        "unlisted: {r}"
    );
    assert_eq!(r["action"], "announce");
    let hex: String = H.iter().map(|b| format!("{b:02x}")).collect();
    let (status, _) = api(
        shoal.api,
        "PUT",
        &format!("/api/v1/whitelist/{hex}"),
        Some(token),
        None,
    );
    assert_eq!(status, 201);
    keyed.announce(&H, &id(1), json!({"left": 0}));
    assert_eq!(keyed.recv()["complete"], 1);
    let mut keyless = ws_connect(shoal.ws[0]);
    keyless.announce(&H, &id(2), json!({"left": 0}));
    let r = keyless.recv();
    assert!(r["failure reason"].is_string(), "no key: {r}");
    let mut wrong = ws_open(
        shoal.ws[0],
        "/announce/wrongkeywrongkeywrongkeywrongkey",
        &[],
    )
    .unwrap();
    wrong.announce(&H, &id(3), json!({"left": 0}));
    assert!(wrong.recv()["failure reason"].is_string());
}

#[test]
fn origins_paths_and_connection_limits() {
    let dir = temp_dir();
    let shoal = ws_shoal(
        dir.path(),
        "allowed_origins = [\"http://127.0.0.1:8080\"]\nmax_connections_per_ip = 3\nmax_torrents_per_connection = 2",
        "",
    );
    assert!(ws_open(shoal.ws[0], "/", &[("Origin", "http://127.0.0.1:8080")]).is_ok());
    assert!(
        ws_open(shoal.ws[0], "/announce", &[]).is_ok(),
        "a program sends no Origin"
    );
    let refused = ws_open(
        shoal.ws[0],
        "/announce",
        &[("Origin", "https://evil.example")],
    );
    assert!(
        matches!(&refused, Err(tokio_tungstenite::tungstenite::Error::Http(r)) if r.status() == 403),
        "{:?}",
        refused.err()
    );
    assert!(ws_open(shoal.ws[0], "/elsewhere/deep", &[]).is_err());
    let mut held: Vec<_> = (0..3).map(|_| ws_connect(shoal.ws[0])).collect();
    wait_until("the first two to close", Duration::from_secs(5), || {
        metric(&shoal, "shoal_ws_connections") == 3
    });
    let mut fourth = ws_connect(shoal.ws[0]);
    assert!(
        fourth.closed_within(Duration::from_secs(3)),
        "a fourth from one address"
    );
    let c = &mut held[0];
    for (n, h) in [[1u8; 20], [2; 20]].iter().enumerate() {
        c.announce(h, &id(n as u8), json!({"left": 0}));
        assert_eq!(c.recv()["complete"], 1);
    }
    c.announce(&[3; 20], &id(3), json!({"left": 0}));
    let r = c.recv();
    assert!(
        r["failure reason"]
            .as_str()
            .unwrap()
            .contains("too many torrents"),
        "{r}"
    );
    assert!(
        metric(
            &shoal,
            "shoal_errors_total{protocol=\"ws\",kind=\"bad_origin\"}"
        ) >= 1
    );
    assert!(
        metric(
            &shoal,
            "shoal_errors_total{protocol=\"ws\",kind=\"too_many_connections_per_ip\"}"
        ) >= 1
    );
}

#[test]
fn huge_frames_and_idle_connections_are_cut() {
    let dir = temp_dir();
    let shoal = ws_shoal(
        dir.path(),
        "max_message_bytes = 4096\nidle_timeout_ms = 1500",
        "[announce]\ninterval = 1\nmin_interval = 1\n",
    );
    let mut big = ws_connect(shoal.ws[0]);
    let _ = big.send_text(&"x".repeat(10_000));
    assert!(
        big.closed_within(Duration::from_secs(3)),
        "a frame past max_message_bytes"
    );
    let mut idle = ws_connect(shoal.ws[0]);
    assert!(
        idle.closed_within(Duration::from_secs(5)),
        "an idle connection"
    );
    let mut busy = ws_connect(shoal.ws[0]);
    for _ in 0..4 {
        busy.announce(&H, &id(1), json!({"left": 0}));
        assert_eq!(busy.recv()["action"], "announce");
        std::thread::sleep(Duration::from_millis(600));
    }
    assert!(
        metric(
            &shoal,
            "shoal_errors_total{protocol=\"ws\",kind=\"frame_too_large\"}"
        ) >= 1
    );
    assert!(
        metric(
            &shoal,
            "shoal_errors_total{protocol=\"ws\",kind=\"idle_timeout\"}"
        ) >= 1
    );
}

#[test]
fn a_slow_reader_loses_frames_not_the_tracker() {
    let dir = temp_dir();
    let shoal = ws_shoal(
        dir.path(),
        "max_queued_frames = 4\nwrite_timeout_ms = 1000",
        "",
    );
    // A seeder that never reads, with small socket buffers, is sent offer after offer.
    let tcp = TcpStream::connect(shoal.ws[0]).unwrap();
    let sock = socket2::SockRef::from(&tcp);
    sock.set_recv_buffer_size(4096).unwrap();
    let mut deaf = ws_over(tcp, shoal.ws[0], "/announce", &[]).unwrap();
    deaf.announce(&H, &id(1), json!({"left": 0}));
    let mut leecher = ws_connect(shoal.ws[0]);
    let big_offer = |i: u16| {
        let mut oid = [b'o'; 20];
        oid[18..].copy_from_slice(&i.to_be_bytes());
        json!([{"offer_id": latin1(&oid), "offer": {"type": "offer", "sdp": "s".repeat(30_000)}}])
    };
    let cut = || {
        metric(&shoal, "shoal_ws_relays_dropped_total") > 0
            || metric(
                &shoal,
                "shoal_errors_total{protocol=\"ws\",kind=\"slow_reader\"}",
            ) > 0
    };
    // Bounded: 2000 offers of 30 kB are 60 MB, far past any socket buffer.
    let mut sent = 0;
    while sent < 2000 && !(sent % 50 == 0 && sent > 0 && cut()) {
        leecher.announce(&H, &id(2), json!({"left": 9, "offers": big_offer(sent)}));
        assert_eq!(
            leecher.recv()["action"],
            "announce",
            "the leecher is answered at once"
        );
        sent += 1;
    }
    wait_until(
        "the deaf reader to be cut or dropped from",
        Duration::from_secs(10),
        cut,
    );
    drop(deaf);
    let mut fresh = ws_connect(shoal.ws[0]);
    fresh.announce(&[9; 20], &id(3), json!({"left": 0}));
    assert_eq!(fresh.recv()["complete"], 1);
}

#[test]
fn wss_serves_the_same_frames_and_takes_a_new_certificate_without_a_restart() {
    let dir = temp_dir();
    let certs = certificates(&dir.path().join("a"));
    let shoal = ws_shoal(&subdir(dir.path(), "run"), &tls_config(&certs), "");
    let client = client_config(&[&certs]);
    let addr = shoal.ws[0];
    let mut c = ws_over(tls_connect(addr, &client), addr, "/announce", &[]).unwrap();
    c.announce(&H, &id(1), json!({"left": 0}));
    assert_eq!(c.recv()["complete"], 1);
    let plain = TcpStream::connect(addr).unwrap();
    plain
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    assert!(
        ws_over(plain, addr, "/announce", &[]).is_err(),
        "no plain WebSocket on wss"
    );

    let next = certificates(&dir.path().join("b"));
    std::fs::copy(next.join("server.key"), certs.join("server.key")).unwrap();
    std::fs::copy(next.join("server.pem"), certs.join("server.pem")).unwrap();
    let only_new = client_config(&[&next]);
    wait_until("the new certificate on wss", Duration::from_secs(8), || {
        let tcp = TcpStream::connect(addr).unwrap();
        let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
        let conn = rustls::ClientConnection::new(only_new.clone(), name).unwrap();
        ws_over(rustls::StreamOwned::new(conn, tcp), addr, "/", &[]).is_ok()
    });
    c.announce(&H, &id(1), json!({"left": 0}));
    assert_eq!(
        c.recv()["complete"],
        1,
        "the connection opened before keeps working"
    );
}

#[test]
fn a_connection_that_never_upgrades_is_closed_at_the_deadline() {
    use std::io::Read;
    let dir = temp_dir();
    let shoal = ws_shoal(dir.path(), "handshake_timeout_ms = 500", "");
    let mut silent = TcpStream::connect(shoal.ws[0]).unwrap();
    silent
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let started = std::time::Instant::now();
    let n = silent.read(&mut [0u8; 64]).unwrap_or(0);
    assert_eq!(n, 0, "closed without a word");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert!(
        metric(
            &shoal,
            "shoal_errors_total{protocol=\"ws\",kind=\"head_timeout\"}"
        ) >= 1
    );
}

#[test]
fn two_peers_of_one_torrent_on_one_pooled_socket_are_two_peers() {
    let dir = temp_dir();
    let shoal = ws_shoal(dir.path(), "", "");
    let mut pooled = ws_connect(shoal.ws[0]);
    pooled.announce(&H, &id(1), json!({"left": 10}));
    assert_eq!(pooled.recv()["incomplete"], 1);
    pooled.announce(&H, &id(2), json!({"event": "completed"}));
    let r = pooled.recv();
    assert_eq!(
        (r["complete"].as_u64(), r["incomplete"].as_u64()),
        (Some(1), Some(1)),
        "{r}"
    );
    // The leecher's offer reaches the seeder on the same socket.
    pooled.announce(&H, &id(1), json!({"left": 10, "offers": offers(5, 1)}));
    let mut frames = [pooled.recv(), pooled.recv()];
    frames.sort_by_key(|f| f.get("offer").is_some());
    assert_eq!(frames[0]["complete"], 1);
    assert_eq!(frames[1]["peer_id"].as_str().unwrap(), latin1(&id(1)));
    drop(pooled);
    let mut other = ws_connect(shoal.ws[0]);
    wait_until(
        "both peers of the closed socket to leave",
        Duration::from_secs(5),
        || {
            let f = &other.scrape(&[H])["files"][latin1(&H)];
            f["complete"] == 0 && f["incomplete"] == 0
        },
    );
}

/// A TCP connection to `to` from 127.0.0.`n` (another client address on loopback).
fn tcp_from(n: u8, to: std::net::SocketAddr, recv_buffer: Option<usize>) -> TcpStream {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    if let Some(b) = recv_buffer {
        s.set_recv_buffer_size(b).unwrap();
    }
    s.bind(&std::net::SocketAddr::from(([127, 0, 0, n], 0)).into())
        .unwrap();
    s.connect(&to.into()).unwrap();
    let t = TcpStream::from(s);
    t.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    t
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .unwrap()
        .parse()
        .unwrap()
}

/// Hostile clients from one address: hundreds of idle sockets, a flood of large offers to
/// a peer that never reads. The honest client from another address is served, and the
/// node's memory stays within what the limits allow.
#[test]
fn hostile_clients_leave_honest_ones_served_and_memory_bounded() {
    let dir = temp_dir();
    let shoal = ws_shoal(
        dir.path(),
        "max_connections_per_ip = 50\nmax_queued_bytes = 262144\nwrite_timeout_ms = 60000",
        "",
    );
    let before = rss_kib(shoal.pid());
    // 400 idle upgraded sockets from 127.0.0.1: at most 50 are held.
    let idle: Vec<_> = (0..400)
        .filter_map(|_| ws_open(shoal.ws[0], "/", &[]).ok())
        .collect();
    wait_until(
        "the idle sockets past the cap to be closed",
        Duration::from_secs(10),
        || metric(&shoal, "shoal_ws_connections") <= 50,
    );
    assert!(
        metric(
            &shoal,
            "shoal_errors_total{protocol=\"ws\",kind=\"too_many_connections_per_ip\"}"
        ) >= 350
    );
    // A peer that never reads, with a small receive buffer, sent 60 MB of offers.
    let mut deaf = ws_over(tcp_from(3, shoal.ws[0], Some(4096)), shoal.ws[0], "/", &[]).unwrap();
    deaf.announce(&H, &id(1), json!({"left": 0}));
    let mut flooder = ws_over(tcp_from(4, shoal.ws[0], None), shoal.ws[0], "/", &[]).unwrap();
    for i in 0..2000u16 {
        let mut oid = [b'f'; 20];
        oid[18..].copy_from_slice(&i.to_be_bytes());
        let o = json!([{"offer_id": latin1(&oid), "offer": {"type": "offer", "sdp": "s".repeat(30_000)}}]);
        flooder.announce(&H, &id(2), json!({"left": 9, "offers": o}));
        flooder.recv();
    }
    assert!(
        metric(&shoal, "shoal_ws_relays_dropped_total") > 1000,
        "the deaf peer's queue is bounded"
    );
    // The honest client, from another address, is served at once.
    let mut honest = ws_over(tcp_from(2, shoal.ws[0], None), shoal.ws[0], "/", &[]).unwrap();
    honest.announce(&[7; 20], &id(3), json!({"left": 0}));
    assert_eq!(honest.recv()["complete"], 1);
    let grown = rss_kib(shoal.pid()).saturating_sub(before);
    // 50 idle sockets and one 256 KiB queue; 60 MB went past it. Allow the allocator slack.
    assert!(grown < 40 * 1024, "RSS grew {grown} KiB");
    drop((idle, deaf));
}

#[test]
fn behind_a_trusted_proxy_the_forwarded_client_is_the_one_limited() {
    let dir = temp_dir();
    let shoal = Setup {
        http_extra: "trusted_proxies = [\"127.0.0.1/32\"]",
        extra: "[ws]\nbind = [\"127.0.0.1:0\"]\nmax_connections_per_ip = 2\n",
        ..Setup::default()
    }
    .start(dir.path());
    let via = |client: &str| ws_open(shoal.ws[0], "/", &[("X-Forwarded-For", client)]).unwrap();
    let _a = [via("203.0.113.1"), via("203.0.113.1")];
    // The upgrade answers before the node counts the socket: wait until both are held.
    wait_until("both sockets to be held", Duration::from_secs(5), || {
        metric(&shoal, "shoal_ws_connections") == 2
    });
    let mut third = via("203.0.113.1");
    assert!(
        third.closed_within(Duration::from_secs(3)),
        "a third from one forwarded client"
    );
    let mut other = via("203.0.113.2");
    other.announce(&H, &id(1), json!({"left": 0}));
    assert_eq!(
        other.recv()["complete"],
        1,
        "another forwarded client is its own"
    );
    // From an address that is not a trusted proxy, the header names nobody.
    let mut direct = ws_over(
        tcp_from(9, shoal.ws[0], None),
        shoal.ws[0],
        "/",
        &[("X-Forwarded-For", "203.0.113.1")],
    )
    .unwrap();
    direct.announce(&H, &id(2), json!({"left": 0}));
    assert_eq!(direct.recv()["complete"], 2);
}
