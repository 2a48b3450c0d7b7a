//! Micro benchmark of the codec's hot operations (informational; `cargo bench -p peercall-stun`).
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::hint::black_box;
use std::time::Instant;

use peercall_stun::{ChannelData, Family, long_term_key_md5};
use peercall_stun::{
    Class, Data, Lifetime, Message, MessageWriter, Method, Username, XorMappedAddress,
    XorPeerAddress, XorRelayedAddress, data_indication_payload_offset, frame_channel_data_in_place,
    write_data_indication_in_place,
};

fn time(name: &str, iterations: u32, mut f: impl FnMut()) {
    for _ in 0..iterations / 10 {
        f();
    }
    let start = Instant::now();
    for _ in 0..iterations {
        f();
    }
    let ns = start.elapsed().as_nanos() as f64 / f64::from(iterations);
    println!("{name:<56} {ns:>8.1} ns/op");
}

fn main() {
    let tid = [3u8; 12];
    let mut request = [0u8; 128];
    let mut w =
        MessageWriter::new(&mut request, Class::Request, Method::BINDING, &tid).expect("fits");
    w.add(&Username("user:peer")).expect("fits");
    w.add_message_integrity(b"password").expect("fits");
    w.add_fingerprint().expect("fits");
    let n = w.finish();
    let request = &request[..n];

    time(
        "parse + verify integrity + fingerprint (Binding)",
        200_000,
        || {
            let msg = Message::parse(black_box(request)).expect("valid");
            msg.verify_integrity(b"password").expect("valid");
            msg.verify_fingerprint().expect("valid");
        },
    );

    let key = long_term_key_md5("user", "example.org", "secret");
    let peer = "198.51.100.20:6000".parse().expect("addr");
    let payload = [0x5Au8; 1000];
    let mut send = [0u8; 1200];
    let mut w = MessageWriter::new(&mut send, Class::Indication, Method::SEND, &tid).expect("fits");
    w.add(&XorPeerAddress(peer)).expect("fits");
    w.add(&Data(&payload)).expect("fits");
    let n = w.finish();
    let send = &send[..n];
    time(
        "parse Send indication + decode peer and DATA (1000 B)",
        2_000_000,
        || {
            let msg = Message::parse(black_box(send)).expect("valid");
            black_box(msg.decode::<XorPeerAddress>());
            black_box(msg.decode::<Data>());
        },
    );

    let mut frame = [0u8; 1204];
    frame_channel_data_in_place(&mut frame, 0x4001, 1200, false).expect("fits");
    time("ChannelData parse (1200 B)", 5_000_000, || {
        black_box(ChannelData::parse(black_box(&frame)).expect("valid"));
    });

    let mut out = [0u8; 256];
    let relayed = "203.0.113.5:50000".parse().expect("addr");
    let mapped = "198.51.100.7:40000".parse().expect("addr");
    time(
        "write Allocate success (+integrity, fingerprint)",
        200_000,
        || {
            let mut w =
                MessageWriter::new(&mut out, Class::Success, Method::ALLOCATE, &tid).expect("fits");
            w.add(&XorRelayedAddress(relayed)).expect("fits");
            w.add(&XorMappedAddress(mapped)).expect("fits");
            w.add(&Lifetime(600)).expect("fits");
            w.add_message_integrity(black_box(&key)).expect("fits");
            w.add_fingerprint().expect("fits");
            black_box(w.finish());
        },
    );

    let mut ind = [0u8; 1500];
    let at = data_indication_payload_offset(Family::V4);
    ind[at..at + 1000].fill(1);
    time(
        "Data indication around a received payload (in place)",
        2_000_000,
        || {
            black_box(
                write_data_indication_in_place(black_box(&mut ind), &tid, peer, 1000)
                    .expect("fits"),
            );
        },
    );
    time(
        "ChannelData header in front of a received payload",
        5_000_000,
        || {
            black_box(
                frame_channel_data_in_place(black_box(&mut frame), 0x4001, 1000, true)
                    .expect("fits"),
            );
        },
    );
}
