//! Whom Shoal trusts when it is the TLS client (`shoal check`, the admin commands): the
//! system's roots, or the certificates of a `--ca-cert` file. A certificate in that file is
//! trusted as a CA for the certificates it signed and, presented by the server itself, as
//! that server's own (pinned): the self-signed certificate of the usual
//! `openssl req -x509` one-liner is marked CA, which WebPKI refuses as a server's
//! (`CaUsedAsEndEntity`), while curl accepts it. A pinned certificate is matched byte for
//! byte; the handshake's signature is still verified with its key.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{}: {source}", path.display())]
    File {
        path: PathBuf,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("{}: holds no PEM certificate", .0.display())]
    Empty(PathBuf),
    #[error("cannot set up TLS: {0}")]
    Tls(#[from] rustls::Error),
}

/// A TLS client configuration trusting `ca` (a PEM file) if given, else the system's roots.
pub fn client_config(ca: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let config = match ca {
        None => {
            let mut roots = rustls::RootCertStore::empty();
            for c in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(c);
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        Some(path) => {
            let file = |source: Box<dyn std::error::Error + Send + Sync>| Error::File {
                path: path.to_path_buf(),
                source,
            };
            let pinned = CertificateDer::pem_file_iter(path)
                .map_err(|e| file(e.into()))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| file(e.into()))?;
            if pinned.is_empty() {
                return Err(Error::Empty(path.to_path_buf()));
            }
            let mut roots = rustls::RootCertStore::empty();
            // A certificate WebPKI cannot use as an anchor may still be pinned.
            let _ = roots.add_parsable_certificates(pinned.iter().cloned());
            let webpki = (!roots.is_empty())
                .then(|| {
                    WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                        .build()
                })
                .transpose()
                .map_err(|e| file(e.into()))?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(PinnedOrSigned {
                    webpki,
                    pinned,
                    algorithms: provider.signature_verification_algorithms,
                }))
                .with_no_client_auth()
        }
    };
    Ok(Arc::new(config))
}

/// The server's certificate is one of the file's, byte for byte, or chains to one of them.
#[derive(Debug)]
struct PinnedOrSigned {
    webpki: Option<Arc<WebPkiServerVerifier>>,
    pinned: Vec<CertificateDer<'static>>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for PinnedOrSigned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if self
            .pinned
            .iter()
            .any(|p| p.as_ref() == end_entity.as_ref())
        {
            return Ok(ServerCertVerified::assertion());
        }
        match &self.webpki {
            Some(v) => v.verify_server_cert(end_entity, intermediates, server_name, ocsp, now),
            None => Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::UnknownIssuer,
            )),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
