//! HTTP-level checks of a request before it reaches the cores, pure functions of the request's headers:
//!
//! - [`origin_allowed`]: the cross-site WebSocket check of `/ws` (a page on another site must not open a
//!   signaling connection in its visitor's name);
//! - [`client_ip`]: the client's address behind trusted reverse proxies (`X-Forwarded-For` / `Forwarded`), used
//!   for every per-address limit and log line.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use axum::http::uri::{Authority, Uri};
use axum::http::{HeaderMap, header};
use ipnet::IpNet;

/// A malformed `--allowed-origin` value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OriginError {
    /// Not `scheme://host[:port]` (a path, query or user info, no host, or not a URI at all) and not `*`.
    #[error(
        "expected an origin such as https://app.example.com or http://localhost:3000 (scheme, host, optional port; no path), or *"
    )]
    Malformed,
}

/// A web origin, `scheme://host[:port]`, normalized: lower case, IPv6 literals bracketed, the scheme's default
/// port made explicit.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Origin {
    scheme: String,
    host: String,
    port: Option<u16>,
}

fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" | "ws" => Some(80),
        "https" | "wss" => Some(443),
        _ => None,
    }
}

impl Origin {
    /// Parses the value of an `Origin` header (or of `--allowed-origin`). `null` and anything with a path,
    /// query or user info is an error.
    pub fn parse(text: &str) -> Result<Origin, OriginError> {
        let text = text.trim();
        let text = text.strip_suffix('/').unwrap_or(text);
        let uri: Uri = text.parse().map_err(|_| OriginError::Malformed)?;
        let (Some(scheme), Some(authority)) = (uri.scheme_str(), uri.authority()) else {
            return Err(OriginError::Malformed);
        };
        if authority.as_str().contains('@')
            || uri.query().is_some()
            || !matches!(uri.path(), "" | "/")
        {
            return Err(OriginError::Malformed);
        }
        if text.len() != scheme.len() + 3 + authority.as_str().len() {
            return Err(OriginError::Malformed); // a path was there
        }
        let scheme = scheme.to_ascii_lowercase();
        let host = authority.host().to_ascii_lowercase();
        if host.is_empty() {
            return Err(OriginError::Malformed);
        }
        let port = authority.port_u16().or_else(|| default_port(&scheme));
        Ok(Origin { scheme, host, port })
    }

    /// The host, lower case (IPv6 in brackets).
    pub fn host(&self) -> &str {
        &self.host
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}", self.scheme, self.host)?;
        match self.port {
            Some(p) if Some(p) != default_port(&self.scheme) => write!(f, ":{p}"),
            _ => Ok(()),
        }
    }
}

/// One `--allowed-origin` entry: an origin, or `*` for any.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum AllowedOrigin {
    /// `*`: every origin may open `/ws` (cross-site pages included; for deployments that embed the client).
    Any,
    /// Pages of exactly this origin (scheme, host and port) may open `/ws`.
    Origin(Origin),
}

impl FromStr for AllowedOrigin {
    type Err = OriginError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.trim() == "*" {
            Ok(AllowedOrigin::Any)
        } else {
            Origin::parse(s).map(AllowedOrigin::Origin)
        }
    }
}

impl fmt::Display for AllowedOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AllowedOrigin::Any => f.write_str("*"),
            AllowedOrigin::Origin(o) => o.fmt(f),
        }
    }
}

/// Whether a WebSocket request with this `Origin` header may connect.
///
/// Allowed: no `Origin` at all (native clients, curl: a browser always sends one, so a missing one is not a
/// cross-site page); an origin whose host and port are those the request was sent to (`page_hosts`: the `Host`
/// header or URI authority, and `X-Forwarded-Host` from a trusted proxy) — the page peercall served itself;
/// an origin whose host is `public_host` (any scheme and port); and any origin listed in `allowed`.
/// Everything else, `null` included, is refused.
pub fn origin_allowed(
    origin: Option<&str>,
    page_hosts: &[&str],
    public_host: Option<&str>,
    allowed: &[AllowedOrigin],
) -> bool {
    let Some(origin) = origin else {
        return true;
    };
    if allowed.contains(&AllowedOrigin::Any) {
        return true;
    }
    let Ok(origin) = Origin::parse(origin) else {
        return false;
    };
    let same_page = page_hosts.iter().any(|h| {
        h.parse::<Authority>().is_ok_and(|a| {
            a.host().eq_ignore_ascii_case(&origin.host)
                && a.port_u16().or_else(|| default_port(&origin.scheme)) == origin.port
        })
    });
    let public = public_host.is_some_and(|p| {
        let p = p.trim().trim_end_matches('.');
        let bare = origin.host.trim_start_matches('[').trim_end_matches(']');
        p.eq_ignore_ascii_case(&origin.host) || p.eq_ignore_ascii_case(bare)
    });
    same_page || public || allowed.contains(&AllowedOrigin::Origin(origin))
}

