//! Throwaway servers for tests: PostgreSQL, MariaDB and Redis (`redis.rs`) started from installed
//! binaries on a random loopback port with a fresh data directory, or the server named by
//! `SHOAL_TEST_POSTGRES_URL` / `SHOAL_TEST_MYSQL_URL`. A test that needs a server and cannot
//! get one fails with the reason; nothing here skips.
//!
//! Servers run as a dedicated system user when the tests run as root (PostgreSQL refuses
//! root), and die with the test process (parent-death signal), so none outlive a run.

use std::fs;
use std::io::{self, Read};
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, mpsc};
use std::time::{Duration, Instant};

use sqlx::Connection;
use tokio::sync::OnceCell;

mod redis;
pub use redis::{Redis, make_certificates, make_self_signed, which};

/// The system user servers run as when the tests run as root.
const SERVER_USER: &str = "shoal-test";
const PASSWORD: &str = "shoal-test-pw";
pub(crate) const READY_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Postgres,
    MariaDb,
}

/// A running server this process started. Dropping it stops the server.
pub struct Server {
    kind: Kind,
    dir: PathBuf,
    port: u16,
    pid: Option<u32>,
    exited: Option<Mutex<mpsc::Receiver<()>>>,
    durable: bool,
}

/// A fresh, empty database on a shared server; `url` carries a password.
pub async fn fresh_database(kind: Kind) -> String {
    static PG: OnceCell<Result<Shared, String>> = OnceCell::const_new();
    static MY: OnceCell<Result<Shared, String>> = OnceCell::const_new();
    let cell = match kind {
        Kind::Postgres => &PG,
        Kind::MariaDb => &MY,
    };
    let shared = cell.get_or_init(|| Shared::get(kind)).await;
    let shared = match shared {
        Ok(s) => s,
        Err(e) => panic!("{kind:?} is needed by this test and could not be started: {e}"),
    };
    static N: AtomicU32 = AtomicU32::new(0);
    let name = format!(
        "shoal_test_{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    );
    create_database(kind, &shared.admin_url, &name)
        .await
        .unwrap_or_else(|e| panic!("cannot create database {name}: {e}"));
    with_database(&shared.admin_url, &name)
}

/// A shared server: one started here, or one given in the environment.
struct Shared {
    admin_url: String,
    _server: Option<Server>,
}

impl Shared {
    async fn get(kind: Kind) -> Result<Shared, String> {
        let var = match kind {
            Kind::Postgres => "SHOAL_TEST_POSTGRES_URL",
            Kind::MariaDb => "SHOAL_TEST_MYSQL_URL",
        };
        if let Ok(url) = std::env::var(var) {
            return Ok(Shared {
                admin_url: url,
                _server: None,
            });
        }
        let server = Server::launch(kind).await?;
        let admin_url = server.admin_url();
        Ok(Shared {
            admin_url,
            _server: Some(server),
        })
    }
}

fn with_database(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, format!("?{q}")),
        None => (url, String::new()),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let base = match base[scheme_end..].find('/') {
        Some(i) => &base[..scheme_end + i],
        None => base,
    };
    format!("{base}/{db}{query}")
}

