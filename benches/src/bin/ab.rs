//! Interleaved A/B timing: `ab [PAIR ...]` (pairs: `ratelimit-check`, `ratelimit-keyed`,
//! `bufpool`, `connpool`, `certs`; none runs them all). Runs batches of ours and the anchor
//! alternately and reports the median ratio of paired batches with its interquartile range.
//! Alternating cancels the drift (frequency changes, neighbours on a shared machine) that
//! separates two criterion benchmarks run one after the other, which at ten nanoseconds per
//! operation swings their ratio by ±30 %. `cargo xtask bench` builds it with every function and
//! loop aligned to 64 bytes, so that where the two contenders' code falls in the binary matters
//! less (it still moved the rate-limit `check` ratio between 0.906 and 1.001 across builds).

#![allow(clippy::print_stdout, reason = "the table is this program's output")]

use std::hint::black_box;
use std::time::Instant;

use sssonector_benches::contenders;

const ROUNDS: usize = 301;
const BATCH: u64 = 50_000;

/// Times `BATCH` calls of `op` on each of `threads` threads (wall time). Generic, so each
/// contender's operation is compiled into its own loop, as in criterion's `iter`: no indirect
/// call per operation, whose cost would sit in both sides of every ratio.
fn batch<F: Fn(u64) -> bool + Sync>(op: &F, threads: u64) -> f64 {
    let run = |offset: u64| {
        let mut admitted = 0u64;
        for i in 0..BATCH {
            admitted += u64::from(op(black_box(i * 7 + offset)));
        }
        black_box(admitted);
    };
    let start = Instant::now();
    if threads == 1 {
        run(0);
    } else {
        std::thread::scope(|s| {
            for t in 0..threads {
                s.spawn(move || run(t * 131));
            }
        });
    }
    start.elapsed().as_secs_f64()
}

/// Runs `rounds` pairs of batches, alternating which goes first so neither always runs on a
/// warmer core, after one warm-up batch each (caches, lazy statics, clock calibration, key
/// insertion). Prints one table row: time per operation (`ops` per batch, shown in `unit`
/// scaled by `scale`), the median ratio of paired batches with its interquartile range, and
/// the verdict against `target`. The target is judged on the paired median: each ratio
/// compares two batches run back to back, so drift between them is small.
fn interleave(
    name: &str,
    target: Option<f64>,
    rounds: usize,
    ops: f64,
    (unit, scale): (&str, f64),
    mut ours: impl FnMut() -> f64,
    mut theirs: impl FnMut() -> f64,
) {
    ours();
    theirs();
    let mut ratios = Vec::with_capacity(rounds);
    let (mut total_ours, mut total_theirs) = (0.0, 0.0);
    for round in 0..rounds {
        let (a, b) = if round % 2 == 0 {
            let a = ours();
            (a, theirs())
        } else {
            let b = theirs();
            (ours(), b)
        };
        total_ours += a;
        total_theirs += b;
        ratios.push(a / b);
    }
    ratios.sort_by(f64::total_cmp);
    let q = |quarter: usize| ratios[(rounds - 1) * quarter / 4];
    let per_op = |t: f64| t / (rounds as f64 * ops) * scale;
    let verdict = match target {
        Some(t) if q(2) <= t => format!("≤ {t:.2}× met"),
        Some(t) => format!("≤ {t:.2}× MISSED"),
        None => "(for reference)".to_string(),
    };
    println!(
        "| {name} | {:.2} {unit} | {:.2} {unit} | {:.3}× | {:.3}–{:.3} | {verdict} |",
        per_op(total_ours),
        per_op(total_theirs),
        q(2),
        q(1),
        q(3)
    );
}

/// Interleaved batches of `BATCH` calls per thread.
fn compare<A, B>(name: &str, target: f64, threads: u64, ours: &A, theirs: &B)
where
    A: Fn(u64) -> bool + Sync,
    B: Fn(u64) -> bool + Sync,
{
    interleave(
        name,
        Some(target),
        ROUNDS,
        (BATCH * threads) as f64,
        ("ns", 1e9),
        || batch(ours, threads),
        || batch(theirs, threads),
    );
}

