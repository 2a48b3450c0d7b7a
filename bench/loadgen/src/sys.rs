//! Thin libc wrappers: batched UDP I/O (recvmmsg/sendmmsg), epoll, a monotonic clock, socket setup.

use std::io;
use std::mem::MaybeUninit;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;

use anyhow::{Context, bail};
use socket2::{Domain, Protocol, Socket, Type};

/// Monotonic time in nanoseconds (CLOCK_MONOTONIC), comparable across threads of this process.
#[inline]
pub fn now_ns() -> u64 {
    let mut ts = MaybeUninit::<libc::timespec>::uninit();
    // SAFETY: clock_gettime writes a timespec into the pointer we pass.
    let ts = unsafe {
        libc::clock_gettime(libc::CLOCK_MONOTONIC, ts.as_mut_ptr());
        ts.assume_init()
    };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Only loopback addresses are allowed as targets of this tool.
pub fn require_loopback(addr: SocketAddr, what: &str) -> anyhow::Result<()> {
    if !addr.ip().is_loopback() {
        bail!(
            "{what} {addr} is not a loopback address: this load generator only sends to 127.0.0.0/8 and ::1"
        );
    }
    Ok(())
}

/// A non-blocking UDP socket bound to `bind`, with large buffers (SO_RCVBUFFORCE when permitted).
pub fn udp_socket(bind: SocketAddr, buf_bytes: usize) -> anyhow::Result<UdpSocket> {
    let domain = if bind.is_ipv4() {
        Domain::IPV4
    } else {
        Domain::IPV6
    };
    let s = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP)).context("socket()")?;
    s.set_nonblocking(true)?;
    set_buffers(s.as_raw_fd(), buf_bytes);
    s.bind(&bind.into())
        .with_context(|| format!("bind {bind}"))?;
    Ok(s.into())
}

/// SO_RCVBUFFORCE/SO_SNDBUFFORCE (root) or the capped SO_RCVBUF/SO_SNDBUF.
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

/// A UDP socket bound with SO_REUSEPORT (for the sharded forwarder).
pub fn udp_reuseport(bind: SocketAddr, buf_bytes: usize) -> anyhow::Result<UdpSocket> {
    let domain = if bind.is_ipv4() {
        Domain::IPV4
    } else {
        Domain::IPV6
    };
    let s = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP)).context("socket()")?;
    s.set_reuse_port(true)?;
    set_buffers(s.as_raw_fd(), buf_bytes);
    s.bind(&bind.into())
        .with_context(|| format!("bind {bind}"))?;
    Ok(s.into())
}

pub fn loopback_any_port() -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0))
}

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

/// Buffers for one recvmmsg/sendmmsg batch. Pointers into the heap vectors are set up once; the vectors never
/// grow, so moving the struct keeps them valid. Not `Send` (raw pointers): build it on the thread that uses it.
pub struct Batch {
    data: Vec<u8>,
    slot: usize,
    lens: Vec<usize>,
    iov: Vec<libc::iovec>,
    addrs: Vec<libc::sockaddr_storage>,
    hdrs: Vec<libc::mmsghdr>,
}

impl Batch {
    pub fn new(count: usize, slot: usize) -> Batch {
        let count = count.max(1);
        let mut data = vec![0u8; count * slot];
        // SAFETY: all-zero sockaddr_storage / mmsghdr are valid values (null pointers, zero lengths).
        let mut addrs: Vec<libc::sockaddr_storage> = vec![unsafe { std::mem::zeroed() }; count];
        let mut iov: Vec<libc::iovec> = (0..count)
            .map(|i| libc::iovec {
                // SAFETY: i * slot is within `data` (count * slot bytes).
                iov_base: unsafe { data.as_mut_ptr().add(i * slot) } as *mut libc::c_void,
                iov_len: slot,
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
                h.msg_hdr.msg_namelen =
                    std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
                h
            })
            .collect();
        Batch {
            data,
            slot,
            lens: vec![0; count],
            iov,
            addrs,
            hdrs,
        }
    }

    pub fn capacity(&self) -> usize {
        self.hdrs.len()
    }

    /// The writable buffer of slot `i` (for building packets to send).
    pub fn slot_mut(&mut self, i: usize) -> &mut [u8] {
        &mut self.data[i * self.slot..(i + 1) * self.slot]
    }

