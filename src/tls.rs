//! HTTPS on the main listener: the certificate and key files, optional client certificates,
//! and the names a client certificate carries.
//!
//! The files are read into a rustls [`ServerConfig`] (TLS 1.2 and 1.3, ALPN `h2` and
//! `http/1.1`) by [`ListenerTls::server_config`]; [`ServerTls`] keeps the one in use and swaps in
//! a new one when the files change, so a renewed certificate needs no restart. Every error
//! names the flag and the file, never the files' contents.
//!
//! With `--tls-client-ca-file`, a client may present a certificate signed by that CA; one that
//! does gets its names attached to each of its requests as a [`ClientCertificate`]. A client
//! without a certificate is still served (it may authenticate with a bearer key); a certificate
//! from another CA fails the handshake.

mod reload;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::Args;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

pub(crate) use self::reload::POLL_INTERVAL;
pub use self::reload::ServerTls;

/// The HTTPS listener's files. Without `--tls-cert-file` the listener speaks plain HTTP.
#[derive(Debug, Clone, Default, Args)]
pub struct ListenerTls {
    /// PEM certificate chain of the HTTPS listener, end-entity certificate first. With it the
    /// main listener speaks only HTTPS (TLS 1.2 and 1.3, HTTP/2 and HTTP/1.1). Needs
    /// --tls-key-file. Reloaded without a restart when the file changes (checked every 10 s)
    /// or on SIGHUP.
    #[arg(long, env = "ACKGATE_TLS_CERT_FILE", value_name = "PEM")]
    pub tls_cert_file: Option<PathBuf>,

    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of --tls-cert-file; reloaded with it.
    #[arg(long, env = "ACKGATE_TLS_KEY_FILE", value_name = "PEM")]
    pub tls_key_file: Option<PathBuf>,

    /// PEM file with the CA certificate(s) that sign client certificates. A client may then
    /// present one (its subject CN, DNS and URI names identify it); a client without one is
    /// still served, one with a certificate from another CA is refused at the handshake.
    /// Needs --tls-cert-file; reloaded with it.
    #[arg(long, env = "ACKGATE_TLS_CLIENT_CA_FILE", value_name = "PEM")]
    pub tls_client_ca_file: Option<PathBuf>,
}

/// A [`ServerConfig`] read from the files, with the end-entity certificate's expiry.
pub(crate) struct Loaded {
    pub(crate) config: Arc<ServerConfig>,
    /// The certificate's notAfter, in seconds since the Unix epoch.
    pub(crate) not_after: i64,
}

impl ListenerTls {
    /// Whether the listener speaks HTTPS.
    pub fn is_enabled(&self) -> bool {
        self.tls_cert_file.is_some()
    }

    /// The flags that only make sense together; each error is one line naming the flag.
    pub(crate) fn validate(&self) -> Result<(), String> {
        match (&self.tls_cert_file, &self.tls_key_file) {
            (Some(_), None) => Err("--tls-cert-file needs --tls-key-file (its private key)".into()),
            (None, Some(_)) => Err("--tls-key-file needs --tls-cert-file (its certificate)".into()),
            (None, None) if self.tls_client_ca_file.is_some() => Err(
                "--tls-client-ca-file needs --tls-cert-file and --tls-key-file: client \
                 certificates are only asked for over HTTPS"
                    .into(),
            ),
            _ => Ok(()),
        }
    }