/// The time for two threads to pass one cache line back and forth, printed as a table row after
/// the keyed rate limiters, before the connection pools and at the end (not first: its threads'
/// allocations would leave the heap in another state for the buffer pool's fresh-allocation
/// baseline). This machine has phases where it is about three times longer (its two vCPUs
/// further apart, presumably); every two-thread figure moves with it, and a ratio measured in
/// one phase should be read as belonging to it.
fn cross_core_round_trip() {
    use std::sync::atomic::{AtomicU64, Ordering};
    const TRIPS: u64 = 200_000;
    let ball = AtomicU64::new(0);
    let start = Instant::now();
    std::thread::scope(|s| {
        for side in 0..2 {
            let ball = &ball;
            s.spawn(move || {
                for trip in 0..TRIPS {
                    let mine = trip * 2 + side;
                    while ball.load(Ordering::Acquire) != mine {
                        std::hint::spin_loop();
                    }
                    ball.store(mine + 1, Ordering::Release);
                }
            });
        }
    });
    let per_trip = start.elapsed().as_secs_f64() / TRIPS as f64 * 1e9;
    println!(
        "| cross-core round trip (two threads passing a cache line; the machine's phase) \
         | {per_trip:.0} ns | | | | (for reference) |"
    );
}

/// One reading of the time-stamp-counter clock both limiters use, alone, as a table row: a
/// check reads it once, so no check can take less. On this machine kind the read costs about
/// 9 ns, nearly all of either limiter's `check`.
fn clock_read_alone() {
    let timeline = sssonector_core::Timeline::fast();
    let mut best = f64::MAX;
    for _ in 0..21 {
        let start = Instant::now();
        let mut sum = 0u64;
        for _ in 0..BATCH {
            sum = sum.wrapping_add(timeline.now_nanos());
        }
        black_box(sum);
        best = best.min(start.elapsed().as_secs_f64() / BATCH as f64 * 1e9);
    }
    println!(
        "| clock read alone (time-stamp counter, as in both limiters' `check`; fastest batch) \
         | {best:.2} ns | | | | (for reference) |"
    );
}

fn main() {
    let rt = sssonector_benches::runtime();
    let _guard = rt.enter();
    // Pairs to run, as arguments (`ab bufpool connpool`); none runs them all.
    let args: Vec<String> = std::env::args().skip(1).collect();
    let wants = |pair: &str| args.is_empty() || args.iter().any(|a| a == pair);
    if wants("ratelimit-check") {
        clock_read_alone();
        let ours = contenders::ratelimit_ours();
        let theirs = contenders::ratelimit_governor();
        compare(
            "ratelimit_check (ours vs governor)",
            1.0,
            1,
            &|_| ours.check().is_ok(),
            &|_| theirs.check().is_ok(),
        );
    }
    if wants("ratelimit-keyed") {
        for threads in [1, 2] {
            let ours = contenders::keyed_ours();
            let theirs = contenders::keyed_governor();
            compare(
                &format!("ratelimit_keyed_{threads}t (ours vs governor)"),
                1.0,
                threads,
                &|i| ours.check_key(&(i % 1024)).is_ok(),
                &|i| theirs.check_key(&(i % 1024)).is_ok(),
            );
        }
        // The two-thread row moves with the machine's phase: say which it was.
        cross_core_round_trip();
    }
    if wants("bufpool") {
        let ours = contenders::bufpool_ours();
        let lockfree = contenders::bufpool_lockfree();
        for threads in [1, 2] {
            compare(
                &format!("bufpool_16k_{threads}t (ours vs lockfree-object-pool)"),
                1.0,
                threads,
                &|_| contenders::bufpool_ours_op(&ours) == 1,
                &|_| contenders::bufpool_lockfree_op(&lockfree) == 1,
            );
            // The heap as this process left it: idle when `ab bufpool` runs alone (a freed
            // 16 KiB block merges back into the top of the heap, malloc's cheapest path), in
            // use after other pairs have run.
            compare(
                &format!("bufpool_16k_{threads}t (ours vs fresh BytesMut, heap as found)"),
                1.0 / 3.0,
                threads,
                &|_| contenders::bufpool_ours_op(&ours) == 1,
                &|_| contenders::bufpool_fresh_op() == 1,
            );
        }
        // The same on one thread with the heap in use, whatever ran before (see
        // `heap_in_use`).
        let heap = contenders::heap_in_use();
        compare(
            "bufpool_16k_1t (ours vs fresh BytesMut, heap in use)",
            1.0 / 3.0,
            1,
            &|_| contenders::bufpool_ours_op(&ours) == 1,
            &|_| contenders::bufpool_fresh_op() == 1,
        );
        drop(heap);
    }
    if wants("connpool") {
        cross_core_round_trip();
        connpool_pairs();
    }
    if wants("certs") {
        certs_pair();
    }
    cross_core_round_trip();
}

