//! The deployment's rate for one provider, kept in Redis and changed only by two Lua scripts
//! (`TAKE` and `SLOW_DOWN`), so that every replica draws from one budget by Redis's own clock.
//! When Redis cannot be reached, [`LocalRate`] applies the same arithmetic to this replica alone.
//! The constants of the slow-down (how much, how often, how fast it recovers) live here.
//!
//! The algorithm is GCRA (a token bucket kept as one timestamp): `tat`, the theoretical arrival
//! time, moves `1 / rate` on for each permit; a take succeeds while `tat` stays within `burst` of
//! now. A `QUOTA_EXCEEDED` multiplies the rate by [`DECREASE`] (at most once per [`SLOW_DOWN_GAP`],
//! so that the 429s of one overshoot count once, never below [`FLOOR`]); it then recovers by
//! [`RECOVERY_PER_SECOND`] of the configured rate each second. The state expires a minute after
//! the last take, so an idle deployment starts again at its full rate.

use std::sync::LazyLock;
use std::time::{Duration, Instant};

use redis::Script;

/// The rate is multiplied by this on a `QUOTA_EXCEEDED`.
pub(crate) const DECREASE: f64 = 0.8;
/// 429s within this long of a slow-down are answers to the same overshoot: they do not slow again.
pub(crate) const SLOW_DOWN_GAP: Duration = Duration::from_secs(5);
/// The slowest the shared rate goes, as a share of the configured rate.
pub(crate) const FLOOR: f64 = 0.1;
/// The share of the configured rate regained each second after a slow-down (0.8 → 1 in 20 s).
pub(crate) const RECOVERY_PER_SECOND: f64 = 0.01;
/// How long the state of an idle rate is kept.
const IDLE_EXPIRY_MS: u64 = 60_000;

static TAKE_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(TAKE));
static SLOW_DOWN_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(SLOW_DOWN));

/// `take(key; rate, want, burst_ms, recovery, expiry_ms)` → `{granted, wait_ms, rate_now}`, the
/// floats as strings (Redis would truncate Lua numbers to integers).
const TAKE: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local rate, want, burst = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local h = redis.call('HMGET', KEYS[1], 'tat', 'factor', 'slowed_at')
local tat = tonumber(h[1]) or now
local factor = tonumber(h[2]) or 1
local slowed = tonumber(h[3]) or now
factor = math.min(1, factor + tonumber(ARGV[4]) * (now - slowed) / 1000)
local interval = 1000 / (rate * factor)
if tat < now then tat = now end
-- A whole batch or nothing: granting the one permit that fits would make every take one permit.
local room = math.floor((now + burst - tat) / interval + 1e-9)
if room < want then
  return {0, tostring(tat + want * interval - burst - now), tostring(rate * factor)}
end
local n = want
redis.call('HSET', KEYS[1], 'tat', tostring(tat + n * interval))
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return {n, '0', tostring(rate * factor)}
"#;

/// `slow_down(key; decrease, floor, gap_ms, recovery, expiry_ms)` → `{slowed (0|1), factor}`.
const SLOW_DOWN: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local h = redis.call('HMGET', KEYS[1], 'factor', 'slowed_at')
local factor = tonumber(h[1]) or 1
local slowed = tonumber(h[2])
if slowed then
  if now - slowed < tonumber(ARGV[3]) then return {0, tostring(factor)} end
  factor = math.min(1, factor + tonumber(ARGV[4]) * (now - slowed) / 1000)
end
factor = math.max(tonumber(ARGV[2]), factor * tonumber(ARGV[1]))
redis.call('HSET', KEYS[1], 'factor', tostring(factor), 'slowed_at', tostring(now))
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return {1, tostring(factor)}
"#;

/// What a take from the shared rate gave.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Take {
    /// This many permits (at least one), and the shared rate now, per second.
    Granted { permits: u32, rate: f64 },
    /// None yet: the next one is due after this long.
    Wait { wait: Duration, rate: f64 },
}

