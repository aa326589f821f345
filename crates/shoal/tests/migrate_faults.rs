//! `shoal migrate` is all or nothing (docs/design.md, "Moving data"): whatever stops a copy halfway (an
//! interrupt, a lost source or destination server, a full disk) leaves the destination
//! exactly as it was, and the same command then simply succeeds.
//!
//! Each fault strikes mid-copy, and not by timing: the source is PostgreSQL, and the test
//! holds its whitelist table locked, so the copy writes every torrent into its open
//! transaction and then waits to read the whitelist (the progress line says how many rows).

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::stores::*;
use common::*;
use store::{AnyStore, Connection, DatabaseUrl, TorrentMetricsStore};

const ROWS: u32 = 50_000;
const BATCH: &str = "500";

/// A source of `ROWS` torrents and a total.
fn fill(url: &str) {
    prepared(url);
    block_on(async {
        let s = AnyStore::open(&DatabaseUrl::parse(url).unwrap(), 1)
            .await
            .unwrap();
        let all: Vec<_> = (0..ROWS)
            .map(|n| (big_hash(n), u64::from(n % 5) + 1))
            .collect();
        for chunk in all.chunks(20_000) {
            s.add_downloads(chunk).await.unwrap();
        }
        s.close().await;
    });
}

/// A destination that already holds a row of its own, so "as it was" is not just "empty".
fn destination(url: &str) -> Contents {
    prepared(url);
    block_on(async {
        let s = AnyStore::open(&DatabaseUrl::parse(url).unwrap(), 1)
            .await
            .unwrap();
        s.save_torrent_downloads(&big_hash(9_000_000), 3)
            .await
            .unwrap();
        s.close().await;
    });
    contents(url)
}

fn args<'a>(from: &'a str, to: &'a str) -> Vec<&'a str> {
    vec![
        "migrate",
        "--batch-rows",
        BATCH,
        "--from",
        from,
        "--to",
        to,
        "--merge",
        "add",
    ]
}

/// Holds a PostgreSQL source's whitelist locked until dropped: a copy from it reads every
/// torrent, then waits.
struct Paused {
    _holding: sqlx::PgConnection,
}

fn paused(source: &str) -> Paused {
    use sqlx::Connection;
    block_on(async {
        let mut c = sqlx::PgConnection::connect(source).await.unwrap();
        sqlx::raw_sql("BEGIN; LOCK TABLE whitelist IN ACCESS EXCLUSIVE MODE")
            .execute(&mut c)
            .await
            .unwrap();
        Paused { _holding: c }
    })
}

/// A fresh PostgreSQL source with `ROWS` torrents.
fn source() -> String {
    let url = database("postgres").unwrap();
    fill(&url);
    url
}

/// Starts the copy from a paused source (see `paused`) and returns once it reports the
/// torrents written to the destination's open transaction; dropping the `Paused` lets it go on.
fn started_copy(from: &str, to: &str) -> (Child, mpsc::Receiver<String>, Paused) {
    let pause = paused(from);
    let mut child = command(&args(from, to))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let err = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    loop {
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("no progress; exit: {:?}", child.try_wait()));
        let copied = line
            .split_once(" rows copied")
            .and_then(|(head, _)| head.rsplit(' ').next()?.parse::<u64>().ok());
        if copied.is_some_and(|n| n >= u64::from(ROWS)) {
            return (child, rx, pause);
        }
    }
}

fn failed(mut child: Child, rx: mpsc::Receiver<String>) -> String {
    let status = child.wait().unwrap();
    assert!(!status.success(), "the copy was expected to fail");
    // The reader thread ends at the end of stderr, so this is everything it printed.
    rx.iter().collect::<Vec<_>>().join("\n")
}

/// The fault is gone: the same command succeeds and the destination holds both.
fn succeeds_again(from: &str, to: &str, before: &Contents) {
    let out = command(&args(from, to)).output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    let after = contents(to);
    assert_eq!(
        after.torrents.len(),
        ROWS as usize + before.torrents.len(),
        "{text}"
    );
    assert_eq!(after.torrents[&big_hash(7)], 3);
}

fn interrupted(signal: i32, to: &str) {
    let from = source();
    let before = destination(to);
    let (child, rx, pause) = started_copy(&from, to);
    unsafe { libc::kill(child.id() as i32, signal) };
    drop(pause);
    failed(child, rx);
    assert_eq!(
        contents(to),
        before,
        "signal {signal} mid-copy wrote something"
    );
    succeeds_again(&from, to, &before);
}

#[test]
fn sigint_and_sigkill_mid_copy_write_nothing_to_sqlite() {
    for signal in [libc::SIGINT, libc::SIGKILL] {
        let dir = temp_dir();
        interrupted(signal, &format!("sqlite://{}/dst.db", dir.path().display()));
    }
}

