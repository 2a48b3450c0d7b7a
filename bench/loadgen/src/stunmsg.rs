//! A tiny STUN/TURN client codec, independent of the server's own (crates/stun): the load generator then also
//! checks interoperability with a second implementation. Only what a TURN client needs: requests with a few
//! attributes and MESSAGE-INTEGRITY, and parsing responses (error code, realm, nonce, XOR addresses, integrity).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use hmac::{Hmac, Mac};
use md5::{Digest, Md5};

pub const MAGIC_COOKIE: u32 = 0x2112_A442;
pub type TransactionId = [u8; 12];

pub mod method {
    pub const BINDING: u16 = 0x001;
    pub const ALLOCATE: u16 = 0x003;
    pub const REFRESH: u16 = 0x004;
    pub const CHANNEL_BIND: u16 = 0x009;
}

pub mod attr {
    pub const USERNAME: u16 = 0x0006;
    pub const MESSAGE_INTEGRITY: u16 = 0x0008;
    pub const ERROR_CODE: u16 = 0x0009;
    pub const CHANNEL_NUMBER: u16 = 0x000C;
    pub const LIFETIME: u16 = 0x000D;
    pub const XOR_PEER_ADDRESS: u16 = 0x0012;
    pub const REALM: u16 = 0x0014;
    pub const NONCE: u16 = 0x0015;
    pub const XOR_RELAYED_ADDRESS: u16 = 0x0016;
    pub const REQUESTED_TRANSPORT: u16 = 0x0019;
    pub const XOR_MAPPED_ADDRESS: u16 = 0x0020;
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    Request,
    Indication,
    Success,
    Error,
}

pub fn message_type(class: Class, method: u16) -> u16 {
    let c: u16 = match class {
        Class::Request => 0,
        Class::Indication => 1,
        Class::Success => 2,
        Class::Error => 3,
    };
    let m = method & 0x0FFF;
    (m & 0x000F) | ((m & 0x0070) << 1) | ((m & 0x0F80) << 2) | ((c & 1) << 4) | ((c & 2) << 7)
}

fn split_type(t: u16) -> (Class, u16) {
    let class = match ((t >> 7) & 2) | ((t >> 4) & 1) {
        0 => Class::Request,
        1 => Class::Indication,
        2 => Class::Success,
        _ => Class::Error,
    };
    (
        class,
        (t & 0x000F) | ((t >> 1) & 0x0070) | ((t >> 2) & 0x0F80),
    )
}

/// MD5(username ":" realm ":" password), the long-term credential key.
pub fn long_term_key(username: &str, realm: &str, password: &str) -> [u8; 16] {
    let mut h = Md5::new();
    h.update(username.as_bytes());
    h.update(b":");
    h.update(realm.as_bytes());
    h.update(b":");
    h.update(password.as_bytes());
    h.finalize().into()
}

