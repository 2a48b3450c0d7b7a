//! TLS server configuration from PEM files, shared by TURNS and peercall's HTTPS: one loader, errors that
//! name the file and what is wrong with it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::ServerConfig;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Which of the two files an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsFile {
    /// The certificate chain file.
    Certificate,
    /// The private key file.
    Key,
}

impl std::fmt::Display for TlsFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TlsFile::Certificate => "certificate",
            TlsFile::Key => "private key",
        })
    }
}

/// Why a certificate and key could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// The file could not be read (missing, no permission).
    #[error("cannot read the {file} file {}: {source}", path.display())]
    Read {
        /// Which file.
        file: TlsFile,
        /// Its path, as given.
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// The file is not valid PEM (a DER file, a truncated or corrupted block).
    #[error("{} is not a PEM {file}: {message}", path.display())]
    NotPem {
        /// Which file.
        file: TlsFile,
        /// Its path, as given.
        path: PathBuf,
        /// What the PEM parser said.
        message: String,
    },
    /// The file is PEM but holds no block of the kind expected (a key file given as the certificate, say).
    #[error("{} holds no PEM {file} (expected -----BEGIN {}-----)", path.display(),
        if *file == TlsFile::Certificate { "CERTIFICATE" } else { "PRIVATE KEY" })]
    Empty {
        /// Which file.
        file: TlsFile,
        /// Its path, as given.
        path: PathBuf,
    },
    /// rustls refused the pair: the key is not the certificate's, or of a kind it does not support.
    #[error("the certificate {} and the key {} do not match or are unsupported: {source}", cert.display(), key.display())]
    Rejected {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// What rustls said.
        source: rustls::Error,
    },
}

impl TlsError {
    /// The file the error is about (the certificate for a pair that does not match).
    pub fn file(&self) -> TlsFile {
        match self {
            TlsError::Read { file, .. }
            | TlsError::NotPem { file, .. }
            | TlsError::Empty { file, .. } => *file,
            TlsError::Rejected { .. } => TlsFile::Certificate,
        }
    }
}

/// Loads a PEM certificate chain and private key into a server configuration (ring provider, TLS 1.2 and
/// 1.3, no client authentication) advertising `alpn`.
pub fn server_config(
    cert: &Path,
    key: &Path,
    alpn: &[&[u8]],
) -> Result<Arc<ServerConfig>, TlsError> {
    let read = |file, path: &Path| {
        std::fs::read(path).map_err(|source| TlsError::Read {
            file,
            path: path.to_owned(),
            source,
        })
    };
    let cert_pem = read(TlsFile::Certificate, cert)?;
    let key_pem = read(TlsFile::Key, key)?;
    let not_pem = |file, path: &Path, e: std::io::Error| TlsError::NotPem {
        file,
        path: path.to_owned(),
        message: e.to_string(),
    };
    let certs = rustls_pemfile::certs(&mut cert_pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| not_pem(TlsFile::Certificate, cert, e))?;
    if certs.is_empty() {
        return Err(TlsError::Empty {
            file: TlsFile::Certificate,
            path: cert.to_owned(),
        });
    }
    let private_key = rustls_pemfile::private_key(&mut key_pem.as_slice())
        .map_err(|e| not_pem(TlsFile::Key, key, e))?
        .ok_or_else(|| TlsError::Empty {
            file: TlsFile::Key,
            path: key.to_owned(),
        })?;
    from_parts(certs, private_key, alpn).map_err(|source| TlsError::Rejected {
        cert: cert.to_owned(),
        key: key.to_owned(),
        source,
    })
}

/// A server configuration from a certificate chain and key already in memory (a self-signed one, say).
pub fn from_parts(
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    alpn: &[&[u8]],
) -> Result<Arc<ServerConfig>, rustls::Error> {
    let mut config =
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(certs, key)?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_file_and_what_is_wrong() {
        let dir = std::env::temp_dir().join(format!("peercall-turn-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let missing = dir.join("missing.pem");
        let err = server_config(&missing, &missing, &[]).unwrap_err();
        assert!(
            matches!(
                err,
                TlsError::Read {
                    file: TlsFile::Certificate,
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("missing.pem"), "{err}");
        let junk = dir.join("junk.pem");
        std::fs::write(&junk, "not pem").unwrap();
        let err = server_config(&junk, &junk, &[]).unwrap_err();
        assert!(
            err.to_string().contains("holds no PEM certificate"),
            "{err}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
