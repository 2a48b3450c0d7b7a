//! TLS for the web/signaling port: certificate files, or a self-signed certificate made at start.

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, anyhow};
use peercall_turn::tls::TlsFile;
use rustls::ServerConfig;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};

/// Loads a PEM certificate chain and key (with the TURN crate's loader, which TURNS uses too). Errors name the
/// file and the flag.
pub fn server_config_from_files(cert: &Path, key: &Path) -> anyhow::Result<Arc<ServerConfig>> {
    peercall_turn::tls::server_config(cert, key, HTTP_ALPN).map_err(|e| {
        let flag = match e.file() {
            TlsFile::Certificate => "--tls-cert",
            TlsFile::Key => "--tls-key",
        };
        anyhow!("{e} ({flag})")
    })
}

/// What the HTTPS port speaks: HTTP, and STUN/TURN (RFC 7443) for a client that names it (see shared_port). rustls
/// picks the first of ours the client offers: a TURN client offering `http/1.1` too gets TURN, browsers HTTP.
pub const HTTP_ALPN: &[&[u8]] = &[
    crate::shared_port::STUN_ALPN,
    crate::shared_port::STUN_DISCOVERY_ALPN,
    b"http/1.1",
];

/// A self-signed certificate and its parts.
pub struct SelfSigned {
    pub config: Arc<ServerConfig>,
    /// SHA-256 of the certificate, colon-separated upper-case hex, as browsers show it.
    pub fingerprint: String,
    /// The names and addresses the certificate is valid for.
    pub names: Vec<String>,
}

/// A certificate for localhost, the loopback addresses, the host name and this machine's interface addresses.
pub fn self_signed() -> anyhow::Result<SelfSigned> {
    let mut names = vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ];
    if let Some(host) = hostname() {
        names.push(host.clone());
        if !host.contains('.') {
            names.push(format!("{host}.local"));
        }
    }
    names.extend(
        interface_addresses()
            .into_iter()
            .filter(|ip| !ip.is_unspecified() && !is_ipv6_link_local(ip))
            .map(|ip| ip.to_string()),
    );
    let mut seen = std::collections::HashSet::new();
    names.retain(|n| seen.insert(n.clone()));
    let mut params = rcgen::CertificateParams::new(names.clone())
        .context("cannot make a self-signed certificate")?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "peercall self-signed");
    let key_pair =
        rcgen::KeyPair::generate().context("cannot make a key for the self-signed certificate")?;
    let cert = params
        .self_signed(&key_pair)
        .context("cannot make a self-signed certificate")?;
    let cert_der: CertificateDer<'static> = cert.der().clone();
    let fingerprint = fingerprint(&cert_der);
    let key = PrivateKeyDer::Pkcs8(key_pair.serialize_der().into());
    Ok(SelfSigned {
        config: peercall_turn::tls::from_parts(vec![cert_der], key, HTTP_ALPN)
            .context("cannot build the TLS configuration of the self-signed certificate")?,
        fingerprint,
        names,
    })
}

pub fn fingerprint(cert_der: &[u8]) -> String {
    Sha256::digest(cert_der)
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn is_ipv6_link_local(ip: &IpAddr) -> bool {
    matches!(ip, IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) == 0xfe80)
}

fn hostname() -> Option<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let name = name.trim();
    let valid = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
    valid.then(|| name.to_owned())
}

/// Addresses of this machine's interfaces (the TURN crate owns the one implementation).
pub use peercall_turn::interface_addresses;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_signed_covers_localhost_and_loopback() {
        let s = self_signed().expect("self-signed certificate");
        for name in ["localhost", "127.0.0.1", "::1"] {
            assert!(
                s.names.iter().any(|n| n == name),
                "{name} missing from {:?}",
                s.names
            );
        }
        assert_eq!(s.fingerprint.len(), 32 * 3 - 1);
    }

    #[test]
    fn interface_addresses_include_loopback() {
        let addrs = interface_addresses();
        assert!(addrs.iter().any(|a| a.is_loopback()), "{addrs:?}");
    }

    #[test]
    fn file_errors_name_the_file() {
        let dir = std::env::temp_dir().join(format!("peercall-tls-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let missing = dir.join("missing.pem");
        let err = server_config_from_files(&missing, &missing).expect_err("missing file");
        assert!(format!("{err:#}").contains("missing.pem"), "{err:#}");
        let junk = dir.join("junk.pem");
        std::fs::write(&junk, "not pem").expect("write");
        let err = server_config_from_files(&junk, &junk).expect_err("junk");
        assert!(
            format!("{err:#}").contains("holds no PEM certificate"),
            "{err:#}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
