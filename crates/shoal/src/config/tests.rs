use super::*;
use std::io::Write;

fn env(vars: &[(&str, &str)]) -> Vec<(String, String)> {
    vars.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn file(text: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(text.as_bytes()).unwrap();
    f
}

#[test]
fn no_file_means_documented_defaults() {
    let c = load(None, env(&[])).unwrap().config;
    assert_eq!(c.mode, Mode::Public);
    assert_eq!(c.udp.bind, vec!["0.0.0.0:6969".parse().unwrap()]);
    assert_eq!(c.http.bind, vec!["0.0.0.0:7070".parse().unwrap()]);
    assert_eq!(c.api.bind, "127.0.0.1:1212".parse().unwrap());
    assert_eq!(c.database.url.expose(), "sqlite://data/shoal.db");
    assert_eq!(
        (
            c.announce.interval.get(),
            c.announce.min_interval,
            c.announce.peer_timeout,
            c.announce.max_numwant.get()
        ),
        (120, 60, 1800, 74)
    );
}

#[test]
fn file_then_environment() {
    let f = file("mode = \"listed\"\n[udp]\nbind = \"127.0.0.1:1\"\n[announce]\ninterval = 300\n");
    let c = load(
        Some(f.path()),
        env(&[
            ("SHOAL_ANNOUNCE__INTERVAL", "90"),
            ("SHOAL_HTTP__BIND", "[\"127.0.0.1:2\", \"[::1]:2\"]"),
            ("SHOAL_DATABASE__URL", "sqlite:///tmp/x.db"),
            ("SHOAL_API__TOKEN", "12345"),
            ("SHOAL_UDP__BIND", "127.0.0.1:3"),
        ]),
    )
    .unwrap()
    .config;
    assert_eq!(c.mode, Mode::Listed);
    assert_eq!(c.announce.interval.get(), 90);
    assert_eq!(c.http.bind.len(), 2);
    assert_eq!(
        c.udp.bind,
        vec!["127.0.0.1:3".parse().unwrap()],
        "a single address is accepted from the environment too"
    );
    assert_eq!(c.database.url.expose(), "sqlite:///tmp/x.db");
    assert_eq!(
        c.api.token.expose(),
        "12345",
        "a numeric-looking token stays a string"
    );
    assert_eq!(
        load(Some(file("[udp]\nbind = []\n").path()), env(&[]))
            .unwrap()
            .config
            .udp
            .bind,
        vec![]
    );
}

#[test]
fn errors_name_the_key() {
    let e = load(Some(file("[udp]\nbindd = \"x\"\n").path()), env(&[]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("unknown key 'udp.bindd'"), "{e}");
    let e = load(
        Some(file("[announce]\ninterval = \"soon\"\n").path()),
        env(&[]),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("'announce.interval'"), "{e}");
    let e = load(None, env(&[("SHOAL_ANNOUNCE__INTERVAL", "-5")]))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("'announce.interval'") && e.contains("SHOAL_ANNOUNCE__INTERVAL"),
        "{e}"
    );
    let e = load(None, env(&[("SHOAL_UDP__BIND", "nowhere")]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("'udp.bind'") && e.contains("nowhere"), "{e}");
    let e = load(None, env(&[("SHOAL_MODE", "secret")]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("'mode'"), "{e}");
    let e = load(None, env(&[("SHOAL_ANNOUNCE__MIN_INTERVAL", "500")]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("'announce.min_interval'"), "{e}");
    let e = load(
        None,
        env(&[("SHOAL_DATABASE__URL", "postgress://u:hunter2@h/db")]),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("'database.url'") && !e.contains("hunter2"),
        "{e}"
    );
    let e = load(Some(file("mode = \n").path()), env(&[]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("config file") && e.contains("line 1"), "{e}");
    for (var, key) in [
        (
            "SHOAL_DATABASE__FLUSH_INTERVAL_MS",
            "'database.flush_interval_ms'",
        ),
        (
            "SHOAL_DATABASE__MAX_CONNECTIONS",
            "'database.max_connections'",
        ),
        (
            "SHOAL_DATABASE__MAX_PENDING_TORRENTS",
            "'database.max_pending_torrents'",
        ),
        (
            "SHOAL_DATABASE__FINAL_FLUSH_TIMEOUT_MS",
            "'database.final_flush_timeout_ms'",
        ),
        ("SHOAL_HTTP__MAX_CONNECTIONS", "'http.max_connections'"),
        ("SHOAL_HTTP__HEADER_TIMEOUT_MS", "'http.header_timeout_ms'"),
        ("SHOAL_ANNOUNCE__INTERVAL", "'announce.interval'"),
        ("SHOAL_ANNOUNCE__MAX_NUMWANT", "'announce.max_numwant'"),
        ("SHOAL_LIMITS__MAX_TORRENTS", "'limits.max_torrents'"),
        (
            "SHOAL_LIMITS__MAX_PEERS_PER_IP",
            "'limits.max_peers_per_ip'",
        ),
    ] {
        let e = load(None, env(&[(var, "0")])).unwrap_err().to_string();
        assert!(e.contains(key), "{e}");
    }
    let e = load(None, env(&[("SHOAL_ANNOUNCE__MAX_NUMWANT", "3639")]))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("'announce.max_numwant'") && e.contains("3638"),
        "{e}"
    );
    let ok = load(None, env(&[("SHOAL_ANNOUNCE__MAX_NUMWANT", "3638")]));
    assert_eq!(ok.unwrap().config.announce.max_numwant.get(), 3638);
    let e = load(None, env(&[("SHOAL_API__HOSTS", "[\"a.example:80\"]")]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("'api.hosts'"), "{e}");
}

#[test]
fn unknown_environment_variables_are_only_reported() {
    let l = load(
        None,
        env(&[
            ("SHOAL_UDP__BINDD", "x"),
            ("SHOAL_NOPE", "1"),
            ("OTHER", "1"),
        ]),
    )
    .unwrap();
    assert_eq!(
        l.ignored_env,
        vec!["SHOAL_NOPE".to_string(), "SHOAL_UDP__BINDD".to_string()]
    );
}

#[test]
fn secrets_are_redacted() {
    let c = load(
        None,
        env(&[
            ("SHOAL_API__TOKEN", "tok-abc"),
            ("SHOAL_DATABASE__URL", "sqlite://x.db"),
        ]),
    )
    .unwrap()
    .config;
    for shown in [format!("{c:?}"), c.to_toml()] {
        assert!(!shown.contains("tok-abc"), "{shown}");
    }
    assert!(c.to_toml().contains("<redacted>"));
    let db = DatabaseConfig {
        url: store::DatabaseUrl::parse("postgresql://u:hunter2@h/db").unwrap(),
        ..DatabaseConfig::default()
    };
    assert!(!format!("{db:?}").contains("hunter2"));
}

#[test]
fn tls_paths_are_optional_and_an_empty_one_is_none() {
    let none = load(None, env(&[])).unwrap().config;
    assert!(none.http.tls().is_none() && none.api.tls().is_none());
    assert!(
        none.to_toml().contains("tls_cert_path = \"\""),
        "no path is written empty"
    );
    let f = file("[http]\ntls_cert_path = \"/a/c.pem\"\ntls_key_path = \"/a/k.pem\"\n");
    let c = load(
        Some(f.path()),
        env(&[
            ("SHOAL_API__TLS_CERT_PATH", ""),
            ("SHOAL_API__TLS_KEY_PATH", ""),
        ]),
    )
    .unwrap()
    .config;
    let tls = c.http.tls().expect("both paths set");
    assert_eq!(
        (tls.cert.to_str(), tls.key.to_str()),
        (Some("/a/c.pem"), Some("/a/k.pem"))
    );
    assert_eq!(tls.keys.0, "http.tls_cert_path");
    assert!(c.api.tls().is_none(), "empty strings are no TLS");
    let again = load(Some(file(&c.to_toml()).path()), env(&[]))
        .unwrap()
        .config;
    assert_eq!(again, c, "shoal config's output loads back");
}

#[test]
fn trusted_proxies_take_bare_addresses_and_refuse_everyone_without_the_opt_in() {
    let c = load(
        None,
        env(&[(
            "SHOAL_HTTP__TRUSTED_PROXIES",
            "[\"127.0.0.1\", \"::1\", \"10.0.0.0/8\"]",
        )]),
    )
    .unwrap()
    .config;
    let shown: Vec<String> = c
        .http
        .trusted_proxies
        .iter()
        .map(|n| n.to_string())
        .collect();
    assert_eq!(shown, ["127.0.0.1/32", "::1/128", "10.0.0.0/8"]);
    let err = load(None, env(&[("SHOAL_HTTP__TRUSTED_PROXIES", "[\"bogus\"]")]))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("http.trusted_proxies") && err.contains("\"bogus\""),
        "{err}"
    );
    for every in ["0.0.0.0/0", "::/0"] {
        let list = format!("[\"{every}\"]");
        let err = load(None, env(&[("SHOAL_HTTP__TRUSTED_PROXIES", &list)]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("http.trust_every_address"), "{err}");
        let c = load(
            None,
            env(&[
                ("SHOAL_HTTP__TRUSTED_PROXIES", &list),
                ("SHOAL_HTTP__TRUST_EVERY_ADDRESS", "true"),
            ]),
        )
        .unwrap()
        .config;
        assert!(
            c.warnings()
                .iter()
                .any(|w| w.contains("trust_every_address"))
        );
    }
}

#[test]
fn an_exposed_admin_api_needs_a_long_token_and_is_warned_about_without_tls() {
    let exposed = |token: &str| {
        load(
            None,
            env(&[
                ("SHOAL_API__BIND", "0.0.0.0:1212"),
                ("SHOAL_API__TOKEN", token),
            ]),
        )
    };
    let err = exposed("a").unwrap_err().to_string();
    assert!(
        err.contains("api.token") && err.contains("shorter than 16"),
        "{err}"
    );
    assert!(!err.contains("\"a\""), "the token is not shown: {err}");
    let c = exposed("0123456789abcdef0123").unwrap().config;
    assert!(c.warnings().iter().any(|w| w.contains("travels in clear")));
    // On loopback a short token is the operator's business.
    let c = load(None, env(&[("SHOAL_API__TOKEN", "a")]))
        .unwrap()
        .config;
    assert!(c.warnings().is_empty());
}

#[test]
fn client_rules_are_printable_prefixes() {
    let c = load(
        None,
        env(&[
            ("SHOAL_CLIENTS__ALLOW", "[\"-qB\", \"-TR\"]"),
            ("SHOAL_CLIENTS__DENY", "[\"-qB4520-\", \"M7-2-2--\"]"),
        ]),
    )
    .unwrap()
    .config;
    assert_eq!(c.clients.allow, ["-qB", "-TR"]);
    for bad in ["", "a b", "x\"y", "123456789012345678901", "é", ".."] {
        let list = serde_json::to_string(&[bad]).unwrap();
        let err = load(None, env(&[("SHOAL_CLIENTS__DENY", &list)]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("clients.deny"), "{bad:?}: {err}");
    }
}
