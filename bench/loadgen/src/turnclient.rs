//! A small TURN client for the control plane (tokio): long-term authentication (401 → key → request with
//! MESSAGE-INTEGRITY, 438 stale-nonce retry), Allocate, Refresh, CreatePermission, ChannelBind.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use base64::Engine as _;
use hmac::{Hmac, Mac};
use peercall_stun::{
    Attribute, Class, Message, MessageWriter, Method, TransactionId, attr, long_term_key_md5,
};
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

/// The error code of an error response, with its reason.
pub fn error_code(msg: &Message<'_>) -> (u16, String) {
    match msg.decode(attr::ERROR_CODE) {
        Some(Ok(Attribute::ErrorCode { code, reason })) => (code, reason.to_owned()),
        _ => (0, "error response without a valid ERROR-CODE".to_owned()),
    }
}

fn text_attr(msg: &Message<'_>, typ: u16) -> Option<String> {
    match msg.decode(typ) {
        Some(Ok(Attribute::Realm(s) | Attribute::Nonce(s))) => Some(s.to_owned()),
        _ => None,
    }
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

/// Builds an authenticated request into `buf`; returns its length.
#[allow(clippy::too_many_arguments)]
pub fn build_auth_request(
    buf: &mut [u8],
    method: Method,
    tid: &TransactionId,
    attrs: &[Attribute<'_>],
    username: &str,
    realm: &str,
    nonce: &str,
    key: &[u8],
) -> anyhow::Result<usize> {
    let mut w = MessageWriter::new(buf, Class::Request, method, tid).map_err(|e| anyhow!("{e}"))?;
    for a in attrs {
        w.add(a).map_err(|e| anyhow!("{e}"))?;
    }
    w.add(&Attribute::Username(username))
        .map_err(|e| anyhow!("{e}"))?;
    w.add(&Attribute::Realm(realm))
        .map_err(|e| anyhow!("{e}"))?;
    w.add(&Attribute::Nonce(nonce))
        .map_err(|e| anyhow!("{e}"))?;
    w.add_message_integrity(key).map_err(|e| anyhow!("{e}"))?;
    Ok(w.finish())
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
        let mut buf = [0u8; 512];
        let mut w = MessageWriter::new(&mut buf, Class::Request, Method::ALLOCATE, &tid)
            .map_err(|e| anyhow!("{e}"))?;
        w.add(&Attribute::RequestedTransport(17))
            .map_err(|e| anyhow!("{e}"))?;
        let n = w.finish();
        let resp = transact(&sock, &buf[..n], &tid, retry)
            .await
            .context("Allocate (unauthenticated)")?;
        let msg = Message::parse(&resp).map_err(|e| anyhow!("bad response to Allocate: {e}"))?;
        if msg.class() != Class::Error {
            bail!(
                "the server allocated without authentication; this benchmark expects long-term auth"
            );
        }
        let (code, reason) = error_code(&msg);
        if code != 401 {
            bail!("Allocate without credentials: expected 401, got {code} {reason}");
        }
        let realm = text_attr(&msg, attr::REALM).context("401 without REALM")?;
        let nonce = text_attr(&msg, attr::NONCE).context("401 without NONCE")?;
        let key = long_term_key_md5(username, &realm, password);
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
        let mut attrs = vec![Attribute::RequestedTransport(17)];
        if let Some(l) = lifetime {
            attrs.push(Attribute::Lifetime(l));
        }
        let resp = s
            .request(Method::ALLOCATE, &attrs)
            .await
            .context("Allocate")?;
        let msg = Message::parse(&resp).map_err(|e| anyhow!("bad Allocate response: {e}"))?;
        s.relayed = match msg.decode(attr::XOR_RELAYED_ADDRESS) {
            Some(Ok(Attribute::XorRelayedAddress(a))) => a,
            _ => bail!("Allocate success without XOR-RELAYED-ADDRESS"),
        };
        if let Some(Ok(Attribute::XorMappedAddress(a))) = msg.decode(attr::XOR_MAPPED_ADDRESS) {
            s.mapped = Some(a);
        }
        Ok(s)
    }

    /// An authenticated request; retries once per stale nonce (438). Returns the success response, whose
    /// MESSAGE-INTEGRITY has been checked.
    pub async fn request(
        &mut self,
        method: Method,
        attrs: &[Attribute<'_>],
    ) -> anyhow::Result<Vec<u8>> {
        for _ in 0..3 {
            let tid = new_tid();
            let mut buf = [0u8; 1024];
            let n = build_auth_request(
                &mut buf,
                method,
                &tid,
                attrs,
                &self.username,
                &self.realm,
                &self.nonce,
                &self.key,
            )?;
            let resp = transact(&self.sock, &buf[..n], &tid, self.retry).await?;
            let msg = Message::parse(&resp).map_err(|e| anyhow!("bad response: {e}"))?;
            match msg.class() {
                Class::Success => {
                    msg.verify_integrity(&self.key)
                        .map_err(|e| anyhow!("response MESSAGE-INTEGRITY: {e}"))?;
                    return Ok(resp);
                }
                Class::Error => {
                    let (code, reason) = error_code(&msg);
                    if code == 438 || code == 401 {
                        match text_attr(&msg, attr::NONCE) {
                            Some(n) if n != self.nonce => {
                                self.nonce = n;
                                continue;
                            }
                            _ => {}
                        }
                    }
                    bail!("{} refused: {code} {reason}", method.name());
                }
                c => bail!("unexpected {c:?} response to {}", method.name()),
            }
        }
        bail!("{}: the nonce kept going stale", method.name())
    }

    pub async fn refresh(&mut self, lifetime: u32) -> anyhow::Result<()> {
        self.request(Method::REFRESH, &[Attribute::Lifetime(lifetime)])
            .await
            .map(|_| ())
    }

    pub async fn channel_bind(&mut self, channel: u16, peer: SocketAddr) -> anyhow::Result<()> {
        self.request(
            Method::CHANNEL_BIND,
            &[
                Attribute::ChannelNumber(channel),
                Attribute::XorPeerAddress(peer),
            ],
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
        let key = long_term_key_md5("u", "test", "p");
        let tid = new_tid();
        let mut buf = [0u8; 512];
        let peer: SocketAddr = "127.0.0.1:5000".parse().expect("literal");
        let n = build_auth_request(
            &mut buf,
            Method::CHANNEL_BIND,
            &tid,
            &[
                Attribute::ChannelNumber(0x4000),
                Attribute::XorPeerAddress(peer),
            ],
            "u",
            "test",
            "abc",
            &key,
        )
        .expect("fits");
        let msg = Message::parse(&buf[..n]).expect("well-formed");
        assert_eq!(msg.method(), Method::CHANNEL_BIND);
        assert_eq!(msg.class(), Class::Request);
        msg.verify_integrity(&key)
            .expect("integrity with the right key");
        assert!(
            msg.verify_integrity(&long_term_key_md5("u", "test", "wrong"))
                .is_err()
        );
        assert_eq!(
            msg.decode(attr::XOR_PEER_ADDRESS),
            Some(Ok(Attribute::XorPeerAddress(peer)))
        );
        assert_eq!(
            msg.decode(attr::USERNAME),
            Some(Ok(Attribute::Username("u")))
        );
        assert_ne!(new_tid(), new_tid());
    }

    /// Drives the client against a scripted server socket: 401 first, then a stale nonce (438), then success.
    #[tokio::test]
    async fn allocate_handles_401_and_stale_nonce() {
        let server = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let addr = server.local_addr().expect("bound");
        let relayed: SocketAddr = "127.0.0.1:50000".parse().expect("literal");
        let srv = tokio::spawn(async move {
            let key = long_term_key_md5("u", "R", "p");
            let mut buf = [0u8; 1500];
            let mut seen_nonces = Vec::new();
            for step in 0..3 {
                let (n, from) = server.recv_from(&mut buf).await.expect("recv");
                let msg = Message::parse(&buf[..n]).expect("client sends valid STUN");
                let tid = *msg.transaction_id();
                let mut out = [0u8; 512];
                let len = match step {
                    0 => {
                        assert!(msg.get(attr::MESSAGE_INTEGRITY).is_none());
                        let mut w =
                            MessageWriter::new(&mut out, Class::Error, Method::ALLOCATE, &tid)
                                .expect("fits");
                        w.add(&Attribute::ErrorCode {
                            code: 401,
                            reason: "Unauthorized",
                        })
                        .expect("fits");
                        w.add(&Attribute::Realm("R")).expect("fits");
                        w.add(&Attribute::Nonce("n1")).expect("fits");
                        w.finish()
                    }
                    1 => {
                        msg.verify_integrity(&key).expect("client uses MD5(u:R:p)");
                        seen_nonces.push(msg.decode(attr::NONCE).map(|a| format!("{a:?}")));
                        let mut w =
                            MessageWriter::new(&mut out, Class::Error, Method::ALLOCATE, &tid)
                                .expect("fits");
                        w.add(&Attribute::ErrorCode {
                            code: 438,
                            reason: "Stale Nonce",
                        })
                        .expect("fits");
                        w.add(&Attribute::Realm("R")).expect("fits");
                        w.add(&Attribute::Nonce("n2")).expect("fits");
                        w.finish()
                    }
                    _ => {
                        msg.verify_integrity(&key).expect("client uses MD5(u:R:p)");
                        assert_eq!(msg.decode(attr::NONCE), Some(Ok(Attribute::Nonce("n2"))));
                        let mut w =
                            MessageWriter::new(&mut out, Class::Success, Method::ALLOCATE, &tid)
                                .expect("fits");
                        w.add(&Attribute::XorRelayedAddress(relayed)).expect("fits");
                        w.add(&Attribute::XorMappedAddress(from)).expect("fits");
                        w.add_message_integrity(&key).expect("fits");
                        w.finish()
                    }
                };
                server.send_to(&out[..len], from).await.expect("send");
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
        assert_eq!(nonces, vec![Some("Ok(Nonce(\"n1\"))".to_owned())]);
    }
}
