//! Load and soak: new forwarded connections at a steady rate — 500 a second, each carrying
//! 1 KiB there and back and ending cleanly — through a client and a server on loopback to an
//! echo target. Every connection must succeed; when the load stops both processes hold the
//! descriptors they held before it. Runs of a minute or more also require the resident sets to
//! grow less than 5% from the end of the warm-up (a fifth of the run, at most a minute) to the
//! end.
//!
//! `LOAD_TEST_SECONDS` sets the duration (10 s by default, what CI runs) and `LOAD_TEST_RATE`
//! the rate (not `SSSONECTOR_…` names: the binary reads those as configuration);
//! `cargo xtask soak --minutes N` runs it in release for N minutes and prints the figures.
#![allow(clippy::print_stdout, reason = "the test reports what it measured")]

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::process::{Process, address_after, forward_pair, open_fds, rss_kib};
use common::{TempDir, pki};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinSet;

/// What one connection may take before it counts as an error.
const CONNECTION_LIMIT: Duration = Duration::from_secs(10);
/// Bytes each connection sends and expects back.
const PAYLOAD: usize = 1024;
/// How often the resident sets and descriptors are sampled.
const SAMPLE_EVERY: Duration = Duration::from_secs(1);

fn setting(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().map_or(default, |v| {
        v.parse()
            .unwrap_or_else(|_| panic!("{name} must be a whole number, not {v:?}"))
    })
}

/// Echoes every connection on `listener`.
async fn echo(listener: tokio::net::TcpListener) {
    while let Ok((mut socket, _)) = listener.accept().await {
        tokio::spawn(async move {
            let (mut r, mut w) = socket.split();
            let _ = tokio::io::copy(&mut r, &mut w).await;
        });
    }
}

/// One connection through the tunnel: 1 KiB there and back, then a clean end both ways.
/// Returns how long it took.
async fn one(local: SocketAddr, index: u64) -> std::io::Result<Duration> {
    let started = Instant::now();
    let attempt = async {
        let mut socket = tokio::net::TcpStream::connect(local).await?;
        let seed = index.to_le_bytes();
        let message: Vec<u8> = (0..PAYLOAD)
            .map(|i| seed[i % seed.len()].wrapping_add(i.to_le_bytes()[0]))
            .collect();
        socket.write_all(&message).await?;
        let mut back = vec![0u8; PAYLOAD];
        socket.read_exact(&mut back).await?;
        if back != message {
            return Err(std::io::Error::other("the echo differs"));
        }
        socket.shutdown().await?;
        if socket.read(&mut back).await? != 0 {
            return Err(std::io::Error::other("bytes after the echo"));
        }
        Ok(started.elapsed())
    };
    tokio::time::timeout(CONNECTION_LIMIT, attempt)
        .await
        .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()))
}

#[derive(Clone, Copy, Debug)]
struct Sample {
    rss_kib: [u64; 2],
    fds: [usize; 2],
}

fn sample(processes: [&Process; 2]) -> Sample {
    Sample {
        rss_kib: processes.map(rss_kib),
        fds: processes.map(open_fds),
    }
}

/// The `p`th percentile of sorted `values`.
fn percentile(values: &[Duration], p: f64) -> Duration {
    if values.is_empty() {
        return Duration::ZERO;
    }
    // Nearest rank, without a float-to-integer cast: the first value at or above p%.
    let at_or_above = values
        .iter()
        .enumerate()
        .position(|(i, _)| (i + 1) as f64 >= values.len() as f64 * p / 100.0);
    values[at_or_above.unwrap_or(values.len() - 1)]
}

