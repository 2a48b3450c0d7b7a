//! Automatic HTTPS (RFC 8555): a certificate for `--domain` from an ACME CA, obtained and renewed by the
//! `rustls-acme` crate and served by one certificate resolver that the HTTPS and the TURNS listeners share.
//!
//! Why rustls-acme rather than our own ACME client: it is maintained, answers TLS-ALPN-01 inside the rustls
//! certificate resolver (no second listener, no restart), supports HTTP-01 and renews by itself; a renewal
//! swaps the certificate inside the resolver, so connections already open (WebSockets, TURN allocations over
//! TLS) are not touched and new handshakes get the new certificate. What this module adds around it: the
//! state directory cache (account key and certificates, private keys 0600), a stand-in certificate while none
//! has been issued (the server serves from the first second, even when the CA cannot be reached), and the
//! certificate's state in words, for the banner, the logs and the detailed /healthz.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, anyhow};
use futures_util::StreamExt;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_acme::{
    AcmeConfig, AcmeState, EventError, EventOk, OrderError, ResolvesServerCertAcme, UseChallenge,
};
use tokio::sync::watch;

use crate::config::{AcmeChallenge, LETS_ENCRYPT_STAGING, Layer, Resolved, defaults};

/// The ALPN protocol of TLS-ALPN-01 validation handshakes (RFC 8737).
const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// What the certificate is doing; shown in the banner and the detailed /healthz, logged on every change.
#[derive(Debug, Clone, PartialEq)]
pub enum CertState {
    /// No certificate yet: the first order is under way (a stand-in certificate is served meanwhile).
    Obtaining,
    /// A certificate from the CA is served.
    Valid(Validity),
    /// The last order failed and is retried after `retry_in_secs`; `valid` is the certificate still served.
    Failing {
        reason: String,
        hint: String,
        retry_in_secs: u64,
        valid: Option<Validity>,
    },
}

/// When a certificate stops being valid and when peercall starts renewing it (Unix seconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    pub not_after: i64,
    pub renew_at: i64,
    /// Loaded from the state directory at start (not issued by this process).
    pub cached: bool,
}

impl Validity {
    /// rustls-acme renews when a third of the lifetime is left (60 of Let's Encrypt's 90 days).
    fn of(not_before: i64, not_after: i64, cached: bool) -> Validity {
        Validity {
            not_after,
            renew_at: not_after - (not_after - not_before).max(0) / 3,
            cached,
        }
    }
}

impl CertState {
    /// One line for the banner.
    pub fn describe(&self) -> String {
        match self {
            CertState::Obtaining => {
                "obtaining (a stand-in self-signed certificate is served until it is issued)"
                    .to_owned()
            }
            CertState::Valid(v) => format!(
                "valid until {}{}, renewed from {}",
                utc(v.not_after),
                if v.cached {
                    " (from the state directory)"
                } else {
                    ""
                },
                utc(v.renew_at)
            ),
            CertState::Failing {
                reason,
                hint,
                retry_in_secs,
                valid,
            } => {
                let prefix = match valid {
                    Some(v) => format!("valid until {}, but renewal failing", utc(v.not_after)),
                    None => "failing".to_owned(),
                };
                format!("{prefix}: {reason}; retrying in {retry_in_secs} s. Check {hint}")
            }
        }
    }

    fn validity(&self) -> Option<Validity> {
        match self {
            CertState::Obtaining => None,
            CertState::Valid(v) => Some(*v),
            CertState::Failing { valid, .. } => *valid,
        }
    }

    /// For the detailed /healthz.
    pub fn json(&self) -> serde_json::Value {
        let mut v = match self {
            CertState::Obtaining => serde_json::json!({ "status": "obtaining" }),
            CertState::Valid(_) => serde_json::json!({ "status": "valid" }),
            CertState::Failing {
                reason,
                hint,
                retry_in_secs,
                ..
            } => serde_json::json!({
                "status": "failing", "reason": reason, "check": hint, "retry_in_seconds": retry_in_secs,
            }),
        };
        if let Some(valid) = self.validity() {
            v["not_after"] = utc(valid.not_after).into();
            v["renew_from"] = utc(valid.renew_at).into();
        }
        v
    }
}

