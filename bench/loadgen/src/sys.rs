//! Thin libc wrappers: batched UDP I/O (recvmmsg/sendmmsg), epoll, a monotonic clock, socket setup.

use std::io;
use std::mem::MaybeUninit;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::os::fd::RawFd;
use std::time::Duration;

use anyhow::{Context, bail};
pub use peercall_udp::set_buffers;

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
    peercall_udp::udp_socket(bind, buf_bytes, false).with_context(|| format!("bind {bind}"))
}

/// A UDP socket bound with SO_REUSEPORT (for the sharded forwarder).
pub fn udp_reuseport(bind: SocketAddr, buf_bytes: usize) -> anyhow::Result<UdpSocket> {
    let s =
        peercall_udp::udp_socket(bind, buf_bytes, true).with_context(|| format!("bind {bind}"))?;
    // The forwarder's threads block in recvmmsg (with SO_RCVTIMEO).
    s.set_nonblocking(false)?;
    Ok(s)
}

pub fn loopback_any_port() -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0))
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

    fn slot_ptr(&mut self, i: usize) -> *mut libc::c_void {
        // SAFETY: i < count, so i * slot is within `data`.
        unsafe { self.data.as_mut_ptr().add(i * self.slot) as *mut libc::c_void }
    }

    /// recvmmsg into all slots without blocking. Ok(0) when nothing is queued.
    pub fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        self.recv_flags(fd, libc::MSG_DONTWAIT)
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

/// Epoll (level-triggered, read interest) with its own event buffer.
pub struct Epoll {
    set: peercall_udp::Epoll,
    events: Vec<libc::epoll_event>,
}

impl Epoll {
    pub fn new(max_events: usize) -> anyhow::Result<Epoll> {
        Ok(Epoll {
            set: peercall_udp::Epoll::new().context("epoll_create1")?,
            events: peercall_udp::epoll_events(max_events),
        })
    }

    pub fn add(&self, fd: RawFd, token: u64) -> anyhow::Result<()> {
        self.set.add(fd, token).context("epoll_ctl")
    }

    /// Waits up to `timeout`; returns the tokens of ready descriptors.
    pub fn wait(&mut self, timeout: Duration) -> impl Iterator<Item = u64> + '_ {
        self.set.wait(&mut self.events, timeout)
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
    use std::os::fd::AsRawFd;

    #[test]
    fn batch_send_recv_over_loopback() {
        let a = udp_socket(loopback_any_port(), 1 << 20).expect("bind");
        let b = udp_socket(loopback_any_port(), 1 << 20).expect("bind");
        let dest = peercall_udp::to_sockaddr(b.local_addr().expect("bound"));
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
            }
        }
        assert_eq!(got, (4..12).collect::<Vec<_>>());
        assert!(require_loopback("10.0.0.1:1".parse().expect("literal"), "x").is_err());
        assert!(require_loopback("[::1]:1".parse().expect("literal"), "x").is_ok());
    }
}
