//! Every frame type round-trips; the decoder never panics on arbitrary bytes; partial input
//! waits for more; oversized frames are refused.

use std::net::IpAddr;

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use sssonector_tunnel::proto::{DecodeError, Frame, HEADER_LEN, Hello, Mode, TunnelAddress};

const MAX: usize = 65_536;

fn address() -> impl Strategy<Value = TunnelAddress> {
    prop_oneof![
        (any::<[u8; 4]>(), 0u8..=32).prop_map(|(o, prefix)| TunnelAddress {
            addr: IpAddr::from(o),
            prefix
        }),
        (any::<[u8; 16]>(), 0u8..=128).prop_map(|(o, prefix)| TunnelAddress {
            addr: IpAddr::from(o),
            prefix
        }),
    ]
}

fn bytes(max: usize) -> impl Strategy<Value = Bytes> {
    proptest::collection::vec(any::<u8>(), 0..max).prop_map(Bytes::from)
}

fn frame() -> impl Strategy<Value = Frame> {
    prop_oneof![
        (
            any::<u16>(),
            prop_oneof![Just(Mode::Tun), Just(Mode::Forward)],
            any::<u16>(),
            any::<u32>(),
            proptest::collection::vec(address(), 0..4),
            any::<u32>()
        )
            .prop_map(
                |(version, mode, mtu, capabilities, addresses, max_payload)| {
                    Frame::Hello(Hello {
                        version,
                        mode,
                        mtu,
                        capabilities,
                        addresses,
                        max_payload,
                    })
                }
            ),
        bytes(1600).prop_map(Frame::Packet),
        bytes(1600).prop_map(Frame::GsoPacket),
        (any::<u32>(), "[a-z0-9:.-]{0,40}")
            .prop_map(|(id, target)| Frame::StreamOpen { id, target }),
        (any::<u32>(), bytes(4096)).prop_map(|(id, data)| Frame::StreamData { id, data }),
        any::<u32>().prop_map(|id| Frame::StreamHalfClose { id }),
        (any::<u32>(), any::<u16>()).prop_map(|(id, code)| Frame::StreamClose { id, code }),
        (any::<u32>(), any::<u32>()).prop_map(|(id, bytes)| Frame::StreamCredit { id, bytes }),
        any::<u64>().prop_map(Frame::Ping),
        any::<u64>().prop_map(Frame::Pong),
        (any::<u16>(), bytes(256)).prop_map(|(kind, body)| Frame::Control { kind, body }),
        (any::<u16>(), ".{0,80}").prop_map(|(code, message)| Frame::Error { code, message }),
        Just(Frame::Goodbye),
        (0x40u8..=0xff, bytes(256)).prop_map(|(kind, payload)| Frame::Extension { kind, payload }),
    ]
}

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        failure_persistence: Some(Box::new(
            proptest::test_runner::FileFailurePersistence::Direct("proptest-regressions/codec.txt"),
        )),
        ..ProptestConfig::with_cases(cases)
    }
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn every_frame_round_trips_even_split_anywhere(
        frames in proptest::collection::vec(frame(), 1..8),
        split in any::<prop::sample::Index>(),
    ) {
        let mut wire = BytesMut::new();
        for f in &frames {
            f.encode(&mut wire, MAX).unwrap();
        }
        // Deliver the bytes in two pieces, cut anywhere: frames come out whole and in order.
        let all = wire.freeze();
        let cut = split.index(all.len() + 1);
        let mut buf = BytesMut::from(&all[..cut]);
        let mut decoded = Vec::new();
        while let Some(f) = Frame::decode(&mut buf, MAX).unwrap() {
            decoded.push(f);
        }
        buf.extend_from_slice(&all[cut..]);
        while let Some(f) = Frame::decode(&mut buf, MAX).unwrap() {
            decoded.push(f);
        }
        prop_assert_eq!(decoded, frames);
        prop_assert!(buf.is_empty());
    }

    #[test]
    fn arbitrary_bytes_never_panic(input in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let mut buf = BytesMut::from(&input[..]);
        // Decode until an error, a need for more, or the input is used up.
        while let Ok(Some(_)) = Frame::decode(&mut buf, MAX) {}
    }

    #[test]
    fn a_valid_header_on_garbage_fails_cleanly(
        kind in any::<u8>(),
        payload in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let mut buf = BytesMut::new();
        let len = u32::try_from(payload.len()).unwrap();
        buf.extend_from_slice(&((u32::from(kind) << 24) | len).to_be_bytes());
        buf.extend_from_slice(&payload);
        match Frame::decode(&mut buf, MAX) {
            Ok(Some(_)) | Err(_) => {}
            Ok(None) => prop_assert!(false, "a whole frame was reported incomplete"),
        }
    }
}