/// The certificate resolver of the HTTPS and TURNS listeners: rustls-acme's (the CA's certificate, and the
/// TLS-ALPN-01 validation certificate for `acme-tls/1` handshakes), or a self-signed stand-in while the CA has
/// issued none.
#[derive(Debug)]
pub struct Resolver {
    /// The resolver of the rustls-acme state in use; replaced when peercall switches challenge type or starts
    /// over after a stall (only once the new one holds the cached certificate).
    acme: RwLock<Arc<ResolvesServerCertAcme>>,
    stand_in: Arc<CertifiedKey>,
}

impl Resolver {
    fn current(&self) -> Arc<ResolvesServerCertAcme> {
        self.acme.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn replace(&self, acme: Arc<ResolvesServerCertAcme>) {
        *self.acme.write().unwrap_or_else(|p| p.into_inner()) = acme;
    }
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let validation = rustls_acme::is_tls_alpn_challenge(&hello);
        match self.current().resolve(hello) {
            Some(cert) => Some(cert),
            // A validation handshake gets the validation certificate or nothing, never the stand-in.
            None if validation => None,
            None => Some(self.stand_in.clone()),
        }
    }
}

/// Makes rustls-acme states, one per challenge type tried (a state answers one type).
struct StateMaker {
    domains: Vec<String>,
    directory: String,
    contact: Option<String>,
    client: Arc<rustls::ClientConfig>,
    cache_dir: PathBuf,
    status: Arc<watch::Sender<CertState>>,
}

impl StateMaker {
    fn cache(&self) -> StateDirCache {
        StateDirCache {
            dir: self.cache_dir.clone(),
            status: self.status.clone(),
        }
    }

    fn make(&self, challenge: AcmeChallenge) -> AcmeState<std::io::Error> {
        let mut config = AcmeConfig::new_with_client_config(&self.domains, self.client.clone())
            .directory(&self.directory)
            .challenge_type(match challenge {
                AcmeChallenge::Http01 => UseChallenge::Http01,
                AcmeChallenge::TlsAlpn01 | AcmeChallenge::Auto => UseChallenge::TlsAlpn01,
            })
            .cache(self.cache());
        if let Some(contact) = &self.contact {
            config = config.contact_push(contact);
        }
        config.state()
    }

    fn has_cached_cert(&self) -> bool {
        let cache = self.cache();
        cache.cert_path(&self.domains, &self.directory).exists()
    }

    /// A new state for `challenge`, put into the resolver once it serves the cached certificate (its first
    /// event, before any order starts), so no handshake sees the stand-in meanwhile.
    async fn switch(
        &self,
        resolver: &Resolver,
        challenge: AcmeChallenge,
    ) -> AcmeState<std::io::Error> {
        let mut state = self.make(challenge);
        if self.has_cached_cert() {
            match tokio::time::timeout(Duration::from_secs(10), state.next()).await {
                Ok(Some(Ok(EventOk::DeployedCachedCert))) => {}
                other => tracing::debug!("new ACME state, first event: {other:?}"),
            }
        }
        resolver.replace(state.resolver());
        state
    }
}

/// Automatic HTTPS for one process: the shared resolver, the certificate state, and the ACME work to start.
pub struct Acme {
    resolver: Arc<Resolver>,
    status: Arc<watch::Sender<CertState>>,
    maker: Arc<StateMaker>,
    first_state: Mutex<Option<AcmeState<std::io::Error>>>,
    /// The challenge type in use now.
    challenge: Arc<Mutex<AcmeChallenge>>,
    /// `--acme-challenge auto`: after a failure, the other type is tried (when --http-redirect is bound).
    auto: bool,
    pub domains: Vec<String>,
    pub directory: String,
    pub state_dir: PathBuf,
}

/// How long the ACME client may go without news while an order is due before peercall starts over
/// (rustls-acme sets no timeout on its requests to the CA).
const STALL_GRACE_SECS: u64 = 30 * 60;

