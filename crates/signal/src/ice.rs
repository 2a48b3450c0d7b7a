//! `iceServers` for `welcome` and `ice-servers`: STUN and TURN URLs on the host the client reached us by, with
//! coturn "REST API" credentials (username `"{expiry}:{peer_id}"`, password base64(HMAC-SHA1(secret, username))).

use std::net::{IpAddr, Ipv6Addr};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha1::Sha1;

use crate::TurnAdvert;
use crate::protocol::IceServer;

/// A TURN username and password, valid until `expires_unix`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TurnCredential {
    /// `"{expires_unix}:{peer_id}"`: the TURN server reads the expiry from it, so no state is shared.
    pub username: String,
    /// base64(HMAC-SHA1(secret, username)): the TURN password.
    pub credential: String,
    /// Expiry, in seconds since the Unix epoch.
    pub expires_unix: u64,
}

/// Mints a coturn shared-secret credential for `peer_id`, valid for `ttl` from `now_unix`.
pub fn turn_credential(
    secret: &str,
    peer_id: &str,
    now_unix: u64,
    ttl: Duration,
) -> TurnCredential {
    let expires_unix = now_unix.saturating_add(ttl.as_secs());
    let username = format!("{expires_unix}:{peer_id}");
    let mut mac = <Hmac<Sha1> as Mac>::new_from_slice(secret.as_bytes())
        .expect("HMAC accepts keys of any length");
    mac.update(username.as_bytes());
    let credential = STANDARD.encode(mac.finalize().into_bytes());
    TurnCredential {
        username,
        credential,
        expires_unix,
    }
}

/// The `iceServers` list for one peer. `host` is already in URL form (IPv6 in brackets). Empty when there is
/// no TURN server to advertise or no host to name.
pub fn ice_servers(
    turn: Option<&TurnAdvert>,
    host: Option<&str>,
    peer_id: &str,
    now_unix: u64,
) -> Vec<IceServer> {
    let Some(turn) = turn else {
        return Vec::new();
    };
    if !turn.servers.is_empty() {
        return fleet(turn, peer_id, now_unix);
    }
    let Some(host) = host else {
        return Vec::new();
    };
    let cred = turn_credential(&turn.secret, peer_id, now_unix, turn.credential_ttl);
    let port = turn.port;
    let mut urls = vec![
        format!("turn:{host}:{port}?transport=udp"),
        format!("turn:{host}:{port}?transport=tcp"),
    ];
    if let Some(tls) = turn.tls_port {
        urls.push(format!("turns:{host}:{tls}?transport=tcp"));
    }
    // The HTTPS port last: the TURNS port is the cheaper path (no classification) when the network lets it out.
    if let Some(https) = turn.https_port.filter(|p| Some(*p) != turn.tls_port) {
        urls.push(format!("turns:{host}:{https}?transport=tcp"));
    }
    vec![
        IceServer {
            urls: vec![format!("stun:{host}:{port}")],
            username: None,
            credential: None,
        },
        IceServer {
            urls,
            username: Some(cred.username),
            credential: Some(cred.credential),
        },
    ]
}

/// The `iceServers` of a fleet of TURN servers (`TurnAdvert::servers`): one `stun:` URL per `turn:` host and
/// port, and every TURN URL with the one credential they all accept.
fn fleet(turn: &TurnAdvert, peer_id: &str, now_unix: u64) -> Vec<IceServer> {
    let cred = turn_credential(&turn.secret, peer_id, now_unix, turn.credential_ttl);
    let mut stun: Vec<String> = Vec::new();
    for url in &turn.servers {
        if let Some(rest) = url.strip_prefix("turn:") {
            let hostport = rest.split('?').next().unwrap_or(rest);
            let s = format!("stun:{hostport}");
            if !stun.contains(&s) {
                stun.push(s);
            }
        }
    }
    let mut out = Vec::new();
    if !stun.is_empty() {
        out.push(IceServer {
            urls: stun,
            username: None,
            credential: None,
        });
    }
    out.push(IceServer {
        urls: turn.servers.clone(),
        username: Some(cred.username),
        credential: Some(cred.credential),
    });
    out
}

