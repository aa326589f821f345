//! Restarts and faults under load: nothing counted is lost on SIGTERM, at most one flush
//! interval on SIGKILL, and a database that stops taking writes keeps deltas in memory.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};


use common::*;
use protocol::udp::{Request, Response};
use protocol::{AnnounceEvent, InfoHash};
use store::{AnyStore, Connection, DatabaseUrl, TorrentMetricsStore};

/// Sends downloads (a start, then a completion, from a new peer each time) over UDP until
/// stopped or the server stops answering. Returns a log of (time, completions answered).
struct Load {
    sent: Arc<AtomicU64>,
    answered: Arc<AtomicU64>,
    log: Arc<Mutex<Vec<(Instant, u64)>>>,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

fn exchange(s: &UdpSocket, req: &Request) -> Option<Response> {
    let mut out = Vec::new();
    req.write(&mut out);
    s.send(&out).ok()?;
    let mut buf = [0u8; 2048];
    let n = s.recv(&mut buf).ok()?;
    Response::parse(&buf[..n], false)
}

impl Load {
    fn start(server: SocketAddr) -> Load {
        let (sent, answered) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let log = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (sent, answered, log, stop) = (sent.clone(), answered.clone(), log.clone(), stop.clone());
            thread::spawn(move || {
                let s = UdpSocket::bind("127.0.0.1:0").unwrap();
                s.connect(server).unwrap();
                s.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
                let Some(Response::Connect { connection_id: cid, .. }) = exchange(&s, &Request::Connect { transaction_id: 1 }) else { return };
                let mut n: u32 = 0;
                while !stop.load(Relaxed) {
                    n += 1;
                    let ih = hash((n % 10) as u8);
                    let mut pid = [0u8; 20];
                    pid[..4].copy_from_slice(&n.to_be_bytes());
                    let pid = protocol::PeerId(pid);
                    let start = announce_req(cid, n * 2, ih, pid, 7000, 10, AnnounceEvent::Started);
                    if !matches!(exchange(&s, &Request::Announce(start)), Some(Response::Announce { .. })) {
                        break;
                    }
                    sent.fetch_add(1, Relaxed);
                    let done = announce_req(cid, n * 2 + 1, ih, pid, 7000, 0, AnnounceEvent::Completed);
                    if !matches!(exchange(&s, &Request::Announce(done)), Some(Response::Announce { .. })) {
                        break;
                    }
                    let a = answered.fetch_add(1, Relaxed) + 1;
                    log.lock().unwrap().push((Instant::now(), a));
                }
            })
        };
        Load { sent, answered, log, stop, thread: Some(thread) }
    }