impl Acme {
    /// Reads the state directory (a cached certificate is served at once) and prepares the ACME client.
    /// Nothing is sent to the CA before [`Acme::start`].
    pub fn prepare(config: &Resolved) -> anyhow::Result<Acme> {
        let state_dir = state_dir(config)?;
        create_private_dir(&state_dir).with_context(|| {
            format!(
                "cannot create the state directory {} (change --state-dir)",
                state_dir.display()
            )
        })?;
        let challenge = config.acme_challenge_in_use();
        let directory = config.acme_directory.clone();
        let domains = config.domain.clone();
        let status = Arc::new(watch::Sender::new(CertState::Obtaining));
        let maker = Arc::new(StateMaker {
            domains: domains.clone(),
            directory: directory.clone(),
            contact: config.acme_email.as_ref().map(|e| format!("mailto:{e}")),
            client: client_config(config)?,
            cache_dir: state_dir.join("acme"),
            status: status.clone(),
        });
        let cache = maker.cache();
        let now = unix_now();
        match cache.read(&cache.cert_path(&domains, &directory)) {
            Ok(Some(pem)) => match validity_of(&pem) {
                Some((not_before, not_after)) if not_after > now => {
                    status
                        .send_replace(CertState::Valid(Validity::of(not_before, not_after, true)));
                }
                Some((_, not_after)) => tracing::warn!(
                    "the certificate in the state directory expired on {}: ordering a new one",
                    utc(not_after)
                ),
                None => tracing::warn!(
                    "the certificate in the state directory cannot be read: ordering a new one"
                ),
            },
            Ok(None) => {}
            Err(e) => tracing::warn!("{e}"),
        }
        let state = maker.make(challenge);
        let resolver = Arc::new(Resolver {
            acme: RwLock::new(state.resolver()),
            stand_in: stand_in(&domains)?,
        });
        Ok(Acme {
            resolver,
            status,
            maker,
            first_state: Mutex::new(Some(state)),
            challenge: Arc::new(Mutex::new(challenge)),
            auto: config.acme_challenge == AcmeChallenge::Auto,
            domains,
            directory,
            state_dir,
        })
    }

    /// The TLS configuration of the HTTPS port: our ALPN protocols plus `acme-tls/1` for validations.
    pub fn https_config(&self, alpn: &[&[u8]]) -> anyhow::Result<Arc<rustls::ServerConfig>> {
        let mut protocols: Vec<&[u8]> = alpn.to_vec();
        protocols.push(ACME_TLS_ALPN);
        self.server_config(&protocols)
    }

    /// The TLS configuration of TURNS: the same resolver, no ALPN (TURN clients send none).
    pub fn turns_config(&self) -> anyhow::Result<Arc<rustls::ServerConfig>> {
        self.server_config(&[])
    }

    fn server_config(&self, alpn: &[&[u8]]) -> anyhow::Result<Arc<rustls::ServerConfig>> {
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .context("cannot build the TLS configuration")?
        .with_no_client_auth()
        .with_cert_resolver(self.resolver.clone());
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(Arc::new(config))
    }

    /// The key authorization of an HTTP-01 token under way, for `/.well-known/acme-challenge/TOKEN`.
    pub fn http01_key_authorization(&self, token: &str) -> Option<String> {
        self.resolver.current().get_http_01_key_auth(token)
    }

    /// The certificate's state now.
    pub fn state(&self) -> CertState {
        self.status.borrow().clone()
    }