#[test]
fn oversized_frames_are_refused_both_ways() {
    let mut wire = BytesMut::new();
    let big = Frame::Packet(Bytes::from(vec![0u8; 2000]));
    assert_eq!(
        big.encode(&mut wire, 1500),
        Err(DecodeError::TooLarge {
            len: 2000,
            max: 1500
        })
    );
    assert!(wire.is_empty(), "nothing half-written");
    big.encode(&mut wire, MAX).unwrap();
    let err = Frame::decode(&mut wire, 1500).unwrap_err();
    assert_eq!(
        err.to_string(),
        "frame of 2000 bytes exceeds the maximum of 1500"
    );
    assert_eq!(err.code(), 3);
}

#[test]
fn malformed_frames_name_the_problem() {
    let decode = |bytes: &[u8]| Frame::decode(&mut BytesMut::from(bytes), MAX);
    // An unknown core type ends the session; an unknown extension type is handed up to be
    // skipped.
    assert_eq!(
        decode(&[0x3d, 0, 0, 0]),
        Err(DecodeError::UnknownType(0x3d))
    );
    assert_eq!(
        decode(&[0x7f, 0, 0, 2, 1, 2]),
        Ok(Some(Frame::Extension {
            kind: 0x7f,
            payload: Bytes::from_static(&[1, 2])
        }))
    );
    assert_eq!(
        decode(&[0x20, 0, 0, 2, 1, 2]),
        Err(DecodeError::Truncated("ping"))
    );
    assert_eq!(
        decode(&[0x3f, 0, 0, 1, 9]),
        Err(DecodeError::TrailingBytes(1))
    );
    // A hello with mode 9.
    assert_eq!(
        decode(&[0x01, 0, 0, 10, 0, 1, 9, 5, 0xdc, 0, 0, 0, 0, 0]),
        Err(DecodeError::Invalid("unknown mode in hello"))
    );
    // An IPv4 tunnel address with prefix 33.
    assert_eq!(
        decode(&[
            0x01, 0, 0, 16, 0, 1, 1, 5, 0xdc, 0, 0, 0, 0, 1, 4, 10, 0, 0, 1, 33
        ]),
        Err(DecodeError::Invalid("prefix longer than the address"))
    );
    // Incomplete: nothing consumed.
    let mut partial = BytesMut::from(&[0x20, 0, 0, 8, 1][..]);
    assert_eq!(Frame::decode(&mut partial, MAX), Ok(None));
    assert_eq!(partial.len(), 5);
    assert_eq!(HEADER_LEN, 4);
}

#[test]
fn a_hello_reads_what_it_knows_and_skips_what_a_later_version_adds() {
    // version 1, forward, MTU 1400, capabilities 3, no addresses: the original layout, with no
    // maximum payload: the default applies.
    let original = [0x01, 0, 0, 10, 0, 1, 2, 0x05, 0x78, 0, 0, 0, 3, 0];
    let Some(Frame::Hello(hello)) = Frame::decode(&mut BytesMut::from(&original[..]), MAX).unwrap()
    else {
        panic!("not a hello");
    };
    assert_eq!(
        hello.max_payload,
        sssonector_tunnel::proto::DEFAULT_MAX_PAYLOAD
    );
    assert_eq!(hello.capabilities, 3);
    // With a maximum payload and then bytes of some later field.
    let mut later = original.to_vec();
    later[3] = 10 + 4 + 3;
    later.extend_from_slice(&[0, 0, 0x40, 0]);
    later.extend_from_slice(&[9, 9, 9]);
    let Some(Frame::Hello(hello)) = Frame::decode(&mut BytesMut::from(&later[..]), MAX).unwrap()
    else {
        panic!("not a hello");
    };
    assert_eq!(hello.max_payload, 16_384);
}
