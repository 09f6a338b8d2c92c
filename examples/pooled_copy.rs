//! A template: relay bytes from one socket to another through pooled buffers, and print the
//! pool's statistics.
//!
//! A source on 127.0.0.1 sends 64 MB; the relay reads it into 64 KiB buffers taken from a
//! [`BufPool`] with a 1 MiB budget, freezes each into `Bytes` and hands it to a writer task,
//! which writes it to a sink and drops it, returning the buffer to the pool (often from the
//! other worker thread). When the writer falls behind, the budget runs out and the reader
//! waits: memory stays bounded however fast the source is. Run it with
//! `cargo run -p sssonector-examples --example pooled_copy`, or pass a size in MB: `... -- 512`.

#![allow(
    clippy::print_stdout,
    reason = "an example speaks to the person running it"
)]

use std::time::{Duration, Instant};

use bytes::Bytes;
use sssonector_bufpool::BufPool;
use sssonector_core::BoxError;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), BoxError> {
    let megabytes: u64 = std::env::args().nth(1).map_or(Ok(64), |a| a.parse())?;
    let total = megabytes * 1_000_000;

    let pool = BufPool::builder()
        .name("relay")
        .classes([2048, 16 * 1024, 64 * 1024])
        .budget(1 << 20)
        .build()?;
    tokio::spawn(pool.maintenance(Duration::from_secs(10)));

    // The source: `total` bytes of a counting pattern.
    let source = TcpListener::bind("127.0.0.1:0").await?;
    let source_addr = source.local_addr()?;
    tokio::spawn(async move {
        let (mut socket, _) = source.accept().await?;
        let chunk: Vec<u8> = (0..=255u8).cycle().take(256 * 1024).collect();
        let mut sent = 0u64;
        while sent < total {
            let n = usize::try_from((total - sent).min(chunk.len() as u64))?;
            socket.write_all(&chunk[..n]).await?;
            sent += n as u64;
        }
        Ok::<(), BoxError>(())
    });

    // The sink: counts bytes and checks the pattern.
    let sink = TcpListener::bind("127.0.0.1:0").await?;
    let sink_addr = sink.local_addr()?;
    let sink_task = tokio::spawn(async move {
        let (mut socket, _) = sink.accept().await?;
        let mut buf = vec![0u8; 256 * 1024];
        let mut received = 0u64;
        loop {
            let n = socket.read(&mut buf).await?;
            if n == 0 {
                return Ok::<u64, BoxError>(received);
            }
            for (i, byte) in buf[..n].iter().enumerate() {
                if u64::from(*byte) != (received + i as u64) % 256 {
                    return Err(format!("corrupt byte at offset {}", received + i as u64).into());
                }
            }
            received += n as u64;
        }
    });

    // The relay: the part to copy.
    let mut from = TcpStream::connect(source_addr).await?;
    let mut to = TcpStream::connect(sink_addr).await?;
    to.set_nodelay(true)?;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(64);
    let writer = tokio::spawn(async move {
        while let Some(chunk) = rx.recv().await {
            to.write_all(&chunk).await?;
            // Dropping `chunk` returns its buffer to the pool.
        }
        to.shutdown().await?;
        Ok::<(), std::io::Error>(())
    });
    let start = Instant::now();
    loop {
        // Waits while the budget is used up: backpressure instead of unbounded memory.
        let mut buf = pool.get(64 * 1024).await?;
        if from.read_buf(&mut *buf).await? == 0 {
            break;
        }
        tx.send(buf.freeze()).await?;
    }
    drop(tx);
    writer.await??;
    let received = sink_task.await??;
    let elapsed = start.elapsed().as_secs_f64();

    let stats = pool.stats();
    println!(
        "relayed {received} bytes in {elapsed:.2} s ({:.0} Mbit/s)",
        received as f64 * 8.0 / elapsed / 1e6
    );
    println!(
        "pool: {} hits, {} misses, {} waits for memory; {} KiB held of a {} KiB budget",
        stats.hits,
        stats.misses,
        stats.waits,
        stats.in_use_bytes / 1024,
        stats.budget / 1024
    );
    println!(
        "now: {} buffers out, {} KiB idle ({} KiB in thread caches)",
        stats.outstanding,
        stats.pooled_bytes / 1024,
        stats.thread_cached_bytes / 1024
    );
    if received != total {
        return Err(format!("sink received {received} bytes, expected {total}").into());
    }
    pool.assert_no_outstanding();
    Ok(())
}
