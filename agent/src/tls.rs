//! TLS material for the agent's clients (the uplink, the gossip and elasticsearch probes):
//! reading the PEM files named in the config and building a rustls client configuration
//! from them.
//!
//! Crypto is rustls with the `ring` provider, chosen explicitly rather than through the
//! process-wide default, so that another crate enabling a second provider in the same build
//! cannot make it ambiguous. Without a `ca_file` the system's CA bundle (the Debian and Red
//! Hat paths) is trusted, read from disk, so no root store is compiled into the binary.
//!
//! It does not open connections, and it never logs or returns the content of a key.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio_rustls::rustls;
use tokio_rustls::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use tokio_rustls::rustls::crypto::CryptoProvider;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use tokio_rustls::rustls::{DigitallySignedStruct, SignatureScheme};

/// Where distributions keep the system's CA bundle.
const SYSTEM_CA_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
];

/// Why the TLS material could not be used. `field` is the config field, e.g.
/// `gossip.ca_file`.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("config: {field}: cannot read {}: {source}", path.display())]
    Read {
        field: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config: {field}: {}: {message}", path.display())]
    Pem {
        field: String,
        path: PathBuf,
        message: String,
    },
    #[error("config: {field}: no system CA bundle found (looked for {}); set it", SYSTEM_CA_BUNDLES.join(", "))]
    NoSystemBundle { field: String },
    #[error("config: {section}: {message}")]
    Rustls { section: String, message: String },
}

/// A client certificate chain and its key, as PEM.
pub(crate) struct ClientIdentityPem {
    pub(crate) cert: Vec<u8>,
    pub(crate) key: Vec<u8>,
}

/// The PEM files of one client, as the config names them.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TlsFiles<'a> {
    /// `aggregator`, `gossip` or `elasticsearch`: prefixes the field names in errors.
    pub(crate) section: &'a str,
    pub(crate) ca_file: Option<&'a Path>,
    pub(crate) client_cert_file: Option<&'a Path>,
    pub(crate) client_key_file: Option<&'a Path>,
}

impl TlsFiles<'_> {
    fn field(&self, name: &str) -> String {
        format!("{}.{name}", self.section)
    }

    /// The CA file's content, or the system bundle's when none is configured.
    pub(crate) fn ca_pem(&self) -> Result<Vec<u8>, TlsError> {
        let field = self.field("ca_file");
        match self.ca_file {
            Some(path) => read(&field, path),
            None => SYSTEM_CA_BUNDLES
                .iter()
                .map(Path::new)
                .find(|path| path.is_file())
                .map_or(
                    Err(TlsError::NoSystemBundle {
                        field: field.clone(),
                    }),
                    |path| read(&field, path),
                ),
        }
    }

    /// The client certificate and key, when both are configured.
    pub(crate) fn client_identity_pem(&self) -> Result<Option<ClientIdentityPem>, TlsError> {
        match (self.client_cert_file, self.client_key_file) {
            (Some(cert), Some(key)) => Ok(Some(ClientIdentityPem {
                cert: read(&self.field("client_cert_file"), cert)?,
                key: read(&self.field("client_key_file"), key)?,
            })),
            _ => Ok(None),
        }
    }

    /// A rustls client configuration trusting the CA file (or the system bundle), with the
    /// client certificate if configured; with `insecure_skip_verify`, trusting anything.
    pub(crate) fn client_config(
        &self,
        insecure_skip_verify: bool,
    ) -> Result<rustls::ClientConfig, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let rustls_error = |err: rustls::Error| TlsError::Rustls {
            section: self.section.to_owned(),
            message: err.to_string(),
        };
        let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(rustls_error)?;
        let builder = if insecure_skip_verify {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate { provider }))
        } else {
            let field = self.field("ca_file");
            let ca_pem = self.ca_pem()?;
            let path = self
                .ca_file
                .map_or_else(|| PathBuf::from("system CA bundle"), Path::to_owned);
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(&ca_pem) {
                let cert = cert.map_err(|err| TlsError::Pem {
                    field: field.clone(),
                    path: path.clone(),
                    message: format!("not PEM certificates: {err}"),
                })?;
                // A system bundle may hold a certificate rustls cannot use; skip it.
                if let Err(err) = roots.add(cert)
                    && self.ca_file.is_some()
                {
                    return Err(TlsError::Pem {
                        field,
                        path,
                        message: format!("unusable CA certificate: {err}"),
                    });
                }
            }
            if roots.is_empty() {
                return Err(TlsError::Pem {
                    field,
                    path,
                    message: "holds no certificate".to_owned(),
                });
            }
            builder.with_root_certificates(roots)
        };
        match self.client_identity_pem()? {
            None => Ok(builder.with_no_client_auth()),
            Some(ClientIdentityPem {
                cert: cert_pem,
                key: key_pem,
            }) => {
                let cert_field = self.field("client_cert_file");
                let key_field = self.field("client_key_file");
                let cert_path = self
                    .client_cert_file
                    .map(Path::to_owned)
                    .unwrap_or_default();
                let key_path = self.client_key_file.map(Path::to_owned).unwrap_or_default();
                let chain = CertificateDer::pem_slice_iter(&cert_pem)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|err| TlsError::Pem {
                        field: cert_field.clone(),
                        path: cert_path.clone(),
                        message: format!("not PEM certificates: {err}"),
                    })?;
                if chain.is_empty() {
                    return Err(TlsError::Pem {
                        field: cert_field,
                        path: cert_path,
                        message: "holds no certificate".to_owned(),
                    });
                }
                // The key's parse error is not shown: it could quote key material.
                let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|_| TlsError::Pem {
                    field: key_field,
                    path: key_path,
                    message: "holds no PEM private key".to_owned(),
                })?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(rustls_error)
            }
        }
    }
}

fn read(field: &str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        field: field.to_owned(),
        path: path.to_owned(),
        source,
    })
}

/// `insecure_skip_verify`: any certificate is accepted, but the handshake signatures are
/// still checked, so the connection is at least encrypted to whoever answered.
#[derive(Debug)]
struct AcceptAnyCertificate {
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
