//! peercall-loadgen: the load generators behind the side-by-side benchmarks in `bench/`.
//!
//! Every loop here is bounded in count and time, and every target must be a loopback address.

// libc calls (sockets, epoll, recvmmsg/sendmmsg, getifaddrs) need unsafe; every block says why it is sound.
#![allow(unsafe_code)]

mod engine;
mod forwarder;
mod procfs;
mod relay;
mod signal;
mod stats;
mod stunmsg;
mod sys;
mod turnclient;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "peercall-loadgen",
    about = "Load generators for peercall's benchmarks (loopback only)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// ChannelData through a TURN server (or the raw forwarder, or direct): relayed rate at < 0.1 % loss.
    TurnRelay(relay::RelayArgs),
    /// STUN Binding requests answered per second.
    StunBinding(relay::BindingArgs),
    /// Create many allocations, keep them refreshed, report the server's memory per allocation.
    HoldAllocations(relay::HoldArgs),
    /// The physical limit: a minimal batched UDP forwarder.
    Forwarder(forwarder::ForwarderArgs),
    /// WebSocket signaling load: connections held, relay latency and message rate (peercall or PeerJS).
    Signal(signal::SignalArgs),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::TurnRelay(a) => relay::turn_relay(a),
        Command::StunBinding(a) => relay::stun_binding(a),
        Command::HoldAllocations(a) => relay::hold_allocations(a),
        Command::Forwarder(a) => forwarder::forwarder(a),
        Command::Signal(a) => signal::signal(a),
    }
}
