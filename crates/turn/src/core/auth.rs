//! Long-term credentials (static users and coturn's shared-secret "REST API" scheme) and stateless nonces.

use std::collections::HashMap;
use std::net::SocketAddr;

use base64::Engine;
use hmac::{Hmac, Mac};
use peercall_stun::long_term_key_md5;

/// Seconds a nonce stays valid.
pub const NONCE_LIFETIME_SECS: u64 = 600;

/// Why a request's credentials were refused (a metric label, never sent to the client).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFailure {
    /// No MESSAGE-INTEGRITY: usually a client's first try, answered 401 with a nonce.
    MissingIntegrity,
    /// The nonce expired or was issued to another address: answered 438 with a fresh one.
    StaleNonce,
    /// No static user and no valid REST username of that name.
    UnknownUser,
    /// A REST username whose expiry has passed.
    Expired,
    /// MESSAGE-INTEGRITY does not verify with any key of the username: a wrong password (or secret).
    BadIntegrity,
}

impl AuthFailure {
    /// The `reason` label of `peercall_turn_auth_failures_total`.
    pub fn label(self) -> &'static str {
        match self {
            AuthFailure::MissingIntegrity => "missing_integrity",
            AuthFailure::StaleNonce => "stale_nonce",
            AuthFailure::UnknownUser => "unknown_user",
            AuthFailure::Expired => "expired",
            AuthFailure::BadIntegrity => "bad_integrity",
        }
    }

    /// Every reason, in counter order.
    pub const ALL: [AuthFailure; 5] = [
        AuthFailure::MissingIntegrity,
        AuthFailure::StaleNonce,
        AuthFailure::UnknownUser,
        AuthFailure::Expired,
        AuthFailure::BadIntegrity,
    ];
}

/// Credentials the server accepts.
pub struct Credentials {
    realm: String,
    /// Static users: username → MD5 long-term key (the password itself is not kept).
    users: HashMap<String, [u8; 16]>,
    secrets: Vec<Vec<u8>>,
    nonce_key: [u8; 32],
}

impl Credentials {
    pub fn new(
        realm: &str,
        users: &[(String, String)],
        secrets: &[String],
        nonce_key: [u8; 32],
    ) -> Credentials {
        let users = users
            .iter()
            .map(|(name, password)| (name.clone(), long_term_key_md5(name, realm, password)))
            .collect();
        Credentials {
            realm: realm.to_owned(),
            users,
            secrets: secrets.iter().map(|s| s.as_bytes().to_vec()).collect(),
            nonce_key,
        }
    }

    pub fn realm(&self) -> &str {
        &self.realm
    }

    /// A nonce bound to the client's address and valid until `unix_now + NONCE_LIFETIME_SECS`:
    /// 8 hex digits of expiry and 24 of HMAC. Nothing is stored.
    pub fn nonce(&self, client: SocketAddr, unix_now: u64) -> [u8; 32] {
        let expiry = unix_now + NONCE_LIFETIME_SECS;
        let mut out = [0u8; 32];
        write_hex(&mut out[..8], &(expiry as u32).to_be_bytes());
        let mac = self.nonce_mac(client, expiry as u32);
        write_hex(&mut out[8..], &mac[..12]);
        out
    }

    pub fn nonce_valid(&self, nonce: &str, client: SocketAddr, unix_now: u64) -> bool {
        let b = nonce.as_bytes();
        if b.len() != 32 {
            return false;
        }
        let Some(expiry) = parse_hex_u32(&b[..8]) else {
            return false;
        };
        if u64::from(expiry) < unix_now {
            return false;
        }
        let mac = self.nonce_mac(client, expiry);
        let mut expected = [0u8; 24];
        write_hex(&mut expected, &mac[..12]);
        subtle::ConstantTimeEq::ct_eq(&expected[..], &b[8..]).into()
    }

    fn nonce_mac(&self, client: SocketAddr, expiry: u32) -> [u8; 32] {
        let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(&self.nonce_key)
            .expect("HMAC accepts keys of any length");
        match client.ip() {
            std::net::IpAddr::V4(v4) => mac.update(&v4.octets()),
            std::net::IpAddr::V6(v6) => mac.update(&v6.octets()),
        }
        mac.update(&client.port().to_be_bytes());
        mac.update(&expiry.to_be_bytes());
        mac.finalize().into_bytes().into()
    }

