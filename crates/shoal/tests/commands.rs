//! `shoal check` against good, dead, private and HTTPS trackers, and the admin commands
//! (`shoal whitelist`, `shoal keys`) against a running Shoal.

mod common;

use std::process::Output;

use common::*;

const TOKEN: &str = "commands-token-0123456789";

fn shoal_cmd(args: &[&str]) -> Output {
    command(args).output().unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn json(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(o)))
}

#[test]
fn check_a_good_tracker_over_udp_and_http() {
    let dir = temp_dir();
    let shoal = Shoal::start(dir.path(), "");
    let udp = format!("udp://{}/announce", shoal.udp[0]);
    let http = format!("http://{}/announce", shoal.http[0]);
    let ih = hash(7).to_hex();
    let out = shoal_cmd(&["check", &udp, &http, "--info-hash", &ih]);
    assert!(out.status.success(), "{}", text(&out));
    let t = text(&out);
    for step in ["connect", "announce", "scrape", "stop"] {
        assert!(t.contains(&format!("ok   {step}")), "{t}");
    }
    assert!(!t.contains("FAIL"), "{t}");
    // The tracker really saw it: two announces and two stops.
    assert_eq!(
        shoal.metric("shoal_requests_total{protocol=\"udp\",action=\"announce\"}"),
        2
    );
    assert_eq!(
        shoal.metric("shoal_requests_total{protocol=\"http\",action=\"announce\"}"),
        2
    );

    let out = shoal_cmd(&["check", &udp, "--json"]);
    let v = json(&out);
    assert_eq!(v[0]["ok"], true, "{v}");
    assert_eq!(v[0]["steps"].as_array().unwrap().len(), 5, "{v}");
    assert_eq!(v[0]["info_hash"].as_str().unwrap().len(), 40);
}

#[test]
fn check_a_dead_tracker_fails() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let udp = format!("udp://{}/announce", silent.local_addr().unwrap());
    let http = format!("http://{closed}/announce");
    let out = shoal_cmd(&["check", &udp, &http, "--json"]);
    assert!(!out.status.success());
    let v = json(&out);
    assert_eq!(
        (v[0]["ok"].as_bool(), v[1]["ok"].as_bool()),
        (Some(false), Some(false)),
        "{v}"
    );
    assert!(
        v[0]["steps"][1]["detail"]
            .as_str()
            .unwrap()
            .contains("no answer"),
        "{v}"
    );
}

#[test]
fn check_a_private_tracker_with_and_without_a_key() {
    let dir = temp_dir();
    let shoal = Setup::mode("private", TOKEN).start(dir.path());
    let (_, v) = api(shoal.api, "POST", "/api/v1/keys", Some(TOKEN), Some("{}"));
    let key = v["key"].as_str().unwrap();
    let http = format!("http://{}/announce", shoal.http[0]);
    let out = shoal_cmd(&["check", &http]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("FAIL announce") && text(&out).contains("refused"),
        "{}",
        text(&out)
    );
    let out = shoal_cmd(&["check", &http, "--key", key]);
    assert!(out.status.success(), "{}", text(&out));
}

