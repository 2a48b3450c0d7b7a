//! Which peer addresses a client may relay to. Every path that names a peer (Send, ChannelData,
//! CreatePermission, ChannelBind, TCP) goes through [`PeerPolicy::check`], after [`normalize`]: the coturn
//! CVE-2020-26262 class of bypasses came from paths or address forms that skipped the check.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use ipnet::IpNet;

/// Maps the IPv6 forms that carry an IPv4 address at a known position (IPv4-mapped, IPv4-compatible, the NAT64
/// well-known prefix 64:ff9b::/96) to that IPv4 address, so one rule covers all of them.
///
/// 6to4 (2002::/16), Teredo (2001::/32), the local-use NAT64 prefix 64:ff9b:1::/48 (where the embedded address
/// may sit at any RFC 6052 position) and IPv4-translated addresses (::ffff:0:0:0/96) are not decoded: they are
/// refused outright by [`special_purpose_ranges`] (RFC 6156 §9.1), because a relay to them lands on an IPv4 host
/// chosen by a tunnel or translator the server cannot see.
pub fn normalize(ip: IpAddr) -> IpAddr {
    let IpAddr::V6(v6) = ip else { return ip };
    let s = v6.segments();
    let o = v6.octets();
    let embedded = |b: [u8; 4]| IpAddr::V4(Ipv4Addr::from(b));
    // ::ffff:a.b.c.d (mapped) and ::a.b.c.d (deprecated compatible, but not :: or ::1)
    if s[0..5] == [0; 5] && (s[5] == 0xffff || (s[5] == 0 && (s[6] != 0 || s[7] > 1))) {
        return embedded([o[12], o[13], o[14], o[15]]);
    }
    // NAT64 well-known prefix 64:ff9b::/96 (RFC 6052: the address is the low 32 bits)
    if s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0; 4] {
        return embedded([o[12], o[13], o[14], o[15]]);
    }
    ip
}

/// Ranges no relay should reach unless the operator says so: loopback, private, link-local, CGNAT,
/// multicast, unspecified, broadcast, reserved, documentation, benchmarking and other special-purpose
/// ranges (IANA special-purpose registries).
pub fn special_purpose_ranges() -> Vec<IpNet> {
    [
        "0.0.0.0/8",
        "10.0.0.0/8",
        "100.64.0.0/10",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "172.16.0.0/12",
        "192.0.0.0/24",
        "192.0.2.0/24",
        "192.88.99.0/24",
        "192.168.0.0/16",
        "198.18.0.0/15",
        "198.51.100.0/24",
        "203.0.113.0/24",
        "224.0.0.0/4",
        "240.0.0.0/4",
        "255.255.255.255/32",
        "::/128",
        "::1/128",
        "::ffff:0:0:0/96",
        "64:ff9b:1::/48",
        "100::/64",
        "2001::/32",
        "2001::/23",
        "2001:db8::/32",
        "2002::/16",
        "3fff::/20",
        "5f00::/16",
        "fc00::/7",
        "fe80::/10",
        "fec0::/10",
        "ff00::/8",
    ]
    .iter()
    .map(|r| {
        r.parse()
            .expect("static special-purpose range list is valid CIDR")
    })
    .collect()
}

/// Relay destination policy.
#[derive(Debug, Clone)]
pub struct PeerPolicy {
    special: Vec<IpNet>,
    deny: Vec<IpNet>,
    allow: Vec<IpNet>,
    /// This server's own addresses (listening, relay, external): a relay towards them would loop back into
    /// the server or reach services on its host.
    own_ips: Vec<IpAddr>,
    /// This server's listening sockets.
    own_listeners: Vec<SocketAddr>,
    allow_loopback: bool,
}

impl PeerPolicy {
    /// Refuses the special-purpose ranges (private, loopback, link-local, ...) except those in `allow` (and
    /// loopback when `allow_loopback`), and `deny` whatever `allow` says. This server's own addresses come
    /// with [`with_own_addresses`](Self::with_own_addresses).
    pub fn new(allow: &[IpNet], deny: &[IpNet], allow_loopback: bool) -> PeerPolicy {
        let mut allow_all = allow.to_vec();
        if allow_loopback {
            allow_all.push("127.0.0.0/8".parse().expect("valid CIDR"));
            allow_all.push("::1/128".parse().expect("valid CIDR"));
        }
        PeerPolicy {
            special: special_purpose_ranges(),
            deny: deny.to_vec(),
            allow: allow_all,
            own_ips: Vec::new(),
            own_listeners: Vec::new(),
            allow_loopback,
        }
    }

