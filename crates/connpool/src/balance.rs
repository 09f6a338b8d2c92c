//! Choosing an endpoint.

use sssonector_core::Rng;

/// How connections are spread over endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Balance {
    /// Each endpoint in turn.
    #[default]
    RoundRobin,
    /// The endpoint with the fewest connections in use or being opened.
    LeastConnections,
    /// Smooth weighted round-robin (as nginx does): each endpoint in proportion to its weight,
    /// interleaved rather than in runs.
    Weighted,
    /// Two endpoints drawn at random; the one with fewer connections in use wins.
    PowerOfTwoChoices,
}

/// What the balancer knows of one endpoint.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Candidate {
    pub(crate) index: usize,
    pub(crate) load: usize,
    pub(crate) weight: u32,
}

/// Balancer state kept across choices.
#[derive(Debug, Default)]
pub(crate) struct Balancer {
    cursor: usize,
    /// Smooth weighted round-robin's current weights, by endpoint index.
    current: Vec<i64>,
}

impl Balancer {
    /// Picks among `candidates` (not empty).
    pub(crate) fn pick(&mut self, balance: Balance, candidates: &[Candidate], rng: &Rng) -> usize {
        debug_assert!(!candidates.is_empty());
        match balance {
            Balance::RoundRobin => {
                // The first candidate at or after the cursor, so skipped endpoints keep order.
                let chosen = candidates
                    .iter()
                    .find(|c| c.index >= self.cursor)
                    .unwrap_or(&candidates[0])
                    .index;
                self.cursor = chosen + 1;
                chosen
            }
            Balance::LeastConnections => {
                // Ties go round-robin, so equal endpoints share the load.
                let least = candidates.iter().map(|c| c.load).min().unwrap_or(0);
                let tied: Vec<Candidate> = candidates
                    .iter()
                    .filter(|c| c.load == least)
                    .copied()
                    .collect();
                self.pick(Balance::RoundRobin, &tied, rng)
            }
            Balance::Weighted => {
                let max = candidates.iter().map(|c| c.index).max().unwrap_or(0);
                if self.current.len() <= max {
                    self.current.resize(max + 1, 0);
                }
                let total: i64 = candidates.iter().map(|c| i64::from(c.weight)).sum();
                let mut best = candidates[0].index;
                for c in candidates {
                    self.current[c.index] += i64::from(c.weight);
                    if self.current[c.index] > self.current[best] {
                        best = c.index;
                    }
                }
                self.current[best] -= total;
                best
            }
            Balance::PowerOfTwoChoices => {
                let n = candidates.len() as u64;
                let a = &candidates[usize::try_from(rng.next_u64() % n).unwrap_or(0)];
                let b = &candidates[usize::try_from(rng.next_u64() % n).unwrap_or(0)];
                if b.load < a.load { b.index } else { a.index }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(loads: &[usize], weights: &[u32]) -> Vec<Candidate> {
        loads
            .iter()
            .zip(weights)
            .enumerate()
            .map(|(index, (&load, &weight))| Candidate {
                index,
                load,
                weight,
            })
            .collect()
    }

    #[test]
    fn round_robin_takes_turns_and_skips_missing_endpoints() {
        let mut b = Balancer::default();
        let rng = Rng::with_seed(1);
        let c = all(&[0, 0, 0], &[1, 1, 1]);
        let picks: Vec<_> = (0..6)
            .map(|_| b.pick(Balance::RoundRobin, &c, &rng))
            .collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2]);
        let without_1 = [c[0], c[2]];
        let picks: Vec<_> = (0..4)
            .map(|_| b.pick(Balance::RoundRobin, &without_1, &rng))
            .collect();
        assert_eq!(picks, [0, 2, 0, 2]);
    }

    #[test]
    fn weighted_is_proportional_and_interleaved() {
        let mut b = Balancer::default();
        let rng = Rng::with_seed(1);
        let c = all(&[0, 0, 0], &[5, 1, 1]);
        let picks: Vec<_> = (0..7)
            .map(|_| b.pick(Balance::Weighted, &c, &rng))
            .collect();
        assert_eq!(picks.iter().filter(|&&p| p == 0).count(), 5);
        assert_eq!(picks, [0, 0, 1, 0, 2, 0, 0], "nginx's smooth sequence");
    }

    #[test]
    fn least_connections_and_two_choices_prefer_the_idle_endpoint() {
        let mut b = Balancer::default();
        let rng = Rng::with_seed(7);
        let c = all(&[5, 0, 5], &[1, 1, 1]);
        assert_eq!(b.pick(Balance::LeastConnections, &c, &rng), 1);
        let mut wins = 0;
        for _ in 0..300 {
            if b.pick(Balance::PowerOfTwoChoices, &c, &rng) == 1 {
                wins += 1;
            }
        }
        // Endpoint 1 wins whenever it is drawn at least once: 1 − (2/3)² ≈ 56 %.
        assert!((130..210).contains(&wins), "{wins}");
    }
}
