//! Start-up behaviour of the binary: defaults, help, and errors that name their cause.

mod common;

use common::*;

#[test]
fn no_config_file_runs_public_with_sqlite_in_data() {
    let dir = temp_dir();
    // Default everything but the ports, which other tests may hold.
    let mut cmd = command(&["serve"]);
    cmd.current_dir(dir.path())
        .env("SHOAL_UDP__BIND", "127.0.0.1:0")
        .env("SHOAL_HTTP__BIND", "[\"127.0.0.1:0\"]")
        .env("SHOAL_API__BIND", "127.0.0.1:0");
    let shoal = Shoal::spawn(cmd);
    assert!(
        dir.path().join("data/shoal.db").exists(),
        "the database and its folder are created"
    );
    let mut c = UdpClient::new(shoal.udp[0]);
    let cid = c.connect();
    assert!(matches!(
        c.announce(
            cid,
            hash(1),
            peer_id(1),
            1,
            0,
            protocol::AnnounceEvent::Started
        ),
        protocol::udp::Response::Announce { seeders: 1, .. }
    ));
    let (status, body) = http_get(shoal.api, "/health");
    assert_eq!(status, 200);
    assert!(
        String::from_utf8(body)
            .unwrap()
            .contains("\"reachable\":true")
    );
    let (status, log) = shoal.stop();
    assert!(status.success(), "{log:?}");
}

#[test]
fn help_explains_every_option() {
    let out = command(&["--help"]).output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success());
    assert!(text.contains("serve") && text.contains("config"), "{text}");
    let out = command(&["serve", "--help"]).output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("--config") && text.contains("SHOAL_"),
        "{text}"
    );
}

fn fails_with(args: &[&str], env: &[(&str, &str)], dir: &std::path::Path) -> String {
    let mut cmd = command(args);
    cmd.current_dir(dir);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    assert!(
        !out.status.success(),
        "expected failure for {args:?} {env:?}"
    );
    String::from_utf8(out.stderr).unwrap()
}

#[test]
fn bad_configuration_names_the_key() {
    let dir = temp_dir();
    let cfg = dir.path().join("bad.toml");
    std::fs::write(&cfg, "[announce]\ninterval = 60\nmin_intervall = 30\n").unwrap();
    let err = fails_with(
        &["serve", "--config", cfg.to_str().unwrap()],
        &[],
        dir.path(),
    );
    assert!(err.contains("announce.min_intervall"), "{err}");
    let err = fails_with(
        &["serve"],
        &[("SHOAL_ANNOUNCE__INTERVAL", "often")],
        dir.path(),
    );
    assert!(
        err.contains("announce.interval") && err.contains("SHOAL_ANNOUNCE__INTERVAL"),
        "{err}"
    );
    let err = fails_with(
        &["serve", "--config", "/nonexistent/shoal.toml"],
        &[],
        dir.path(),
    );
    assert!(err.contains("/nonexistent/shoal.toml"), "{err}");
    assert!(
        !dir.path().join("data").exists(),
        "a refused start touches no database"
    );
}

#[test]
fn a_taken_port_names_the_address() {
    let dir = temp_dir();
    let taken = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let err = fails_with(
        &["serve"],
        &[
            ("SHOAL_UDP__BIND", &addr),
            ("SHOAL_HTTP__BIND", "127.0.0.1:0"),
            ("SHOAL_API__BIND", "127.0.0.1:0"),
        ],
        dir.path(),
    );
    assert!(
        err.contains(&format!("udp.bind {addr}")) && err.contains("in use"),
        "{err}"
    );
    let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = tcp.local_addr().unwrap().to_string();
    let err = fails_with(
        &["serve"],
        &[
            ("SHOAL_UDP__BIND", "127.0.0.1:0"),
            ("SHOAL_HTTP__BIND", &addr),
            ("SHOAL_API__BIND", "127.0.0.1:0"),
        ],
        dir.path(),
    );
    assert!(err.contains(&format!("http.bind {addr}")), "{err}");
}

#[test]
fn config_command_prints_effective_values_without_secrets() {
    let dir = temp_dir();
    let out = command(&["config"])
        .current_dir(dir.path())
        .env("SHOAL_API__TOKEN", "sekrit-token")
        .env("SHOAL_ANNOUNCE__INTERVAL", "77")
        .env("SHOAL_BOGUS", "1")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("interval = 77") && !text.contains("sekrit-token"),
        "{text}"
    );
    assert!(
        String::from_utf8(out.stderr)
            .unwrap()
            .contains("SHOAL_BOGUS"),
        "unknown variables are warned about"
    );
}