    /// Sets the length (and optionally the destination) of slot `i` before `send`.
    pub fn set(
        &mut self,
        i: usize,
        len: usize,
        dest: Option<(&libc::sockaddr_storage, libc::socklen_t)>,
    ) {
        self.lens[i] = len.min(self.slot);
        self.iov[i].iov_base = self.slot_ptr(i);
        match dest {
            Some((ss, sl)) => {
                self.addrs[i] = *ss;
                self.hdrs[i].msg_hdr.msg_namelen = sl;
            }
            None => self.hdrs[i].msg_hdr.msg_namelen = 0,
        }
    }

    /// The received packet in slot `i` (after `recv`).
    pub fn packet(&self, i: usize) -> &[u8] {
        &self.data[i * self.slot..i * self.slot + self.lens[i]]
    }

    pub fn source(&self, i: usize) -> Option<SocketAddr> {
        from_sockaddr(&self.addrs[i])
    }

    fn slot_ptr(&mut self, i: usize) -> *mut libc::c_void {
        // SAFETY: i < count, so i * slot is within `data`.
        unsafe { self.data.as_mut_ptr().add(i * self.slot) as *mut libc::c_void }
    }

    /// recvmmsg into all slots without blocking. Ok(0) when nothing is queued.
    pub fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        self.recv_flags(fd, libc::MSG_DONTWAIT)
    }

    /// recvmmsg that blocks until one packet arrives (or SO_RCVTIMEO passes), then takes what is queued.
    pub fn recv_wait(&mut self, fd: RawFd) -> io::Result<usize> {
        self.recv_flags(fd, libc::MSG_WAITFORONE)
    }

    fn recv_flags(&mut self, fd: RawFd, flags: libc::c_int) -> io::Result<usize> {
        let n = self.hdrs.len();
        for i in 0..n {
            self.iov[i].iov_base = self.slot_ptr(i);
            self.iov[i].iov_len = self.slot;
            self.hdrs[i].msg_hdr.msg_namelen =
                std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        }
        // SAFETY: hdrs/iov/addrs/data are live and consistent (set up in new()); n is their length.
        let r = unsafe {
            libc::recvmmsg(
                fd,
                self.hdrs.as_mut_ptr(),
                n as libc::c_uint,
                flags,
                std::ptr::null_mut(),
            )
        };
        if r < 0 {
            let e = io::Error::last_os_error();
            return match e.kind() {
                io::ErrorKind::WouldBlock => Ok(0),
                _ => Err(e),
            };
        }
        let r = r as usize;
        for i in 0..r {
            self.lens[i] = self.hdrs[i].msg_len as usize;
        }
        Ok(r)
    }

    /// sendmmsg of slots `from..to` (as prepared with `set`). Returns how many were sent; Ok(0) on EAGAIN.
    pub fn send(&mut self, fd: RawFd, from: usize, to: usize) -> io::Result<usize> {
        if from >= to {
            return Ok(0);
        }
        for i in from..to {
            self.iov[i].iov_len = self.lens[i];
        }
        // SAFETY: as in recv; the range is within the arrays.
        let r = unsafe {
            libc::sendmmsg(
                fd,
                self.hdrs.as_mut_ptr().add(from),
                (to - from) as libc::c_uint,
                libc::MSG_DONTWAIT,
            )
        };
        if r < 0 {
            let e = io::Error::last_os_error();
            return match e.kind() {
                io::ErrorKind::WouldBlock => Ok(0),
                // Loopback peers with no socket answer ICMP port unreachable on connected sockets.
                io::ErrorKind::ConnectionRefused => Ok(0),
                _ => Err(e),
            };
        }
        Ok(r as usize)
    }
}

impl Batch {
    /// Sends the received packets in slots `keep` (ascending) to `dest`, minus their first `strip` bytes,
    /// straight from the receive buffers (no copy). Returns how many went out.
    pub fn forward(
        &mut self,
        fd: RawFd,
        keep: &[usize],
        strip: usize,
        dest: (&libc::sockaddr_storage, libc::socklen_t),
    ) -> io::Result<usize> {
        let mut m = 0;
        for &i in keep {
            if i >= self.hdrs.len() || self.lens[i] < strip {
                continue;
            }
            // SAFETY: slot i holds lens[i] >= strip received bytes.
            self.iov[m].iov_base = unsafe { self.slot_ptr(i).add(strip) };
            self.iov[m].iov_len = self.lens[i] - strip;
            self.addrs[m] = *dest.0;
            self.hdrs[m].msg_hdr.msg_namelen = dest.1;
            m += 1;
        }
        let mut done = 0;
        let mut spins = 0;
        while done < m && spins < 1000 {
            // SAFETY: hdrs[done..m] point at live iovecs/addresses set just above.
            let r = unsafe {
                libc::sendmmsg(
                    fd,
                    self.hdrs.as_mut_ptr().add(done),
                    (m - done) as libc::c_uint,
                    0,
                )
            };
            if r < 0 {
                let e = io::Error::last_os_error();
                match e.kind() {
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => spins += 1,
                    // ICMP unreachable reported on the socket: that datagram is gone, go on.
                    io::ErrorKind::ConnectionRefused => done += 1,
                    _ => return Err(e),
                }
            } else {
                done += r as usize;
            }
        }
        Ok(done)
    }
}

