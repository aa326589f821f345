//! HTTPS: a certificate chain and key from PEM files, checked at start (a missing, unreadable
//! or mismatched pair stops start-up naming the key) and reloaded when the files change or on
//! SIGHUP. Open connections keep the configuration they were accepted with; new ones take the
//! new one, so a renewal drops nobody.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use crate::config::TlsFiles;

/// How often the files are looked at for a change.
const POLL: Duration = Duration::from_secs(2);

pub struct Certs {
    /// The config keys, for messages (`http.tls_cert_path`, …).
    keys: (&'static str, &'static str),
    cert: PathBuf,
    key: PathBuf,
    current: ArcSwap<ServerConfig>,
    stamp: Mutex<Option<(SystemTime, SystemTime)>>,
}

fn stamp(p: &Path) -> Option<SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

fn load(cert: &Path, key: &Path, keys: (&str, &str)) -> Result<ServerConfig, String> {
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| {
            format!(
                "{}: cannot read a PEM certificate chain from {}: {e}",
                keys.0,
                cert.display()
            )
        })?;
    if chain.is_empty() {
        return Err(format!(
            "{}: {} holds no certificate",
            keys.0,
            cert.display()
        ));
    }
    let private = PrivateKeyDer::from_pem_file(key).map_err(|e| {
        format!(
            "{}: cannot read a PEM private key from {}: {e}",
            keys.1,
            key.display()
        )
    })?;
    let mut config =
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_no_client_auth()
            .with_single_cert(chain, private)
            .map_err(|e| format!("{} and {} do not make a pair: {e}", keys.0, keys.1))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

impl Certs {
    /// `keys` are the two config keys, named in every error.
    pub fn open(files: TlsFiles) -> Result<Arc<Certs>, String> {
        let TlsFiles { cert, key, keys } = files;
        let config = load(&cert, &key, keys)?;
        Ok(Arc::new(Certs {
            keys,
            stamp: Mutex::new(stamp(&cert).zip(stamp(&key))),
            cert,
            key,
            current: ArcSwap::from_pointee(config),
        }))
    }

    /// The certificate chain's file, for messages.
    pub fn cert(&self) -> &Path {
        &self.cert
    }

    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.current.load_full())
    }

    /// Loads the pair again; a bad pair keeps the old one serving and is logged.
    pub fn reload(&self) {
        match load(&self.cert, &self.key, self.keys) {
            Ok(c) => {
                self.current.store(Arc::new(c));
                tracing::info!("{} reloaded from {}", self.keys.0, self.cert.display());
            }
            Err(e) => tracing::error!("certificate not reloaded, the previous one stays: {e}"),
        }
    }

    /// Reloads when either file's modification time changed since the last look.
    fn reload_if_changed(&self) {
        let now = stamp(&self.cert).zip(stamp(&self.key));
        let mut seen = self.stamp.lock().unwrap_or_else(|e| e.into_inner());
        if now.is_some() && now != *seen {
            *seen = now;
            drop(seen);
            self.reload();
        }
    }
}

/// Reloads `certs` when their files change, until the process ends (SIGHUP forces a
/// reload through `shoal serve`'s signal table).
pub async fn watch(certs: Vec<Arc<Certs>>) {
    let mut tick = tokio::time::interval(POLL);
    loop {
        tick.tick().await;
        for c in &certs {
            c.reload_if_changed();
        }
    }
}