#[test]
fn db_status_and_upgrade() {
    for backend in ["sqlite", "postgres"] {
        let dir = temp_dir();
        let url = database(backend)
            .unwrap_or_else(|| format!("sqlite://{}/db/shoal.db", dir.path().display()));
        let run = |action: &str| {
            let out = command(&["db", action])
                .current_dir(dir.path())
                .env("SHOAL_DATABASE__URL", &url)
                .output()
                .unwrap();
            let text =
                String::from_utf8(out.stdout).unwrap() + &String::from_utf8(out.stderr).unwrap();
            assert!(out.status.success(), "db {action} on {backend}: {text}");
            assert!(!text.contains("shoal-test-pw"), "{text}");
            text
        };
        let before = run("status");
        assert!(
            before.contains("20261122000000")
                && before.contains("pending")
                && before.contains("20261204000000")
                && before.contains("2 pending"),
            "{before}"
        );
        let up = run("upgrade");
        assert!(up.contains("applied 20261122000000"), "{up}");
        let after = run("status");
        assert!(
            after.contains("applied") && after.contains("0 pending"),
            "{after}"
        );
        assert!(run("upgrade").contains("0 migrations applied now"));
    }
}

#[test]
fn an_open_api_is_refused_off_loopback_and_a_dead_database_is_named() {
    let dir = temp_dir();
    let err = fails_with(&["serve"], &[("SHOAL_API__BIND", "0.0.0.0:0")], dir.path());
    assert!(
        err.contains("api.token") && err.contains("0.0.0.0:0"),
        "{err}"
    );
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("postgresql://shoal:hunter2@127.0.0.1:{closed}/shoal");
    let err = fails_with(
        &["serve"],
        &[
            ("SHOAL_DATABASE__URL", &url),
            ("SHOAL_UDP__BIND", "[]"),
            ("SHOAL_HTTP__BIND", "[]"),
            ("SHOAL_API__BIND", "127.0.0.1:0"),
        ],
        dir.path(),
    );
    assert!(
        err.contains("cannot open postgresql://shoal:***@127.0.0.1") && !err.contains("hunter2"),
        "{err}"
    );
}

/// A password in a URL parameter, or one holding '/' or '?', is masked by `shoal config`,
/// `shoal db status` and the "ready" line alike.
#[test]
fn database_passwords_never_show_in_config_status_or_the_log() {
    let dir = temp_dir();
    let closed = "postgresql://127.0.0.1:9/db?user=u&password=hunter2";
    let odd = "postgresql://u:hun/ter?2@127.0.0.1:9/db";
    for url in [closed, odd] {
        let out = command(&["config"])
            .current_dir(dir.path())
            .env("SHOAL_DATABASE__URL", url)
            .output()
            .unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(
            out.status.success() && text.contains("[database]"),
            "{text}"
        );
        assert!(
            !text.contains("hunter2") && !text.contains("ter?2"),
            "{text}"
        );
        let err = fails_with(
            &["db", "status"],
            &[("SHOAL_DATABASE__URL", url)],
            dir.path(),
        );
        assert!(!err.contains("hunter2") && !err.contains("ter?2"), "{err}");
    }
    // A live server reached with the password as a parameter: the ready line masks it.
    let url = database("postgres").unwrap();
    let (head, tail) = url.split_once("@").unwrap();
    let (user, password) = head.rsplit_once(':').unwrap();
    let param = format!("{user}@{tail}?password={password}");
    let shoal = Setup {
        db_url: Some(param),
        ..Setup::default()
    }
    .start(dir.path());
    let ready = shoal
        .start_log
        .iter()
        .find(|l| l.contains("ready:"))
        .unwrap()
        .clone();
    assert!(ready.contains("password=***"), "{ready}");
    let (_, log) = shoal.stop();
    for line in log.iter().chain([&ready]) {
        assert!(!line.contains(password), "{line}");
    }
}

#[test]
fn bench_persistence_prints_one_json_report_with_every_operation() {
    let dir = temp_dir();
    let url = format!("sqlite://{}/bench.db", dir.path().display());
    let out = succeeds(&[
        "bench",
        "persistence",
        "--db-url",
        &url,
        "--ops",
        "5",
        "--concurrency",
        "2",
        "--rows",
        "300",
    ]);
    let report: serde_json::Value =
        serde_json::from_str(&out).expect("stdout is one JSON document");
    let meta = &report["meta"];
    assert_eq!(
        (
            meta["driver"].as_str(),
            meta["ops"].as_u64(),
            meta["concurrency"].as_u64()
        ),
        (Some("sqlite"), Some(5), Some(2))
    );
    assert!(
        meta["server_version"].as_str().unwrap().starts_with('3'),
        "{meta}"
    );
    let ops = report["operations"].as_array().unwrap();
    for name in [
        "save_torrent_downloads",
        "load_torrent_downloads",
        "load_all_torrents_downloads",
        "increase_downloads_for_torrent",
        "save_global_downloads",
        "load_global_downloads",
        "increase_global_downloads",
        "add_info_hash_to_whitelist",
        "get_info_hash_from_whitelist",
        "load_whitelist",
        "remove_info_hash_from_whitelist",
        "add_key_to_keys",
        "get_key_from_keys",
        "load_keys",
        "remove_key_from_keys",
        "flush_1000_deltas",
        "load_all_300",
        "save_torrent_downloads@c2",
        "get_key_from_keys@c2",
    ] {
        let op = ops
            .iter()
            .find(|o| o["name"] == name)
            .unwrap_or_else(|| panic!("{name} missing from {report}"));
        let (best, median, p99, worst) = (
            op["best_us"].as_f64().unwrap(),
            op["median_us"].as_f64().unwrap(),
            op["p99_us"].as_f64().unwrap(),
            op["worst_us"].as_f64().unwrap(),
        );
        assert!(
            op["count"].as_u64().unwrap() > 0
                && 0.0 < best
                && best <= median
                && median <= p99
                && p99 <= worst,
            "{op}"
        );
    }
}