/// Takes `want` permits (all or none) from the rate at `key`, allowing `burst` of accumulated budget.
pub(super) async fn take(
    redis: &mut redis::aio::ConnectionManager,
    key: &str,
    rate: f64,
    want: u32,
    burst: Duration,
) -> redis::RedisResult<Take> {
    let (granted, wait_ms, rate_now): (u32, String, String) = TAKE_SCRIPT
        .key(key)
        .arg(rate)
        .arg(want)
        .arg(burst.as_millis() as u64)
        .arg(RECOVERY_PER_SECOND)
        .arg(IDLE_EXPIRY_MS)
        .invoke_async(redis)
        .await?;
    let rate = rate_now.parse().unwrap_or(rate);
    Ok(if granted > 0 {
        Take::Granted {
            permits: granted,
            rate,
        }
    } else {
        let ms = wait_ms.parse::<f64>().unwrap_or(1.0).max(0.0);
        Take::Wait {
            wait: Duration::from_secs_f64(ms / 1000.0),
            rate,
        }
    })
}

/// Slows the rate at `key` after a `QUOTA_EXCEEDED`; returns the new share of the configured
/// rate when this call slowed it, `None` when a recent slow-down already had.
pub(super) async fn slow_down(
    redis: &mut redis::aio::ConnectionManager,
    key: &str,
) -> redis::RedisResult<Option<f64>> {
    let (slowed, factor): (u32, String) = SLOW_DOWN_SCRIPT
        .key(key)
        .arg(DECREASE)
        .arg(FLOOR)
        .arg(SLOW_DOWN_GAP.as_millis() as u64)
        .arg(RECOVERY_PER_SECOND)
        .arg(IDLE_EXPIRY_MS)
        .invoke_async(redis)
        .await?;
    Ok((slowed == 1).then(|| factor.parse().unwrap_or(FLOOR)))
}

/// The same rate for this replica alone, while Redis cannot be reached.
#[derive(Debug)]
pub(super) struct LocalRate {
    tat: Instant,
    factor: f64,
    slowed_at: Option<Instant>,
}

impl LocalRate {
    pub(super) fn new(now: Instant) -> Self {
        Self {
            tat: now,
            factor: 1.0,
            slowed_at: None,
        }
    }

    fn factor(&self, now: Instant) -> f64 {
        let since = self
            .slowed_at
            .map_or(0.0, |at| now.saturating_duration_since(at).as_secs_f64());
        (self.factor + RECOVERY_PER_SECOND * since).min(1.0)
    }

    /// [`TAKE`] on this replica's clock.
    pub(super) fn take(&mut self, now: Instant, rate: f64, want: u32, burst: Duration) -> Take {
        let rate = rate * self.factor(now);
        let interval = 1.0 / rate;
        self.tat = self.tat.max(now);
        let ahead = self.tat.saturating_duration_since(now).as_secs_f64();
        let room = ((burst.as_secs_f64() - ahead) / interval + 1e-9).floor();
        if room < f64::from(want) {
            let wait = ahead + f64::from(want) * interval - burst.as_secs_f64();
            return Take::Wait {
                wait: Duration::from_secs_f64(wait.max(0.0)),
                rate,
            };
        }
        let permits = want;
        self.tat += Duration::from_secs_f64(interval * f64::from(permits));
        Take::Granted { permits, rate }
    }

    /// [`SLOW_DOWN`] on this replica's clock.
    pub(super) fn slow_down(&mut self, now: Instant) -> Option<f64> {
        if self
            .slowed_at
            .is_some_and(|at| now.saturating_duration_since(at) < SLOW_DOWN_GAP)
        {
            return None;
        }
        self.factor = (self.factor(now) * DECREASE).max(FLOOR);
        self.slowed_at = Some(now);
        Some(self.factor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_local_rate_grants_whole_batches_within_its_burst() {
        let start = Instant::now();
        let mut local = LocalRate::new(start);
        let burst = Duration::from_millis(500);
        for _ in 0..5 {
            assert!(matches!(
                local.take(start, 100.0, 10, burst),
                Take::Granted { permits: 10, .. }
            ));
        }
        let Take::Wait { wait, .. } = local.take(start, 100.0, 10, burst) else {
            panic!("the burst is spent");
        };
        assert!((wait.as_secs_f64() - 0.1).abs() < 1e-6, "{wait:?}");
        let later = start + Duration::from_millis(100);
        assert!(matches!(
            local.take(later, 100.0, 10, burst),
            Take::Granted { permits: 10, .. }
        ));
    }

    #[test]
    fn a_local_slow_down_counts_once_per_gap_and_recovers() {
        let start = Instant::now();
        let mut local = LocalRate::new(start);
        assert_eq!(local.slow_down(start), Some(DECREASE));
        assert_eq!(local.slow_down(start + Duration::from_secs(1)), None);
        let recovered = start + Duration::from_secs(30);
        assert!((local.factor(recovered) - 1.0).abs() < 1e-9);
    }
}
