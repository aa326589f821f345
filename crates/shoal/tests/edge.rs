//! The edge: HTTPS on the HTTP tracker (certificates made for the test, swapped while it
//! runs), client addresses from trusted proxies by X-Forwarded-For and the PROXY protocol,
//! and a real HAProxy in front.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use common::tls::*;
use common::*;

/// One request on a keep-alive stream: (status, body).
fn exchange<S: Read + Write>(s: &mut S, target: &str, headers: &str) -> (u16, Vec<u8>) {
    write!(s, "GET {target} HTTP/1.1\r\nHost: t\r\n{headers}\r\n").unwrap();
    s.flush().unwrap();
    try_read_response(s).expect("a response")
}

fn announce_target(peer: u8, port: u16) -> String {
    format!("/announce?{}", started_query(hash(1), peer, port))
}

/// The endpoints a dictionary-model answer lists.
fn listed(body: &[u8]) -> Vec<SocketAddr> {
    let v = bdecode(body);
    v.get("peers")
        .unwrap_or_else(|| panic!("no peers in {:?}", String::from_utf8_lossy(body)))
        .as_bytes()
        .unwrap()
        .chunks(6)
        .map(|c| SocketAddr::from(([c[0], c[1], c[2], c[3]], u16::from_be_bytes([c[4], c[5]]))))
        .collect()
}

#[test]
fn https_answers_equal_plain_http_and_a_certificate_swap_needs_no_restart() {
    let dir = temp_dir();
    let certs = certificates(&dir.path().join("a"));
    // Without jitter the two answer byte for byte.
    let fixed = "[announce]\ninterval_jitter = 0.0\n";
    let https = Setup {
        http_extra: &tls_config(&certs),
        extra: fixed,
        ..Setup::default()
    }
    .start(&subdir(dir.path(), "tls"));
    let plain = Shoal::start(&subdir(dir.path(), "plain"), fixed);
    let client = client_config(&[&certs]);

    // The same announces and scrape, over HTTPS and over HTTP: the same bytes back.
    let mut tls = tls_connect(https.http[0], &client);
    let mut tcp = TcpStream::connect(plain.http[0]).unwrap();
    for (peer, port) in [(1, 6001), (2, 6002), (3, 6003)] {
        let target = announce_target(peer, port);
        assert_eq!(
            exchange(&mut tls, &target, ""),
            exchange(&mut tcp, &target, "")
        );
    }
    let scrape = format!(
        "/scrape?info_hash={}",
        protocol::percent::encode(&hash(1).0)
    );
    let (status, body) = exchange(&mut tls, &scrape, "");
    assert_eq!((status, &body), (200, &exchange(&mut tcp, &scrape, "").1));
    assert!(
        body.starts_with(b"d5:files"),
        "{}",
        String::from_utf8_lossy(&body)
    );

    // A new pair from another CA replaces the files: new connections get it within the
    // poll interval, and the connection opened before keeps working.
    let next = certificates(&dir.path().join("b"));
    std::fs::copy(next.join("server.key"), certs.join("server.key")).unwrap();
    std::fs::copy(next.join("server.pem"), certs.join("server.pem")).unwrap();
    let only_new = client_config(&[&next]);
    wait_until(
        "the new certificate to be served",
        Duration::from_secs(8),
        || {
            let mut s = tls_connect(https.http[0], &only_new);
            write!(s, "GET /scrape HTTP/1.1\r\nHost: t\r\n\r\n").is_ok() && s.flush().is_ok()
        },
    );
    assert_eq!(exchange(&mut tls, &announce_target(4, 6004), "").0, 200);
}

