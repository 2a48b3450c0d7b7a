//! A small TURN client for the control plane (tokio): long-term authentication (401 → key → request with
//! MESSAGE-INTEGRITY, 438 stale-nonce retry), Allocate, Refresh, CreatePermission, ChannelBind.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::stunmsg::{Builder, Class, Parsed, TransactionId, attr, long_term_key, method};
use anyhow::{Context, anyhow, bail};
use base64::Engine as _;
use hmac::{Hmac, Mac};
use tokio::net::UdpSocket;

/// How the load generator authenticates.
#[derive(Clone, Debug)]
pub enum Credentials {
    /// One static long-term user for every allocation (`--user u:p`).
    Static { username: String, password: String },
    /// coturn's REST scheme (`--auth-secret S`): a distinct `EXPIRY:PREFIXn` user per allocation.
    Secret { secret: String, prefix: String },
}

impl Credentials {
    pub fn parse(user: Option<&str>, secret: Option<&str>) -> anyhow::Result<Credentials> {
        match (user, secret) {
            (Some(u), None) => {
                let (username, password) = u
                    .split_once(':')
                    .ok_or_else(|| anyhow!("--user must be NAME:PASSWORD, got {u:?}"))?;
                Ok(Credentials::Static {
                    username: username.to_owned(),
                    password: password.to_owned(),
                })
            }
            (None, Some(s)) => Ok(Credentials::Secret {
                secret: s.to_owned(),
                prefix: "bench".to_owned(),
            }),
            (None, None) => bail!("give --user NAME:PASSWORD or --auth-secret SECRET"),
            (Some(_), Some(_)) => bail!("give only one of --user and --auth-secret"),
        }
    }

    /// Username and password for allocation number `index`.
    pub fn for_index(&self, index: usize) -> (String, String) {
        match self {
            Credentials::Static { username, password } => (username.clone(), password.clone()),
            Credentials::Secret { secret, prefix } => {
                let expiry = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0)
                    + 24 * 3600;
                let username = format!("{expiry}:{prefix}{index}");
                (username.clone(), rest_password(secret, &username))
            }
        }
    }
}