/// Connection pools: batches of get-and-return cycles spread over tasks on a two-worker
/// runtime, ours and deadpool's alternately. Fewer, longer rounds than the pairs above: one
/// batch takes milliseconds.
fn connpool_pairs() {
    use std::cell::Cell;

    use sssonector_benches::contenders::connpool as cp;
    const ROUNDS: usize = 41;
    const CYCLES: u64 = 40_000;
    let rt = cp::runtime();
    for (tasks, faults, target) in [
        (8, false, None),
        (32, false, Some(2.0 / 3.0)),
        (32, true, None),
        (128, false, None),
    ] {
        // Each batch gets a new pool, placed behind a spacer of 0 to 112 bytes that changes
        // from batch to batch. Where a pool's shared state falls relative to cache-line
        // boundaries moved deadpool's time per cycle by up to 60 % (254 to 425 ns at 8x8,
        // depending only on which pool was built first), so a fixed placement would decide
        // the comparison; varying it gives the median over placements.
        let placements = Cell::new(0usize);
        let spacer = || {
            let n = placements.get();
            placements.set(n + 1);
            vec![0u8; 1 + (n * 7 % 8) * 16]
        };
        let run_ours = || {
            let _spacer = spacer();
            let pool = cp::ours(faults);
            cp::run(&rt, tasks, CYCLES, move || {
                let pool = pool.clone();
                async move {
                    let conn = pool.get().await.expect("connection");
                    tokio::task::yield_now().await;
                    black_box(*conn);
                }
            })
            .as_secs_f64()
        };
        let run_dead = || {
            let _spacer = spacer();
            let pool = cp::deadpool(faults);
            cp::run(&rt, tasks, CYCLES, move || {
                let pool = pool.clone();
                async move {
                    let conn = pool.get().await.expect("connection");
                    tokio::task::yield_now().await;
                    black_box(*conn);
                }
            })
            .as_secs_f64()
        };
        let faults = if faults { ", faults" } else { "" };
        interleave(
            &format!("connpool {}x{tasks}{faults} (ours vs deadpool)", cp::POOL),
            target,
            ROUNDS,
            CYCLES as f64,
            ("ns", 1e9),
            run_ours,
            run_dead,
        );
    }
}

/// Full mutual-TLS handshakes: reloadable certificate and verifier against static ones.
fn certs_pair() {
    use sssonector_benches::contenders::tls;
    const ROUNDS: usize = 41;
    const HANDSHAKES: u32 = 40;
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let setup = tls::setup();
    let batch = |server: &std::sync::Arc<rustls::ServerConfig>| {
        let start = Instant::now();
        for _ in 0..HANDSHAKES {
            rt.block_on(tls::handshake(server.clone(), setup.client.clone()));
        }
        start.elapsed().as_secs_f64()
    };
    interleave(
        "certs_handshake (reloadable vs static)",
        Some(1.02),
        ROUNDS,
        f64::from(HANDSHAKES),
        ("µs", 1e6),
        || batch(&setup.reloadable),
        || batch(&setup.fixed),
    );
}