    /// Declares this server's own addresses: its listening sockets and every IP it listens on, relays from or
    /// advertises (external). Peers there are refused whatever the allow list says, except live relay addresses.
    pub fn with_own_addresses(
        mut self,
        listeners: &[SocketAddr],
        ips: impl IntoIterator<Item = IpAddr>,
    ) -> PeerPolicy {
        self.own_listeners = listeners
            .iter()
            .map(|a| SocketAddr::new(normalize(a.ip()), a.port()))
            .collect();
        for ip in ips.into_iter().map(normalize) {
            if !ip.is_unspecified() && !self.own_ips.contains(&ip) {
                self.own_ips.push(ip);
            }
        }
        self
    }

    /// `is_own_relay` says whether the peer is one of this server's live relayed addresses, which is always
    /// allowed so two relay-only clients on one host reach each other. It is asked only when the address alone
    /// would refuse, so the relay path does not pay for the lookup when the peer is an ordinary address.
    pub fn check(&self, peer: SocketAddr, is_own_relay: impl FnOnce() -> bool) -> bool {
        if self.is_own(peer) {
            return is_own_relay();
        }
        self.ranges_allow(peer.ip()) || is_own_relay()
    }

    /// Whether `peer` is this server itself. On a loopback address that the operator opened with
    /// `--allow-loopback-peers` (tests and single-host setups, where every peer shares the server's address) only
    /// the listening ports count as the server; on any other own address every port does.
    fn is_own(&self, peer: SocketAddr) -> bool {
        let ip = normalize(peer.ip());
        let listener =
            |a: &SocketAddr| a.port() == peer.port() && (a.ip() == ip || a.ip().is_unspecified());
        if self.own_listeners.iter().any(listener) {
            return true;
        }
        self.own_ips.contains(&ip) && !(ip.is_loopback() && self.allow_loopback)
    }

