//! Property tests: over any sequence of gets, writes, freezes, clones and drops, the budget is
//! never exceeded, the accounting adds up, and every buffer comes back.

use bytes::{BufMut, Bytes};
use proptest::prelude::*;
use sssonector_bufpool::{BufPool, GetError, PooledBuf};

#[derive(Debug, Clone)]
enum Op {
    /// Take a buffer of this length (may exceed every class).
    Get(usize),
    /// Write this many bytes into the held buffer at this index (may grow it).
    Write(usize, usize),
    /// Freeze the held buffer at this index.
    Freeze(usize),
    /// Clone (or slice) the frozen bytes at this index.
    CloneFrozen(usize),
    /// Drop the held buffer or frozen bytes at this index.
    Drop(usize),
    /// Split the head off a held buffer and keep it as plain bytes.
    SplitOff(usize),
    /// Trim the pool.
    Trim,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0usize..6000).prop_map(Op::Get),
        2 => (any::<usize>(), 0usize..5000).prop_map(|(i, n)| Op::Write(i, n)),
        1 => any::<usize>().prop_map(Op::Freeze),
        1 => any::<usize>().prop_map(Op::CloneFrozen),
        4 => any::<usize>().prop_map(Op::Drop),
        1 => any::<usize>().prop_map(Op::SplitOff),
        1 => Just(Op::Trim),
    ]
}

enum Held {
    Buf(PooledBuf),
    Frozen(Bytes),
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        // Failures are saved beside the crate and replayed first on every later run.
        failure_persistence: Some(Box::new(
            proptest::test_runner::FileFailurePersistence::Direct(
                "proptest-regressions/invariants.txt",
            ),
        )),
        ..ProptestConfig::default()
    })]

    #[test]
    fn budget_holds_and_everything_comes_back(
        budget in 4096usize..40_000,
        cache in prop_oneof![Just(0usize), Just(8192), Just(1 << 20)],
        ops in proptest::collection::vec(op(), 1..200),
    ) {
        let pool = BufPool::builder()
            .classes([512, 2048, 4096])
            .budget(budget)
            .thread_cache_bytes(cache)
            .low_watermark(1024)
            .build()
            .unwrap();
        let mut held: Vec<Held> = Vec::new();
        for op in ops {
            match op {
                Op::Get(len) => match pool.try_get(len) {
                    Ok(buf) => {
                        prop_assert!(buf.capacity() >= len);
                        held.push(Held::Buf(buf));
                    }
                    Err(GetError::TooLarge { requested, .. }) => prop_assert!(requested > budget),
                    Err(GetError::BudgetExhausted { in_use, requested, .. }) => {
                        // Refused only when even after freeing every idle buffer the request
                        // would not fit.
                        prop_assert!(in_use + requested > budget);
                        prop_assert_eq!(pool.stats().shared_pooled_bytes, 0);
                    }
                    Err(other) => prop_assert!(false, "unexpected error {other}"),
                },
                Op::Write(i, n) if !held.is_empty() => {
                    let i = i % held.len();
                    if let Held::Buf(buf) = &mut held[i] {
                        buf.put_bytes(0xAB, n);
                    }
                }
                Op::Freeze(i) if !held.is_empty() => {
                    let i = i % held.len();
                    if let Held::Buf(_) = &held[i] {
                        let Held::Buf(buf) = held.swap_remove(i) else { unreachable!() };
                        held.push(Held::Frozen(buf.freeze()));
                    }
                }
                Op::CloneFrozen(i) if !held.is_empty() => {
                    let i = i % held.len();
                    if let Held::Frozen(bytes) = &held[i] {
                        let part = bytes.slice(bytes.len() / 2..);
                        held.push(Held::Frozen(part));
                    }
                }
                Op::Drop(i) if !held.is_empty() => {
                    let i = i % held.len();
                    drop(held.swap_remove(i));
                }
                Op::SplitOff(i) if !held.is_empty() => {
                    let i = i % held.len();
                    if let Held::Buf(buf) = &mut held[i] {
                        let n = buf.len() / 2;
                        let head = buf.split_to(n).freeze();
                        held.push(Held::Frozen(head));
                    }
                }
                Op::Trim => {
                    pool.trim();
                }
                _ => {}
            }
            let stats = pool.stats();
            prop_assert!(stats.in_use_bytes <= budget, "in use {} > budget {}", stats.in_use_bytes, budget);
            prop_assert_eq!(
                stats.in_use_bytes as u64,
                stats.outstanding_bytes + stats.pooled_bytes as u64,
                "in use = outstanding + pooled"
            );
        }
        drop(held);
        pool.assert_no_outstanding();
        let stats = pool.stats();
        prop_assert_eq!(stats.in_use_bytes, stats.pooled_bytes);
    }
}
