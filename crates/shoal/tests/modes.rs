//! Each mode over real UDP and HTTP, with the whitelist and keys changed through the API.

mod common;

use std::net::SocketAddr;

use common::*;
use protocol::udp::{Request, Response};
use protocol::{AnnounceEvent, InfoHash};

const TOKEN: &str = "test-token-0123456789";

fn http_scrape_to(addr: SocketAddr, path: &str, ih: InfoHash) -> Result<(), String> {
    let (status, body) = http_get(
        addr,
        &format!("{path}?info_hash={}", protocol::percent::encode(&ih.0)),
    );
    assert_eq!(status, 200);
    let v = bdecode(&body);
    match v.get("failure reason") {
        Some(r) => Err(String::from_utf8(r.as_bytes().unwrap().to_vec()).unwrap()),
        None => Ok(()),
    }
}

fn udp_announce_with(
    server: SocketAddr,
    url_data: &str,
    ih: InfoHash,
    peer: u8,
) -> Result<(), String> {
    let mut c = UdpClient::new(server);
    let cid = c.connect();
    let mut req = announce_req(
        cid,
        99,
        ih,
        peer_id(peer),
        5000 + u16::from(peer),
        10,
        AnnounceEvent::Started,
    );
    req.url_data = url_data.as_bytes().to_vec();
    match c.request(&Request::Announce(req)) {
        Response::Announce { .. } => Ok(()),
        Response::Error { message, .. } => Err(String::from_utf8_lossy(&message).into_owned()),
        other => panic!("{other:?}"),
    }
}

fn add_key(shoal: &Shoal, body: &str) -> String {
    let (status, v) = api(shoal.api, "POST", "/api/v1/keys", Some(TOKEN), Some(body));
    assert_eq!(status, 201, "{v}");
    v["key"].as_str().unwrap().to_string()
}

#[test]
fn listed_mode_refuses_torrents_off_the_whitelist() {
    let dir = temp_dir();
    let shoal = Setup {
        mode: "listed",
        token: TOKEN,
        ..Setup::default()
    }
    .start(dir.path());
    let (udp, http) = (shoal.udp[0], shoal.http[0]);
    let (listed, other) = (hash(1), hash(2));

    let e = http_announce(http, "/announce", &started(listed, 1, 4001)).unwrap_err();
    assert!(
        e.contains(&listed.to_hex()) && e.contains("not whitelisted"),
        "{e}"
    );
    assert!(
        udp_announce_with(udp, "/announce", listed, 1)
            .unwrap_err()
            .contains("whitelist")
    );
    assert!(
        http_scrape_to(http, "/scrape", listed)
            .unwrap_err()
            .contains("whitelist")
    );
    assert!(udp_scrape(udp, listed).unwrap_err().contains("whitelist"));

    assert_eq!(
        api(
            shoal.api,
            "PUT",
            &format!("/api/v1/whitelist/{}", listed.to_hex()),
            Some(TOKEN),
            None
        )
        .0,
        201
    );
    http_announce(http, "/announce", &started(listed, 1, 4001)).unwrap();
    udp_announce_with(udp, "/announce", listed, 2).unwrap();
    http_scrape_to(http, "/scrape", listed).unwrap();
    udp_scrape(udp, listed).unwrap();
    assert!(
        http_announce(http, "/announce", &started(other, 1, 4001)).is_err(),
        "only the listed hash got in"
    );
    let st = udp_scrape(udp, listed).unwrap();
    assert_eq!(
        st.leechers, 2,
        "both announces of the listed torrent are in its swarm"
    );
    assert_eq!(st.seeders, 0);

    assert_eq!(
        api(
            shoal.api,
            "DELETE",
            &format!("/api/v1/whitelist/{}", listed.to_hex()),
            Some(TOKEN),
            None
        )
        .0,
        204
    );
    assert!(http_announce(http, "/announce", &started(listed, 1, 4001)).is_err());
    assert!(shoal.metric("shoal_errors_total{protocol=\"http\",kind=\"not_listed\"}") >= 3);
    assert!(shoal.metric("shoal_errors_total{protocol=\"udp\",kind=\"not_listed\"}") >= 2);
    assert_eq!(
        shoal.metric("shoal_failed_requests_total{protocol=\"http\",action=\"scrape\"}"),
        1
    );
    assert_eq!(
        shoal.metric("shoal_failed_requests_total{protocol=\"udp\",action=\"scrape\"}"),
        1
    );
    assert!(
        shoal.metric("shoal_failed_requests_total{protocol=\"http\",action=\"announce\"}") >= 3
    );
}