    fn ranges_allow(&self, peer: IpAddr) -> bool {
        let ip = normalize(peer);
        // Operator deny ranges win over allow ranges; then explicit allow opens special-purpose ranges.
        if self
            .deny
            .iter()
            .any(|n| n.contains(&ip) || n.contains(&peer))
        {
            return false;
        }
        if self
            .allow
            .iter()
            .any(|n| n.contains(&ip) || n.contains(&peer))
        {
            return true;
        }
        !self
            .special
            .iter()
            .any(|n| n.contains(&ip) || n.contains(&peer))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A peer address on an arbitrary port.
    fn sa(ip: &str) -> SocketAddr {
        SocketAddr::new(ip.parse().expect("ip"), 40_000)
    }

    fn default_policy() -> PeerPolicy {
        PeerPolicy::new(&[], &[], false)
    }

    #[test]
    fn refuses_every_special_range_by_default() {
        let p = default_policy();
        for ip in [
            "127.0.0.1",
            "127.255.0.9",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.1.1",
            "100.64.0.1",
            "0.0.0.0",
            "0.1.2.3",
            "224.0.0.1",
            "239.255.255.250",
            "240.0.0.1",
            "255.255.255.255",
            "192.0.2.1",
            "198.51.100.1",
            "203.0.113.1",
            "198.18.0.1",
            "192.0.0.8",
            "::",
            "::1",
            "fe80::1",
            "fc00::1",
            "fd12::1",
            "ff02::1",
            "2001:db8::1",
            "fec0::1",
            "100::1",
        ] {
            assert!(!p.check(sa(ip), || false), "{ip} must be refused");
        }
    }

    #[test]
    fn refuses_embedded_forms_of_special_ranges() {
        let p = default_policy();
        for ip in [
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::127.0.0.1",
            "64:ff9b::7f00:1",
            "64:ff9b::a00:1",
            "2002:7f00:1::1",
            "2002:c0a8:101::",
            "2001:0:4136:e378:8000:63bf:80ff:fffe", // Teredo: !0x80fffffe = 127.0.0.1
        ] {
            assert!(!p.check(sa(ip), || false), "{ip} must be refused");
        }
    }

    #[test]
    fn refuses_tunnel_and_translator_forms_even_of_public_addresses() {
        // RFC 6156 §9.1: 6to4 and Teredo are refused outright, whatever IPv4 address they carry; so are
        // IPv4-translated addresses and the local-use NAT64 prefix, whose embedded position is not known.
        let p = default_policy();
        for ip in [
            "2002:808:808::1",                      // 6to4 of 8.8.8.8
            "2001:0:4136:e378:8000:63bf:f7f7:f7f7", // Teredo of 8.8.8.8
            "::ffff:0:808:808",                     // IPv4-translated 8.8.8.8
            "64:ff9b:1::808:808",                   // local-use NAT64
        ] {
            assert!(!p.check(sa(ip), || false), "{ip} must be refused");
        }
    }

    #[test]
    fn allows_public_addresses() {
        let p = default_policy();
        for ip in [
            "8.8.8.8",
            "1.1.1.1",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
        ] {
            assert!(p.check(sa(ip), || false), "{ip} must be allowed");
        }
    }

    #[test]
    fn allow_flags_open_holes_and_deny_adds_ranges() {
        let p = PeerPolicy::new(&[], &[], true);
        assert!(p.check(sa("127.0.0.1"), || false));
        assert!(p.check(sa("::ffff:127.0.0.1"), || false));
        assert!(!p.check(sa("10.0.0.1"), || false));
        let p = PeerPolicy::new(
            &["10.0.0.0/8".parse().expect("net")],
            &["8.8.8.0/24".parse().expect("net")],
            false,
        );
        assert!(p.check(sa("10.9.9.9"), || false));
        assert!(!p.check(sa("8.8.8.8"), || false));
        assert!(p.check(sa("8.8.4.4"), || false));
    }

    #[test]
    fn local_use_nat64_only_when_allowed() {
        let p = PeerPolicy::new(&["64:ff9b:1::/48".parse().expect("net")], &[], false);
        assert!(p.check(sa("64:ff9b:1::808:808"), || false));
        // Allowing the IPv4 range a 6to4 address embeds does not open the 6to4 form.
        let p = PeerPolicy::new(&["203.0.113.0/24".parse().expect("net")], &[], false);
        assert!(p.check(sa("203.0.113.9"), || false));
        assert!(!p.check(sa("2002:cb00:7109::1"), || false));
    }

    #[test]
    fn the_server_itself_is_refused_whatever_the_allow_list_says() {
        let listen: SocketAddr = "198.51.100.7:3478".parse().expect("addr");
        let p = PeerPolicy::new(&["198.51.100.0/24".parse().expect("net")], &[], false)
            .with_own_addresses(
                &[listen],
                [
                    "198.51.100.7".parse().expect("ip"),
                    "203.0.113.50".parse().expect("ip"),
                ],
            );
        // Its listening port (a Binding sent through the relay would come back as a Data indication), any
        // other port of its addresses (its web server, ssh), its external address, the IPv4-mapped form.
        for peer in [
            "198.51.100.7:3478",
            "198.51.100.7:8080",
            "203.0.113.50:443",
            "[::ffff:198.51.100.7]:3478",
        ] {
            let peer: SocketAddr = peer.parse().expect("addr");
            assert!(!p.check(peer, || false), "{peer} is the server itself");
        }
        // A live relay of its own stays reachable; a neighbour in the allowed range too.
        assert!(p.check("198.51.100.7:50000".parse().expect("addr"), || true));
        assert!(p.check("198.51.100.8:3478".parse().expect("addr"), || false));
    }

    #[test]
    fn single_host_setups_keep_loopback_peers_but_not_the_listener() {
        let listen: SocketAddr = "127.0.0.1:3478".parse().expect("addr");
        let p = PeerPolicy::new(&[], &[], true).with_own_addresses(&[listen], [listen.ip()]);
        assert!(!p.check(listen, || false), "the listener itself");
        assert!(
            p.check("127.0.0.1:3480".parse().expect("addr"), || false),
            "a peer on the same host"
        );
        let wildcard: SocketAddr = "0.0.0.0:3478".parse().expect("addr");
        let p = PeerPolicy::new(&[], &[], true).with_own_addresses(&[wildcard], []);
        assert!(
            !p.check(listen, || false),
            "a wildcard listener answers on loopback too"
        );
    }

    #[test]
    fn own_relay_addresses_are_always_allowed() {
        assert!(default_policy().check(sa("127.0.0.1"), || true));
    }
}