    /// Reads the files into a server configuration. `None` when HTTPS is off.
    pub(crate) fn server_config(&self) -> Result<Option<Loaded>, String> {
        self.validate()?;
        let (Some(cert_file), Some(key_file)) = (&self.tls_cert_file, &self.tls_key_file) else {
            return Ok(None);
        };
        let chain = read_certificates("--tls-cert-file", cert_file)?;
        let not_after = X509Certificate::from_der(&chain[0])
            .map_err(|_| {
                format!(
                    "--tls-cert-file: the first certificate in {} is not valid X.509",
                    cert_file.display()
                )
            })?
            .1
            .validity()
            .not_after
            .timestamp();
        let key = PrivateKeyDer::from_pem_file(key_file)
            .map_err(|error| pem_error("--tls-key-file", key_file, "private key", &error))?;
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|error| format!("the TLS provider cannot be used: {error}"))?;
        let builder = match &self.tls_client_ca_file {
            Some(ca_file) => builder.with_client_cert_verifier(client_verifier(ca_file, provider)?),
            None => builder.with_no_client_auth(),
        };
        let mut config = builder
            .with_single_cert(chain, key)
            .map_err(|error| match error {
                rustls::Error::InconsistentKeys(_) => format!(
                    "--tls-key-file: the key in {} does not match the certificate in {}",
                    key_file.display(),
                    cert_file.display()
                ),
                other => format!(
                    "--tls-key-file: the key in {} cannot be used: {other}",
                    key_file.display()
                ),
            })?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Some(Loaded {
            config: Arc::new(config),
            not_after,
        }))
    }

    /// The files whose changes are watched.
    fn files(&self) -> impl Iterator<Item = &Path> {
        [
            &self.tls_cert_file,
            &self.tls_key_file,
            &self.tls_client_ca_file,
        ]
        .into_iter()
        .flatten()
        .map(PathBuf::as_path)
    }
}

fn read_certificates(flag: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let chain = CertificateDer::pem_file_iter(path)
        .and_then(|certificates| certificates.collect::<Result<Vec<_>, _>>())
        .map_err(|error| pem_error(flag, path, "certificate", &error))?;
    if chain.is_empty() {
        return Err(pem_error(
            flag,
            path,
            "certificate",
            &pem::Error::NoItemsFound,
        ));
    }
    Ok(chain)
}

/// Client certificates signed by the CA in `path` are verified; clients without one pass.
fn client_verifier(
    path: &Path,
    provider: Arc<CryptoProvider>,
) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, String> {
    let flag = "--tls-client-ca-file";
    let mut roots = RootCertStore::empty();
    for certificate in read_certificates(flag, path)? {
        roots.add(certificate).map_err(|error| {
            format!(
                "{flag}: {} holds a certificate that cannot be a CA: {error}",
                path.display()
            )
        })?;
    }
    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
        .allow_unauthenticated()
        .build()
        .map_err(|error| format!("{flag}: {} cannot be used: {error}", path.display()))
}

/// Why a PEM file could not be used, without its contents.
fn pem_error(flag: &str, path: &Path, what: &str, error: &pem::Error) -> String {
    let path = path.display();
    match error {
        pem::Error::Io(error) => format!("{flag}: cannot read {path}: {error}"),
        pem::Error::NoItemsFound => format!("{flag}: {path} holds no PEM {what}"),
        _ => format!("{flag}: {path} is not a valid PEM file"),
    }
}

/// The names of a verified client certificate, attached to every request of its connection:
/// the subject's common name(s), then the DNS and URI (e.g. `spiffe://…`) subject alternative
/// names, in the certificate's order. The auth file maps them to a principal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ClientCertificate {
    pub(crate) names: Vec<String>,
}

impl ClientCertificate {
    /// The names in a DER certificate; `None` if it does not parse (rustls has verified it,
    /// so that does not happen in practice).
    pub(crate) fn from_der(der: &[u8]) -> Option<ClientCertificate> {
        let (_, certificate) = X509Certificate::from_der(der).ok()?;
        let mut names: Vec<String> = certificate
            .subject()
            .iter_common_name()
            .filter_map(|name| name.as_str().ok())
            .map(str::to_owned)
            .collect();
        if let Ok(Some(alternative)) = certificate.subject_alternative_name() {
            for name in &alternative.value.general_names {
                if let GeneralName::DNSName(name) | GeneralName::URI(name) = name {
                    names.push((*name).to_owned());
                }
            }
        }
        Some(ClientCertificate { names })
    }
}

#[cfg(test)]
mod tests;
