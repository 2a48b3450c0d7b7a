//! The hot paths (parse, typed decode, verify, encode, ChannelData, framing) must not touch the heap: a
//! counting global allocator proves it for this thread.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test
#![allow(unsafe_code)] // a counting global allocator proves the codec allocates nothing

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use peercall_stun::*;

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // try_with: the thread-local may be gone while a thread shuts down.
        let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
        // SAFETY: forwarding the caller's layout unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: ptr came from System.alloc with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations_during(f: impl FnOnce()) -> usize {
    let before = ALLOCATIONS.with(Cell::get);
    f();
    ALLOCATIONS.with(Cell::get) - before
}

#[test]
fn hot_paths_do_not_allocate() {
    let tid = [5u8; 12];
    let key = long_term_key_md5("user", "realm", "pass");
    let key256 = long_term_key_sha256("user", "realm", "pass");
    let peer: std::net::SocketAddr = "[2001:db8::7]:5000".parse().expect("addr");
    let algorithms = [
        PasswordAlgorithm {
            algorithm: PasswordAlgorithm::MD5,
            params: &[],
        },
        PasswordAlgorithm {
            algorithm: PasswordAlgorithm::SHA256,
            params: &[],
        },
    ];
    let mut buf = [0u8; 1500];
    let mut frame = [0u8; 1500];
    let mut ind = [0u8; 1500];
    let n = allocations_during(|| {
        // Encode a request with every kind of value and all trailers.
        let mut w =
            MessageWriter::new(&mut buf, Class::Request, Method::ALLOCATE, &tid).expect("fits");
        w.add(&Username("user")).expect("fits");
        w.add(&Realm("realm")).expect("fits");
        w.add(&Nonce("nonce")).expect("fits");
        w.add(&RequestedTransport::UDP).expect("fits");
        w.add(&XorPeerAddress(peer)).expect("fits");
        w.add(&Data(&[1, 2, 3])).expect("fits");
        w.add(&Attribute::Lifetime(600)).expect("fits");
        w.add_password_algorithms(&algorithms).expect("fits");
        w.add(&UnknownAttributes::new(&[0x0003])).expect("fits");
        w.add(&ErrorCode {
            code: 420,
            reason: "Unknown",
        })
        .expect("fits");
        w.add_message_integrity(&key).expect("fits");
        w.add_message_integrity_sha256(&key256).expect("fits");
        w.add_fingerprint().expect("fits");
        let len = w.finish();

        // Parse, look up and verify.
        let msg = Message::parse(&buf[..len]).expect("valid");
        assert_eq!(msg.decode::<Username>(), Some(Ok(Username("user"))));
        assert_eq!(
            msg.decode::<XorPeerAddress>(),
            Some(Ok(XorPeerAddress(peer)))
        );
        let data = msg.decode::<Data>().expect("present").expect("valid");
        assert_eq!(data.0, &[1, 2, 3]);
        assert!(
            msg.decode::<PasswordAlgorithms>()
                .expect("present")
                .expect("valid")
                .contains(2)
        );
        for typ in attr::ALL {
            let _ = msg.decode_any(typ);
        }
        let mut unknown = [0u16; 8];
        assert_eq!(
            msg.unknown_comprehension_required(attr::is_known, &mut unknown),
            0
        );
        msg.verify_integrity(&key).expect("valid");
        msg.verify_integrity_sha256(&key256).expect("valid");
        msg.verify_fingerprint().expect("valid");

        // Relay paths.
        let at = data_indication_payload_offset(Family::V6);
        ind[at..at + 100].fill(9);
        let m = write_data_indication_in_place(&mut ind, &tid, peer, 100).expect("fits");
        assert!(Message::parse(&ind[..m]).is_ok());
        frame[4..104].fill(7);
        let f = frame_channel_data_in_place(&mut frame, 0x4001, 100, true).expect("fits");
        assert_eq!(stream_frame_len(&frame[..f]), Ok(Some(f)));
        assert_eq!(
            ChannelData::parse(&frame[..f]).expect("valid").data.len(),
            100
        );
        assert_eq!(classify(&frame), PacketKind::ChannelData);
    });
    assert_eq!(n, 0, "the codec allocated {n} times");
    // The counter does count: a Vec allocates.
    assert!(allocations_during(|| drop(std::hint::black_box(vec![1u8; 10]))) > 0);
}
