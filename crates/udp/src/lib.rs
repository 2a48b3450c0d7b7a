//! Batched UDP I/O for Linux over caller-owned buffers: `recvmmsg` into a fixed set of slots, `sendmmsg` of
//! borrowed packets to many destinations (and many sockets), a level-triggered epoll, and socket setup.
//!
//! Everything is allocated once, up front; the per-batch calls allocate nothing. The TURN server's relay
//! path and the benchmark tools both use it.

#![warn(missing_docs)]
// libc calls (sockets, epoll, recvmmsg/sendmmsg, getifaddrs) need unsafe; every block says why it is sound.
#![allow(unsafe_code)]

use std::io;
use std::marker::PhantomData;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};

/// Converts a socket address into the C representation.
pub fn to_sockaddr(addr: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: an all-zero sockaddr_storage is a valid value.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            // SAFETY: sockaddr_storage is larger than and suitably aligned for sockaddr_in.
            let sin =
                unsafe { &mut *(&mut ss as *mut libc::sockaddr_storage as *mut libc::sockaddr_in) };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_port = a.port().to_be();
            sin.sin_addr = libc::in_addr {
                s_addr: u32::from_ne_bytes(a.ip().octets()),
            };
            std::mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            // SAFETY: sockaddr_storage is larger than and suitably aligned for sockaddr_in6.
            let sin6 = unsafe {
                &mut *(&mut ss as *mut libc::sockaddr_storage as *mut libc::sockaddr_in6)
            };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_port = a.port().to_be();
            sin6.sin6_addr = libc::in6_addr {
                s6_addr: a.ip().octets(),
            };
            sin6.sin6_flowinfo = a.flowinfo();
            sin6.sin6_scope_id = a.scope_id();
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (ss, len as libc::socklen_t)
}

