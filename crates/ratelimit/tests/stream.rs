//! Byte pacing accuracy and nesting, under tokio's paused clock.

mod common;
use common::tokio_limiter;

use std::time::Duration;

use sssonector_ratelimit::{PacedStream, Pacing, Quota};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

const MBIT: u64 = 1_000_000;

/// Writes as fast as the pacing allows for `run`, returning the payload bytes that got through.
async fn pump(pacing: Pacing, run: Duration) -> u64 {
    let mut stream = PacedStream::new(tokio::io::sink(), None, Some(pacing));
    let chunk = vec![0u8; 256 * 1024];
    let start = Instant::now();
    let mut sent = 0u64;
    while start.elapsed() < run {
        let n = stream.write(&chunk).await.unwrap();
        sent += n as u64;
    }
    sent
}

#[tokio::test(start_paused = true)]
async fn ten_seconds_at_80_mbit_lands_within_two_percent() {
    // No overhead: the payload rate is the limit.
    let limiter = tokio_limiter(Quota::bits_per_second(80 * MBIT).unwrap());
    let pacing = Pacing::new(vec![limiter]).unwrap().overhead(0.0).unwrap();
    let sent = pump(pacing, Duration::from_secs(10)).await;
    let rate = sent as f64 * 8.0 / 10.0;
    let target = 80.0 * MBIT as f64;
    eprintln!(
        "paced payload rate: {:.3} Mbit/s ({:+.3} % of target)",
        rate / 1e6,
        (rate / target - 1.0) * 100.0
    );
    assert!(
        (rate / target - 1.0).abs() < 0.02,
        "{:.2} Mbit/s",
        rate / 1e6
    );
}

#[tokio::test(start_paused = true)]
async fn overhead_compensation_keeps_the_wire_rate_at_the_limit() {
    // 5 % overhead: payload runs at limit / 1.05, so the wire carries the limit.
    let limiter = tokio_limiter(Quota::bits_per_second(80 * MBIT).unwrap());
    let pacing = Pacing::new(vec![limiter]).unwrap();
    let sent = pump(pacing, Duration::from_secs(10)).await;
    let payload = sent as f64 * 8.0 / 10.0;
    let target = 80.0 * MBIT as f64 / 1.05;
    assert!(
        (payload / target - 1.0).abs() < 0.02,
        "{:.2} Mbit/s",
        payload / 1e6
    );
}

#[tokio::test(start_paused = true)]
async fn nested_budgets_all_apply() {
    // Two connections of one tenant: each may do 40 Mbit/s, the tenant 50 in all.
    let tenant = tokio_limiter(Quota::bits_per_second(50 * MBIT).unwrap());
    let a = Pacing::new(vec![
        tokio_limiter(Quota::bits_per_second(40 * MBIT).unwrap()),
        tenant.clone(),
    ])
    .unwrap()
    .overhead(0.0)
    .unwrap();
    let b = Pacing::new(vec![
        tokio_limiter(Quota::bits_per_second(40 * MBIT).unwrap()),
        tenant,
    ])
    .unwrap()
    .overhead(0.0)
    .unwrap();
    let (x, y) = tokio::join!(
        pump(a, Duration::from_secs(10)),
        pump(b, Duration::from_secs(10))
    );
    let total = (x + y) as f64 * 8.0 / 10.0;
    assert!(
        (total / (50.0 * MBIT as f64) - 1.0).abs() < 0.03,
        "{:.2} Mbit/s",
        total / 1e6
    );
    // Shared fairly: each within 20 % of half.
    for side in [x, y] {
        let share = side as f64 / (x + y) as f64;
        assert!((share - 0.5).abs() < 0.1, "share {share:.2}");
    }
}

#[tokio::test(start_paused = true)]
async fn reads_are_paced_and_never_take_more_than_paid_for() {
    let (client, mut server) = tokio::io::duplex(1 << 20);
    let pacing = Pacing::new(vec![tokio_limiter(
        Quota::bytes_per_second(100_000)
            .unwrap()
            .with_burst(10_000)
            .unwrap(),
    )])
    .unwrap()
    .overhead(0.0)
    .unwrap();
    let mut reader = PacedStream::new(client, Some(pacing), None);
    server.write_all(&vec![7u8; 510_000]).await.unwrap();
    drop(server);
    let start = Instant::now();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0;
    loop {
        let n = reader.read(&mut buf).await.unwrap();
        if n == 0 {
            break;
        }
        assert!(n <= 10_000, "read {n} bytes at once, more than the burst");
        total += n;
    }
    assert_eq!(total, 510_000);
    // 500 kB beyond the 10 kB burst at 100 kB/s.
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(4_990) && took <= Duration::from_millis(5_100),
        "{took:?}"
    );
}