#[test]
fn sigint_and_sigkill_mid_copy_write_nothing_to_postgres() {
    for signal in [libc::SIGINT, libc::SIGKILL] {
        interrupted(signal, &database("postgres").unwrap());
    }
}

/// A PostgreSQL server of the test's own, so it can be stopped mid-copy.
fn own_server() -> testkit::Server {
    block_on(testkit::Server::launch(testkit::Kind::Postgres)).unwrap()
}

#[test]
fn the_source_server_lost_mid_copy_writes_nothing() {
    let mut server = own_server();
    let from = block_on(server.create_database("src")).unwrap();
    fill(&from);
    let dir = temp_dir();
    for to in [
        format!("sqlite://{}/dst.db", dir.path().display()),
        database("postgres").unwrap(),
    ] {
        let before = destination(&to);
        let (child, rx, pause) = started_copy(&from, &to);
        server.stop();
        drop(pause);
        let log = failed(child, rx);
        assert_eq!(
            contents(&to),
            before,
            "a lost source wrote something: {log}"
        );
        server.restart().unwrap();
        succeeds_again(&from, &to, &before);
    }
}

#[test]
fn the_destination_server_lost_mid_copy_writes_nothing() {
    let mut server = own_server();
    let to = block_on(server.create_database("dst")).unwrap();
    let from = source();
    let before = destination(&to);
    let (child, rx, pause) = started_copy(&from, &to);
    server.stop();
    // The copy notices the lost destination once it reads on.
    drop(pause);
    let log = failed(child, rx);
    server.restart().unwrap();
    assert_eq!(
        contents(&to),
        before,
        "a lost destination kept part of the copy: {log}"
    );
    succeeds_again(&from, &to, &before);
}

#[test]
fn a_full_destination_disk_writes_nothing() {
    let dir = temp_dir();
    let from = format!("sqlite://{}/src.db", dir.path().display());
    fill(&from);
    let disk = SmallDisk::mount(dir.path().join("disk"), "1M");
    let to = format!("sqlite://{}/dst.db", disk.0.display());
    let before = destination(&to);
    let out = command(&args(&from, &to)).output().unwrap();
    let text = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success() && text.contains("full"), "{text}");
    assert_eq!(contents(&to), before, "a full disk kept part of the copy");
    disk.grow("256M");
    succeeds_again(&from, &to, &before);
}

/// docs/design.md, "Moving data": a database is never copied into itself, whatever its URL looks like;
/// `--merge add` into itself used to double every count.
#[test]
fn a_database_is_never_copied_into_itself() {
    let dir = temp_dir();
    std::fs::create_dir(dir.path().join("data")).unwrap();
    let url = format!("sqlite://{}/data/s.db", dir.path().display());
    destination(&url);
    std::fs::hard_link(dir.path().join("data/s.db"), dir.path().join("linked.db")).unwrap();
    let before = contents(&url);
    for (from, to) in [
        ("sqlite://data/s.db", "sqlite://./data/s.db"),
        ("sqlite://data/s.db", "sqlite://data//s.db"),
        ("sqlite://data/s.db", url.as_str()),
        ("sqlite://linked.db", "sqlite://data/s.db"),
    ] {
        let out = command(&["migrate", "--from", from, "--to", to, "--merge", "add"])
            .current_dir(dir.path())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && text.contains("same database"),
            "{from} {to}: {text}"
        );
    }
    assert_eq!(contents(&url), before, "the count was not doubled");

    let pg = database("postgres").unwrap();
    let before = destination(&pg);
    let other_spelling = pg.replace("127.0.0.1", "localhost");
    assert_ne!(pg, other_spelling);
    let (ok, out) = migrate(&["--from", &pg, "--to", &other_spelling, "--merge", "add"]);
    assert!(!ok && out.contains("same database"), "{out}");
    assert_eq!(contents(&pg), before);
    // Two databases on one server are not the same database.
    let twin = database("postgres").unwrap();
    let (ok, out) = migrate(&["--from", &pg, "--to", &twin]);
    assert!(ok, "{out}");
}

/// A source still written to during the copy: the second read, before the commit, sees the
/// change and nothing is written (it used to run after the commit).
#[test]
fn a_source_written_during_the_copy_writes_nothing() {
    let from = source();
    let dir = temp_dir();
    let to = format!("sqlite://{}/dst.db", dir.path().display());
    let before = destination(&to);
    let (child, rx, pause) = started_copy(&from, &to);
    block_on(async {
        let s = AnyStore::open(&DatabaseUrl::parse(&from).unwrap(), 1)
            .await
            .unwrap();
        s.add_downloads(&[(big_hash(ROWS + 1), 1)]).await.unwrap();
        s.close().await;
    });
    drop(pause);
    let log = failed(child, rx);
    assert!(log.contains("changed while it was copied"), "{log}");
    assert_eq!(contents(&to), before, "a changing source wrote something");
}
