//! A group's housekeeping: a replica leaving its group ([`StreamReader::leave`]), the consumers
//! that left without leaving removed ([`StreamReader::forget_departed`]), and a stream several
//! groups read trimmed up to what all of them acknowledged ([`StreamReader::trim_acknowledged`]).
//! None of it may drop an entry some group still needs: entries pending with a consumer would be
//! lost with it, so a consumer with any is never removed.

use std::collections::HashMap;
use std::time::Duration;

use tracing::{info, warn};

use super::{StreamError, StreamHandle, StreamReader};

/// A consumer idle this long with nothing pending left without saying so (killed).
const DEPARTED_AFTER: Duration = Duration::from_secs(24 * 3600);

impl StreamReader {
    /// Leaves the group when nothing is pending with this consumer (a replica stopping): what
    /// is pending stays, for a takeover.
    pub(crate) async fn leave(&self) {
        let h = &self.handle;
        let pending = pending_with(h, &h.consumer).await;
        if matches!(pending, Ok(0)) {
            let left: redis::RedisResult<i64> = redis::cmd("XGROUP")
                .arg("DELCONSUMER")
                .arg(&h.key)
                .arg(&h.group)
                .arg(&h.consumer)
                .query_async(&mut h.redis.clone())
                .await;
            if let Err(e) = left {
                warn!(stream = %h.key, error = %e, "Could not leave the stream's consumer group.");
            }
        }
    }

    /// Removes the consumers that left without leaving (killed replicas) once idle for a day
    /// with nothing pending.
    pub(crate) async fn forget_departed(&self) -> Result<usize, StreamError> {
        let h = &self.handle;
        let consumers: Vec<HashMap<String, redis::Value>> = redis::cmd("XINFO")
            .arg("CONSUMERS")
            .arg(&h.key)
            .arg(&h.group)
            .query_async(&mut h.redis.clone())
            .await?;
        let mut forgotten = 0;
        for consumer in consumers {
            let int = |name: &str| {
                consumer
                    .get(name)
                    .and_then(|v| redis::from_redis_value_ref::<i64>(v).ok())
                    .unwrap_or(0)
            };
            let name = consumer
                .get("name")
                .and_then(|v| redis::from_redis_value_ref::<String>(v).ok())
                .unwrap_or_default();
            let idle = Duration::from_millis(int("idle").max(0) as u64);
            if int("pending") == 0 && idle >= DEPARTED_AFTER && name != h.consumer {
                let _: i64 = redis::cmd("XGROUP")
                    .arg("DELCONSUMER")
                    .arg(&h.key)
                    .arg(&h.group)
                    .arg(&name)
                    .query_async(&mut h.redis.clone())
                    .await?;
                forgotten += 1;
            }
        }
        if forgotten > 0 {
            info!(stream = %h.key, forgotten, "Removed consumers that left the group without leaving.");
        }
        Ok(forgotten)
    }

    /// Trims a stream read by several groups (one per send mode) up to the oldest entry some
    /// group has not read or not acknowledged: acknowledged by all, an entry is gone.
    pub(crate) async fn trim_acknowledged(&self) -> Result<(), StreamError> {
        let h = &self.handle;
        let _: i64 = redis::Script::new(TRIM)
            .key(&h.key)
            .invoke_async(&mut h.redis.clone())
            .await?;
        Ok(())
    }
}

/// `trim(stream)`: the lowest of each group's oldest pending entry, or its last delivered one
/// plus one when nothing is pending; entries below it are acknowledged by every group.
const TRIM: &str = r#"
local groups = redis.call('XINFO', 'GROUPS', KEYS[1])
local function less(a, b)
  local am, as = string.match(a, '(%d+)-(%d+)')
  local bm, bs = string.match(b, '(%d+)-(%d+)')
  am, as, bm, bs = tonumber(am), tonumber(as), tonumber(bm), tonumber(bs)
  return am < bm or (am == bm and as < bs)
end
local keep = nil
for _, g in ipairs(groups) do
  local name, last = nil, nil
  for i = 1, #g, 2 do
    if g[i] == 'name' then name = g[i + 1] end
    if g[i] == 'last-delivered-id' then last = g[i + 1] end
  end
  local pending = redis.call('XPENDING', KEYS[1], name)
  local oldest = pending[2]
  if not oldest then
    local ms, seq = string.match(last, '(%d+)-(%d+)')
    oldest = ms .. '-' .. (tonumber(seq) + 1)
  end
  if not keep or less(oldest, keep) then keep = oldest end
end
if not keep then return 0 end
return redis.call('XTRIM', KEYS[1], 'MINID', keep)
"#;

async fn pending_with(h: &StreamHandle, consumer: &str) -> Result<i64, StreamError> {
    let pending: Vec<redis::Value> = redis::cmd("XPENDING")
        .arg(&h.key)
        .arg(&h.group)
        .arg("-")
        .arg("+")
        .arg(1)
        .arg(consumer)
        .query_async(&mut h.redis.clone())
        .await?;
    Ok(pending.len() as i64)
}