/// When to send fresh credentials: at 80 % of the TTL (at least one second from now).
pub fn refresh_after(ttl: Duration) -> Duration {
    (ttl.mul_f64(0.8)).max(Duration::from_secs(1))
}

/// Normalizes a `Host` header, an URI authority or a configured public host to the host part for a URL:
/// the port and any user info are stripped, IPv6 literals are bracketed, names are lower-cased. `None` for
/// anything that is not a plain DNS name or IP literal (so a forged `Host` cannot inject into the URLs).
pub fn normalize_host(raw: &str) -> Option<String> {
    let raw = raw.trim();
    let raw = raw.rsplit_once('@').map_or(raw, |(_, h)| h);
    if let Some(rest) = raw.strip_prefix('[') {
        let (inner, after) = rest.split_once(']')?;
        let addr: Ipv6Addr = inner.parse().ok()?;
        if !(after.is_empty() || after.strip_prefix(':').is_some_and(is_port)) {
            return None;
        }
        return Some(format!("[{addr}]"));
    }
    if let Ok(addr) = raw.parse::<Ipv6Addr>() {
        return Some(format!("[{addr}]"));
    }
    let host = match raw.rsplit_once(':') {
        Some((h, port)) if is_port(port) => h,
        Some(_) => return None,
        None => raw,
    };
    let host = host.strip_suffix('.').unwrap_or(host);
    let ok = !host.is_empty()
        && host.len() <= 253
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
        && !host.starts_with('.')
        && !host.contains("..");
    ok.then(|| host.to_ascii_lowercase())
}

fn is_port(s: &str) -> bool {
    !s.is_empty() && s.len() <= 5 && s.bytes().all(|b| b.is_ascii_digit())
}