#[test]
fn check_https_with_the_tracker_ca() {
    let dir = temp_dir();
    let certs = subdir(dir.path(), "certs");
    testkit::make_certificates(&certs).unwrap();
    let tls = format!(
        "tls_cert_path = \"{}\"\ntls_key_path = \"{}\"\n",
        certs.join("server.pem").display(),
        certs.join("server.key").display()
    );
    let shoal = Setup {
        http_extra: &tls,
        ..Setup::default()
    }
    .start(&subdir(dir.path(), "run"));
    let url = format!("https://{}/announce", shoal.http[0]);
    let ca = certs.join("ca.pem");
    let out = shoal_cmd(&["check", &url, "--ca-cert", ca.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    // Without the CA the certificate is not trusted.
    let out = shoal_cmd(&["check", &url]);
    assert!(!out.status.success());
    assert!(
        text(&out).to_lowercase().contains("certificate"),
        "{}",
        text(&out)
    );
}

#[test]
fn admin_commands_change_a_running_tracker() {
    let dir = temp_dir();
    let shoal = Setup::mode("private_listed", TOKEN).start(dir.path());
    let api_url = format!("http://{}", shoal.api);
    let run = |args: &[&str], token: &str| {
        let mut c = command(args);
        c.args(["--api", &api_url]).env("SHOAL_API__TOKEN", token);
        c.output().unwrap()
    };
    let ih = hash(3).to_hex();
    let out = run(&["whitelist", "add", &ih], TOKEN);
    assert!(
        out.status.success() && text(&out).contains("listed"),
        "{}",
        text(&out)
    );
    let out = run(&["whitelist", "list"], TOKEN);
    assert!(text(&out).contains(&ih), "{}", text(&out));

    let out = run(&["keys", "add", "--valid-for", "600"], TOKEN);
    assert!(out.status.success(), "{}", text(&out));
    let made = text(&out).split_whitespace().next().unwrap().to_string();
    assert_eq!(made.len(), 32);
    let own = "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345";
    let out = run(
        &["keys", "import", own, "--valid-until", "4000000000"],
        TOKEN,
    );
    assert!(
        out.status.success() && text(&out).contains("4000000000"),
        "{}",
        text(&out)
    );
    let out = run(&["keys", "list"], TOKEN);
    assert!(
        text(&out).contains(&made) && text(&out).contains(own),
        "{}",
        text(&out)
    );

    // The tracker enforces what the commands changed.
    let announce = format!("/announce/{own}");
    assert!(http_announce(shoal.http[0], &announce, &started(hash(3), 1, 6001)).is_ok());
    assert!(run(&["keys", "remove", own], TOKEN).status.success());
    assert!(http_announce(shoal.http[0], &announce, &started(hash(3), 1, 6001)).is_err());
    assert!(run(&["whitelist", "remove", &ih], TOKEN).status.success());
    let out = run(&["whitelist", "list"], TOKEN);
    assert!(!text(&out).contains(&ih), "{}", text(&out));

    // Failures exit non-zero with the API's reason.
    let out = run(&["whitelist", "remove", &ih], TOKEN);
    assert!(
        !out.status.success()
            && text(&out).contains("404")
            && text(&out).contains("not on the whitelist"),
        "{}",
        text(&out)
    );
    let out = run(&["keys", "list"], "wrong-token-000000000");
    assert!(
        !out.status.success() && text(&out).contains("401"),
        "{}",
        text(&out)
    );
}

/// A hostile "tracker" on loopback TCP that runs `serve` on every connection, for 15 s.
fn hostile_http(serve: fn(std::net::TcpStream)) -> std::net::SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        l.set_nonblocking(false).unwrap();
        for s in l.incoming().flatten() {
            std::thread::spawn(move || serve(s));
        }
    });
    addr
}

/// `shoal check` trusts no tracker: an endless answer is cut at 1 MiB, a trickle of headers
/// ends at the 10 s deadline, a UDP answer with another transaction id is not an answer,
/// and a closed UDP port is named as such at once.
#[test]
fn check_bounds_what_a_hostile_tracker_can_make_it_do() {
    use std::io::{Read, Write};
    use std::time::{Duration, Instant};
    let endless = hostile_http(|mut s| {
        let mut b = [0u8; 1024];
        let _ = s.read(&mut b);
        let _ = s.write_all(b"HTTP/1.1 200 OK\r\n\r\n");
        let chunk = vec![b'x'; 64 * 1024];
        // At most 64 MiB, so the test's own thread stops too.
        for _ in 0..1024 {
            if s.write_all(&chunk).is_err() {
                return;
            }
        }
    });
    let out = shoal_cmd(&["check", &format!("http://{endless}/announce"), "--json"]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("larger than 1048576 bytes"),
        "{}",
        text(&out)
    );

    let trickle = hostile_http(|mut s| {
        let mut b = [0u8; 1024];
        let _ = s.read(&mut b);
        for _ in 0..30 {
            if s.write_all(b"X").is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    });
    let started = Instant::now();
    let out = shoal_cmd(&["check", &format!("http://{trickle}/announce"), "--json"]);
    let took = started.elapsed();
    assert!(!out.status.success());
    assert!(
        text(&out).contains("no whole answer within 10s"),
        "{}",
        text(&out)
    );
    assert!(took < Duration::from_secs(13), "check took {took:?}");

    // A UDP tracker that answers every connect with the wrong transaction id.
    let liar = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let liar_addr = liar.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut b = [0u8; 2048];
        for _ in 0..4 {
            let Ok((n, from)) = liar.recv_from(&mut b) else {
                return;
            };
            if n >= 16 {
                let mut answer = [0u8; 16];
                let tid = u32::from_be_bytes(b[12..16].try_into().unwrap()).wrapping_add(1);
                answer[4..8].copy_from_slice(&tid.to_be_bytes());
                answer[8..16].copy_from_slice(&7u64.to_be_bytes());
                let _ = liar.send_to(&answer, from);
            }
        }
    });
    let out = shoal_cmd(&["check", &format!("udp://{liar_addr}/announce"), "--json"]);
    assert!(!out.status.success());
    let v = json(&out);
    let connect = &v[0]["steps"][1];
    assert_eq!(connect["ok"], false, "{v}");
    assert!(
        connect["detail"]
            .as_str()
            .unwrap()
            .contains("another transaction id skipped"),
        "{v}"
    );

    let closed = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let started = Instant::now();
    let out = shoal_cmd(&["check", &format!("udp://{closed}/announce"), "--json"]);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "a closed port waits for nothing"
    );
    let v = json(&out);
    assert!(
        v[0]["steps"][1]["detail"]
            .as_str()
            .unwrap()
            .contains("port is closed"),
        "{v}"
    );
}

