//! Capped exponential backoff with full jitter, for reconnects and retries, and [`retry`], the
//! one loop that retries a failing call with it.
//!
//! Full jitter (a uniform delay between zero and the exponential cap) spreads out the replicas
//! and tasks that failed together, so they do not come back in lockstep and fail together again.

use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max: max.max(initial),
            attempt: 0,
        }
    }

    /// The cap for the current attempt: `initial · 2^attempt`, at most `max`.
    pub fn ceiling(&self) -> Duration {
        let factor = 2u32.saturating_pow(self.attempt.min(30));
        self.initial.saturating_mul(factor).min(self.max)
    }

    /// The delay before the next attempt, drawn uniformly from zero to the ceiling.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self.ceiling();
        self.attempt = self.attempt.saturating_add(1);
        ceiling.mul_f64(fastrand::f64())
    }

    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    pub fn attempts(&self) -> u32 {
        self.attempt
    }
}

/// Calls `op` until it succeeds or `again` gives up. After each failure `again` gets the error,
/// the number of the attempt that failed and the delay before the next one (to log them), and
/// says whether to try again; the last error is returned when it does not.
pub async fn retry<T, E, Fut>(
    mut backoff: Backoff,
    mut op: impl FnMut() -> Fut,
    mut again: impl FnMut(&E, u32, Duration) -> bool,
) -> Result<T, E>
where
    Fut: Future<Output = Result<T, E>>,
{
    let mut attempt = 0;
    loop {
        attempt += 1;
        let e = match op().await {
            Ok(value) => return Ok(value),
            Err(e) => e,
        };
        let delay = backoff.next_delay();
        if !again(&e, attempt, delay) {
            return Err(e);
        }
        tokio::time::sleep(delay).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ceiling_doubles_up_to_the_cap_and_delays_stay_under_it() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let mut ceilings = Vec::new();
        for _ in 0..6 {
            let ceiling = b.ceiling();
            ceilings.push(ceiling.as_millis());
            assert!(b.next_delay() <= ceiling);
        }
        assert_eq!(ceilings, [100, 200, 400, 800, 1000, 1000]);
        b.reset();
        assert_eq!(b.ceiling(), Duration::from_millis(100));
    }

    #[test]
    fn a_huge_attempt_count_does_not_overflow() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        for _ in 0..100 {
            b.next_delay();
        }
        assert_eq!(b.ceiling(), Duration::from_secs(60));
    }

    #[tokio::test(start_paused = true)]
    async fn retry_stops_at_success_or_when_told_to_give_up() {
        let backoff = || Backoff::new(Duration::from_millis(200), Duration::from_secs(2));
        let mut calls = 0;
        let done: Result<u32, u32> = retry(
            backoff(),
            || {
                calls += 1;
                let n = calls;
                async move { if n < 3 { Err(n) } else { Ok(n) } }
            },
            |_, _, delay| delay <= Duration::from_secs(2),
        )
        .await;
        assert_eq!(done, Ok(3));
        let mut failed = Vec::new();
        let done: Result<(), &str> = retry(
            backoff(),
            || async { Err("down") },
            |e, attempt, _| {
                failed.push((*e, attempt));
                attempt < 4
            },
        )
        .await;
        assert_eq!(done, Err("down"));
        assert_eq!(failed, [("down", 1), ("down", 2), ("down", 3), ("down", 4)]);
    }
}
