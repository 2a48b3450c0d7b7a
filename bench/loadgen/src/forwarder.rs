//! The physical limit: a minimal UDP forwarder with the same batching as the TURN server (recvmmsg, and the
//! same `peercall-udp` send queue: sendmmsg, UDP GSO only with `--gso`; SO_REUSEPORT, one thread per core). It
//! strips the 4-byte ChannelData header and sends the payload to the peer it learned from a `PEER` datagram,
//! so the load generator's peers see exactly what a TURN server would send them.

use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;

use peercall_udp::{RecvBatch, SendBuffers};

use crate::sys::{require_loopback, udp_reuseport};

#[derive(clap::Args, Debug)]
pub struct ForwarderArgs {
    /// Address to listen on (loopback only); port 0 picks one (printed on stdout).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// Threads, each with its own SO_REUSEPORT socket.
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// Packets per recvmmsg/sendmmsg.
    #[arg(long, default_value_t = 64)]
    pub batch: usize,
    /// Send runs of equal-size datagrams as UDP GSO bundles. Off by default: everything this forwarder sends
    /// goes from one socket to one destination, a fan-in a TURN server (one relay socket per allocation) never
    /// sees, so with GSO it stops being a limit a TURN server could reach.
    #[arg(long)]
    pub gso: bool,
    /// Exit after this many seconds (at most 7200).
    #[arg(long, default_value_t = 3600.0)]
    pub duration: f64,
}

/// Packs an IPv4 socket address into a u64 (bit 48 set = present).
fn pack(a: SocketAddr) -> u64 {
    match a {
        SocketAddr::V4(v4) => {
            (1 << 48) | (u64::from(u32::from(*v4.ip())) << 16) | u64::from(v4.port())
        }
        SocketAddr::V6(_) => 0,
    }
}

fn unpack(v: u64) -> Option<SocketAddr> {
    if v & (1 << 48) == 0 {
        return None;
    }
    let ip = std::net::Ipv4Addr::from(((v >> 16) & 0xFFFF_FFFF) as u32);
    Some(SocketAddr::from((ip, (v & 0xFFFF) as u16)))
}

pub fn forwarder(args: ForwarderArgs) -> anyhow::Result<()> {
    require_loopback(args.listen, "--listen")?;
    let threads = args.threads.clamp(1, 64);
    let first = udp_reuseport(args.listen, 8 << 20)?;
    let addr = first.local_addr()?;
    let mut sockets = vec![first];
    for _ in 1..threads {
        sockets.push(udp_reuseport(addr, 8 << 20)?);
    }
    println!("forwarder listening on {addr} with {threads} threads");
    let dest = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs_f64(args.duration.clamp(1.0, 7200.0));
    let batch = args.batch.clamp(1, 1024);
    let gso = args.gso;
    let handles: Vec<_> = sockets
        .into_iter()
        .map(|sock| {
            let dest = dest.clone();
            std::thread::spawn(move || -> anyhow::Result<u64> {
                sock.set_read_timeout(Some(Duration::from_millis(200)))
                    .context("SO_RCVTIMEO")?;
                let fd = sock.as_raw_fd();
                let mut rx = RecvBatch::new(batch, 2048, 0);
                let mut tx = SendBuffers::new(batch);
                if !gso {
                    tx = tx.without_gso();
                }
                let mut forwarded = 0u64;
                let mut cached = (0u64, addr);
                while Instant::now() < deadline {
                    let n = rx.recv_wait(fd)?;
                    let d = dest.load(Ordering::Acquire);
                    if d != cached.0
                        && let Some(a) = unpack(d)
                    {
                        cached = (d, a);
                    }
                    let mut queue = tx.queue();
                    for i in 0..n {
                        let p = rx.packet(i);
                        if p.len() >= 4 && &p[..4] == b"PEER" {
                            if let Some(src) = rx.source(i) {
                                dest.store(pack(src), Ordering::Release);
                            }
                        } else if p.len() >= 4 && (0x40..=0x4F).contains(&p[0]) && cached.0 != 0 {
                            queue.push(fd, &p[4..], cached.1);
                        }
                    }
                    forwarded += queue.flush().sent as u64;
                }
                Ok(forwarded)
            })
        })
        .collect();
    let mut total = 0;
    for h in handles {
        match h.join() {
            Ok(Ok(n)) => total += n,
            Ok(Err(e)) => return Err(e),
            Err(_) => anyhow::bail!("a forwarder thread panicked"),
        }
    }
    println!("forwarded {total} packets");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pack_round_trip() {
        let a: SocketAddr = "127.0.0.1:40000".parse().expect("literal");
        assert_eq!(unpack(pack(a)), Some(a));
        assert_eq!(unpack(0), None);
    }
}