    /// The challenge type in use now.
    pub fn challenge(&self) -> AcmeChallenge {
        *self.challenge.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts ordering and renewing, in a task of its own, once the listeners are up (the CA connects back to
    /// them). Failures are logged with what to check and retried with back-off; they never stop the server.
    /// With `--acme-challenge auto` and the redirect port bound, a failed challenge type makes way for the other.
    pub fn start(&self, redirect_bound: bool) {
        let Some(mut state) = self
            .first_state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        else {
            return;
        };
        let alternate = self.auto && redirect_bound;
        let status = self.status.clone();
        let maker = self.maker.clone();
        let resolver = self.resolver.clone();
        let challenge = self.challenge.clone();
        let domains = self.domains.join(", ");
        let directory = self.directory.clone();
        let hint = move |challenge: AcmeChallenge| match challenge {
            AcmeChallenge::Http01 => format!(
                "that the DNS of {domains} points at this machine and that TCP port 80 from the internet reaches --http-redirect"
            ),
            _ => format!(
                "that the DNS of {domains} points at this machine and that TCP port 443 from the internet reaches --http"
            ),
        };
        let domains = self.domains.join(", ");
        tracing::info!(
            "certificate for {domains}: {} (ACME directory {directory}, {} challenge{})",
            status.borrow().describe(),
            challenge_name(self.challenge()),
            if alternate {
                ", the other one after a failure"
            } else {
                ""
            }
        );
        tokio::spawn(async move {
            let mut failures: u32 = 0;
            loop {
                let in_use = *challenge.lock().unwrap_or_else(|p| p.into_inner());
                let limit = stall_limit(&status.borrow());
                let event = match tokio::time::timeout(limit, state.next()).await {
                    Ok(Some(event)) => event,
                    Ok(None) => break,
                    Err(_) => {
                        failures += 1;
                        let failing = CertState::Failing {
                            reason: format!(
                                "the CA at {directory} has not answered for {} min",
                                STALL_GRACE_SECS / 60
                            ),
                            hint: "the CA's status page and this machine's network".into(),
                            retry_in_secs: 0,
                            valid: status.borrow().validity(),
                        };
                        tracing::warn!("certificate for {domains}: {}", failing.describe());
                        status.send_replace(failing);
                        state = maker.switch(&resolver, in_use).await;
                        continue;
                    }
                };
                match event {
                    Ok(EventOk::DeployedCachedCert) => {
                        tracing::debug!("certificate for {domains} loaded from the state directory")
                    }
                    Ok(EventOk::DeployedNewCert) => {
                        failures = 0;
                        tracing::debug!("new certificate for {domains} deployed");
                    }
                    Ok(EventOk::CertCacheStore) => {
                        tracing::info!(
                            "certificate for {domains}: {} ({} challenge); saved in the state directory",
                            status.borrow().describe(),
                            challenge_name(in_use)
                        );
                    }
                    Ok(EventOk::AccountCacheStore) => {
                        tracing::info!("new ACME account key saved in the state directory")
                    }
                    Err(EventError::Order(e)) => {
                        failures += 1;
                        // rustls-acme waits 2^n s after the n-th failure in a row (n from 0, at most 2^16 s);
                        // peercall waits as long before trying the other challenge type.
                        let retry_in_secs = 1u64 << (failures - 1).min(16);
                        let (reason, specific) = explain(&e, &directory);
                        let next = match (alternate, in_use) {
                            (true, AcmeChallenge::Http01) => AcmeChallenge::TlsAlpn01,
                            (true, _) => AcmeChallenge::Http01,
                            (false, current) => current,
                        };
                        let failing = CertState::Failing {
                            reason: format!("{} ({} challenge)", reason, challenge_name(in_use)),
                            hint: specific.unwrap_or_else(|| hint(in_use)),
                            retry_in_secs,
                            valid: status.borrow().validity(),
                        };
                        tracing::warn!(
                            "certificate for {domains}: {}{}",
                            failing.describe(),
                            if next != in_use {
                                format!("; next with the {} challenge", challenge_name(next))
                            } else {
                                String::new()
                            }
                        );
                        tracing::debug!("ACME order error: {e:?}");
                        status.send_replace(failing);
                        if next != in_use {
                            tokio::time::sleep(Duration::from_secs(retry_in_secs)).await;
                            state = maker.switch(&resolver, next).await;
                            *challenge.lock().unwrap_or_else(|p| p.into_inner()) = next;
                        }
                    }
                    Err(e) => tracing::warn!("certificate for {domains}: state directory: {e}"),
                }
            }
        });
    }

    /// Waits up to `limit` for the first outcome when an order is due now (no certificate, or one due for
    /// renewal), so that the banner can say how it went: issued, or failing and why.
    pub async fn settle(&self, limit: Duration) {
        let due = match self.state() {
            CertState::Valid(v) => v.renew_at <= unix_now(),
            _ => true,
        };
        if !due {
            return;
        }
        let mut changes = self.status.subscribe();
        let _ = tokio::time::timeout(limit, changes.changed()).await;
    }
}

/// `--state-dir`, else `$STATE_DIRECTORY` (set by systemd for `StateDirectory=`), else the XDG data directory.
fn state_dir(config: &Resolved) -> anyhow::Result<PathBuf> {
    if let Some(dir) = &config.state_dir {
        return Ok(dir.clone());
    }
    let env = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    if let Some(dirs) = env("STATE_DIRECTORY") {
        // systemd lists one directory per StateDirectory= entry, separated by colons; the first is ours.
        let first = dirs
            .to_string_lossy()
            .split(':')
            .next()
            .unwrap_or("")
            .to_owned();
        if !first.is_empty() {
            return Ok(PathBuf::from(first));
        }
    }
    if let Some(data) = env("XDG_DATA_HOME") {
        return Ok(PathBuf::from(data).join("peercall"));
    }
    match env("HOME") {
        Some(home) => Ok(PathBuf::from(home).join(".local/share/peercall")),
        None => Err(anyhow!(
            "no directory for the ACME account and certificates: give --state-dir (HOME is not set)"
        )),
    }
}

/// The HTTPS client of the ACME directory: the web's roots, plus `--acme-ca-file`.
fn client_config(config: &Resolved) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = &config.acme_ca_file {
        let pem = std::fs::read(path).with_context(|| {
            format!(
                "cannot read the CA file {} (--acme-ca-file)",
                path.display()
            )
        })?;
        let mut added = 0;
        for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
            let cert =
                cert.with_context(|| format!("{} is not PEM (--acme-ca-file)", path.display()))?;
            roots.add(cert).with_context(|| {
                format!(
                    "{} holds a certificate rustls cannot use (--acme-ca-file)",
                    path.display()
                )
            })?;
            added += 1;
        }
        if added == 0 {
            return Err(anyhow!(
                "{} holds no PEM certificate (--acme-ca-file)",
                path.display()
            ));
        }
    }
    let client = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .context("cannot build the ACME client's TLS configuration")?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(Arc::new(client))
}

