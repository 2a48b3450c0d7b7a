//! Micro benchmark of the codec's hot operations (informational; `cargo bench -p peercall-stun`).

use std::hint::black_box;
use std::time::Instant;

use peercall_stun::{
    Attribute, ChannelData, Class, Message, MessageWriter, Method, write_channel_data_header,
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
    println!("{name:<48} {ns:>8.1} ns/op");
}

fn main() {
    let tid = [3u8; 12];
    let mut request = [0u8; 128];
    let mut w =
        MessageWriter::new(&mut request, Class::Request, Method::BINDING, &tid).expect("fits");
    w.add(&Attribute::Username("user:peer")).expect("fits");
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

    let mut frame = [0u8; 1204];
    write_channel_data_header(&mut frame, 0x4001, 1200).expect("fits");
    time("ChannelData parse (1200 B)", 2_000_000, || {
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
            w.add(&Attribute::XorRelayedAddress(relayed)).expect("fits");
            w.add(&Attribute::XorMappedAddress(mapped)).expect("fits");
            w.add(&Attribute::Lifetime(600)).expect("fits");
            w.add_message_integrity(b"0123456789abcdef").expect("fits");
            w.add_fingerprint().expect("fits");
            black_box(w.finish());
        },
    );
}
