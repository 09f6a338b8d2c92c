//! A session fed arbitrary bytes, in arbitrary pieces, with time moving: it never panics,
//! and once closed it stays closed and says why.
#![no_main]

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use sssonector_tunnel::proto::{Mode, Role, Session, SessionConfig, State};

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let mode = if first & 1 == 0 {
        Mode::Tun
    } else {
        Mode::Forward
    };
    let start = Instant::now();
    let mut session = if first & 2 == 0 {
        Session::server(
            SessionConfig::new(Role::Server, mode),
            start,
            Box::new(|_| Ok(Vec::new())),
        )
    } else {
        Session::client(SessionConfig::new(Role::Client, mode), start, Vec::new())
    };
    // Each piece: a length byte, then that many bytes; time moves a little per piece.
    let mut now = start;
    let mut input = rest;
    while let Some((&len, tail)) = input.split_first() {
        let take = usize::from(len).min(tail.len());
        let (piece, tail) = tail.split_at(take);
        input = tail;
        now += Duration::from_millis(u64::from(len) * 10);
        session.receive(piece, now);
        session.tick(now);
        let _ = session.take_output(now);
        while session.poll_event().is_some() {}
        if session.state() == State::Closed {
            assert!(session.close_reason().is_some());
            session.receive(piece, now);
            assert_eq!(session.state(), State::Closed);
        }
    }
});