fn hmac_sha1(key: &[u8], parts: &[&[u8]]) -> [u8; 20] {
    let mut mac =
        <Hmac<sha1::Sha1> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

/// Builds one request into a Vec.
pub struct Builder {
    buf: Vec<u8>,
}

impl Builder {
    pub fn new(class: Class, method: u16, tid: &TransactionId) -> Builder {
        let mut buf = Vec::with_capacity(256);
        buf.extend_from_slice(&message_type(class, method).to_be_bytes());
        buf.extend_from_slice(&[0, 0]);
        buf.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
        buf.extend_from_slice(tid);
        Builder { buf }
    }

    fn set_len(&mut self, len: usize) {
        let l = (len as u16).to_be_bytes();
        self.buf[2] = l[0];
        self.buf[3] = l[1];
    }

    pub fn raw(mut self, typ: u16, value: &[u8]) -> Builder {
        self.buf.extend_from_slice(&typ.to_be_bytes());
        self.buf
            .extend_from_slice(&(value.len() as u16).to_be_bytes());
        self.buf.extend_from_slice(value);
        while !self.buf.len().is_multiple_of(4) {
            self.buf.push(0);
        }
        let len = self.buf.len() - 20;
        self.set_len(len);
        self
    }

    pub fn u32(self, typ: u16, v: u32) -> Builder {
        self.raw(typ, &v.to_be_bytes())
    }

    pub fn text(self, typ: u16, s: &str) -> Builder {
        self.raw(typ, s.as_bytes())
    }

    pub fn xor_address(self, typ: u16, addr: SocketAddr) -> Builder {
        let tid: TransactionId = self.buf[8..20].try_into().expect("header written in new()");
        let v = xor_address_value(addr, &tid);
        self.raw(typ, &v)
    }

    /// Appends MESSAGE-INTEGRITY and returns the message.
    pub fn integrity(mut self, key: &[u8]) -> Vec<u8> {
        let len = self.buf.len() - 20 + 24;
        self.set_len(len);
        let mac = hmac_sha1(key, &[&self.buf]);
        self.raw(attr::MESSAGE_INTEGRITY, &mac).buf
    }

    pub fn finish(self) -> Vec<u8> {
        self.buf
    }
}

fn xor_address_value(addr: SocketAddr, tid: &TransactionId) -> Vec<u8> {
    let cookie = MAGIC_COOKIE.to_be_bytes();
    let mut v = vec![0u8, 0];
    v.extend_from_slice(&(addr.port() ^ (MAGIC_COOKIE >> 16) as u16).to_be_bytes());
    match addr.ip() {
        IpAddr::V4(ip) => {
            v[1] = 1;
            v.extend(ip.octets().iter().zip(cookie).map(|(a, b)| a ^ b));
        }
        IpAddr::V6(ip) => {
            v[1] = 2;
            v.extend(
                ip.octets()
                    .iter()
                    .zip(cookie.iter().chain(tid.iter()))
                    .map(|(a, b)| a ^ b),
            );
        }
    }
    v
}

/// A parsed message (borrowing the datagram).
pub struct Parsed<'a> {
    pub buf: &'a [u8],
    pub class: Class,
    pub method: u16,
    /// (type, offset of the attribute header, value)
    attrs: Vec<(u16, usize, &'a [u8])>,
}

impl<'a> Parsed<'a> {
    pub fn parse(buf: &'a [u8]) -> Option<Parsed<'a>> {
        if buf.len() < 20 || buf[0] & 0xC0 != 0 || buf[4..8] != MAGIC_COOKIE.to_be_bytes() {
            return None;
        }
        let len = usize::from(u16::from_be_bytes([buf[2], buf[3]]));
        if buf.len() != 20 + len {
            return None;
        }
        let (class, method) = split_type(u16::from_be_bytes([buf[0], buf[1]]));
        let mut attrs = Vec::new();
        let mut off = 20;
        while off + 4 <= buf.len() {
            let typ = u16::from_be_bytes([buf[off], buf[off + 1]]);
            let alen = usize::from(u16::from_be_bytes([buf[off + 2], buf[off + 3]]));
            let value = buf.get(off + 4..off + 4 + alen)?;
            attrs.push((typ, off, value));
            off += 4 + ((alen + 3) & !3);
        }
        Some(Parsed {
            buf,
            class,
            method,
            attrs,
        })
    }

    pub fn tid(&self) -> TransactionId {
        self.buf[8..20].try_into().expect("parse checked 20 bytes")
    }

    pub fn get(&self, typ: u16) -> Option<&'a [u8]> {
        self.attrs
            .iter()
            .find(|(t, _, _)| *t == typ)
            .map(|(_, _, v)| *v)
    }

    pub fn text(&self, typ: u16) -> Option<String> {
        self.get(typ)
            .and_then(|v| std::str::from_utf8(v).ok())
            .map(str::to_owned)
    }

    pub fn error_code(&self) -> Option<(u16, String)> {
        let v = self.get(attr::ERROR_CODE)?;
        if v.len() < 4 {
            return None;
        }
        let code = u16::from(v[2] & 7) * 100 + u16::from(v[3]);
        Some((code, String::from_utf8_lossy(&v[4..]).into_owned()))
    }

    pub fn xor_address(&self, typ: u16) -> Option<SocketAddr> {
        let v = self.get(typ)?;
        if v.len() < 8 {
            return None;
        }
        let cookie = MAGIC_COOKIE.to_be_bytes();
        let port = u16::from_be_bytes([v[2], v[3]]) ^ (MAGIC_COOKIE >> 16) as u16;
        let tid = self.tid();
        let ip = match (v[1], v.len()) {
            (1, 8) => {
                let mut b = [0u8; 4];
                for i in 0..4 {
                    b[i] = v[4 + i] ^ cookie[i];
                }
                IpAddr::V4(Ipv4Addr::from(b))
            }
            (2, 20) => {
                let mut b = [0u8; 16];
                for (i, m) in cookie.iter().chain(tid.iter()).enumerate() {
                    b[i] = v[4 + i] ^ m;
                }
                IpAddr::V6(Ipv6Addr::from(b))
            }
            _ => return None,
        };
        Some(SocketAddr::new(ip, port))
    }

    /// Checks MESSAGE-INTEGRITY with `key` (attributes after it, such as FINGERPRINT, are excluded).
    pub fn verify_integrity(&self, key: &[u8]) -> bool {
        let Some(&(_, off, value)) = self
            .attrs
            .iter()
            .find(|(t, _, _)| *t == attr::MESSAGE_INTEGRITY)
        else {
            return false;
        };
        if value.len() != 20 {
            return false;
        }
        let len = ((off + 24 - 20) as u16).to_be_bytes();
        let mac = hmac_sha1(key, &[&self.buf[0..2], &len, &self.buf[4..off]]);
        mac[..] == value[..]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 5769 §2.2: the sample IPv4 response, with the password "VOkJxbRl1RmTxUk/WvJxBt" (short-term key).
    #[test]
    fn rfc5769_ipv4_response() {
        let hex = "0101003c2112a442b7e7a701bc34d686fa87dfae8022000b7465737420766563746f7220002000080001a147e112a643\
                   000800142b91f599fd9e90c38c7489f92af9ba53f06be7d780280004c07d4c96";
        let buf: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
            .collect();
        let m = Parsed::parse(&buf).expect("valid");
        assert_eq!(m.class, Class::Success);
        assert_eq!(m.method, method::BINDING);
        assert_eq!(
            m.xor_address(attr::XOR_MAPPED_ADDRESS),
            Some("192.0.2.1:32853".parse().expect("literal"))
        );
        assert!(m.verify_integrity(b"VOkJxbRl1RmTxUk/WvJxBt"));
        assert!(!m.verify_integrity(b"wrong"));
    }

    #[test]
    fn build_and_parse_round_trip() {
        let tid = [7u8; 12];
        let peer: SocketAddr = "[::1]:5000".parse().expect("literal");
        let key = long_term_key("u", "R", "p");
        let msg = Builder::new(Class::Request, method::CHANNEL_BIND, &tid)
            .u32(attr::CHANNEL_NUMBER, 0x4000_0000)
            .xor_address(attr::XOR_PEER_ADDRESS, peer)
            .text(attr::USERNAME, "u")
            .text(attr::REALM, "R")
            .text(attr::NONCE, "abc")
            .integrity(&key);
        let m = Parsed::parse(&msg).expect("valid");
        assert_eq!((m.class, m.method), (Class::Request, method::CHANNEL_BIND));
        assert_eq!(m.xor_address(attr::XOR_PEER_ADDRESS), Some(peer));
        assert_eq!(m.text(attr::NONCE).as_deref(), Some("abc"));
        assert_eq!(m.get(attr::CHANNEL_NUMBER), Some(&[0x40, 0, 0, 0][..]));
        assert!(m.verify_integrity(&key));
        assert!(Parsed::parse(&msg[..msg.len() - 1]).is_none());
        assert_eq!(message_type(Class::Error, method::ALLOCATE), 0x0113);
        assert_eq!(message_type(Class::Success, method::BINDING), 0x0101);
    }

    #[test]
    fn error_code_parse() {
        let msg = Builder::new(Class::Error, method::ALLOCATE, &[1; 12])
            .raw(
                attr::ERROR_CODE,
                &[0, 0, 4, 38, b'S', b't', b'a', b'l', b'e'],
            )
            .finish();
        let m = Parsed::parse(&msg).expect("valid");
        assert_eq!(m.error_code(), Some((438, "Stale".to_owned())));
    }
}
