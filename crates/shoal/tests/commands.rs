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
