//! Arbitrary bytes into the frame decoder: it never panics, and every frame it returns
//! encodes and decodes back to itself.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use sssonector_tunnel::proto::{Frame, MAX_PAYLOAD_LIMIT};

fuzz_target!(|data: &[u8]| {
    let mut buf = BytesMut::from(data);
    while let Ok(Some(frame)) = Frame::decode(&mut buf, 65_536) {
        let mut out = BytesMut::new();
        if frame.encode(&mut out, MAX_PAYLOAD_LIMIT).is_ok() {
            let again = Frame::decode(&mut out, MAX_PAYLOAD_LIMIT)
                .expect("an encoded frame decodes")
                .expect("whole");
            assert_eq!(again, frame);
            assert!(out.is_empty());
        }
    }
});