/// A self-signed certificate for the domains, served only until the CA issues one.
fn stand_in(domains: &[String]) -> anyhow::Result<Arc<CertifiedKey>> {
    let made = rcgen::generate_simple_self_signed(domains.to_vec())
        .context("cannot make the stand-in certificate")?;
    let key = PrivateKeyDer::Pkcs8(made.key_pair.serialize_der().into());
    let signing = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|e| anyhow!("cannot use the stand-in certificate's key: {e}"))?;
    let cert: CertificateDer<'static> = made.cert.der().clone();
    Ok(Arc::new(CertifiedKey::new(vec![cert], signing)))
}

/// The ACME cache in the state directory: `acme/<directory>/<domain>-<hash>.pem` (the certificate's key and
/// chain) and `acme/<directory>/account-<hash>.key`, each written 0600 in a 0700 directory, replaced atomically.
struct StateDirCache {
    dir: PathBuf,
    status: Arc<watch::Sender<CertState>>,
}

impl StateDirCache {
    fn directory_dir(&self, directory: &str) -> PathBuf {
        let name: String = directory
            .trim_start_matches("https://")
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        self.dir.join(name)
    }

    fn cert_path(&self, domains: &[String], directory: &str) -> PathBuf {
        let first = domains.first().map_or("none", String::as_str);
        self.directory_dir(directory)
            .join(format!("{first}-{}.pem", short_hash(&domains.join(","))))
    }

    fn account_path(&self, contact: &[String], directory: &str) -> PathBuf {
        self.directory_dir(directory)
            .join(format!("account-{}.key", short_hash(&contact.join(","))))
    }

    fn read(&self, path: &Path) -> std::io::Result<Option<Vec<u8>>> {
        match std::fs::read(path) {
            Ok(data) => Ok(Some(data)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(std::io::Error::new(
                e.kind(),
                format!("cannot read {}: {e}", path.display()),
            )),
        }
    }
}

#[async_trait::async_trait]
impl rustls_acme::CertCache for StateDirCache {
    type EC = std::io::Error;

    async fn load_cert(
        &self,
        domains: &[String],
        directory_url: &str,
    ) -> Result<Option<Vec<u8>>, Self::EC> {
        self.read(&self.cert_path(domains, directory_url))
    }

    async fn store_cert(
        &self,
        domains: &[String],
        directory_url: &str,
        cert: &[u8],
    ) -> Result<(), Self::EC> {
        // The new certificate is already served (rustls-acme deploys before it stores): say so even if the
        // write below fails.
        if let Some((not_before, not_after)) = validity_of(cert) {
            self.status
                .send_replace(CertState::Valid(Validity::of(not_before, not_after, false)));
        }
        write_private(&self.cert_path(domains, directory_url), cert)
    }
}

#[async_trait::async_trait]
impl rustls_acme::AccountCache for StateDirCache {
    type EA = std::io::Error;

    async fn load_account(
        &self,
        contact: &[String],
        directory_url: &str,
    ) -> Result<Option<Vec<u8>>, Self::EA> {
        self.read(&self.account_path(contact, directory_url))
    }

