//! Memory held by stream data the application has not read is bounded by what the data is,
//! not by the read buffers it arrived in. A peer sends, read by read, one byte to a stream
//! nobody reads and 16 KiB to one that is read: each read buffer is mostly freed data, and
//! must not be kept alive whole by the one unread byte in it. Counted by dhat's heap profiler
//! (the global allocator of this test binary only).
#![allow(clippy::print_stdout, reason = "the test reports what it measured")]

use std::time::Duration;

use bytes::Bytes;
use sssonector_tunnel::proto::{Mode, Role, SessionConfig};
use sssonector_tunnel::{Incoming, LinkConfig};

mod common;

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

const ROUNDS: usize = 1_000;

#[test]
fn unread_bytes_hold_their_size_not_their_read_buffers() {
    let (_profiler, runtime) = common::heap_profiler("streams");
    runtime.block_on(async {
        let forward = |role| SessionConfig::new(role, Mode::Forward);
        let ((client, _ci), (server, mut incoming)) = common::link_pair(
            (forward(Role::Client), LinkConfig::default()),
            (forward(Role::Server), LinkConfig::default()),
        )
        .await;
        let mut accept =
            async || match tokio::time::timeout(Duration::from_secs(5), incoming.recv()).await {
                Ok(Some(Incoming::Stream { stream, .. })) => stream,
                other => panic!("{other:?}"),
            };
        // Every half is kept: dropping one resets its stream.
        let (_stalled_reader, mut stalled_writer) =
            client.open_stream("stalled").unwrap().into_split();
        let _stalled = accept().await;
        let (_busy_reader, mut busy_writer) = client.open_stream("busy").unwrap().into_split();
        let (mut busy, _busy_writer) = accept().await.into_split();
        let chunk = Bytes::from(vec![7u8; 16 * 1024]);

        let before = dhat::HeapStats::get();
        for _ in 0..ROUNDS {
            stalled_writer.send(Bytes::from_static(b"x")).await.unwrap();
            busy_writer.send(chunk.clone()).await.unwrap();
            // The server's application reads the busy stream's 16 KiB and lets it go.
            let mut got = 0;
            while got < chunk.len() {
                let data = tokio::time::timeout(Duration::from_secs(5), busy.recv())
                    .await
                    .expect("the busy stream's data")
                    .unwrap()
                    .unwrap();
                got += data.len();
                busy.consumed(data.len());
            }
        }
        let held = dhat::HeapStats::get()
            .curr_bytes
            .saturating_sub(before.curr_bytes);
        println!("{ROUNDS} unread bytes, each read beside 16 KiB that was read, hold {held} bytes");
        // Copied out of their read buffers: tens of bytes apiece (allocation and queue
        // entry), where a read buffer apiece would be 16 MiB or more.
        dhat::assert!(
            held < ROUNDS * 1024,
            "{held} bytes held by {ROUNDS} unread bytes"
        );
        dhat::assert_eq!(server.stats().buffered, ROUNDS);
    });
}