async fn create_database(kind: Kind, admin_url: &str, name: &str) -> Result<(), String> {
    let sql = format!("CREATE DATABASE {name}");
    match kind {
        Kind::Postgres => {
            let mut c = sqlx::PgConnection::connect(&with_database(admin_url, "postgres"))
                .await
                .map_err(|e| e.to_string())?;
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                .execute(&mut c)
                .await
                .map_err(|e| e.to_string())?;
        }
        Kind::MariaDb => {
            let mut c = sqlx::MySqlConnection::connect(admin_url)
                .await
                .map_err(|e| e.to_string())?;
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                .execute(&mut c)
                .await
                .map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}

impl Server {
    /// Starts a private server with a fresh data directory on a free loopback port, with a
    /// user `shoal` that logs in with a password over TCP.
    pub async fn launch(kind: Kind) -> Result<Server, String> {
        Self::launch_with(kind, false).await
    }

    /// As `launch`; `durable` keeps the servers' default flush-on-commit settings (for
    /// benchmarks) instead of trading durability for test speed.
    pub async fn launch_with(kind: Kind, durable: bool) -> Result<Server, String> {
        let server = tokio::task::spawn_blocking(move || Server::start(kind, durable))
            .await
            .map_err(|e| e.to_string())??;
        if kind == Kind::MariaDb {
            server.mariadb_user().await?;
        }
        Ok(server)
    }

    fn start(kind: Kind, durable: bool) -> Result<Server, String> {
        let root = std::env::temp_dir().join("shoal-testkit");
        sweep_stale(&root);
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = root.join(
            format!(
                "{kind:?}-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            )
            .to_lowercase(),
        );
        fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let owner = server_user()?;
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(&dir, Some(uid), Some(gid))
                .map_err(|e| format!("chown {}: {e}", dir.display()))?;
        }
        let mut server = Server {
            kind,
            dir,
            port: free_port()?,
            pid: None,
            exited: None,
            durable,
        };
        server.init(owner)?;
        server.run()?;
        Ok(server)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// A URL for a database on this server, as the test user with its password.
    pub fn url(&self, db: &str) -> String {
        match self.kind {
            Kind::Postgres => format!("postgresql://shoal:{PASSWORD}@127.0.0.1:{}/{db}", self.port),
            Kind::MariaDb => format!("mysql://shoal:{PASSWORD}@127.0.0.1:{}/{db}", self.port),
        }
    }

    /// A URL for creating databases.
    pub fn admin_url(&self) -> String {
        match self.kind {
            Kind::Postgres => self.url("postgres"),
            Kind::MariaDb => self.url("mysql"),
        }
    }

    /// The server's version string as it reports it (`SELECT version()`).
    pub async fn version(&self) -> Result<String, String> {
        let sql = "SELECT version()";
        match self.kind {
            Kind::Postgres => {
                let mut c = sqlx::PgConnection::connect(&self.admin_url())
                    .await
                    .map_err(|e| e.to_string())?;
                sqlx::query_scalar(sql)
                    .fetch_one(&mut c)
                    .await
                    .map_err(|e| e.to_string())
            }
            Kind::MariaDb => {
                let mut c = sqlx::MySqlConnection::connect(&self.admin_url())
                    .await
                    .map_err(|e| e.to_string())?;
                sqlx::query_scalar(sql)
                    .fetch_one(&mut c)
                    .await
                    .map_err(|e| e.to_string())
            }
        }
    }

    /// Creates a database on this server and returns its URL.
    pub async fn create_database(&self, name: &str) -> Result<String, String> {
        create_database(self.kind, &self.admin_url(), name).await?;
        Ok(self.url(name))
    }

    /// Stops the server (fast shutdown) and waits until it has exited.
    pub fn stop(&mut self) {
        if let (Some(pid), Some(exited)) = (self.pid.take(), self.exited.take()) {
            // SIGINT is PostgreSQL's fast shutdown; SIGTERM is MariaDB's normal one.
            let sig = if self.kind == Kind::Postgres {
                libc::SIGINT
            } else {
                libc::SIGTERM
            };
            unsafe { libc::kill(pid as i32, sig) };
            let _ = exited
                .into_inner()
                .map(|rx| rx.recv_timeout(Duration::from_secs(30)));
        }
    }

    /// Starts the server again on the same data directory and port (blocks until ready).
    pub fn restart(&mut self) -> Result<(), String> {
        self.stop();
        self.run()
    }

    fn init(&self, owner: Option<(u32, u32)>) -> Result<(), String> {
        let dir = &self.dir;
        match self.kind {
            Kind::Postgres => {
                let pwfile = dir.join("pwfile");
                fs::write(&pwfile, PASSWORD).map_err(|e| e.to_string())?;
                if let Some((uid, gid)) = owner {
                    std::os::unix::fs::chown(&pwfile, Some(uid), Some(gid))
                        .map_err(|e| e.to_string())?;
                }
                let mut cmd = Command::new(pg_bin("initdb")?);
                cmd.args(["-D"]).arg(dir.join("data")).args([
                    "-U",
                    "shoal",
                    "-A",
                    "scram-sha-256",
                    "-E",
                    "UTF8",
                    "--no-sync",
                ]);
                cmd.arg(format!("--pwfile={}", pwfile.display()));
                run_to_end(cmd, owner, &dir.join("init.log"))
            }
            Kind::MariaDb => {
                let mut cmd = Command::new(mariadb_bin("mariadb-install-db", "/usr/bin")?);
                cmd.args([
                    "--no-defaults",
                    "--auth-root-authentication-method=normal",
                    "--skip-test-db",
                ]);
                cmd.arg(format!("--datadir={}", dir.join("data").display()));
                run_to_end(cmd, owner, &dir.join("init.log"))
            }
        }
    }

    fn run(&mut self) -> Result<(), String> {
        let owner = server_user()?;
        let dir = &self.dir;
        let log = dir.join("server.log");
        let mut cmd = match self.kind {
            Kind::Postgres => {
                let mut cmd = Command::new(pg_bin("postgres")?);
                cmd.arg("-D").arg(dir.join("data")).args([
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &self.port.to_string(),
                ]);
                cmd.arg("-k").arg(dir);
                cmd.args(["-c", "max_connections=200"]);
                if !self.durable {
                    // Durability is not under test here; speed is welcome.
                    cmd.args(["-c", "fsync=off", "-c", "full_page_writes=off"]);
                }
                cmd
            }
            Kind::MariaDb => {
                let mut cmd = Command::new(mariadb_bin("mariadbd", "/usr/sbin")?);
                cmd.arg("--no-defaults");
                cmd.arg(format!("--datadir={}", dir.join("data").display()));
                cmd.arg(format!("--socket={}", dir.join("mysqld.sock").display()));
                cmd.arg(format!("--pid-file={}", dir.join("mysqld.pid").display()));
                cmd.args(["--bind-address=127.0.0.1", &format!("--port={}", self.port)]);
                cmd.args(["--skip-log-bin", "--innodb-buffer-pool-size=128M"]);
                if !self.durable {
                    cmd.arg("--innodb-flush-log-at-trx-commit=2");
                }
                cmd
            }
        };
        let start = fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
        let out = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .map_err(|e| e.to_string())?;
        let err = out.try_clone().map_err(|e| e.to_string())?;
        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
        let (pid, exited) =
            spawn_tied(cmd, owner).map_err(|e| format!("cannot start {:?}: {e}", self.kind))?;
        self.pid = Some(pid);
        self.exited = Some(Mutex::new(exited));
        let ready_line = match self.kind {
            Kind::Postgres => "database system is ready to accept connections",
            Kind::MariaDb => "ready for connections",
        };
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let text = read_from(&log, start);
            if text.contains(ready_line) {
                break;
            }
            if self
                .exited
                .as_ref()
                .is_some_and(|rx| rx.lock().is_ok_and(|rx| rx.try_recv().is_ok()))
                || Instant::now() > deadline
            {
                self.pid = None;
                return Err(format!(
                    "{:?} did not become ready; its log ({}):\n{}",
                    self.kind,
                    log.display(),
                    tail(&text)
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// Creates the password-protected test user over the socket, where root needs none.
    async fn mariadb_user(&self) -> Result<(), String> {
        let socket = self.dir.join("mysqld.sock");
        let url = format!("mysql://root@localhost/mysql?socket={}", socket.display());
        let mut c = sqlx::MySqlConnection::connect(&url)
            .await
            .map_err(|e| format!("root over {}: {e}", socket.display()))?;
        let sql = format!(
            "CREATE USER IF NOT EXISTS 'shoal'@'127.0.0.1' IDENTIFIED BY '{PASSWORD}'; GRANT ALL PRIVILEGES ON *.* TO 'shoal'@'127.0.0.1';"
        );
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&mut c)
            .await
            .map_err(|e| e.to_string())?;
        Ok(())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn read_from(path: &Path, start: u64) -> String {
    let mut s = String::new();
    if let Ok(mut f) = fs::File::open(path) {
        let mut buf = Vec::new();
        let _ = f.read_to_end(&mut buf);
        s = String::from_utf8_lossy(buf.get(start as usize..).unwrap_or_default()).into_owned();
    }
    s
}

fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

pub(crate) fn free_port() -> Result<u16, String> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    Ok(l.local_addr().map_err(|e| e.to_string())?.port())
}

/// PostgreSQL binaries from `SHOAL_TEST_PG_BIN`, else the newest Debian install.
fn pg_bin(name: &str) -> Result<PathBuf, String> {
    if let Ok(dir) = std::env::var("SHOAL_TEST_PG_BIN") {
        return Ok(Path::new(&dir).join(name));
    }
    let mut versions: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .map_err(|e| {
            format!(
                "PostgreSQL is not installed (/usr/lib/postgresql: {e}); scripts/test installs it"
            )
        })?
        .filter_map(|e| {
            let e = e.ok()?;
            let v = e.file_name().to_str()?.parse().ok()?;
            Some((v, e.path().join("bin").join(name)))
        })
        .filter(|(_, p)| p.exists())
        .collect();
    versions.sort();
    versions
        .pop()
        .map(|(_, p)| p)
        .ok_or_else(|| format!("no {name} under /usr/lib/postgresql/*/bin"))
}

fn mariadb_bin(name: &str, default_dir: &str) -> Result<PathBuf, String> {
    let dir = std::env::var("SHOAL_TEST_MARIADB_BIN").unwrap_or_else(|_| default_dir.to_string());
    let p = Path::new(&dir).join(name);
    if p.exists() {
        Ok(p)
    } else {
        Err(format!(
            "{} not found; scripts/test installs mariadb-server",
            p.display()
        ))
    }
}

/// `Some((uid, gid))` of the dedicated server user when running as root, creating it if needed.
fn server_user() -> Result<Option<(u32, u32)>, String> {
    if unsafe { libc::geteuid() } != 0 {
        return Ok(None);
    }
    let lookup = || -> Option<(u32, u32)> {
        let out = Command::new("id").arg(SERVER_USER).output().ok()?;
        if !out.status.success() {
            return None;
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let num = |key: &str| {
            text.split(key)
                .nth(1)?
                .split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse()
                .ok()
        };
        Some((num("uid=")?, num("gid=")?))
    };
    if let Some(ids) = lookup() {
        return Ok(Some(ids));
    }
    let status = Command::new("useradd")
        .args([
            "--system",
            "--user-group",
            "--no-create-home",
            "--shell",
            "/usr/sbin/nologin",
            SERVER_USER,
        ])
        .status()
        .map_err(|e| format!("useradd: {e}"))?;
    // Another test process may have created it meanwhile; look again either way.
    lookup()
        .map(Some)
        .ok_or_else(|| format!("cannot create system user {SERVER_USER} (useradd {status})"))
}

fn drop_privileges(cmd: &mut Command, owner: Option<(u32, u32)>) {
    if let Some((uid, gid)) = owner {
        cmd.uid(uid).gid(gid);
        cmd.env("HOME", "/tmp").env("USER", SERVER_USER);
    }
}

fn run_to_end(mut cmd: Command, owner: Option<(u32, u32)>, log: &Path) -> Result<(), String> {
    drop_privileges(&mut cmd, owner);
    let out = cmd
        .output()
        .map_err(|e| format!("{:?}: {e}", cmd.get_program()))?;
    let _ = fs::write(log, [&out.stdout[..], &out.stderr[..]].concat());
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{:?} failed ({}):\n{}",
            cmd.get_program(),
            out.status,
            tail(&String::from_utf8_lossy(&out.stderr))
        ))
    }
}

/// Spawns a child that gets SIGKILL when this process dies, from a thread that lives as long
/// as the child (the parent-death signal follows the spawning thread). Returns the pid and a
/// receiver that yields once the child has exited.
pub(crate) fn spawn_tied(
    mut cmd: Command,
    owner: Option<(u32, u32)>,
) -> io::Result<(u32, mpsc::Receiver<()>)> {
    drop_privileges(&mut cmd, owner);
    // Runs after the uid change, which would clear an earlier parent-death signal.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let (started_tx, started_rx) = mpsc::channel();
    let (exited_tx, exited_rx) = mpsc::channel();
    std::thread::spawn(move || match cmd.spawn() {
        Ok(mut child) => {
            let _ = started_tx.send(Ok(child.id()));
            let _ = child.wait();
            let _ = exited_tx.send(());
        }
        Err(e) => {
            let _ = started_tx.send(Err(e));
        }
    });
    let pid = started_rx.recv().map_err(io::Error::other)??;
    Ok((pid, exited_rx))
}

/// Removes data directories left by test processes that no longer run.
pub(crate) fn sweep_stale(root: &Path) {
    let Ok(entries) = fs::read_dir(root) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.split('-').nth(1))
            .and_then(|p| p.parse::<i32>().ok())
        else {
            continue;
        };
        if unsafe { libc::kill(pid, 0) } != 0
            && io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH)
        {
            let _ = fs::remove_dir_all(e.path());
        }
    }
}