/// Minimal epoll (level-triggered, read interest).
pub struct Epoll {
    fd: RawFd,
    events: Vec<libc::epoll_event>,
}

impl Epoll {
    pub fn new(max_events: usize) -> anyhow::Result<Epoll> {
        // SAFETY: plain syscall.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error()).context("epoll_create1");
        }
        Ok(Epoll {
            fd,
            events: vec![libc::epoll_event { events: 0, u64: 0 }; max_events.max(1)],
        })
    }

    pub fn add(&self, fd: RawFd, token: u64) -> anyhow::Result<()> {
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: token,
        };
        // SAFETY: ev is a valid epoll_event.
        if unsafe { libc::epoll_ctl(self.fd, libc::EPOLL_CTL_ADD, fd, &mut ev) } != 0 {
            return Err(io::Error::last_os_error()).context("epoll_ctl");
        }
        Ok(())
    }

    /// Waits up to `timeout`; returns the tokens of ready descriptors.
    pub fn wait(&mut self, timeout: Duration) -> impl Iterator<Item = u64> + '_ {
        let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: events has room for its length.
        let n = unsafe {
            libc::epoll_wait(
                self.fd,
                self.events.as_mut_ptr(),
                self.events.len() as i32,
                ms,
            )
        };
        let n = if n < 0 { 0 } else { n as usize };
        self.events[..n].iter().map(|e| e.u64)
    }
}

impl Drop for Epoll {
    fn drop(&mut self) {
        // SAFETY: we own the descriptor.
        unsafe { libc::close(self.fd) };
    }
}

/// Sleeps precisely for short durations (sets a 1 µs timer slack for the calling thread first).
pub fn precise_sleep_setup() {
    // SAFETY: prctl(PR_SET_TIMERSLACK) only affects this thread.
    unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1000 as libc::c_ulong, 0, 0, 0) };
}

/// Raises RLIMIT_NOFILE to the hard limit; returns the new soft limit.
pub fn raise_nofile() -> u64 {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) == 0 {
            r.rlim_cur = r.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &r);
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut r);
        }
    }
    r.rlim_cur
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockaddr_round_trip() {
        for a in ["127.0.0.1:3478", "[::1]:9", "10.1.2.3:65535"] {
            let addr: SocketAddr = a.parse().expect("literal");
            let (ss, _) = to_sockaddr(addr);
            assert_eq!(from_sockaddr(&ss), Some(addr));
        }
    }

    #[test]
    fn batch_send_recv_over_loopback() {
        let a = udp_socket(loopback_any_port(), 1 << 20).expect("bind");
        let b = udp_socket(loopback_any_port(), 1 << 20).expect("bind");
        let dest = to_sockaddr(b.local_addr().expect("bound"));
        let mut tx = Batch::new(8, 64);
        for i in 0..8 {
            tx.slot_mut(i)[..4].copy_from_slice(&(i as u32).to_be_bytes());
            tx.set(i, 4 + i, Some((&dest.0, dest.1)));
        }
        assert_eq!(tx.send(a.as_raw_fd(), 0, 8).expect("send"), 8);
        let mut rx = Batch::new(16, 64);
        let mut got = Vec::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        while got.len() < 8 && std::time::Instant::now() < deadline {
            let n = rx.recv(b.as_raw_fd()).expect("recv");
            for i in 0..n {
                got.push(rx.packet(i).len());
                assert_eq!(rx.source(i), a.local_addr().ok());
            }
        }
        assert_eq!(got, (4..12).collect::<Vec<_>>());
        assert!(require_loopback("10.0.0.1:1".parse().expect("literal"), "x").is_err());
        assert!(require_loopback("[::1]:1".parse().expect("literal"), "x").is_ok());
    }
}