/// Host for a client that sent no usable `Host`: the loopback literal when it came over loopback (then we
/// listen there too), otherwise none.
pub fn fallback_host(remote: Option<IpAddr>) -> Option<String> {
    match remote? {
        IpAddr::V4(v4) if v4.is_loopback() => Some("127.0.0.1".to_owned()),
        IpAddr::V6(v6) if v6.is_loopback() => Some("[::1]".to_owned()),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) if v4.is_loopback() => Some("127.0.0.1".to_owned()),
            _ => None,
        },
        IpAddr::V4(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha1::Digest;

    /// HMAC-SHA1 written out from RFC 2104 over the `sha1` digest alone: independent of the `hmac` crate.
    fn hmac_sha1_by_hand(key: &[u8], msg: &[u8]) -> [u8; 20] {
        let mut k = [0u8; 64];
        if key.len() > 64 {
            k[..20].copy_from_slice(&Sha1::digest(key));
        } else {
            k[..key.len()].copy_from_slice(key);
        }
        let inner = Sha1::new()
            .chain_update(k.map(|b| b ^ 0x36))
            .chain_update(msg)
            .finalize();
        Sha1::new()
            .chain_update(k.map(|b| b ^ 0x5c))
            .chain_update(inner)
            .finalize()
            .into()
    }

    #[test]
    fn credential_matches_independent_hmac() {
        let c = turn_credential(
            "north-secret",
            "p-3f9a",
            1_767_225_600 - 3600,
            Duration::from_secs(3600),
        );
        assert_eq!(c.username, "1767225600:p-3f9a");
        assert_eq!(c.expires_unix, 1_767_225_600);
        let expected = STANDARD.encode(hmac_sha1_by_hand(b"north-secret", b"1767225600:p-3f9a"));
        assert_eq!(c.credential, expected);
        // A long key (hashed first by HMAC) too.
        let long = "k".repeat(100);
        let c = turn_credential(&long, "p-1", 0, Duration::from_secs(10));
        assert_eq!(
            c.credential,
            STANDARD.encode(hmac_sha1_by_hand(long.as_bytes(), b"10:p-1"))
        );
    }

    /// RFC 2202 test case 2 pins the by-hand HMAC itself to a published vector.
    #[test]
    fn by_hand_hmac_matches_rfc2202() {
        let mac = hmac_sha1_by_hand(b"Jefe", b"what do ya want for nothing?");
        let hex: String = mac.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79");
    }

    #[test]
    fn ice_server_list() {
        let turn = TurnAdvert {
            secret: "s".into(),
            port: 3478,
            tls_port: Some(5349),
            https_port: None,
            credential_ttl: Duration::from_secs(600),
            servers: Vec::new(),
        };
        let list = ice_servers(Some(&turn), Some("[::1]"), "p-1", 1000);
        assert_eq!(list.len(), 2);
        assert_eq!(list[0].urls, vec!["stun:[::1]:3478"]);
        assert_eq!(
            list[1].urls,
            vec![
                "turn:[::1]:3478?transport=udp",
                "turn:[::1]:3478?transport=tcp",
                "turns:[::1]:5349?transport=tcp"
            ]
        );
        assert_eq!(list[1].username.as_deref(), Some("1600:p-1"));
        let no_tls = TurnAdvert {
            tls_port: None,
            ..turn.clone()
        };
        let list = ice_servers(Some(&no_tls), Some("example.org"), "p-1", 1000);
        assert!(list[1].urls.iter().all(|u| !u.starts_with("turns:")));
        // TURNS on the HTTPS port too: one more URL on the same host; none twice when both ports are one.
        let shared = TurnAdvert {
            https_port: Some(443),
            ..turn.clone()
        };
        let list = ice_servers(Some(&shared), Some("call.example.org"), "p-1", 1000);
        assert_eq!(
            list[1].urls[2..],
            [
                "turns:call.example.org:5349?transport=tcp",
                "turns:call.example.org:443?transport=tcp"
            ]
        );
        let same = TurnAdvert {
            tls_port: Some(443),
            https_port: Some(443),
            ..turn.clone()
        };
        let list = ice_servers(Some(&same), Some("call.example.org"), "p-1", 1000);
        assert_eq!(
            list[1].urls[2..],
            ["turns:call.example.org:443?transport=tcp"]
        );
        assert!(ice_servers(None, Some("h"), "p", 0).is_empty());
        assert!(ice_servers(Some(&turn), None, "p", 0).is_empty());
    }

    #[test]
    fn host_normalization() {
        for (raw, want) in [
            ("localhost:8080", Some("localhost")),
            ("LocalHost", Some("localhost")),
            ("127.0.0.1:8080", Some("127.0.0.1")),
            ("[::1]:8080", Some("[::1]")),
            ("[::1]", Some("[::1]")),
            ("[0:0::1]", Some("[::1]")),
            ("::1", Some("[::1]")),
            ("call.example.org.", Some("call.example.org")),
            ("user@host:1", Some("host")),
            ("host:port", None),
            ("[::1]x", None),
            ("[nope]:80", None),
            ("", None),
            ("a b", None),
            ("evil/path", None),
            ("evil?transport=tcp", None),
            ("..", None),
            ("host:123456", None),
        ] {
            assert_eq!(normalize_host(raw).as_deref(), want, "{raw:?}");
        }
        assert_eq!(
            refresh_after(Duration::from_secs(100)),
            Duration::from_secs(80)
        );
        assert_eq!(refresh_after(Duration::ZERO), Duration::from_secs(1));
        assert_eq!(
            fallback_host(Some("127.0.0.2".parse().expect("ip"))).as_deref(),
            Some("127.0.0.1")
        );
        assert_eq!(
            fallback_host(Some("::1".parse().expect("ip"))).as_deref(),
            Some("[::1]")
        );
        assert_eq!(fallback_host(Some("192.0.2.1".parse().expect("ip"))), None);
    }
}
