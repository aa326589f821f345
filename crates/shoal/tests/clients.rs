//! Client rules (`[clients]`) on the real binary: one suite for every protocol (UDP, HTTP,
//! WebSocket), each rule refused and accepted with the rule named, counted per rule, and
//! changed by SIGHUP.

mod common;

use common::ws::*;
use common::*;
use protocol::udp::Response;
use protocol::{AnnounceEvent, PeerId};
use serde_json::json;

const RULES: &str = "[clients]\nallow = [\"-qB\", \"-TR\"]\ndeny = [\"-qB4520-\", \"-XL\"]\n";

fn peer(prefix: &str, n: u8) -> PeerId {
    let mut b = [b'0' + n % 10; 20];
    b[..prefix.len()].copy_from_slice(prefix.as_bytes());
    PeerId(b)
}

#[derive(Clone, Copy, Debug)]
enum Via {
    Udp,
    Http,
    Ws,
}

/// One announce from a client whose peer id starts with `prefix`: Ok, or the reason the
/// tracker gave.
fn announce(shoal: &Shoal, via: Via, prefix: &str, n: u8) -> Result<(), String> {
    let id = peer(prefix, n);
    let ih = hash(5);
    match via {
        Via::Udp => {
            let mut c = UdpClient::new(shoal.udp[0]);
            let cid = c.connect();
            let req = announce_req(
                cid,
                9,
                ih,
                id,
                6000 + u16::from(n),
                10,
                AnnounceEvent::Started,
            );
            match c.request(&protocol::udp::Request::Announce(req)) {
                Response::Announce { .. } => Ok(()),
                Response::Error { message, .. } => Err(String::from_utf8(message).unwrap()),
                other => panic!("{other:?}"),
            }
        }
        Via::Http => {
            let mut req = started(ih, n, 6000 + u16::from(n));
            req.peer_id = id;
            http_announce(shoal.http[0], "/announce", &req).map(drop)
        }
        Via::Ws => {
            let mut c = ws_connect(shoal.ws[0]);
            c.announce(&ih.0, &id.0, json!({"event": "started", "left": 10}));
            let reply = c.recv();
            assert_eq!(reply["action"], "announce", "{reply}");
            match reply["failure reason"].as_str() {
                Some(why) => Err(why.to_string()),
                None => Ok(()),
            }
        }
    }
}

#[test]
fn client_rules_refuse_and_accept_by_peer_id_prefix_on_every_protocol() {
    let dir = temp_dir();
    let shoal = Shoal::start(
        dir.path(),
        &format!("[ws]\nbind = [\"127.0.0.1:0\"]\n{RULES}"),
    );
    for via in [Via::Udp, Via::Http, Via::Ws] {
        assert_eq!(announce(&shoal, via, "-qB5010-", 1), Ok(()), "{via:?}");
        assert_eq!(announce(&shoal, via, "-TR4060-", 2), Ok(()), "{via:?}");
        assert_eq!(
            announce(&shoal, via, "-qB4520-", 3),
            Err("client refused by rule deny -qB4520-".into()),
            "{via:?}"
        );
        assert_eq!(
            announce(&shoal, via, "-XL0012-", 4),
            Err("client refused by rule deny -XL".into()),
            "{via:?}"
        );
        assert_eq!(
            announce(&shoal, via, "M7-2-2--", 5),
            Err("client refused: not on the allow list".into()),
            "{via:?}"
        );
    }
    for (rule, n) in [("deny:-qB4520-", 3), ("deny:-XL", 3), ("allow", 3)] {
        let series = format!("shoal_client_refusals_total{{rule=\"{rule}\"}}");
        assert_eq!(shoal.metric(&series), n, "{series}");
    }
    for p in ["udp", "http", "ws"] {
        let series = format!("shoal_errors_total{{protocol=\"{p}\",kind=\"client_refused\"}}");
        assert_eq!(shoal.metric(&series), 3, "{series}");
    }
}