/// Whether `ip` is one of the trusted proxies (IPv4-mapped IPv6 counts as its IPv4 address).
pub fn is_trusted(ip: IpAddr, trusted: &[IpNet]) -> bool {
    let ip = ip.to_canonical();
    trusted.iter().any(|net| net.contains(&ip))
}

/// The client's address: `peer` (the socket's remote address) unless `peer` is a trusted proxy, in which case the
/// proxies' `Forwarded` (RFC 7239, preferred) or `X-Forwarded-For` header is read from the right, skipping
/// trusted proxies: the first address that is not a trusted proxy is the client. A hop a proxy could not name
/// (`unknown`, an obfuscated identifier, garbage) ends the walk at the proxy that reported it, so a client can
/// never choose its own address by sending these headers: only what trusted proxies appended counts.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let peer = peer.to_canonical();
    if !is_trusted(peer, trusted) {
        return peer;
    }
    let hops = forwarded_hops(headers);
    let mut current = peer;
    for hop in hops.iter().rev() {
        match hop {
            Some(ip) if is_trusted(*ip, trusted) => current = *ip,
            Some(ip) => return *ip,
            None => return current,
        }
    }
    current
}

/// The addresses of `Forwarded: for=` (when present) or else `X-Forwarded-For`, left to right; `None` for a hop
/// that is not an IP address.
fn forwarded_hops(headers: &HeaderMap) -> Vec<Option<IpAddr>> {
    let forwarded: Vec<&str> = headers
        .get_all(header::FORWARDED)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    if !forwarded.is_empty() {
        let mut hops = Vec::new();
        for element in forwarded.iter().flat_map(|v| v.split(',')) {
            let value = element.split(';').find_map(|pair| {
                let (k, v) = pair.split_once('=')?;
                k.trim().eq_ignore_ascii_case("for").then(|| v.trim())
            });
            if let Some(v) = value {
                hops.push(parse_hop(v.trim_matches('"')));
            }
        }
        return hops;
    }
    headers
        .get_all("x-forwarded-for")
        .iter()
        .flat_map(|v| match v.to_str() {
            Ok(s) => s
                .split(',')
                .map(|h| parse_hop(h.trim()))
                .collect::<Vec<_>>(),
            Err(_) => vec![None],
        })
        .collect()
}

/// `192.0.2.1`, `192.0.2.1:443`, `2001:db8::1`, `[2001:db8::1]` or `[2001:db8::1]:443`.
fn parse_hop(text: &str) -> Option<IpAddr> {
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    if let Ok(sa) = text.parse::<SocketAddr>() {
        return Some(sa.ip().to_canonical());
    }
    text.strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .and_then(|t| t.parse::<IpAddr>().ok())
        .map(|ip| ip.to_canonical())
}

