//! HMAC-signed join tokens (docs/protocol.md, "Join tokens").
//!
//! ```text
//! token   = B64URL(payload) "." B64URL(HMAC-SHA256(secret, B64URL(payload)))     (base64url, no padding)
//! payload = {"room": "...", "exp": UNIX_SECONDS, "name": "..."}                   (UTF-8 JSON; name optional)
//! ```

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::protocol::{valid_name, valid_room};

/// What a join token grants.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct JoinClaims {
    /// The one room this token opens.
    pub room: String,
    /// Expiry, seconds since the Unix epoch; the token is refused from this second on.
    pub exp: u64,
    /// When present, the display name: `join.name` is replaced by it and `rename` is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// Not two base64url parts joined by `.`, or the payload is not a [`JoinClaims`] JSON object with a valid
    /// room name and display name.
    #[error("the join token is malformed")]
    Malformed,
    /// The HMAC-SHA256 does not match: forged, or minted with another secret.
    #[error("the join token signature does not match")]
    BadSignature,
    /// `exp` is now or in the past.
    #[error("the join token has expired")]
    Expired,
    /// The token opens another room than the one joined.
    #[error("the join token is for another room")]
    WrongRoom,
}

fn sign(secret: &[u8], payload_b64: &str) -> [u8; 32] {
    let mut mac =
        <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("HMAC accepts keys of any length");
    mac.update(payload_b64.as_bytes());
    mac.finalize().into_bytes().into()
}

/// Mints a token (for embedders' backends and for tests).
pub fn mint_join_token(secret: &[u8], claims: &JoinClaims) -> String {
    let json = serde_json::to_vec(claims)
        .expect("serializing a struct of strings and integers cannot fail");
    let payload = URL_SAFE_NO_PAD.encode(json);
    let sig = URL_SAFE_NO_PAD.encode(sign(secret, &payload));
    format!("{payload}.{sig}")
}

/// Checks the signature and expiry of a token, and that it is for `room`.
pub fn verify_join_token(
    secret: &[u8],
    token: &str,
    room: &str,
    now_unix: u64,
) -> Result<JoinClaims, TokenError> {
    let (payload, sig) = token.split_once('.').ok_or(TokenError::Malformed)?;
    let sig = URL_SAFE_NO_PAD
        .decode(sig)
        .map_err(|_| TokenError::Malformed)?;
    let expected = sign(secret, payload);
    if !bool::from(expected.as_slice().ct_eq(&sig)) {
        return Err(TokenError::BadSignature);
    }
    let json = URL_SAFE_NO_PAD
        .decode(payload)
        .map_err(|_| TokenError::Malformed)?;
    let claims: JoinClaims = serde_json::from_slice(&json).map_err(|_| TokenError::Malformed)?;
    if !valid_room(&claims.room) {
        return Err(TokenError::Malformed);
    }
    if claims
        .name
        .as_ref()
        .is_some_and(|n| valid_name(n, "join").is_err())
    {
        return Err(TokenError::Malformed);
    }
    if now_unix >= claims.exp {
        return Err(TokenError::Expired);
    }
    if claims.room != room {
        return Err(TokenError::WrongRoom);
    }
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"embedder-secret";

    fn claims(name: Option<&str>) -> JoinClaims {
        JoinClaims {
            room: "standup".into(),
            exp: 1_000,
            name: name.map(str::to_owned),
        }
    }

    #[test]
    fn round_trip() {
        let t = mint_join_token(SECRET, &claims(Some("Ann")));
        assert_eq!(
            verify_join_token(SECRET, &t, "standup", 999),
            Ok(claims(Some("Ann")))
        );
        let t = mint_join_token(SECRET, &claims(None));
        assert_eq!(
            verify_join_token(SECRET, &t, "standup", 0),
            Ok(claims(None))
        );
    }

    #[test]
    fn refusals() {
        let t = mint_join_token(SECRET, &claims(None));
        assert_eq!(
            verify_join_token(SECRET, &t, "standup", 1_000),
            Err(TokenError::Expired)
        );
        assert_eq!(
            verify_join_token(SECRET, &t, "other", 10),
            Err(TokenError::WrongRoom)
        );
        assert_eq!(
            verify_join_token(b"other-secret", &t, "standup", 10),
            Err(TokenError::BadSignature)
        );
        assert_eq!(
            verify_join_token(SECRET, "nodot", "standup", 10),
            Err(TokenError::Malformed)
        );
        assert_eq!(
            verify_join_token(SECRET, "a.!!!", "standup", 10),
            Err(TokenError::Malformed)
        );
        // A payload changed after signing (exp pushed into the future) fails the signature.
        let (_, sig) = t.split_once('.').expect("token has a dot");
        let forged_payload = URL_SAFE_NO_PAD.encode(br#"{"room":"standup","exp":99999999999}"#);
        assert_eq!(
            verify_join_token(SECRET, &format!("{forged_payload}.{sig}"), "standup", 10),
            Err(TokenError::BadSignature)
        );
        // Correctly signed but not our JSON shape.
        let payload = URL_SAFE_NO_PAD.encode(b"[1]");
        let sig = URL_SAFE_NO_PAD.encode(sign(SECRET, &payload));
        assert_eq!(
            verify_join_token(SECRET, &format!("{payload}.{sig}"), "standup", 10),
            Err(TokenError::Malformed)
        );
    }

    /// The documented format, computed independently of `mint_join_token` (hand-built HMAC from SHA-256).
    #[test]
    fn matches_documented_format() {
        use sha2::Digest;
        let payload_json = br#"{"room":"standup","exp":1000,"name":"Ann"}"#;
        let payload = URL_SAFE_NO_PAD.encode(payload_json);
        let mut key = [0u8; 64];
        key[..SECRET.len()].copy_from_slice(SECRET);
        let inner = Sha256::new()
            .chain_update(key.map(|b| b ^ 0x36))
            .chain_update(payload.as_bytes())
            .finalize();
        let outer = Sha256::new()
            .chain_update(key.map(|b| b ^ 0x5c))
            .chain_update(inner)
            .finalize();
        let token = format!("{payload}.{}", URL_SAFE_NO_PAD.encode(outer));
        assert_eq!(
            verify_join_token(SECRET, &token, "standup", 1),
            Ok(claims(Some("Ann")))
        );
    }
}