#[test]
fn a_missing_or_mismatched_pair_stops_start_up_naming_the_key() {
    let dir = temp_dir();
    let a = certificates(&dir.path().join("a"));
    let b = certificates(&dir.path().join("b"));
    let run = |extra: String| {
        let cfg = Setup {
            http_extra: &extra,
            ..Setup::default()
        }
        .write(dir.path());
        let out = command(&["serve", "--config", cfg.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let err = run(format!(
        "tls_cert_path = \"{}/nope.pem\"\ntls_key_path = \"{}\"\n",
        dir.path().display(),
        a.join("server.key").display()
    ));
    assert!(
        err.contains("http.tls_cert_path") && err.contains("nope.pem"),
        "{err}"
    );
    let err = run(format!(
        "tls_cert_path = \"{}\"\ntls_key_path = \"{}\"\n",
        a.join("server.pem").display(),
        b.join("server.key").display()
    ));
    assert!(err.contains("do not make a pair"), "{err}");
    let err = run(format!(
        "tls_cert_path = \"{}\"\n",
        a.join("server.pem").display()
    ));
    assert!(err.contains("http.tls_key_path"), "{err}");
}

/// A TCP connection from a chosen loopback address.
fn connect_from(local: &str, to: SocketAddr) -> TcpStream {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    s.bind(&format!("{local}:0").parse::<SocketAddr>().unwrap().into())
        .unwrap();
    s.connect(&to.into()).unwrap();
    let s: TcpStream = s.into();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s
}

#[test]
fn only_trusted_proxies_name_the_client() {
    let dir = temp_dir();
    let shoal = Setup {
        http_extra: "trusted_proxies = [\"127.0.0.1/32\"]\n",
        ..Setup::default()
    }
    .start(dir.path());
    let at = shoal.http[0];
    // From the trusted 127.0.0.1: X-Forwarded-For names the client.
    let mut proxy = connect_from("127.0.0.1", at);
    exchange(
        &mut proxy,
        &announce_target(1, 6001),
        "X-Forwarded-For: 198.51.100.1, 203.0.113.5\r\n",
    );
    // From 127.0.0.2, not trusted: its header is ignored.
    let mut other = connect_from("127.0.0.2", at);
    exchange(
        &mut other,
        &announce_target(2, 6002),
        "X-Forwarded-For: 203.0.113.6\r\n",
    );
    // PROXY protocol v1 from the trusted address names the client too.
    let mut v1 = connect_from("127.0.0.1", at);
    v1.write_all(b"PROXY TCP4 203.0.113.7 127.0.0.1 5555 7070\r\n")
        .unwrap();
    exchange(&mut v1, &announce_target(3, 6003), "");
    // From an untrusted address a PROXY line is not read as one: the request fails.
    let mut forged = connect_from("127.0.0.3", at);
    forged
        .write_all(b"PROXY TCP4 203.0.113.8 127.0.0.1 5555 7070\r\n")
        .unwrap();
    let _ = exchange_or_close(&mut forged, &announce_target(4, 6004));

    let (_, body) = exchange(
        &mut connect_from("127.0.0.9", at),
        &announce_target(9, 6009),
        "",
    );
    let mut got = listed(&body);
    got.sort();
    let want: Vec<SocketAddr> = ["127.0.0.2:6002", "203.0.113.5:6001", "203.0.113.7:6003"]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
    assert_eq!(got, want);
}

/// Sends a request and reads whatever comes back until the peer closes.
fn exchange_or_close(s: &mut TcpStream, target: &str) -> Vec<u8> {
    let _ = write!(
        s,
        "GET {target} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    );
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    out
}

#[test]
fn behind_a_real_haproxy_peers_keep_their_own_addresses() {
    let dir = temp_dir();
    let shoal = Setup {
        http_extra: "trusted_proxies = [\"127.0.0.1/32\"]\n",
        ..Setup::default()
    }
    .start(dir.path());
    let port = |()| {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    };
    let (v2, fwd) = (port(()), port(()));
    let cfg = dir.path().join("haproxy.cfg");
    std::fs::write(
        &cfg,
        format!(
            "global\n  maxconn 200\ndefaults\n  timeout connect 2s\n  timeout client 10s\n  timeout server 10s\n\
             frontend v2\n  mode tcp\n  bind 127.0.0.1:{v2}\n  default_backend v2\n\
             backend v2\n  mode tcp\n  server s 127.0.0.1:{p} send-proxy-v2\n\
             frontend fwd\n  mode http\n  bind 127.0.0.1:{fwd}\n  option forwardfor\n  default_backend fwd\n\
             backend fwd\n  mode http\n  server s 127.0.0.1:{p}\n",
            p = shoal.http[0].port()
        ),
    )
    .unwrap();
    let haproxy =
        testkit::which("haproxy").expect("haproxy is not installed; scripts/test installs it");
    let mut proxy = std::process::Command::new(haproxy)
        .args(["-db", "-f"])
        .arg(&cfg)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let ready = |p: u16| TcpStream::connect(("127.0.0.1", p)).is_ok();
    wait_until("haproxy to listen", Duration::from_secs(10), || {
        ready(v2) && ready(fwd)
    });
    let via = |p: u16| SocketAddr::from(([127, 0, 0, 1], p));

    let (_, a) = exchange(
        &mut connect_from("127.0.0.2", via(v2)),
        &announce_target(2, 6002),
        "",
    );
    assert!(listed(&a).is_empty());
    let (_, b) = exchange(
        &mut connect_from("127.0.0.3", via(fwd)),
        &announce_target(3, 6003),
        "",
    );
    assert_eq!(
        listed(&b),
        vec!["127.0.0.2:6002".parse().unwrap()],
        "send-proxy-v2 named the client"
    );
    let (_, c) = exchange(
        &mut connect_from("127.0.0.4", via(v2)),
        &announce_target(4, 6004),
        "",
    );
    let mut got = listed(&c);
    got.sort();
    assert_eq!(
        got,
        vec![
            "127.0.0.2:6002".parse().unwrap(),
            "127.0.0.3:6003".parse::<SocketAddr>().unwrap()
        ],
        "option forwardfor named the client"
    );
    let _ = proxy.kill();
    let _ = proxy.wait();
}

#[test]
fn the_admin_api_speaks_https_when_given_a_pair() {
    use shoal::cmd::client::{Client, Target};
    let dir = temp_dir();
    let certs = certificates(&dir.path().join("certs"));
    // `extra` follows the config's [api] table, so these keys land in it.
    let api_tls = format!(
        "tls_cert_path = \"{}\"\ntls_key_path = \"{}\"\n",
        certs.join("server.pem").display(),
        certs.join("server.key").display()
    );
    let shoal = Shoal::start(&subdir(dir.path(), "run"), &api_tls);
    let ca = certs.join("ca.pem");
    let https = Target::parse(&format!("https://{}/health", shoal.api)).unwrap();
    let (status, body) = Client::new(Some(&ca))
        .unwrap()
        .request("GET", &https, &[], None)
        .unwrap();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let plain = Target::parse(&format!("http://{}/health", shoal.api)).unwrap();
    assert!(
        Client::new(None)
            .unwrap()
            .request("GET", &plain, &[], None)
            .is_err(),
        "plain HTTP is not answered"
    );
}

/// Whether the server closed `s` within `limit` (a read returns 0 or an error).
fn closed_within(s: &mut TcpStream, limit: Duration) -> bool {
    s.set_read_timeout(Some(limit)).unwrap();
    let mut b = [0u8; 64];
    loop {
        match s.read(&mut b) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) => {
                return !matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                );
            }
        }
    }
}

/// A trusted proxy that starts a PROXY header and stops (v1 or v2, still connected or
/// gone) holds its connection no longer than the header deadline; with
/// `http.max_connections = 4` the tracker still serves after eight such connections.
#[test]
fn an_incomplete_proxy_header_ends_at_the_header_deadline() {
    let dir = temp_dir();
    let shoal = Setup {
        http_extra: "trusted_proxies = [\"127.0.0.1/32\"]\nheader_timeout_ms = 500\nmax_connections = 4\n",
        ..Setup::default()
    }
    .start(dir.path());
    let at = shoal.http[0];
    // v2: the signature and a length announcing 200 bytes that never come.
    let mut v2 = b"\r\n\r\n\0\r\nQUIT\n\x21\x11".to_vec();
    v2.extend_from_slice(&200u16.to_be_bytes());
    let mut held = Vec::new();
    for (i, start) in [b"PROXY ".to_vec(), v2].iter().enumerate() {
        let mut s = connect_from("127.0.0.1", at);
        s.write_all(start).unwrap();
        assert!(
            closed_within(&mut s, Duration::from_secs(3)),
            "header {i} held past the deadline"
        );
        // The same, three more times each, with the sender gone half way.
        for _ in 0..3 {
            let mut s = connect_from("127.0.0.1", at);
            s.write_all(start).unwrap();
            held.push(s);
        }
    }
    drop(held);
    std::thread::sleep(Duration::from_millis(1000));
    let (status, _) = exchange(
        &mut connect_from("127.0.0.1", at),
        &announce_target(1, 6001),
        "",
    );
    assert_eq!(status, 200);
    assert!(shoal.metric("shoal_errors_total{protocol=\"http\",kind=\"head_timeout\"}") >= 2);
}

/// The admin listener closes a connection that says nothing, or stays idle after a request,
/// at `api.idle_timeout_ms`, and holds at most `api.max_connections` at once: idle admin
/// connections can neither pile up nor take the trackers' descriptors.
#[test]
fn the_admin_listener_has_an_idle_timeout_and_a_cap() {
    let dir = temp_dir();
    // Appended to the [api] table.
    let shoal = Shoal::start(dir.path(), "max_connections = 3\nidle_timeout_ms = 500\n");
    let mut silent = TcpStream::connect(shoal.api).unwrap();
    silent.write_all(b"G").unwrap();
    assert!(
        closed_within(&mut silent, Duration::from_secs(3)),
        "a half-sent request"
    );
    let mut kept = TcpStream::connect(shoal.api).unwrap();
    let (status, _) = exchange(&mut kept, "/health", "");
    assert_eq!(status, 200);
    assert!(
        closed_within(&mut kept, Duration::from_secs(3)),
        "an idle keep-alive"
    );

    let open: Vec<TcpStream> = (0..3)
        .map(|_| TcpStream::connect(shoal.api).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(100));
    let mut fourth = TcpStream::connect(shoal.api).unwrap();
    assert!(
        closed_within(&mut fourth, Duration::from_millis(300)),
        "over the cap"
    );
    drop(open);
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(http_get(shoal.api, "/health").0, 200, "places come back");
}

/// A load balancer's TCP check (connect, close) is not an error: not a TLS handshake
/// failure, not a failed request, on HTTPS and plain HTTP alike.
#[test]
fn connections_that_send_nothing_are_not_counted_as_failures() {
    let dir = temp_dir();
    let certs = certificates(&dir.path().join("certs"));
    let http_extra = format!(
        "trusted_proxies = [\"127.0.0.1/32\"]\n{}",
        tls_config(&certs)
    );
    let shoal = Setup {
        http_extra: &http_extra,
        ..Setup::default()
    }
    .start(dir.path());
    for _ in 0..5 {
        drop(TcpStream::connect(shoal.http[0]).unwrap());
        // HAProxy's check with send-proxy-v2: a LOCAL header, then close.
        let mut s = TcpStream::connect(shoal.http[0]).unwrap();
        s.write_all(b"\r\n\r\n\0\r\nQUIT\n\x20\x00\x00\x00")
            .unwrap();
    }
    // A real failed handshake still counts, so the metric is alive.
    let mut garbage = TcpStream::connect(shoal.http[0]).unwrap();
    garbage.write_all(b"not a client hello\r\n\r\n").unwrap();
    assert!(closed_within(&mut garbage, Duration::from_secs(3)));
    std::thread::sleep(Duration::from_millis(200));
    let failed = |kind: &str| {
        shoal.metric(&format!(
            "shoal_errors_total{{protocol=\"http\",kind=\"{kind}\"}}"
        ))
    };
    assert_eq!(failed("tls_handshake"), 1, "{}", shoal.metrics());
    assert_eq!(failed("bad_proxy_header") + failed("head_timeout"), 0);
    assert_eq!(
        shoal.metric("shoal_failed_requests_total{protocol=\"http\",action=\"unknown\"}"),
        1
    );
}

/// The connection caps must fit in RLIMIT_NOFILE: under a hard limit too low, start-up
/// stops and names the keys; under a low soft limit the tracker raises it and starts.
#[test]
fn the_connection_caps_are_checked_against_the_file_descriptor_limit() {
    let dir = temp_dir();
    let cfg = config(dir.path(), "");
    let under = |limits: &str| {
        let mut c = std::process::Command::new("prlimit");
        c.arg(format!("--nofile={limits}")).arg(bin()).args([
            "serve",
            "--config",
            cfg.to_str().unwrap(),
        ]);
        c
    };
    let out = under("512:512").output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("http.max_connections 8192") && err.contains("RLIMIT_NOFILE allows 512"),
        "{err}"
    );
    let shoal = Shoal::spawn(under("1024:20000"));
    let limit = std::fs::read_to_string(format!("/proc/{}/limits", shoal.pid())).unwrap();
    let open_files = limit
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let soft: u64 = open_files
        .split_whitespace()
        .nth(3)
        .unwrap()
        .parse()
        .unwrap();
    assert!(soft > 8192, "{open_files}");
    shoal.stop();
}