/// Converts the C representation back; `None` for families other than IPv4 and IPv6.
pub fn from_sockaddr(ss: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match ss.ss_family as libc::c_int {
        libc::AF_INET => {
            // SAFETY: the family says this storage holds a sockaddr_in.
            let sin =
                unsafe { &*(ss as *const libc::sockaddr_storage as *const libc::sockaddr_in) };
            let ip = Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes());
            Some(SocketAddr::V4(SocketAddrV4::new(
                ip,
                u16::from_be(sin.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says this storage holds a sockaddr_in6.
            let sin6 =
                unsafe { &*(ss as *const libc::sockaddr_storage as *const libc::sockaddr_in6) };
            Some(SocketAddr::V6(SocketAddrV6::new(
                sin6.sin6_addr.s6_addr.into(),
                u16::from_be(sin6.sin6_port),
                sin6.sin6_flowinfo,
                sin6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

/// SO_RCVBUFFORCE/SO_SNDBUFFORCE where permitted (root), else the capped SO_RCVBUF/SO_SNDBUF.
pub fn set_buffers(fd: RawFd, bytes: usize) {
    if bytes == 0 {
        return;
    }
    let v = bytes.min(i32::MAX as usize) as libc::c_int;
    for (force, plain) in [
        (libc::SO_RCVBUFFORCE, libc::SO_RCVBUF),
        (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF),
    ] {
        // SAFETY: setsockopt reads sizeof(c_int) bytes from &v.
        unsafe {
            let p = &v as *const libc::c_int as *const libc::c_void;
            let len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
            if libc::setsockopt(fd, libc::SOL_SOCKET, force, p, len) != 0 {
                libc::setsockopt(fd, libc::SOL_SOCKET, plain, p, len);
            }
        }
    }
}

/// A non-blocking UDP socket bound to `bind`, with `buf_bytes` of socket buffers (0 keeps the defaults)
/// and, when `reuse_port`, SO_REUSEPORT so several sockets (one per thread) share the address.
pub fn udp_socket(bind: SocketAddr, buf_bytes: usize, reuse_port: bool) -> io::Result<UdpSocket> {
    let domain = if bind.is_ipv4() {
        Domain::IPV4
    } else {
        Domain::IPV6
    };
    let s = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
    s.set_nonblocking(true)?;
    if reuse_port {
        s.set_reuse_port(true)?;
    }
    set_buffers(s.as_raw_fd(), buf_bytes);
    s.bind(&bind.into())?;
    Ok(s.into())
}

/// Receive buffers for one `recvmmsg`: `count` slots of `headroom + payload` bytes each. A datagram lands at
/// `headroom` in its slot, so a header (a TURN ChannelData header) can be written in front of it in place.
/// Not `Send` (raw pointers into its own vectors): build it on the thread that uses it.
pub struct RecvBatch {
    data: Vec<u8>,
    slot: usize,
    headroom: usize,
    /// Read by the kernel only, through `hdrs`.
    _iov: Vec<libc::iovec>,
    addrs: Vec<libc::sockaddr_storage>,
    hdrs: Vec<libc::mmsghdr>,
    received: usize,
}

/// One received datagram, with mutable access to its whole slot.
pub struct Received<'a> {
    /// Sender; `None` for an address family other than IPv4/IPv6.
    pub source: Option<SocketAddr>,
    /// The whole slot: `slot[headroom..headroom + len]` is the datagram.
    pub slot: &'a mut [u8],
    /// Length of the datagram in bytes (at most the slot minus the headroom).
    pub len: usize,
    /// The datagram was larger than the slot and was cut (MSG_TRUNC): drop it.
    pub truncated: bool,
}

impl RecvBatch {
    /// Allocates `count` slots (at least one) of `headroom + payload` bytes: `payload` is the largest datagram
    /// kept whole (longer ones arrive with `truncated` set), `headroom` the bytes left free in front of it.
    pub fn new(count: usize, payload: usize, headroom: usize) -> RecvBatch {
        let count = count.max(1);
        let slot = headroom + payload.max(1);
        let mut data = vec![0u8; count * slot];
        // SAFETY: all-zero sockaddr_storage / mmsghdr are valid values (null pointers, zero lengths).
        let mut addrs: Vec<libc::sockaddr_storage> = vec![unsafe { std::mem::zeroed() }; count];
        let mut iov: Vec<libc::iovec> = (0..count)
            .map(|i| libc::iovec {
                // SAFETY: i * slot + headroom is within `data` (count * slot bytes).
                iov_base: unsafe { data.as_mut_ptr().add(i * slot + headroom) }
                    as *mut libc::c_void,
                iov_len: slot - headroom,
            })
            .collect();
        let hdrs: Vec<libc::mmsghdr> = (0..count)
            .map(|i| {
                // SAFETY: an all-zero msghdr is valid; the pointers are filled in below.
                let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
                h.msg_hdr.msg_iov = &mut iov[i];
                h.msg_hdr.msg_iovlen = 1;
                h.msg_hdr.msg_name =
                    &mut addrs[i] as *mut libc::sockaddr_storage as *mut libc::c_void;
                h
            })
            .collect();
        // The vectors never grow or move their heap buffers, so the pointers above stay valid when the
        // struct moves.
        RecvBatch {
            data,
            slot,
            headroom,
            _iov: iov,
            addrs,
            hdrs,
            received: 0,
        }
    }

    /// `recvmmsg` of what is queued on `fd`, without blocking. `Ok(0)` when nothing is.
    pub fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        self.recv_flags(fd, libc::MSG_DONTWAIT)
    }

    /// `recvmmsg` that blocks until one datagram arrives (or SO_RCVTIMEO passes), then takes what is queued.
    pub fn recv_wait(&mut self, fd: RawFd) -> io::Result<usize> {
        self.recv_flags(fd, libc::MSG_WAITFORONE)
    }

    fn recv_flags(&mut self, fd: RawFd, flags: libc::c_int) -> io::Result<usize> {
        self.received = 0;
        for h in &mut self.hdrs {
            h.msg_hdr.msg_namelen =
                std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            h.msg_hdr.msg_flags = 0;
        }
        // SAFETY: hdrs/iov/addrs/data are live and consistent (set up in new()); the count is their length.
        let r = unsafe {
            libc::recvmmsg(
                fd,
                self.hdrs.as_mut_ptr(),
                self.hdrs.len() as libc::c_uint,
                flags,
                std::ptr::null_mut(),
            )
        };
        if r < 0 {
            let e = io::Error::last_os_error();
            return match e.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(0),
                _ => Err(e),
            };
        }
        self.received = r as usize;
        Ok(self.received)
    }

    /// Datagram `i` of the last `recv`.
    pub fn packet(&self, i: usize) -> &[u8] {
        if i >= self.received {
            return &[];
        }
        let start = i * self.slot + self.headroom;
        let len = (self.hdrs[i].msg_len as usize).min(self.slot - self.headroom);
        &self.data[start..start + len]
    }

    /// Sender of datagram `i` of the last `recv`.
    pub fn source(&self, i: usize) -> Option<SocketAddr> {
        if i >= self.received {
            return None;
        }
        from_sockaddr(&self.addrs[i])
    }

    /// Whether datagram `i` was larger than its slot.
    pub fn truncated(&self, i: usize) -> bool {
        i < self.received && self.hdrs[i].msg_hdr.msg_flags & libc::MSG_TRUNC != 0
    }

    /// The datagrams of the last `recv`, each with its whole slot writable (disjoint borrows).
    pub fn received_mut(&mut self) -> impl Iterator<Item = Received<'_>> {
        let headroom = self.headroom;
        let n = self.received;
        self.data
            .chunks_mut(self.slot)
            .zip(self.hdrs.iter().zip(self.addrs.iter()))
            .take(n)
            .map(move |(slot, (h, a))| Received {
                source: from_sockaddr(a),
                len: (h.msg_len as usize).min(slot.len() - headroom),
                truncated: h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0,
                slot,
            })
    }
}

/// What one flush of a [`SendQueue`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Flushed {
    /// Datagrams the kernel accepted.
    pub sent: usize,
    /// Datagrams the kernel refused (full send buffer, ICMP errors reported on the socket, ...): dropped,
    /// as a router would drop them.
    pub dropped: usize,
    /// Datagrams that left in UDP GSO bundles (counted in `sent` too).
    pub segmented: usize,
}

/// `UDP_SEGMENT` (linux/udp.h): the cmsg that makes one send a train of equal-size datagrams.
const UDP_SEGMENT: libc::c_int = 103;
/// Most datagrams per GSO bundle (older kernels' UDP_MAX_SEGMENTS).
const GSO_MAX_SEGMENTS: usize = 64;
/// Largest bundle, below the 64 KiB limit of one send with room for headers.
const GSO_MAX_BYTES: usize = 60_000;
/// Only datagrams that fit a common path MTU are bundled: a larger GSO size fails where a plain send would
/// be fragmented instead.
const GSO_MAX_SIZE: usize = 1400;

/// Room for one cmsg carrying a u16, aligned as the kernel reads it.
#[derive(Clone, Copy)]
#[repr(C, align(8))]
struct CmsgSpace([u8; 32]);

/// Reusable `sendmmsg` arrays for a [`SendQueue`].
pub struct SendBuffers {
    fds: Vec<RawFd>,
    dests: Vec<SocketAddr>,
    iov: Vec<libc::iovec>,
    addrs: Vec<(libc::sockaddr_storage, libc::socklen_t)>,
    /// One per message of a flush: a datagram, or a GSO bundle of `segments[m]` datagrams.
    hdrs: Vec<libc::mmsghdr>,
    segments: Vec<usize>,
    cmsgs: Vec<CmsgSpace>,
    gso: bool,
}

impl SendBuffers {
    /// Allocates arrays for `count` datagrams per `sendmmsg` (at least one); a queue holding more flushes
    /// early. GSO bundling is on.
    pub fn new(count: usize) -> SendBuffers {
        let count = count.max(1);
        SendBuffers {
            fds: vec![-1; count],
            dests: vec![SocketAddr::from(([0, 0, 0, 0], 0)); count],
            iov: vec![
                libc::iovec {
                    iov_base: std::ptr::null_mut(),
                    iov_len: 0,
                };
                count
            ],
            // SAFETY: all-zero sockaddr_storage / mmsghdr are valid values.
            addrs: vec![(unsafe { std::mem::zeroed() }, 0); count],
            hdrs: vec![unsafe { std::mem::zeroed() }; count],
            segments: vec![0; count],
            cmsgs: vec![CmsgSpace([0; 32]); count],
            gso: true,
        }
    }

    /// Turns UDP GSO bundling off (it is on by default, and turns itself off where the kernel lacks it).
    pub fn without_gso(mut self) -> SendBuffers {
        self.gso = false;
        self
    }

    /// A queue of datagrams that borrow their bytes for `'d`; they go out at [`SendQueue::flush`] (or when
    /// the queue is full), and anything still queued is sent when it drops.
    pub fn queue<'d>(&mut self) -> SendQueue<'_, 'd> {
        SendQueue {
            bufs: self,
            len: 0,
            total: Flushed::default(),
            _data: PhantomData,
        }
    }
}

/// Datagrams waiting for `sendmmsg`, each with its own socket and destination. Consecutive datagrams for the
/// same socket go out in one call; within it, consecutive datagrams of one size to one destination (a burst of
/// media packets) go as one UDP GSO bundle, so the kernel walks its send path once for all of them.
pub struct SendQueue<'b, 'd> {
    bufs: &'b mut SendBuffers,
    len: usize,
    total: Flushed,
    _data: PhantomData<&'d [u8]>,
}

impl<'d> SendQueue<'_, 'd> {
    /// Queues `data` to `dest` on socket `fd`; flushes first when the queue is full.
    pub fn push(&mut self, fd: RawFd, data: &'d [u8], dest: SocketAddr) {
        if self.len == self.bufs.fds.len() {
            self.flush();
        }
        let i = self.len;
        self.bufs.fds[i] = fd;
        self.bufs.dests[i] = dest;
        self.bufs.addrs[i] = to_sockaddr(dest);
        self.bufs.iov[i] = libc::iovec {
            iov_base: data.as_ptr() as *mut libc::c_void,
            iov_len: data.len(),
        };
        self.len += 1;
    }

    /// Sends everything queued; returns the totals of this queue so far.
    pub fn flush(&mut self) -> Flushed {
        let mut start = 0;
        while start < self.len {
            let fd = self.bufs.fds[start];
            let mut end = start + 1;
            while end < self.len && self.bufs.fds[end] == fd {
                end += 1;
            }
            if let Err((bundle, e)) = self.send_run(fd, start, end, self.bufs.gso) {
                // A bundle the kernel refused: it and the rest of the run go one by one; where the kernel
                // has no GSO at all (EIO: no checksum offload, ENOPROTOOPT: too old), stop bundling.
                if matches!(e.raw_os_error(), Some(libc::EIO | libc::ENOPROTOOPT)) {
                    self.bufs.gso = false;
                }
                let _ = self.send_run(fd, bundle, end, false);
            }
            start = end;
        }
        self.len = 0;
        self.total
    }

    /// How many datagrams from `at` (before `end`) can go as one GSO bundle.
    fn bundle_len(&self, at: usize, end: usize) -> usize {
        let size = self.bufs.iov[at].iov_len;
        if size == 0 || size > GSO_MAX_SIZE {
            return 1;
        }
        let dest = self.bufs.dests[at];
        let mut n = 1;
        let mut bytes = size;
        while at + n < end && n < GSO_MAX_SEGMENTS {
            let next = self.bufs.iov[at + n].iov_len;
            if self.bufs.dests[at + n] != dest
                || next > size
                || next == 0
                || bytes + next > GSO_MAX_BYTES
            {
                break;
            }
            n += 1;
            bytes += next;
            if next < size {
                break; // only the last datagram of a bundle may be shorter
            }
        }
        n
    }

    /// sendmmsg of datagrams `at..end` (one socket). On a refused GSO bundle, returns the index of its first
    /// datagram with the error; everything before it was sent or counted.
    fn send_run(
        &mut self,
        fd: RawFd,
        at: usize,
        end: usize,
        gso: bool,
    ) -> Result<(), (usize, io::Error)> {
        // Build the messages: message m covers datagrams first[m]..first[m] + segments[m].
        let mut m = 0;
        let mut i = at;
        while i < end {
            let n = if gso { self.bundle_len(i, end) } else { 1 };
            let b = &mut *self.bufs;
            let h = &mut b.hdrs[m].msg_hdr;
            h.msg_name = &mut b.addrs[i].0 as *mut libc::sockaddr_storage as *mut libc::c_void;
            h.msg_namelen = b.addrs[i].1;
            h.msg_iov = &mut b.iov[i];
            h.msg_iovlen = n;
            h.msg_flags = 0;
            if n > 1 {
                let c = &mut b.cmsgs[m];
                h.msg_control = c.0.as_mut_ptr() as *mut libc::c_void;
                // SAFETY: CMSG_SPACE of a u16 is 24 bytes on Linux, within the 32-byte aligned buffer.
                unsafe {
                    h.msg_controllen = libc::CMSG_SPACE(2) as usize;
                    let cm = libc::CMSG_FIRSTHDR(h);
                    (*cm).cmsg_level = libc::SOL_UDP;
                    (*cm).cmsg_type = UDP_SEGMENT;
                    (*cm).cmsg_len = libc::CMSG_LEN(2) as usize;
                    std::ptr::write_unaligned(
                        libc::CMSG_DATA(cm) as *mut u16,
                        b.iov[i].iov_len as u16,
                    );
                }
            } else {
                h.msg_control = std::ptr::null_mut();
                h.msg_controllen = 0;
            }
            b.segments[m] = n;
            m += 1;
            i += n;
        }
        let mut sent_msgs = 0;
        let mut first = at;
        while sent_msgs < m {
            // SAFETY: hdrs[sent_msgs..m] were filled above with pointers to live iovecs, addresses and cmsg
            // buffers in `bufs`, and to data borrowed for 'd, which outlives this queue.
            let r = unsafe {
                libc::sendmmsg(
                    fd,
                    self.bufs.hdrs.as_mut_ptr().add(sent_msgs),
                    (m - sent_msgs) as libc::c_uint,
                    libc::MSG_DONTWAIT,
                )
            };
            if r > 0 {
                for k in sent_msgs..sent_msgs + r as usize {
                    let n = self.bufs.segments[k];
                    self.total.sent += n;
                    if n > 1 {
                        self.total.segmented += n;
                    }
                    first += n;
                }
                sent_msgs += r as usize;
                continue;
            }
            let e = io::Error::last_os_error();
            if r < 0 && e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            if r < 0 && e.kind() == io::ErrorKind::WouldBlock {
                // A full send buffer: the rest of this run is dropped, UDP-style.
                self.total.dropped += end - first;
                return Ok(());
            }
            let n = self.bufs.segments[sent_msgs];
            if n > 1 {
                return Err((first, e));
            }
            // An error belongs to the first datagram (e.g. an ICMP error reported late): skip it.
            self.total.dropped += 1;
            first += 1;
            sent_msgs += 1;
        }
        Ok(())
    }
}

impl Drop for SendQueue<'_, '_> {
    fn drop(&mut self) {
        if self.len > 0 {
            self.flush();
        }
    }
}

/// A level-triggered epoll set (read interest) whose events carry a caller-chosen `u64` token.
pub struct Epoll {
    fd: RawFd,
}

impl Epoll {
    /// Creates an empty set (close-on-exec). Fails only as `epoll_create1` does: out of file descriptors or
    /// kernel memory.
    pub fn new() -> io::Result<Epoll> {
        // SAFETY: plain syscall.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Epoll { fd })
    }

    /// Watches `fd` for reading. Safe to call from any thread while another waits.
    pub fn add(&self, fd: RawFd, token: u64) -> io::Result<()> {
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: token,
        };
        // SAFETY: ev is a valid epoll_event.
        if unsafe { libc::epoll_ctl(self.fd, libc::EPOLL_CTL_ADD, fd, &mut ev) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Stops watching `fd` (closing the last descriptor of a socket does this too).
    pub fn remove(&self, fd: RawFd) {
        let mut ev = libc::epoll_event { events: 0, u64: 0 };
        // SAFETY: ev is a valid epoll_event; an fd that is not watched just gives ENOENT.
        unsafe { libc::epoll_ctl(self.fd, libc::EPOLL_CTL_DEL, fd, &mut ev) };
    }

    /// Waits up to `timeout` and fills `events`; returns the tokens of ready descriptors.
    pub fn wait<'e>(
        &self,
        events: &'e mut [libc::epoll_event],
        timeout: Duration,
    ) -> impl Iterator<Item = u64> + 'e {
        let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: events has room for its length.
        let n = unsafe {
            libc::epoll_wait(
                self.fd,
                events.as_mut_ptr(),
                events.len().min(i32::MAX as usize) as i32,
                ms,
            )
        };
        let n = if n < 0 { 0 } else { n as usize };
        events[..n].iter().map(|e| e.u64)
    }
}

/// Room for `n` epoll events.
pub fn epoll_events(n: usize) -> Vec<libc::epoll_event> {
    vec![libc::epoll_event { events: 0, u64: 0 }; n.max(1)]
}

impl Drop for Epoll {
    fn drop(&mut self) {
        // SAFETY: we own the descriptor.
        unsafe { libc::close(self.fd) };
    }
}

impl AsRawFd for Epoll {
    fn as_raw_fd(&self) -> RawFd {
        self.fd
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn loopback() -> SocketAddr {
        "127.0.0.1:0".parse().expect("literal")
    }

    #[test]
    fn sockaddr_round_trip() {
        for a in ["127.0.0.1:3478", "[::1]:9", "10.1.2.3:65535"] {
            let addr: SocketAddr = a.parse().expect("literal");
            let (ss, _) = to_sockaddr(addr);
            assert_eq!(from_sockaddr(&ss), Some(addr));
        }
    }

    fn recv_all(rx: &mut RecvBatch, fd: RawFd, want: usize) -> Vec<(Vec<u8>, bool)> {
        let mut got = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(2);
        while got.len() < want && Instant::now() < deadline {
            let n = rx.recv(fd).expect("recv");
            for i in 0..n {
                got.push((rx.packet(i).to_vec(), rx.truncated(i)));
            }
        }
        got
    }

    #[test]
    fn queue_sends_to_several_sockets_and_destinations_in_order() {
        let a = udp_socket(loopback(), 1 << 20, false).expect("bind");
        let b = udp_socket(loopback(), 1 << 20, false).expect("bind");
        let sink1 = udp_socket(loopback(), 1 << 20, false).expect("bind");
        let sink2 = udp_socket(loopback(), 1 << 20, false).expect("bind");
        let payloads: Vec<Vec<u8>> = (0..10u8).map(|i| vec![i; 10 + usize::from(i)]).collect();
        let mut bufs = SendBuffers::new(4); // smaller than the batch: push flushes on its own
        let mut q = bufs.queue();
        for (i, p) in payloads.iter().enumerate() {
            let from = if i % 3 == 0 {
                a.as_raw_fd()
            } else {
                b.as_raw_fd()
            };
            let to = if i % 2 == 0 { &sink1 } else { &sink2 };
            q.push(from, p, to.local_addr().expect("bound"));
        }
        let done = q.flush();
        assert_eq!(
            done,
            Flushed {
                sent: 10,
                dropped: 0,
                segmented: 0
            }
        );
        drop(q);
        let mut rx = RecvBatch::new(16, 64, 4);
        let got1 = recv_all(&mut rx, sink1.as_raw_fd(), 5);
        let got2 = recv_all(&mut rx, sink2.as_raw_fd(), 5);
        let even: Vec<_> = payloads
            .iter()
            .step_by(2)
            .map(|p| (p.clone(), false))
            .collect();
        let odd: Vec<_> = payloads
            .iter()
            .skip(1)
            .step_by(2)
            .map(|p| (p.clone(), false))
            .collect();
        assert_eq!(got1, even);
        assert_eq!(got2, odd);
    }

    #[test]
    fn headroom_is_writable_in_place_and_oversized_datagrams_are_flagged() {
        let tx = udp_socket(loopback(), 0, false).expect("bind");
        let rx_sock = udp_socket(loopback(), 0, false).expect("bind");
        let dest = rx_sock.local_addr().expect("bound");
        tx.send_to(b"hello", dest).expect("send");
        tx.send_to(&[7u8; 100], dest).expect("send");
        let mut rx = RecvBatch::new(8, 32, 4);
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut n = 0;
        while n < 2 && Instant::now() < deadline {
            n = rx.recv(rx_sock.as_raw_fd()).expect("recv");
        }
        assert_eq!(n, 2);
        assert!(rx.truncated(1));
        let mut items = rx.received_mut();
        let first = items.next().expect("one datagram");
        assert_eq!(first.source, tx.local_addr().ok());
        assert_eq!(first.len, 5);
        assert!(!first.truncated);
        first.slot[..4].copy_from_slice(b"HDR:");
        assert_eq!(&first.slot[..9], b"HDR:hello");
        let second = items.next().expect("two datagrams");
        assert!(second.truncated);
        assert_eq!(second.len, 32);
        assert!(items.next().is_none());
    }

    /// A burst of equal-size datagrams to one destination leaves as GSO bundles, and arrives as the same
    /// separate datagrams, in order, as without GSO.
    #[test]
    fn bursts_to_one_destination_go_as_gso_bundles_and_arrive_unchanged() {
        let a = udp_socket(loopback(), 1 << 20, false).expect("bind");
        let sink1 = udp_socket(loopback(), 1 << 20, false).expect("bind");
        let sink2 = udp_socket(loopback(), 1 << 20, false).expect("bind");
        let (d1, d2) = (
            sink1.local_addr().expect("bound"),
            sink2.local_addr().expect("bound"),
        );
        // 12 of 100 bytes and a shorter tail to sink1, then 3 of 80 to sink2, then one of 120 to sink1.
        let mut burst: Vec<(Vec<u8>, SocketAddr)> = (0..12u8).map(|i| (vec![i; 100], d1)).collect();
        burst.push((vec![99; 40], d1));
        burst.extend((0..3u8).map(|i| (vec![200 + i; 80], d2)));
        burst.push((vec![7; 120], d1));
        for gso in [true, false] {
            let mut bufs = SendBuffers::new(32);
            if !gso {
                bufs = bufs.without_gso();
            }
            let mut q = bufs.queue();
            for (p, d) in &burst {
                q.push(a.as_raw_fd(), p, *d);
            }
            let done = q.flush();
            drop(q);
            assert_eq!(done.sent, 17);
            assert_eq!(done.dropped, 0);
            assert_eq!(done.segmented, if gso { 16 } else { 0 }, "{done:?}");
            let mut rx = RecvBatch::new(32, 256, 0);
            let got1: Vec<Vec<u8>> = recv_all(&mut rx, sink1.as_raw_fd(), 14)
                .into_iter()
                .map(|(p, _)| p)
                .collect();
            let got2: Vec<Vec<u8>> = recv_all(&mut rx, sink2.as_raw_fd(), 3)
                .into_iter()
                .map(|(p, _)| p)
                .collect();
            let want1: Vec<Vec<u8>> = burst
                .iter()
                .filter(|(_, d)| *d == d1)
                .map(|(p, _)| p.clone())
                .collect();
            let want2: Vec<Vec<u8>> = burst
                .iter()
                .filter(|(_, d)| *d == d2)
                .map(|(p, _)| p.clone())
                .collect();
            assert_eq!(got1, want1, "gso {gso}");
            assert_eq!(got2, want2, "gso {gso}");
        }
    }

    #[test]
    fn a_refused_bundle_falls_back_to_single_datagrams() {
        let a = udp_socket(loopback(), 0, false).expect("bind");
        let sink = udp_socket(loopback(), 0, false).expect("bind");
        let data = [5u8; 64];
        let mut bufs = SendBuffers::new(8);
        let mut q = bufs.queue();
        // A bundle to port 0 is refused as a whole; each datagram is then tried (and refused) alone, and the
        // bundle after it still goes.
        for _ in 0..3 {
            q.push(
                a.as_raw_fd(),
                &data,
                "127.0.0.1:0".parse().expect("literal"),
            );
        }
        for _ in 0..2 {
            q.push(a.as_raw_fd(), &data, sink.local_addr().expect("bound"));
        }
        let done = q.flush();
        assert_eq!((done.sent, done.dropped), (2, 3), "{done:?}");
        let mut rx = RecvBatch::new(4, 128, 0);
        assert_eq!(recv_all(&mut rx, sink.as_raw_fd(), 2).len(), 2);
    }

    #[test]
    fn a_refused_send_is_counted_and_the_rest_still_go() {
        let a = udp_socket(loopback(), 0, false).expect("bind");
        let sink = udp_socket(loopback(), 0, false).expect("bind");
        let ok = [1u8; 8];
        let mut bufs = SendBuffers::new(8);
        let mut q = bufs.queue();
        // Port 0 is not a valid destination: the kernel refuses that datagram alone.
        q.push(a.as_raw_fd(), &ok, "127.0.0.1:0".parse().expect("literal"));
        q.push(a.as_raw_fd(), &ok, sink.local_addr().expect("bound"));
        let done = q.flush();
        assert_eq!(
            done,
            Flushed {
                sent: 1,
                dropped: 1,
                segmented: 0
            }
        );
        let mut rx = RecvBatch::new(4, 64, 0);
        assert_eq!(recv_all(&mut rx, sink.as_raw_fd(), 1).len(), 1);
    }

    #[test]
    fn epoll_reports_the_token_of_a_readable_socket() {
        let ep = Epoll::new().expect("epoll");
        let s = udp_socket(loopback(), 0, false).expect("bind");
        let t = udp_socket(loopback(), 0, false).expect("bind");
        ep.add(s.as_raw_fd(), 42).expect("add");
        ep.add(t.as_raw_fd(), 43).expect("add");
        let mut events = epoll_events(8);
        assert_eq!(ep.wait(&mut events, Duration::ZERO).count(), 0);
        t.send_to(b"x", s.local_addr().expect("bound"))
            .expect("send");
        let ready: Vec<u64> = ep.wait(&mut events, Duration::from_secs(2)).collect();
        assert_eq!(ready, vec![42]);
        ep.remove(s.as_raw_fd());
        assert_eq!(ep.wait(&mut events, Duration::ZERO).count(), 0);
    }
}