#[test]
fn sighup_puts_the_configured_rules_in_force() {
    let dir = temp_dir();
    let shoal = Shoal::start(dir.path(), "");
    assert_eq!(announce(&shoal, Via::Udp, "-XL0012-", 1), Ok(()));
    let cfg = dir.path().join("shoal.toml");
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(&cfg, format!("{text}\n[clients]\ndeny = [\"-XL\"]\n")).unwrap();
    shoal.signal("HUP");
    wait_until(
        "the rule to be in force",
        std::time::Duration::from_secs(5),
        || announce(&shoal, Via::Http, "-XL0012-", 2).is_err(),
    );
    assert_eq!(
        announce(&shoal, Via::Udp, "-XL0012-", 3),
        Err("client refused by rule deny -XL".into())
    );
    // A file that no longer loads keeps the rules in force.
    std::fs::write(
        &cfg,
        format!("{text}\n[clients]\ndeny = [\"bad prefix\"]\n"),
    )
    .unwrap();
    shoal.signal("HUP");
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(announce(&shoal, Via::Udp, "-XL0012-", 4).is_err());
    let (status, log) = shoal.stop();
    assert!(status.success());
    assert!(
        log.iter()
            .any(|l| l.contains("client rules in force stay") && l.contains("clients.deny")),
        "{log:?}"
    );
}

const TOKEN: &str = "clients-token-0123456789";

/// `shoal clients allow|deny|remove|list` through the admin API: stored rules are in force
/// at once, kept across a restart (the store), listed beside the configuration's.
#[test]
fn the_admin_api_and_commands_change_the_stored_rules() {
    let dir = temp_dir();
    let setup = Setup {
        token: TOKEN,
        extra: "[clients]\ndeny = [\"-XL\"]\n",
        ..Setup::default()
    };
    let shoal = setup.start(dir.path());
    let api_url = format!("http://{}", shoal.api);
    let run = |args: &[&str]| {
        let out = command(args)
            .args(["--api", &api_url])
            .env("SHOAL_API__TOKEN", TOKEN)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    };
    let (ok, text) = run(&["clients", "deny", "M7-2-2--"]);
    assert!(ok && text.contains("deny M7-2-2-- (added)"), "{text}");
    assert_eq!(
        announce(&shoal, Via::Http, "M7-2-2--", 1),
        Err("client refused by rule deny M7-2-2--".into())
    );
    // A prefix with characters a URL must escape.
    let (ok, text) = run(&["clients", "allow", "-q/B%"]);
    assert!(ok, "{text}");
    assert_eq!(
        announce(&shoal, Via::Udp, "-TR4060-", 2),
        Err("client refused: not on the allow list".into())
    );
    assert_eq!(announce(&shoal, Via::Udp, "-q/B%0-", 3), Ok(()));
    let (ok, text) = run(&["clients", "list"]);
    assert!(ok, "{text}");
    for line in [
        "deny -XL (configuration)",
        "deny M7-2-2-- (since",
        "allow -q/B% (since",
    ] {
        assert!(text.contains(line), "{line} in {text}");
    }
    // The same prefix again changes its kind.
    let (ok, text) = run(&["clients", "allow", "M7-2-2--"]);
    assert!(ok && text.contains("allow M7-2-2-- (now)"), "{text}");
    let (ok, _) = run(&["clients", "remove", "-q/B%"]);
    assert!(ok);
    let (ok, text) = run(&["clients", "remove", "-q/B%"]);
    assert!(!ok && text.contains("404"), "{text}");
    let (ok, text) = run(&["clients", "deny", ".."]);
    assert!(!ok && text.contains("invalid value"), "{text}");
    let (status, body) = api(
        shoal.api,
        "PUT",
        "/api/v1/clients/-qB",
        Some(TOKEN),
        Some("{\"kind\":\"maybe\"}"),
    );
    assert_eq!(status, 400, "{body}");

    // Stored rules live in the database: a restart keeps them.
    drop(shoal);
    let shoal = setup.start(dir.path());
    let (_, v) = api(shoal.api, "GET", "/api/v1/clients", Some(TOKEN), None);
    assert_eq!(v["config"]["deny"], serde_json::json!(["-XL"]), "{v}");
    let stored: Vec<(String, String)> = v["stored"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["prefix"].as_str().unwrap().into(),
                r["kind"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(stored, vec![("M7-2-2--".to_string(), "allow".to_string())]);
    assert_eq!(announce(&shoal, Via::Http, "M7-2-2--", 5), Ok(()));
    assert_eq!(
        announce(&shoal, Via::Http, "-TR4060-", 6),
        Err("client refused: not on the allow list".into())
    );
}