/// Runs `shoal ARGS`, which must succeed; returns its stdout.
fn succeeds(args: &[&str]) -> String {
    let out = command(args).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `sent N received M in S s` from `shoal bench udp-load`.
fn udp_load(server: std::net::SocketAddr, rate: u32) -> (u64, u64) {
    let text = succeeds(&[
        "bench",
        "udp-load",
        "--server",
        &server.to_string(),
        "--rate",
        &rate.to_string(),
        "--seconds",
        "1",
        "--torrents",
        "50",
        "--peers",
        "500",
    ]);
    let words: Vec<&str> = text.split_whitespace().collect();
    assert_eq!((words[0], words[2]), ("sent", "received"), "{text}");
    (words[1].parse().unwrap(), words[3].parse().unwrap())
}

#[test]
fn the_benchmark_floor_and_fixed_rate_load_answer_every_request() {
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut floor = command(&[
        "bench",
        "udp-floor",
        "--bind",
        &format!("127.0.0.1:{port}"),
        "--seconds",
        "20",
    ])
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::piped())
    .spawn()
    .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(floor.stderr.take().unwrap()),
        &mut line,
    )
    .unwrap();
    assert!(line.contains("udp floor listening"), "{line}");
    let (sent, received) = udp_load(format!("127.0.0.1:{port}").parse().unwrap(), 3000);
    let _ = floor.kill();
    let _ = floor.wait();
    assert!(sent >= 2500, "paced at the rate asked: {sent}");
    assert_eq!(
        received, sent,
        "a floor on loopback at a low rate answers everything"
    );

    // The same load against the tracker: connects, announces and scrapes all answered.
    let dir = temp_dir();
    let shoal = Shoal::start(dir.path(), "");
    let (sent, received) = udp_load(shoal.udp[0], 3000);
    assert_eq!(received, sent);
    assert!(shoal.metric("shoal_requests_total{protocol=\"udp\",action=\"announce\"}") > sent / 3);
}

/// With `log.format = "json"` every line `serve` writes is a JSON object: the start-up
/// warning about an unknown variable and the error it stops with included.
#[test]
fn a_json_log_is_json_to_its_last_line() {
    let dir = temp_dir();
    let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = tcp.local_addr().unwrap().to_string();
    let err = fails_with(
        &["serve"],
        &[
            ("SHOAL_LOG__FORMAT", "json"),
            ("SHOAL_BOGUS", "1"),
            ("SHOAL_UDP__BIND", "127.0.0.1:0"),
            ("SHOAL_HTTP__BIND", &addr),
            ("SHOAL_API__BIND", "127.0.0.1:0"),
        ],
        dir.path(),
    );
    let lines: Vec<serde_json::Value> = err
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let said = |level: &str, what: &str| {
        lines
            .iter()
            .any(|v| v["level"] == level && v["fields"]["message"].as_str().unwrap().contains(what))
    };
    assert!(said("WARN", "SHOAL_BOGUS"), "{err}");
    assert!(said("ERROR", &format!("http.bind {addr}")), "{err}");
}

/// What `shoal config` prints, `shoal serve --config` accepts: an empty Redis URL and
/// empty TLS paths included.
#[test]
fn config_output_loads_back() {
    let dir = temp_dir();
    let out = command(&["config"])
        .current_dir(dir.path())
        .env("SHOAL_API__TOKEN", "sekrit-token-0123")
        .output()
        .unwrap();
    assert!(out.status.success());
    let printed = dir.path().join("printed.toml");
    std::fs::write(&printed, &out.stdout).unwrap();
    let again = command(&["config", "--config", printed.to_str().unwrap()])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    assert_eq!(
        String::from_utf8(again.stdout).unwrap(),
        String::from_utf8(out.stdout).unwrap()
    );
}

/// A TOML mistake on a secret's line names the key and the line, never the secret.
#[test]
fn a_toml_mistake_never_prints_the_secret_on_its_line() {
    let dir = temp_dir();
    for (table, line) in [
        ("api", "token = \"hunter2-secret-token\" x"),
        (
            "database",
            "url = \"postgresql://u:hunter2-secret-token@h/db",
        ),
        ("cluster", "secret = hunter2-secret-token"),
    ] {
        let cfg = dir.path().join("bad.toml");
        std::fs::write(&cfg, format!("[{table}]\n{line}\n")).unwrap();
        let err = fails_with(
            &["serve", "--config", cfg.to_str().unwrap()],
            &[],
            dir.path(),
        );
        assert!(!err.contains("hunter2"), "{line}: {err}");
        assert!(
            err.contains("bad.toml") && err.contains("line 2"),
            "{line}: {err}"
        );
    }
}