    async fn store_account(
        &self,
        contact: &[String],
        directory_url: &str,
        account: &[u8],
    ) -> Result<(), Self::EA> {
        write_private(&self.account_path(contact, directory_url), account)
    }
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// Writes a file only its owner can read (a private key is in it), through a temporary file and a rename so a
/// crash never leaves half a key.
fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let named = |e: std::io::Error| {
        std::io::Error::new(e.kind(), format!("cannot write {}: {e}", path.display()))
    };
    if let Some(parent) = path.parent() {
        create_private_dir(parent).map_err(named)?;
    }
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(named)?;
    // `mode` applies only to a new file: a leftover temporary file gets its bits fixed too.
    file.set_permissions(std::fs::Permissions::from_mode(0o600))
        .map_err(named)?;
    file.write_all(data).map_err(named)?;
    file.sync_all().map_err(named)?;
    std::fs::rename(&tmp, path).map_err(named)
}

fn short_hash(text: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(text.as_bytes())
        .iter()
        .take(6)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// notBefore and notAfter (Unix seconds) of the first certificate in a PEM bundle.
fn validity_of(pem: &[u8]) -> Option<(i64, i64)> {
    let first = rustls_pemfile::certs(&mut &pem[..]).next()?.ok()?;
    let (_, cert) = x509_parser::parse_x509_certificate(first.as_ref()).ok()?;
    let v = cert.validity();
    Some((v.not_before.timestamp(), v.not_after.timestamp()))
}

/// Why an order failed, in words, and what to check when it is more specific than DNS and the port.
fn explain(e: &OrderError, directory: &str) -> (String, Option<String>) {
    match e {
        OrderError::Acme(rustls_acme::acme::AcmeError::HttpRequest(request)) => {
            let text = request.to_string();
            match problem_in(&text) {
                Some((typ, detail)) if typ.ends_with(":rateLimited") => (
                    format!("the CA's rate limit: {detail}"),
                    Some("the CA's rate limits (use --acme-staging while trying things out); peercall retries by itself".into()),
                ),
                Some((typ, detail)) => (
                    format!("the CA refused ({}): {detail}", typ.rsplit(':').next().unwrap_or(&typ)),
                    None,
                ),
                None => (
                    format!(
                        "cannot reach the ACME directory {directory}: {}",
                        io_message(&text)
                    ),
                    Some(
                        "this machine's network and DNS resolver, --acme-directory, and --acme-ca-file for a private CA"
                            .into(),
                    ),
                ),
            }
        }
        OrderError::BadAuth(auth) => {
            let rustls_acme::acme::Identifier::Dns(domain) = &auth.identifier;
            let detail = auth
                .challenges
                .iter()
                .filter_map(|c| c.error.as_ref())
                .filter_map(|p| p.detail.clone())
                .next()
                .unwrap_or_else(|| format!("{:?}", auth.status));
            (
                format!("the CA could not validate {domain}: {detail}"),
                None,
            )
        }
        OrderError::TooManyAttemptsAuth(domain) => {
            (format!("the CA did not validate {domain} in time"), None)
        }
        OrderError::BadOrder(order) => {
            let detail = order
                .error
                .as_ref()
                .and_then(|p| p.detail.clone())
                .unwrap_or_else(|| "no reason given".into());
            (format!("the CA refused the order: {detail}"), None)
        }
        other => (other.to_string(), None),
    }
}

/// The operating system's words in rustls-acme's debug-printed I/O errors (`... message: "Connection
/// refused" ...`), else the whole text.
fn io_message(text: &str) -> String {
    text.split_once("message: \"")
        .and_then(|(_, rest)| rest.split_once('"'))
        .map_or_else(|| text.to_owned(), |(message, _)| message.to_lowercase())
}

/// The ACME problem document (RFC 8555 §6.7) in rustls-acme's "non 2xx http status: CODE \"BODY\"" text:
/// its type and detail.
fn problem_in(text: &str) -> Option<(String, String)> {
    let quoted = text.strip_prefix("non 2xx http status: ")?;
    let (code, body) = quoted.split_once(' ')?;
    // The body is printed as a Rust string literal.
    let body: String = serde_json::from_str(body).ok().unwrap_or_default();
    let problem: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    let typ = problem["type"].as_str().unwrap_or("").to_owned();
    let detail = problem["detail"]
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| format!("HTTP status {code}"));
    Some((typ, detail))
}

fn challenge_name(challenge: AcmeChallenge) -> &'static str {
    match challenge {
        AcmeChallenge::Http01 => "HTTP-01",
        AcmeChallenge::TlsAlpn01 | AcmeChallenge::Auto => "TLS-ALPN-01",
    }
}