/// `openssl req -x509`'s self-signed certificate (marked CA), given as --ca-cert, is
/// trusted as the server's own: for `check` on HTTPS and for the admin commands on an HTTPS
/// API (found from api.tls_cert_path in the configuration). Another certificate is not.
#[test]
fn a_self_signed_certificate_is_pinned_by_check_and_the_admin_commands() {
    let dir = temp_dir();
    // The one-liner's certificates (testkit::make_self_signed), one pair per folder.
    let make = |name: &str| {
        let d = subdir(dir.path(), name);
        testkit::make_self_signed(&d).unwrap();
        d
    };
    let (own, other) = (make("own"), make("other"));
    let pair = common::tls::tls_config(&own);
    let setup = Setup {
        token: TOKEN,
        http_extra: &pair,
        extra: &pair,
        ..Setup::default()
    };
    let run_dir = subdir(dir.path(), "run");
    let shoal = setup.start(&run_dir);
    let url = format!("https://{}/announce", shoal.http[0]);
    let out = shoal_cmd(&[
        "check",
        &url,
        "--ca-cert",
        own.join("server.pem").to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let out = shoal_cmd(&[
        "check",
        &url,
        "--ca-cert",
        other.join("server.pem").to_str().unwrap(),
    ]);
    assert!(!out.status.success(), "another certificate is not trusted");

    // The admin commands read the running tracker's config: api.bind over HTTPS.
    let mut cfg = std::fs::read_to_string(run_dir.join("shoal.toml")).unwrap();
    cfg = cfg.replace("127.0.0.1:0\"\ntoken", &format!("{}\"\ntoken", shoal.api));
    let client_cfg = dir.path().join("client.toml");
    std::fs::write(&client_cfg, cfg).unwrap();
    let admin = |pem: &std::path::Path| {
        command(&[
            "whitelist",
            "list",
            "--config",
            client_cfg.to_str().unwrap(),
        ])
        .arg("--ca-cert")
        .arg(pem.join("server.pem"))
        .output()
        .unwrap()
    };
    let out = admin(&own);
    assert!(out.status.success(), "{}", text(&out));
    let out = admin(&other);
    assert!(!out.status.success(), "{}", text(&out));
}

/// Info-hashes and keys are checked before any URL is built: a path cannot ride in one.
#[test]
fn admin_arguments_are_typed_and_cannot_walk_the_api() {
    let dir = temp_dir();
    let shoal = Setup::mode("private", TOKEN).start(dir.path());
    let (_, v) = api(shoal.api, "POST", "/api/v1/keys", Some(TOKEN), Some("{}"));
    let key = v["key"].as_str().unwrap().to_string();
    let api_url = format!("http://{}", shoal.api);
    for args in [
        vec!["whitelist", "remove", "../keys/KEY"],
        vec!["whitelist", "add", "0123"],
        vec!["keys", "remove", "../whitelist/x"],
        vec!["keys", "import", "short"],
    ] {
        let args: Vec<String> = args.iter().map(|a| a.replace("KEY", &key)).collect();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = command(&args)
            .args(["--api", &api_url])
            .env("SHOAL_API__TOKEN", TOKEN)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?}: {}", text(&out));
        assert!(
            text(&out).contains("invalid value"),
            "{args:?}: {}",
            text(&out)
        );
    }
    let (_, keys) = api(shoal.api, "GET", "/api/v1/keys", Some(TOKEN), None);
    assert_eq!(
        keys.as_array().unwrap().len(),
        1,
        "the key is still there: {keys}"
    );
}