#[test]
fn private_mode_needs_a_valid_key_on_both_protocols() {
    let dir = temp_dir();
    let shoal = Setup {
        mode: "private",
        token: TOKEN,
        ..Setup::default()
    }
    .start(dir.path());
    let (udp, http) = (shoal.udp[0], shoal.http[0]);
    let ih = hash(3);

    let key = add_key(&shoal, "{}");
    assert_eq!(key.len(), 32);
    assert!(key.bytes().all(|b| b.is_ascii_alphanumeric()));
    http_announce(http, &format!("/announce/{key}"), &started(ih, 1, 4001)).unwrap();
    udp_announce_with(udp, &format!("/announce/{key}"), ih, 2).unwrap();
    http_scrape_to(http, &format!("/scrape/{key}"), ih).unwrap();

    let refused = |path: &str, udp_data: &str, want: &str| {
        let e = http_announce(http, path, &started(ih, 3, 4003)).unwrap_err();
        assert!(e.contains(want), "http {path}: {e}");
        let e = udp_announce_with(udp, udp_data, ih, 3).unwrap_err();
        assert!(e.contains(want), "udp {udp_data}: {e}");
    };
    refused("/announce", "/announce", "private tracker");
    refused("/announce/", "", "private tracker");
    refused("/announce/short", "/announce/short", "malformed key");
    refused(
        &format!("/announce/{}", "Z".repeat(32)),
        &format!("/announce/{}", "Z".repeat(32)),
        "unknown key",
    );

    // An imported key that has already expired is stored, and refused at announce.
    let expired = "ExpiredExpiredExpiredExpired0001";
    assert_eq!(
        add_key(
            &shoal,
            &format!("{{\"key\": \"{expired}\", \"valid_until\": 1000}}")
        ),
        expired
    );
    refused(
        &format!("/announce/{expired}"),
        &format!("/announce/{expired}?x=1"),
        "key expired",
    );
    // A lifetime in the future works now.
    let timed = add_key(&shoal, "{\"valid_for_secs\": 3600}");
    http_announce(http, &format!("/announce/{timed}"), &started(ih, 4, 4004)).unwrap();

    assert!(
        http_scrape_to(http, "/scrape", ih)
            .unwrap_err()
            .contains("private tracker")
    );
    // A UDP error is never longer than the request, so only the start of the reason fits.
    assert!(udp_scrape(udp, ih).unwrap_err().contains("private tracker"));

    assert_eq!(
        api(
            shoal.api,
            "DELETE",
            &format!("/api/v1/keys/{key}"),
            Some(TOKEN),
            None
        )
        .0,
        204
    );
    refused(
        &format!("/announce/{key}"),
        &format!("/announce/{key}"),
        "unknown key",
    );
    assert!(shoal.metric("shoal_errors_total{protocol=\"udp\",kind=\"expired_key\"}") >= 1);
    assert!(shoal.metric("shoal_errors_total{protocol=\"http\",kind=\"missing_key\"}") >= 2);
}

#[test]
fn private_listed_needs_key_and_whitelist_and_both_survive_a_restart() {
    let dir = temp_dir();
    let setup = Setup {
        mode: "private_listed",
        token: TOKEN,
        ..Setup::default()
    };
    let shoal = setup.start(dir.path());
    let (listed, other) = (hash(5), hash(6));
    let key = add_key(&shoal, "{}");
    api(
        shoal.api,
        "PUT",
        &format!("/api/v1/whitelist/{}", listed.to_hex()),
        Some(TOKEN),
        None,
    );
    let path = format!("/announce/{key}");
    http_announce(shoal.http[0], &path, &started(listed, 1, 4001)).unwrap();
    assert!(
        http_announce(shoal.http[0], &path, &started(other, 1, 4001))
            .unwrap_err()
            .contains("whitelist")
    );
    assert!(
        http_announce(shoal.http[0], "/announce", &started(listed, 1, 4001))
            .unwrap_err()
            .contains("private tracker")
    );
    let (status, _) = shoal.stop();
    assert!(status.success());

    // The store is the source of truth: a new process serves the same key and whitelist.
    let shoal = setup.start(dir.path());
    http_announce(shoal.http[1], &path, &started(listed, 2, 4002)).unwrap();
    udp_announce_with(shoal.udp[1], &path, listed, 3).unwrap();
    assert!(
        udp_announce_with(shoal.udp[1], &path, other, 3)
            .unwrap_err()
            .contains("whitelist")
    );
}

#[test]
fn public_mode_ignores_keys_in_the_path() {
    let dir = temp_dir();
    let shoal = Shoal::start(dir.path(), "");
    http_announce(
        shoal.http[0],
        "/announce/anything",
        &started(hash(7), 1, 4001),
    )
    .unwrap();
    udp_announce_with(shoal.udp[0], "/announce/anything", hash(7), 2).unwrap();
}