/// coturn's REST API password: base64(HMAC-SHA1(secret, username)).
pub fn rest_password(secret: &str, username: &str) -> String {
    let mut mac = <Hmac<sha1::Sha1> as Mac>::new_from_slice(secret.as_bytes())
        .expect("HMAC takes any key length");
    mac.update(username.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

static TID_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A fresh transaction id (splitmix64 over a counter and the clock; unique within this process).
pub fn new_tid() -> TransactionId {
    let n = TID_COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut z = crate::sys::now_ns() ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let mut next = || {
        z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut x = z;
        x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        x ^ (x >> 31)
    };
    let mut tid = [0u8; 12];
    tid[0..8].copy_from_slice(&next().to_be_bytes());
    tid[8..12].copy_from_slice(&(next() as u32).to_be_bytes());
    tid
}

/// Retransmission schedule for one transaction: RTO doubling from `rto`, at most `tries` sends.
#[derive(Clone, Copy, Debug)]
pub struct Retry {
    pub rto: Duration,
    pub tries: u32,
}

impl Default for Retry {
    fn default() -> Self {
        Retry {
            rto: Duration::from_millis(500),
            tries: 6,
        }
    }
}

/// Sends `req` and waits for the response with the same transaction id, retransmitting on timeout.
pub async fn transact(
    sock: &UdpSocket,
    req: &[u8],
    tid: &TransactionId,
    retry: Retry,
) -> anyhow::Result<Vec<u8>> {
    let mut buf = vec![0u8; 2048];
    let mut rto = retry.rto;
    for _ in 0..retry.tries.max(1) {
        sock.send(req).await.context("send request")?;
        let deadline = tokio::time::Instant::now() + rto;
        loop {
            match tokio::time::timeout_at(deadline, sock.recv(&mut buf)).await {
                Err(_) => break, // timed out: retransmit
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => break,
                Ok(Err(e)) => return Err(e).context("receive response"),
                Ok(Ok(n)) => {
                    if n >= 20 && buf[8..20] == tid[..] && buf[0] & 0xC0 == 0 {
                        buf.truncate(n);
                        return Ok(buf);
                    }
                    // Something else (a stale answer, relayed data): keep waiting.
                }
            }
        }
        rto = (rto * 2).min(Duration::from_secs(3));
    }
    bail!("no response after {} tries", retry.tries.max(1))
}

/// One allocation: its socket (connected to the server) and its authentication state.
pub struct Session {
    pub sock: UdpSocket,
    pub username: String,
    pub realm: String,
    pub nonce: String,
    pub key: [u8; 16],
    pub relayed: SocketAddr,
    pub mapped: Option<SocketAddr>,
    pub retry: Retry,
}

/// An attribute of a request (the few this client sends).
#[derive(Clone, Copy, Debug)]
pub enum Attr {
    RequestedTransportUdp,
    Lifetime(u32),
    ChannelNumber(u16),
    XorPeerAddress(SocketAddr),
}

/// Builds an authenticated request: the attributes, then USERNAME, REALM, NONCE and MESSAGE-INTEGRITY.
pub fn build_auth_request(
    method: u16,
    tid: &TransactionId,
    attrs: &[Attr],
    username: &str,
    realm: &str,
    nonce: &str,
    key: &[u8],
) -> Vec<u8> {
    let mut b = Builder::new(Class::Request, method, tid);
    for a in attrs {
        b = add_attr(b, *a);
    }
    b.text(attr::USERNAME, username)
        .text(attr::REALM, realm)
        .text(attr::NONCE, nonce)
        .integrity(key)
}

fn add_attr(b: Builder, a: Attr) -> Builder {
    match a {
        Attr::RequestedTransportUdp => b.u32(attr::REQUESTED_TRANSPORT, 17 << 24),
        Attr::Lifetime(l) => b.u32(attr::LIFETIME, l),
        Attr::ChannelNumber(c) => b.u32(attr::CHANNEL_NUMBER, u32::from(c) << 16),
        Attr::XorPeerAddress(p) => b.xor_address(attr::XOR_PEER_ADDRESS, p),
    }
}

fn method_name(m: u16) -> &'static str {
    match m {
        method::ALLOCATE => "Allocate",
        method::REFRESH => "Refresh",
        method::CHANNEL_BIND => "ChannelBind",
        _ => "request",
    }
}

impl Session {
    /// Binds a socket on `local`, connects it to `server` and allocates a UDP relay with long-term credentials.
    pub async fn allocate(
        server: SocketAddr,
        local: SocketAddr,
        username: &str,
        password: &str,
        lifetime: Option<u32>,
        retry: Retry,
    ) -> anyhow::Result<Session> {
        let sock = UdpSocket::bind(local).await.context("bind client socket")?;
        sock.connect(server)
            .await
            .context("connect client socket")?;
        // 1. Unauthenticated Allocate: expect 401 with REALM and NONCE.
        let tid = new_tid();
        let req = add_attr(
            Builder::new(Class::Request, method::ALLOCATE, &tid),
            Attr::RequestedTransportUdp,
        )
        .finish();
        let resp = transact(&sock, &req, &tid, retry)
            .await
            .context("Allocate (unauthenticated)")?;
        let msg = Parsed::parse(&resp).ok_or_else(|| anyhow!("malformed response to Allocate"))?;
        if msg.class != Class::Error {
            bail!(
                "the server allocated without authentication; this benchmark expects long-term auth"
            );
        }
        let (code, reason) = msg.error_code().unwrap_or((0, "no ERROR-CODE".into()));
        if code != 401 {
            bail!("Allocate without credentials: expected 401, got {code} {reason}");
        }
        let realm = msg.text(attr::REALM).context("401 without REALM")?;
        let nonce = msg.text(attr::NONCE).context("401 without NONCE")?;
        let key = long_term_key(username, &realm, password);
        let mut s = Session {
            sock,
            username: username.to_owned(),
            realm,
            nonce,
            key,
            relayed: server,
            mapped: None,
            retry,
        };
        // 2. Authenticated Allocate.
        let mut attrs = vec![Attr::RequestedTransportUdp];
        if let Some(l) = lifetime {
            attrs.push(Attr::Lifetime(l));
        }
        let resp = s
            .request(method::ALLOCATE, &attrs)
            .await
            .context("Allocate")?;
        let msg = Parsed::parse(&resp).ok_or_else(|| anyhow!("malformed Allocate response"))?;
        s.relayed = msg
            .xor_address(attr::XOR_RELAYED_ADDRESS)
            .context("Allocate success without XOR-RELAYED-ADDRESS")?;
        s.mapped = msg.xor_address(attr::XOR_MAPPED_ADDRESS);
        Ok(s)
    }

    /// An authenticated request; retries with the new nonce on 438 (stale nonce). Returns the success
    /// response, whose MESSAGE-INTEGRITY has been checked.
    pub async fn request(&mut self, method: u16, attrs: &[Attr]) -> anyhow::Result<Vec<u8>> {
        for _ in 0..3 {
            let tid = new_tid();
            let req = build_auth_request(
                method,
                &tid,
                attrs,
                &self.username,
                &self.realm,
                &self.nonce,
                &self.key,
            );
            let resp = transact(&self.sock, &req, &tid, self.retry).await?;
            let msg = Parsed::parse(&resp).ok_or_else(|| anyhow!("malformed response"))?;
            if msg.method != method {
                bail!(
                    "answer to {} has method {:#x}",
                    method_name(method),
                    msg.method
                );
            }
            match msg.class {
                Class::Success => {
                    if !msg.verify_integrity(&self.key) {
                        bail!(
                            "{} response: MESSAGE-INTEGRITY missing or wrong",
                            method_name(method)
                        );
                    }
                    return Ok(resp);
                }
                Class::Error => {
                    let (code, reason) = msg.error_code().unwrap_or((0, "no ERROR-CODE".into()));
                    if code == 438 || code == 401 {
                        match msg.text(attr::NONCE) {
                            Some(n) if n != self.nonce => {
                                self.nonce = n;
                                continue;
                            }
                            _ => {}
                        }
                    }
                    bail!("{} refused: {code} {reason}", method_name(method));
                }
                c => bail!("unexpected {c:?} response to {}", method_name(method)),
            }
        }
        bail!("{}: the nonce kept going stale", method_name(method))
    }

    pub async fn refresh(&mut self, lifetime: u32) -> anyhow::Result<()> {
        self.request(method::REFRESH, &[Attr::Lifetime(lifetime)])
            .await
            .map(|_| ())
    }

    pub async fn channel_bind(&mut self, channel: u16, peer: SocketAddr) -> anyhow::Result<()> {
        self.request(
            method::CHANNEL_BIND,
            &[Attr::ChannelNumber(channel), Attr::XorPeerAddress(peer)],
        )
        .await
        .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rest_password_matches_coturn_scheme() {
        // base64(HMAC-SHA1("secret", "1700000000:alice")), computed independently with openssl:
        // printf %s 1700000000:alice | openssl dgst -sha1 -hmac secret -binary | base64
        assert_eq!(
            rest_password("secret", "1700000000:alice"),
            "d8soP47RbdIKLDUOpnJPVQyq5Ts="
        );
    }

    #[test]
    fn credentials_parse() {
        let c = Credentials::parse(Some("u:p:q"), None).expect("valid");
        assert_eq!(c.for_index(3), ("u".to_owned(), "p:q".to_owned()));
        assert!(Credentials::parse(Some("nocolon"), None).is_err());
        assert!(Credentials::parse(None, None).is_err());
        let s = Credentials::parse(None, Some("k")).expect("valid");
        let (u, p) = s.for_index(7);
        assert!(u.ends_with(":bench7"), "{u}");
        assert_eq!(p, rest_password("k", &u));
    }

    #[test]
    fn authenticated_request_verifies_with_the_long_term_key() {
        let key = long_term_key("u", "test", "p");
        let tid = new_tid();
        let peer: SocketAddr = "127.0.0.1:5000".parse().expect("literal");
        let req = build_auth_request(
            method::CHANNEL_BIND,
            &tid,
            &[Attr::ChannelNumber(0x4000), Attr::XorPeerAddress(peer)],
            "u",
            "test",
            "abc",
            &key,
        );
        let msg = Parsed::parse(&req).expect("well-formed");
        assert_eq!(
            (msg.class, msg.method),
            (Class::Request, method::CHANNEL_BIND)
        );
        assert!(msg.verify_integrity(&key));
        assert!(!msg.verify_integrity(&long_term_key("u", "test", "wrong")));
        assert_eq!(msg.xor_address(attr::XOR_PEER_ADDRESS), Some(peer));
        assert_eq!(msg.text(attr::USERNAME).as_deref(), Some("u"));
        assert_eq!(msg.get(attr::CHANNEL_NUMBER), Some(&[0x40, 0, 0, 0][..]));
        assert_ne!(new_tid(), new_tid());
    }

    /// Drives the client against a scripted server socket: 401 first, then a stale nonce (438), then success.
    #[tokio::test]
    async fn allocate_handles_401_and_stale_nonce() {
        let server = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let addr = server.local_addr().expect("bound");
        let relayed: SocketAddr = "127.0.0.1:50000".parse().expect("literal");
        let srv = tokio::spawn(async move {
            let key = long_term_key("u", "R", "p");
            let mut buf = [0u8; 1500];
            let mut seen_nonces = Vec::new();
            for step in 0..3 {
                let (n, from) = server.recv_from(&mut buf).await.expect("recv");
                let msg = Parsed::parse(&buf[..n]).expect("client sends valid STUN");
                let tid = msg.tid();
                let out = match step {
                    0 => {
                        assert!(msg.get(attr::MESSAGE_INTEGRITY).is_none());
                        Builder::new(Class::Error, method::ALLOCATE, &tid)
                            .raw(attr::ERROR_CODE, b"\0\0\x04\x01Unauthorized")
                            .text(attr::REALM, "R")
                            .text(attr::NONCE, "n1")
                            .finish()
                    }
                    1 => {
                        assert!(msg.verify_integrity(&key), "client uses MD5(u:R:p)");
                        seen_nonces.push(msg.text(attr::NONCE));
                        Builder::new(Class::Error, method::ALLOCATE, &tid)
                            .raw(attr::ERROR_CODE, b"\0\0\x04\x26Stale Nonce")
                            .text(attr::REALM, "R")
                            .text(attr::NONCE, "n2")
                            .finish()
                    }
                    _ => {
                        assert!(msg.verify_integrity(&key), "client uses MD5(u:R:p)");
                        assert_eq!(msg.text(attr::NONCE).as_deref(), Some("n2"));
                        Builder::new(Class::Success, method::ALLOCATE, &tid)
                            .xor_address(attr::XOR_RELAYED_ADDRESS, relayed)
                            .xor_address(attr::XOR_MAPPED_ADDRESS, from)
                            .integrity(&key)
                    }
                };
                server.send_to(&out, from).await.expect("send");
            }
            seen_nonces
        });
        let s = Session::allocate(
            addr,
            "127.0.0.1:0".parse().expect("literal"),
            "u",
            "p",
            None,
            Retry::default(),
        )
        .await
        .expect("allocation succeeds after 401 and 438");
        assert_eq!(s.relayed, relayed);
        assert_eq!(s.nonce, "n2");
        assert_eq!(s.mapped, s.sock.local_addr().ok());
        let nonces = srv.await.expect("server task");
        assert_eq!(nonces, vec![Some("n1".to_owned())]);
    }
}
