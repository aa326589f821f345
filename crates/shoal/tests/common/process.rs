//! The process under test: a config on loopback ports, `shoal serve` started and stopped,
//! commands, database servers, a disk that fills up.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::clients::http_get;

pub const BIN: &str = env!("CARGO_BIN_EXE_shoal");

pub struct Shoal {
    child: Child,
    pub udp: Vec<SocketAddr>,
    pub http: Vec<SocketAddr>,
    /// WebSocket tracker listeners (`ws.bind`), ws:// or wss://.
    pub ws: Vec<SocketAddr>,
    pub api: SocketAddr,
    pub log: mpsc::Receiver<String>,
    /// Everything logged up to and including the "ready" line.
    pub start_log: Vec<String>,
}

/// A config on loopback ports chosen by the kernel, with a database in `dir`.
pub fn config(dir: &Path, extra: &str) -> PathBuf {
    Setup {
        extra,
        ..Setup::default()
    }
    .write(dir)
}

/// What a test changes in the config: the mode, the database, the token, and raw TOML that is
/// appended last (so it may open further tables).
#[derive(Default, Clone)]
pub struct Setup<'a> {
    pub mode: &'a str,
    pub db_url: Option<String>,
    pub token: &'a str,
    pub database_extra: &'a str,
    /// 100 ms unless set.
    pub flush_interval_ms: Option<u64>,
    pub http_extra: &'a str,
    pub extra: &'a str,
}

impl<'a> Setup<'a> {
    /// A tracker in `mode` whose admin API takes `token`.
    pub fn mode(mode: &'a str, token: &'a str) -> Setup<'a> {
        Setup {
            mode,
            token,
            ..Setup::default()
        }
    }

    pub fn write(&self, dir: &Path) -> PathBuf {
        let path = dir.join("shoal.toml");
        let url = self
            .db_url
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}/shoal.db", dir.display()));
        let mode = if self.mode.is_empty() {
            "public"
        } else {
            self.mode
        };
        let text = format!(
            "mode = \"{mode}\"\n[database]\nurl = \"{url}\"\nflush_interval_ms = {}\n{}\n\
             [udp]\nbind = [\"127.0.0.1:0\", \"[::1]:0\"]\nworkers = 2\n\
             [http]\nbind = [\"127.0.0.1:0\", \"[::1]:0\"]\n{}\n[api]\nbind = \"127.0.0.1:0\"\ntoken = \"{}\"\n{}",
            self.flush_interval_ms.unwrap_or(100),
            self.database_extra,
            self.http_extra,
            self.token,
            self.extra
        );
        std::fs::write(&path, text).unwrap();
        path
    }

    pub fn start(&self, dir: &Path) -> Shoal {
        let cfg = self.write(dir);
        Shoal::spawn(command(&["serve", "--config", cfg.to_str().unwrap()]))
    }
}

/// The binary under test: this build's, or `SHOAL_TEST_BIN` (to run the suite against an
/// older build and see which promises it broke).
pub fn bin() -> String {
    std::env::var("SHOAL_TEST_BIN").unwrap_or_else(|_| BIN.to_string())
}

pub fn command(args: &[&str]) -> Command {
    let mut cmd = Command::new(bin());
    cmd.args(args);
    // The tests' own environment must not reconfigure the server under test.
    for (k, _) in std::env::vars() {
        if k.starts_with("SHOAL_") {
            cmd.env_remove(k);
        }
    }
    cmd
}

impl Shoal {
    pub fn start(dir: &Path, extra: &str) -> Shoal {
        let cfg = config(dir, extra);
        Shoal::spawn(command(&["serve", "--config", cfg.to_str().unwrap()]))
    }