/// Whether the request carries any header a proxy adds: such a request did not come straight from a local
/// client, whatever its socket address says.
pub fn has_forwarding_headers(headers: &HeaderMap) -> bool {
    headers.contains_key(header::FORWARDED)
        || headers.contains_key("x-forwarded-for")
        || headers.contains_key("x-real-ip")
        || headers.contains_key("x-forwarded-host")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn any(o: &str) -> AllowedOrigin {
        o.parse().expect("allowed origin")
    }

    #[test]
    fn origins_parse_and_normalize() {
        let o = Origin::parse("HTTPS://Call.Example.org").expect("origin");
        assert_eq!(o.to_string(), "https://call.example.org");
        assert_eq!(
            o,
            Origin::parse("https://call.example.org:443/").expect("origin")
        );
        assert_eq!(
            Origin::parse("http://[::1]:8080").expect("v6").to_string(),
            "http://[::1]:8080"
        );
        for bad in [
            "null",
            "",
            "call.example.org",
            "https://x.org/path",
            "https://u@x.org",
            "https://x.org?q",
            "https://",
        ] {
            assert!(Origin::parse(bad).is_err(), "{bad:?} should not parse");
        }
        assert_eq!(any("*"), AllowedOrigin::Any);
    }

    #[test]
    fn same_page_public_host_and_listed_origins_are_allowed_others_refused() {
        let host = ["call.example.org"];
        assert!(
            origin_allowed(None, &host, None, &[]),
            "no Origin: native client"
        );
        assert!(origin_allowed(
            Some("https://call.example.org"),
            &host,
            None,
            &[]
        ));
        assert!(origin_allowed(
            Some("http://call.example.org"),
            &host,
            None,
            &[]
        ));
        assert!(!origin_allowed(
            Some("https://evil.example"),
            &host,
            None,
            &[]
        ));
        assert!(!origin_allowed(Some("null"), &host, None, &[]));
        // Port must match (default ports count as given).
        let local = ["localhost:8080"];
        assert!(origin_allowed(
            Some("http://localhost:8080"),
            &local,
            None,
            &[]
        ));
        assert!(!origin_allowed(
            Some("http://localhost:3000"),
            &local,
            None,
            &[]
        ));
        assert!(origin_allowed(
            Some("https://call.example.org"),
            &["call.example.org:443"],
            None,
            &[]
        ));
        assert!(origin_allowed(
            Some("http://[::1]:8080"),
            &["[::1]:8080"],
            None,
            &[]
        ));
        // --public-host: any scheme and port of that host.
        assert!(origin_allowed(
            Some("https://call.example.org:8443"),
            &["10.0.0.5:8080"],
            Some("Call.example.org"),
            &[]
        ));
        assert!(origin_allowed(
            Some("http://[2001:db8::1]"),
            &["x"],
            Some("2001:db8::1"),
            &[]
        ));
        // --allowed-origin: exactly that origin.
        let allowed = [any("https://app.example.com")];
        assert!(origin_allowed(
            Some("https://app.example.com"),
            &host,
            None,
            &allowed
        ));
        assert!(!origin_allowed(
            Some("http://app.example.com"),
            &host,
            None,
            &allowed
        ));
        assert!(!origin_allowed(
            Some("https://app.example.com:444"),
            &host,
            None,
            &allowed
        ));
        assert!(origin_allowed(
            Some("https://evil.example"),
            &host,
            None,
            &[any("*")]
        ));
        // A Host header that cannot be parsed matches nothing.
        assert!(!origin_allowed(Some("http://a"), &["bad host"], None, &[]));
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                axum::http::HeaderName::from_bytes(k.as_bytes()).expect("name"),
                v.parse().expect("value"),
            );
        }
        h
    }

    #[test]
    fn forwarded_headers_count_only_from_trusted_proxies() {
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        let trusted: Vec<IpNet> = vec![
            "10.0.0.0/8".parse().expect("net"),
            "::1/128".parse().expect("net"),
        ];
        let xff = headers(&[("x-forwarded-for", "203.0.113.9, 10.0.0.7")]);
        // From an untrusted peer: the headers are ignored.
        assert_eq!(
            client_ip(ip("198.51.100.1"), &xff, &trusted),
            ip("198.51.100.1")
        );
        // From a trusted proxy: the rightmost untrusted hop (the proxy chain 10.0.0.7 is skipped).
        assert_eq!(client_ip(ip("10.0.0.2"), &xff, &trusted), ip("203.0.113.9"));
        // A client cannot prepend a fake address: only the hop the proxy appended counts.
        let spoofed = headers(&[("x-forwarded-for", "1.2.3.4, 203.0.113.9")]);
        assert_eq!(
            client_ip(ip("10.0.0.2"), &spoofed, &trusted),
            ip("203.0.113.9")
        );
        // Several header lines are one list.
        let split = headers(&[
            ("x-forwarded-for", "1.2.3.4"),
            ("x-forwarded-for", "203.0.113.9"),
        ]);
        assert_eq!(
            client_ip(ip("10.0.0.2"), &split, &trusted),
            ip("203.0.113.9")
        );
        // Forwarded wins over X-Forwarded-For; IPv6 with brackets and port; quotes.
        let fwd = headers(&[
            (
                "forwarded",
                "for=\"[2001:db8::7]:4711\";proto=https, for=10.1.2.3",
            ),
            ("x-forwarded-for", "192.0.2.1"),
        ]);
        assert_eq!(client_ip(ip("::1"), &fwd, &trusted), ip("2001:db8::7"));
        // An unknown hop stops at the proxy that reported it.
        let unknown = headers(&[("forwarded", "for=unknown")]);
        assert_eq!(
            client_ip(ip("10.0.0.2"), &unknown, &trusted),
            ip("10.0.0.2")
        );
        let garbage = headers(&[("x-forwarded-for", "203.0.113.9, nonsense")]);
        assert_eq!(
            client_ip(ip("10.0.0.2"), &garbage, &trusted),
            ip("10.0.0.2")
        );
        // No header from a trusted proxy: the proxy itself.
        assert_eq!(
            client_ip(ip("10.0.0.2"), &HeaderMap::new(), &trusted),
            ip("10.0.0.2")
        );
        // Every hop trusted: the leftmost.
        let all = headers(&[("x-forwarded-for", "10.9.9.9, 10.0.0.7")]);
        assert_eq!(client_ip(ip("10.0.0.2"), &all, &trusted), ip("10.9.9.9"));
        // IPv4-mapped peers are their IPv4 address.
        assert_eq!(
            client_ip(ip("::ffff:10.0.0.2"), &xff, &trusted),
            ip("203.0.113.9")
        );
        assert_eq!(client_ip(ip("10.0.0.2"), &xff, &[]), ip("10.0.0.2"));
        assert!(has_forwarding_headers(&xff) && !has_forwarding_headers(&HeaderMap::new()));
    }
}
