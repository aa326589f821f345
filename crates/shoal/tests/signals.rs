//! The signal table of docs/operations.md, "Signals", on the real process: SIGHUP reloads
//! and never stops it (with or without TLS), SIGTERM and SIGINT drain, flush and exit 0.

mod common;

use std::time::Duration;

use common::*;
use store::{AnyStore, DatabaseUrl, WhitelistEntry, WhitelistStore};

/// Lists `ih` in the database behind the tracker's back, as another tool would.
fn whitelist_in_store(url: &str, ih: protocol::InfoHash) {
    block_on(async {
        let store = AnyStore::open(&DatabaseUrl::parse(url).unwrap(), 1)
            .await
            .unwrap();
        store
            .add_info_hash_to_whitelist(&WhitelistEntry {
                info_hash: ih,
                added_at: 1,
            })
            .await
            .unwrap();
    })
}

fn wait_for_line(shoal: &Shoal, needle: &str) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let line = shoal
            .log
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("no log line with {needle:?} within 10 s"));
        if line.contains(needle) {
            return line;
        }
    }
}

#[test]
fn sighup_without_tls_reloads_the_access_lists_and_never_stops() {
    let dir = temp_dir();
    let url = format!("sqlite://{}/shoal.db", dir.path().display());
    let shoal = Setup::mode("listed", "t-0123456789abcdef").start(dir.path());
    let http = shoal.http[0];
    let ih = hash(7);
    assert!(http_announce(http, "/announce", &started(ih, 1, 6001)).is_err());

    whitelist_in_store(&url, ih);
    for _ in 0..3 {
        // Three in a row: the default action (terminate) never comes back.
        shoal.signal("HUP");
        let line = wait_for_line(&shoal, "SIGHUP received");
        assert!(line.contains("1 whitelisted"), "{line}");
    }
    http_announce(http, "/announce", &started(ih, 1, 6001)).expect("listed after SIGHUP");

    let (status, log) = shoal.stop();
    assert!(status.success(), "{status:?}: {log:?}");
    assert!(log.iter().any(|l| l.contains("flushed; bye")), "{log:?}");
}

#[test]
fn sighup_with_tls_reloads_the_certificate_too() {
    let dir = temp_dir();
    let certs = common::tls::certificates(&dir.path().join("certs"));
    let http_extra = common::tls::tls_config(&certs);
    let shoal = Setup {
        http_extra: &http_extra,
        ..Setup::default()
    }
    .start(dir.path());
    shoal.signal("HUP");
    let line = wait_for_line(&shoal, "SIGHUP received");
    assert!(line.contains("1 certificate"), "{line}");
    let (status, _) = shoal.stop();
    assert!(status.success());
}

#[test]
fn sigterm_and_sigint_drain_flush_and_exit_zero() {
    for sig in ["TERM", "INT"] {
        let dir = temp_dir();
        let shoal = Shoal::start(dir.path(), "");
        let ih = hash(9);
        http_announce(shoal.http[0], "/announce", &started(ih, 1, 6001)).unwrap();
        let done = protocol::http::AnnounceRequest {
            left: 0,
            event: protocol::AnnounceEvent::Completed,
            ..started(ih, 1, 6001)
        };
        http_announce(shoal.http[0], "/announce", &done).unwrap();
        shoal.signal(sig);
        let (status, log) = shoal.exited();
        assert!(status.success(), "SIG{sig}: {status:?}");
        assert!(
            log.iter()
                .any(|l| l.contains(&format!("SIG{sig} received"))),
            "SIG{sig}: {log:?}"
        );
        assert!(log.iter().any(|l| l.contains("flushed; bye")), "{log:?}");
        // The completed announce reached the database before the exit.
        let again = Shoal::start(dir.path(), "");
        let stats = udp_scrape(again.udp[0], ih).unwrap();
        assert_eq!(stats.completed, 1, "SIG{sig}");
        again.stop();
    }
}