    /// Candidate keys for `username`: the static user's key, or one per shared secret for REST usernames
    /// (`EXPIRY:USER` or `USER:EXPIRY`). The caller tries each against MESSAGE-INTEGRITY.
    pub fn keys(
        &self,
        username: &str,
        unix_now: u64,
        out: &mut Vec<[u8; 16]>,
    ) -> Result<(), AuthFailure> {
        out.clear();
        if let Some(key) = self.users.get(username) {
            out.push(*key);
            return Ok(());
        }
        if self.secrets.is_empty() {
            return Err(AuthFailure::UnknownUser);
        }
        let expiry = rest_expiry(username).ok_or(AuthFailure::UnknownUser)?;
        if expiry < unix_now {
            return Err(AuthFailure::Expired);
        }
        for secret in &self.secrets {
            let password = rest_password(secret, username);
            out.push(long_term_key_md5(username, &self.realm, &password));
        }
        Ok(())
    }
}

/// The password of a REST username: base64(HMAC-SHA1(secret, username)).
pub fn rest_password(secret: &[u8], username: &str) -> String {
    let mut mac =
        <Hmac<sha1::Sha1> as Mac>::new_from_slice(secret).expect("HMAC accepts keys of any length");
    mac.update(username.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// The expiry of a REST username, whichever side of the colon holds the timestamp.
fn rest_expiry(username: &str) -> Option<u64> {
    let (a, b) = username.split_once(':').unwrap_or((username, ""));
    a.parse::<u64>()
        .ok()
        .or_else(|| b.rsplit(':').next().and_then(|t| t.parse().ok()))
}

fn write_hex(out: &mut [u8], bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for (i, b) in bytes.iter().enumerate() {
        out[2 * i] = HEX[usize::from(b >> 4)];
        out[2 * i + 1] = HEX[usize::from(b & 15)];
    }
}

fn parse_hex_u32(b: &[u8]) -> Option<u32> {
    let s = std::str::from_utf8(b).ok()?;
    u32::from_str_radix(s, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds() -> Credentials {
        Credentials::new(
            "r",
            &[("u".into(), "p".into())],
            &["s1".into(), "s2".into()],
            [9; 32],
        )
    }

    #[test]
    fn nonce_is_bound_to_client_and_expires() {
        let c = creds();
        let a: SocketAddr = "192.0.2.1:5000".parse().expect("addr");
        let b: SocketAddr = "192.0.2.1:5001".parse().expect("addr");
        let n = c.nonce(a, 1000);
        let n = std::str::from_utf8(&n).expect("ascii");
        assert!(c.nonce_valid(n, a, 1000));
        assert!(c.nonce_valid(n, a, 1000 + NONCE_LIFETIME_SECS));
        assert!(!c.nonce_valid(n, a, 1001 + NONCE_LIFETIME_SECS));
        assert!(!c.nonce_valid(n, b, 1000));
        assert!(!c.nonce_valid("garbage", a, 1000));
    }

    #[test]
    fn static_user_key() {
        let mut keys = Vec::new();
        creds().keys("u", 0, &mut keys).expect("known");
        assert_eq!(keys, vec![long_term_key_md5("u", "r", "p")]);
        assert_eq!(
            creds().keys("nobody", 0, &mut keys),
            Err(AuthFailure::UnknownUser)
        );
    }

    #[test]
    fn rest_usernames_in_both_orders_and_expiry() {
        let mut keys = Vec::new();
        creds().keys("2000:alice", 1000, &mut keys).expect("valid");
        assert_eq!(keys.len(), 2, "one key per secret");
        let pass = rest_password(b"s2", "2000:alice");
        assert_eq!(keys[1], long_term_key_md5("2000:alice", "r", &pass));
        creds()
            .keys("alice:2000", 1000, &mut keys)
            .expect("USER:EXPIRY accepted");
        assert_eq!(
            creds().keys("999:alice", 1000, &mut keys),
            Err(AuthFailure::Expired)
        );
        assert_eq!(
            creds().keys("alice", 1000, &mut keys),
            Err(AuthFailure::UnknownUser)
        );
    }

    #[test]
    fn rest_password_matches_coturn_scheme() {
        // base64(HMAC-SHA1("secret", "1700000000:user")), computed independently.
        let mut mac = <Hmac<sha1::Sha1> as Mac>::new_from_slice(b"secret").expect("key");
        mac.update(b"1700000000:user");
        let expected =
            base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
        assert_eq!(rest_password(b"secret", "1700000000:user"), expected);
        assert_eq!(expected.len(), 28);
    }
}