#[test]
fn new_connections_at_a_steady_rate() {
    let seconds = setting("LOAD_TEST_SECONDS", 10);
    let rate = setting("LOAD_TEST_RATE", 500);
    assert!(
        seconds > 0 && rate > 0,
        "the duration and rate must be above 0"
    );
    let tmp = TempDir::new("load");
    let dir = tmp.0.clone();
    pki(&dir, "localhost", &["alice"]);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let target = listener.local_addr().unwrap();
    runtime.spawn(echo(listener));
    let (server, client, ready) = forward_pair(&dir, target, "", "alice", "");
    let local = address_after(&ready, "echo on ");
    // One connection first, so the baseline holds the client's links and the server's session.
    runtime
        .block_on(one(local, 0))
        .expect("the first connection");
    std::thread::sleep(Duration::from_millis(200));
    let baseline = sample([&client, &server]);

    let total = seconds * rate;
    let warm_up = Duration::from_secs(seconds / 5).min(Duration::from_secs(60));
    let (mut latencies, errors, opening, samples) = runtime.block_on(async {
        let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let mut tasks = JoinSet::new();
        let mut latencies = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
        let mut errors: Vec<String> = Vec::new();
        let mut samples = Vec::new();
        let started = Instant::now();
        let mut next_sample = started + SAMPLE_EVERY;
        let mut record = |done: Result<std::io::Result<Duration>, _>| match done {
            Ok(Ok(took)) => latencies.push(took),
            Ok(Err(e)) => errors.push(e.to_string()),
            Err(e) => errors.push(format!("the task failed: {e}")),
        };
        for index in 1..=total {
            ticker.tick().await;
            tasks.spawn(one(local, index));
            while let Some(done) = tasks.try_join_next() {
                record(done);
            }
            if Instant::now() >= next_sample {
                let now = (started.elapsed(), sample([&client, &server]));
                // A soak shows its course: the resident sets once a minute.
                if samples.len() % 60 == 59 {
                    println!(
                        "{:>4} s: RSS client {} KiB, server {} KiB; descriptors {:?}",
                        now.0.as_secs(),
                        now.1.rss_kib[0],
                        now.1.rss_kib[1],
                        now.1.fds
                    );
                }
                samples.push(now);
                next_sample += SAMPLE_EVERY;
            }
        }
        let opening = started.elapsed();
        samples.push((opening, sample([&client, &server])));
        while let Some(done) = tasks.join_next().await {
            record(done);
        }
        (latencies, errors, opening, samples)
    });

    // Descriptors return to what they were once every connection has closed.
    let settle = Instant::now();
    let mut after = sample([&client, &server]);
    while after.fds != baseline.fds && settle.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(100));
        after = sample([&client, &server]);
    }
    latencies.sort();
    let warm = samples
        .iter()
        .find(|(at, _)| *at >= warm_up)
        .map_or(baseline, |(_, s)| *s);
    let last = samples.last().map_or(baseline, |(_, s)| *s);
    let growth = |i: usize| (last.rss_kib[i] as f64 / warm.rss_kib[i].max(1) as f64 - 1.0) * 100.0;
    let peak_fds = |i: usize| samples.iter().map(|(_, s)| s.fds[i]).max().unwrap_or(0);
    println!(
        "load: {total} connections opened in {:.1} s ({:.0}/s), {} errors; \
         latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        opening.as_secs_f64(),
        total as f64 / opening.as_secs_f64(),
        errors.len(),
        percentile(&latencies, 50.0).as_secs_f64() * 1e3,
        percentile(&latencies, 99.0).as_secs_f64() * 1e3,
        percentile(&latencies, 100.0).as_secs_f64() * 1e3,
    );
    for (i, name) in ["client", "server"].iter().enumerate() {
        println!(
            "{name}: RSS {} KiB at start, {} KiB after warm-up ({:.0} s), {} KiB at the end \
             ({:+.1}%); descriptors {} before, {} at most, {} after",
            baseline.rss_kib[i],
            warm.rss_kib[i],
            warm_up.as_secs_f64(),
            last.rss_kib[i],
            growth(i),
            baseline.fds[i],
            peak_fds(i),
            after.fds[i],
        );
    }
    assert!(
        errors.is_empty(),
        "{} of {total} connections failed, first: {:?}\nclient log:\n{}",
        errors.len(),
        errors.first(),
        std::fs::read_to_string(dir.join("client.log")).unwrap_or_default()
    );
    assert_eq!(latencies.len() as u64, total);
    assert_eq!(
        after.fds, baseline.fds,
        "descriptors [client, server] before the load and after it"
    );
    if seconds >= 60 {
        for (i, name) in ["client", "server"].iter().enumerate() {
            assert!(
                growth(i) < 5.0,
                "{name}'s resident set grew {:.1}% after the warm-up",
                growth(i)
            );
        }
    }
    drop(tmp);
}
