//! A throwaway Redis (or Valkey) server: Debian's `redis-server` on a free loopback port with
//! a fresh directory and no persistence, so a restart comes back empty, as a Redis restarted
//! without persistence does in production.

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::{READY_TIMEOUT, free_port, spawn_tied, sweep_stale};

pub struct Redis {
    dir: PathBuf,
    port: u16,
    /// Serving TLS only, with a certificate for 127.0.0.1 signed by `ca.pem` in `dir`.
    tls: bool,
    pid: Option<u32>,
    exited: Option<mpsc::Receiver<()>>,
}

impl Redis {
    /// Starts a server and waits until it answers PING.
    pub fn launch() -> Result<Redis, String> {
        Self::launch_with(false, false)
    }

    /// Starts a server that speaks TLS only (`rediss://`), its certificate signed by a CA
    /// made for it (`ca_path`), which no system trusts.
    pub fn launch_tls() -> Result<Redis, String> {
        Self::launch_with(true, false)
    }

    /// As `launch_tls`, with the certificate `openssl req -x509` makes in one line: self-
    /// signed and marked CA; `ca_path` is that certificate itself.
    pub fn launch_tls_self_signed() -> Result<Redis, String> {
        Self::launch_with(true, true)
    }

    fn launch_with(tls: bool, self_signed: bool) -> Result<Redis, String> {
        let root = std::env::temp_dir().join("shoal-testkit");
        sweep_stale(&root);
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = root.join(format!(
            "redis-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        if self_signed {
            make_self_signed(&dir)?;
        } else if tls {
            make_certificates(&dir)?;
        }
        let mut r = Redis {
            dir,
            port: free_port()?,
            tls,
            pid: None,
            exited: None,
        };
        r.run()?;
        Ok(r)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        let scheme = if self.tls { "rediss" } else { "redis" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// The CA that signed a TLS server's certificate.
    pub fn ca_path(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    fn run(&mut self) -> Result<(), String> {
        let bin = which("redis-server").ok_or(
            "redis-server is not installed (Debian package redis-server); scripts/test installs it",
        )?;
        let mut cmd = Command::new(bin);
        if self.tls {
            cmd.args(["--port", "0", "--tls-port", &self.port.to_string()])
                .arg("--tls-cert-file")
                .arg(self.dir.join("server.pem"))
                .arg("--tls-key-file")
                .arg(self.dir.join("server.key"))
                .arg("--tls-ca-cert-file")
                .arg(self.ca_path())
                .args(["--tls-auth-clients", "no"]);
        } else {
            cmd.args(["--port", &self.port.to_string()]);
        }
        cmd.args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .args(["--logfile", "redis.log", "--daemonize", "no"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let (pid, exited) = spawn_tied(cmd, None).map_err(|e| format!("redis-server: {e}"))?;
        self.pid = Some(pid);
        self.exited = Some(exited);
        let deadline = Instant::now() + READY_TIMEOUT;
        while Instant::now() < deadline {
            let log = fs::read_to_string(self.dir.join("redis.log")).unwrap_or_default();
            if (self.tls && log.contains("Ready to accept connections"))
                || (!self.tls && self.ping())
            {
                return Ok(());
            }
            if self.exited.as_ref().is_some_and(|rx| rx.try_recv().is_ok()) {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let log = fs::read_to_string(self.dir.join("redis.log")).unwrap_or_default();
        Err(format!("redis-server did not become ready:\n{log}"))
    }

    /// Whether the server answers PING now.
    pub fn ping(&self) -> bool {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
        let mut buf = [0u8; 7];
        s.write_all(b"PING\r\n").is_ok() && s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
    }

    /// Stops the server and waits until it has exited; its data is gone.
    pub fn stop(&mut self) {
        if let (Some(pid), Some(exited)) = (self.pid.take(), self.exited.take()) {
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            let _ = exited.recv_timeout(Duration::from_secs(30));
        }
    }

    /// Starts the server again on the same port, empty.
    pub fn restart(&mut self) -> Result<(), String> {
        self.stop();
        self.run()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// A CA (`ca.pem`) and a certificate for 127.0.0.1 signed by it (`server.pem`, `server.key`)
/// in `dir`, made with the openssl command line.
/// `server.pem`/`server.key` for 127.0.0.1 from the usual one-liner (self-signed, marked
/// CA), and `ca.pem` a copy of `server.pem`.
pub fn make_self_signed(dir: &std::path::Path) -> Result<(), String> {
    let out = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .args([
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ])
        .args(["-keyout", "server.key", "-out", "server.pem"])
        .current_dir(dir)
        .output()
        .map_err(|e| format!("openssl: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "openssl req -x509: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    fs::copy(dir.join("server.pem"), dir.join("ca.pem")).map_err(|e| e.to_string())?;
    Ok(())
}

pub fn make_certificates(dir: &std::path::Path) -> Result<(), String> {
    let run = |args: &[&str]| -> Result<(), String> {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .map_err(|e| format!("openssl: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=shoal test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    ])?;
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
    ])?;
    fs::write(
        dir.join("san.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .map_err(|e| e.to_string())?;
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "san.ext",
        "-out",
        "server.pem",
    ])
}

/// An installed program by name: on PATH, or in /usr/bin or /usr/sbin (Debian puts servers there).
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/bin".into(), "/usr/sbin".into()])
        .map(|d| d.join(name))
        .find(|p| p.exists())
}