    fn finish(mut self) -> (u64, u64, Vec<(Instant, u64)>) {
        self.stop.store(true, Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
        let log = self.log.lock().unwrap().clone();
        (self.sent.load(Relaxed), self.answered.load(Relaxed), log)
    }
}

fn stored_total(url: &str) -> u64 {
    block_on(async {
        let s = AnyStore::open(&DatabaseUrl::parse(url).unwrap(), 1).await.unwrap();
        let mut total = 0;
        for n in 0..10u8 {
            total += s.load_torrent_downloads(&hash(n)).await.unwrap().unwrap_or(0);
        }
        s.close().await;
        total
    })
}

fn sqlite_url(dir: &Path) -> String {
    format!("sqlite://{}/shoal.db", dir.display())
}

#[test]
fn sigterm_under_load_loses_no_counted_download() {
    let dir = temp_dir();
    let shoal = Shoal::start(dir.path(), "");
    let load = Load::start(shoal.udp[0]);
    thread::sleep(Duration::from_millis(1500));
    let (status, log) = shoal.stop();
    let (sent, answered, _) = load.finish();
    assert!(status.success(), "{log:?}");
    assert!(answered > 50, "the load ran: {answered} downloads answered");
    let stored = stored_total(&sqlite_url(dir.path()));
    // Every download the tracker answered is in the store; one more may have been counted
    // whose answer did not arrive.
    assert!(answered <= stored && stored <= sent, "answered {answered}, stored {stored}, sent {sent}");
}

#[test]
fn sigkill_under_load_keeps_everything_flushed_before_it() {
    let dir = temp_dir();
    let shoal = Shoal::start(dir.path(), "");
    let load = Load::start(shoal.udp[0]);
    thread::sleep(Duration::from_millis(1000));
    // Everything answered by now is in a flush that starts later: wait for two more flushes
    // (the first may have started already), with the load still running, then kill.
    let answered_before = load.answered.load(Relaxed);
    let flushes = shoal.metric("shoal_flushes_total");
    wait_until("two more flushes under load", Duration::from_secs(20), || shoal.metric("shoal_flushes_total") >= flushes + 2);
    shoal.kill();
    let (sent, answered, _) = load.finish();
    let stored = stored_total(&sqlite_url(dir.path()));
    assert!(answered_before > 20, "the load ran: {answered_before}");
    assert!(answered > answered_before, "the load kept running until the kill");
    assert!(
        answered_before <= stored && stored <= sent,
        "everything answered before the last flush survives: answered {answered_before} before it ({answered} in all), stored {stored}, sent {sent}"
    );

    // The same database serves again, with the stored counts.
    let shoal = Shoal::start(dir.path(), "");
    let mut c = UdpClient::new(shoal.udp[0]);
    let cid = c.connect();
    let hashes: Vec<InfoHash> = (0..10).map(hash).collect();
    match c.scrape(cid, &hashes) {
        Response::Scrape { stats, .. } => assert_eq!(stats.iter().map(|s| u64::from(s.completed)).sum::<u64>(), stored),
        other => panic!("{other:?}"),
    }
}

/// `chattr +i` on the database files: even root cannot write them. Undone on drop.
struct Immutable(Vec<std::path::PathBuf>);

impl Immutable {
    fn set(files: Vec<std::path::PathBuf>) -> Immutable {
        for f in &files {
            let ok = std::process::Command::new("chattr").arg("+i").arg(f).status().expect("chattr (e2fsprogs) is needed by this test");
            assert!(ok.success(), "chattr +i {} failed: this test needs root on ext4/xfs", f.display());
        }
        Immutable(files)
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        for f in &self.0 {
            let _ = std::process::Command::new("chattr").arg("-i").arg(f).status();
        }
    }
}

#[test]
fn a_read_only_database_keeps_deltas_and_says_so() {
    let dir = temp_dir();
    let shoal = Shoal::start(dir.path(), "");
    let url = sqlite_url(dir.path());
    let complete = |peer: u8| {
        let mut c = UdpClient::new(shoal.udp[0]);
        let cid = c.connect();
        c.announce(cid, hash(1), peer_id(peer), 7000, 10, AnnounceEvent::Started);
        c.announce(cid, hash(1), peer_id(peer), 7000, 0, AnnounceEvent::Completed);
    };
    complete(1);
    wait_until("first flush", Duration::from_secs(10), || stored_total(&url) == 1);

    let db = dir.path().join("shoal.db");
    let lock = Immutable::set(vec![db.clone(), dir.path().join("shoal.db-wal")]);
    for peer in 2..=4 {
        complete(peer);
    }
    wait_until("flushes fail and keep the deltas", Duration::from_secs(10), || {
        shoal.metric("shoal_flush_failures_total") >= 1 && shoal.metric("shoal_pending_deltas") == 3
    });
    let (status, health) = api(shoal.api, "GET", "/health", None, None);
    assert_eq!((status, &health["database"]["flushing"]), (503, &serde_json::json!(false)), "{health}");
    drop(lock);
    wait_until("the kept deltas land", Duration::from_secs(15), || stored_total(&url) == 4);
    wait_until("health recovers", Duration::from_secs(5), || api(shoal.api, "GET", "/health", None, None).0 == 200);
    let (status, log) = shoal.stop();
    assert!(status.success());
    assert!(log.iter().any(|l| l.contains("flush failed")), "the failure is logged: {log:?}");
}