/// How long an ACME state may stay silent: until its next planned order, plus [`STALL_GRACE_SECS`].
fn stall_limit(state: &CertState) -> Duration {
    let planned = match state {
        CertState::Valid(v) => u64::try_from(v.renew_at - unix_now()).unwrap_or(0),
        CertState::Failing { retry_in_secs, .. } => *retry_in_secs,
        CertState::Obtaining => 0,
    };
    Duration::from_secs(planned + STALL_GRACE_SECS)
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// `2026-12-06 19:04:05 UTC`.
fn utc(unix: i64) -> String {
    let days = unix.div_euclid(86_400);
    let secs = unix.rem_euclid(86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// Whether `--http-redirect` was left at the default that `--domain` brings (then a port-80 bind failure is a
/// warning, not an error).
pub fn redirect_is_default(config: &Resolved) -> bool {
    config.provenance.layer("http_redirect") == Layer::Default
}

/// Let's Encrypt production or staging, or another CA, in words.
pub fn ca_name(directory: &str) -> String {
    if directory == defaults::acme_directory() {
        "Let's Encrypt".to_owned()
    } else if directory == LETS_ENCRYPT_STAGING {
        "Let's Encrypt staging (untrusted)".to_owned()
    } else {
        directory.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_utc() {
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(utc(1_796_584_445), "2026-12-06 19:14:05 UTC");
    }

    #[test]
    fn renewal_starts_with_a_third_of_the_lifetime_left() {
        let v = Validity::of(0, 90 * 86_400, false);
        assert_eq!(v.renew_at, 60 * 86_400);
    }

    #[test]
    fn problems_are_read_from_the_error_text() {
        let body =
            r#"{"type":"urn:ietf:params:acme:error:rateLimited","detail":"too many certificates"}"#;
        let text = format!("non 2xx http status: 429 {body:?}");
        let (typ, detail) = problem_in(&text).expect("a problem");
        assert_eq!(typ, "urn:ietf:params:acme:error:rateLimited");
        assert_eq!(detail, "too many certificates");
        assert_eq!(problem_in("io error: refused"), None);
        let refused = r#"http error: ConnectError(TcpConnect(Os { code: 111, kind: ConnectionRefused, message: "Connection refused" }))"#;
        assert_eq!(io_message(refused), "connection refused");
    }

    #[test]
    fn a_refused_challenge_names_the_domain_and_the_cas_reason() {
        let auth: rustls_acme::acme::Auth = serde_json::from_value(serde_json::json!({
            "status": "invalid",
            "identifier": { "type": "dns", "value": "call.example.com" },
            "challenges": [{
                "type": "tls-alpn-01", "url": "https://ca.example/c/1", "token": "t",
                "error": { "type": "urn:ietf:params:acme:error:connection", "detail": "Connection refused" },
            }],
        }))
        .expect("an authorization object");
        let (reason, hint) = explain(&OrderError::BadAuth(auth), "https://ca.example/dir");
        assert_eq!(
            reason,
            "the CA could not validate call.example.com: Connection refused"
        );
        assert_eq!(hint, None, "the general hint (DNS, port) applies");
    }

    #[test]
    fn private_files_are_0600_in_a_0700_directory() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("a/b/key.pem");
        write_private(&path, b"secret").expect("write");
        write_private(&path, b"secret2").expect("overwrite");
        let mode = |p: &Path| std::fs::metadata(p).expect("metadata").permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(&dir.path().join("a/b")), 0o700);
        assert_eq!(std::fs::read(&path).expect("read"), b"secret2");
    }

    #[test]
    fn states_read_as_a_person_would_say_them() {
        let valid = Validity::of(1_796_584_445, 1_796_584_445 + 90 * 86_400, true);
        let s = CertState::Valid(valid).describe();
        assert!(s.starts_with("valid until 2027-03-06"), "{s}");
        assert!(s.contains("from the state directory"), "{s}");
        let failing = CertState::Failing {
            reason: "cannot reach the ACME directory".into(),
            hint: "the network".into(),
            retry_in_secs: 4,
            valid: None,
        };
        assert_eq!(
            failing.describe(),
            "failing: cannot reach the ACME directory; retrying in 4 s. Check the network"
        );
        assert_eq!(failing.json()["status"], "failing");
    }
}
