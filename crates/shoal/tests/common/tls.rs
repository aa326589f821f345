//! TLS for tests: certificates made by testkit, the config keys that serve them, and a
//! client that trusts them.

use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// A CA and a server certificate for 127.0.0.1 and ::1, made in `dir`.
pub fn certificates(dir: &Path) -> std::path::PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    testkit::make_certificates(dir).unwrap();
    dir.to_path_buf()
}

pub fn tls_config(cert_dir: &Path) -> String {
    format!(
        "tls_cert_path = \"{}\"\ntls_key_path = \"{}\"\n",
        cert_dir.join("server.pem").display(),
        cert_dir.join("server.key").display()
    )
}

/// A TLS client trusting the CAs in `cas`.
pub fn client_config(cas: &[&Path]) -> Arc<rustls::ClientConfig> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for ca in cas {
        for c in CertificateDer::pem_file_iter(ca.join("ca.pem")).unwrap() {
            roots.add(c.unwrap()).unwrap();
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

pub type Tls = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

pub fn tls_connect(addr: SocketAddr, config: &Arc<rustls::ClientConfig>) -> Tls {
    let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
    let conn = rustls::ClientConnection::new(config.clone(), name).unwrap();
    let tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    rustls::StreamOwned::new(conn, tcp)
}