    pub fn spawn(mut cmd: Command) -> Shoal {
        let mut child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start shoal");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let (mut udp, mut http, mut ws, mut api) = (vec![], vec![], vec![], None);
        let mut start_log = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = rx.recv_timeout(left).unwrap_or_else(|_| {
                panic!("shoal did not become ready; exit: {:?}", child.try_wait())
            });
            let addr = || {
                line.rsplit(' ')
                    .next()
                    .unwrap()
                    .parse::<SocketAddr>()
                    .unwrap()
            };
            if line.contains("udp tracker listening on") {
                udp.push(addr());
            } else if line.contains("http tracker listening on") {
                http.push(addr());
            } else if line.contains("ws tracker listening on")
                || line.contains("wss tracker listening on")
            {
                ws.push(addr());
            } else if line.contains("admin api listening on") {
                api = Some(addr());
            }
            let ready = line.contains("ready:");
            start_log.push(line);
            if ready {
                break;
            }
        }
        Shoal {
            child,
            udp,
            http,
            ws,
            api: api.expect("api address logged"),
            log: rx,
            start_log,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
    }

    /// SIGTERM, then the exit status and everything logged meanwhile.
    pub fn stop(self) -> (ExitStatus, Vec<String>) {
        self.signal("TERM");
        self.exited()
    }

    /// Waits for the process to exit by itself: its status and everything logged meanwhile.
    pub fn exited(mut self) -> (ExitStatus, Vec<String>) {
        let status = wait_timeout(&mut self.child, Duration::from_secs(20));
        // Read to the end of stderr: the reader thread may still be behind the exit.
        let mut log = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(5);
        while let Ok(line) = self
            .log
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            log.push(line);
        }
        (status, log)
    }

    pub fn kill(mut self) {
        self.signal("KILL");
        wait_timeout(&mut self.child, Duration::from_secs(10));
    }

    pub fn metrics(&self) -> String {
        let (_, body) = http_get(self.api, "/metrics");
        String::from_utf8(body).unwrap()
    }

    /// The value of one metric line (`name{labels}` as printed), 0 when absent.
    pub fn metric(&self, series: &str) -> u64 {
        self.metrics()
            .lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for Shoal {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_timeout(child: &mut Child, limit: Duration) -> ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "shoal did not exit within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Polls `done` until it holds, failing the test after `limit`; returns the time it took.
pub fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !done() {
        assert!(
            started.elapsed() < limit,
            "gave up waiting for {what} after {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    started.elapsed()
}

/// `dir/name`, created.
pub fn subdir(dir: &Path, name: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::create_dir_all(&p).unwrap();
    p
}

pub fn temp_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("shoal-test-")
        .tempdir()
        .unwrap()
}

/// A fresh database for a test on the given backend ("sqlite" means the default in the test dir).
pub fn database(backend: &str) -> Option<String> {
    let kind = match backend {
        "sqlite" => return None,
        "postgres" => testkit::Kind::Postgres,
        "mariadb" => testkit::Kind::MariaDb,
        other => panic!("unknown backend {other}"),
    };
    Some(block_on(testkit::fresh_database(kind)))
}

/// Runs async work (store calls, test servers) from a synchronous test. One runtime for the
/// whole test process, so a pool opened in one call still works in the next.
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    static RT: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    })
    .block_on(f)
}

/// A small tmpfs (`size` as mount takes it, e.g. "4M"): a disk that can really fill up.
/// Unmounted on drop.
pub struct SmallDisk(pub std::path::PathBuf);

impl SmallDisk {
    pub fn mount(at: std::path::PathBuf, size: &str) -> SmallDisk {
        std::fs::create_dir_all(&at).unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&at)
            .status()
            .expect("mount");
        assert!(
            ok.success(),
            "mounting a tmpfs at {} failed: this test needs root",
            at.display()
        );
        SmallDisk(at)
    }

    /// Writes a file until the disk says it is full.
    pub fn fill(&self) -> std::path::PathBuf {
        use std::io::Write;
        let path = self.0.join("filler");
        let mut f = std::fs::File::create(&path).unwrap();
        let chunk = [0u8; 4096];
        loop {
            match f.write_all(&chunk) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(28) => break, // ENOSPC
                Err(e) => panic!("filling the disk: {e}"),
            }
        }
        path
    }

    /// Gives the disk room again, keeping what it holds.
    pub fn grow(&self, size: &str) {
        let ok = std::process::Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.0)
            .status()
            .expect("mount");
        assert!(ok.success(), "remounting {} failed", self.0.display());
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}
