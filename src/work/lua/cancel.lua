-- `cancel(claim, plan, totals, jobs, queued; window_s, group, job_prefix, event_id)`: stops an
-- event. A running one becomes `cancelling`: every run of it (the event's, its jobs') finds out
-- at its next renewal, stops handing out pushes, and finishes as `cancelled` with its counts. The
-- jobs no replica has started are settled here, as cancelled, and their stream entries dropped.
-- An event posted over HTTP and not yet claimed is `cancelled` at once, so no replica runs it.
-- Returns `cancelling` (begun now), `already` (begun before), `cancelled`, `done` (too late) or
-- `unknown`.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local state = redis.call('HGET', KEYS[1], 'state')
if not state then
  if redis.call('EXISTS', KEYS[5]) == 0 then return 'unknown' end
  redis.call('HSET', KEYS[1], 'state', 'cancelled', 'finished', now, 'epoch', 0)
  redis.call('EXPIRE', KEYS[1], ARGV[1])
  return 'cancelled'
end
if state == 'done' or state == 'failed' then return 'done' end
if state == 'cancelling' then return 'already' end
if state == 'cancelled' then return 'cancelled' end
redis.call('HSET', KEYS[1], 'state', 'cancelling', 'cancelled_at', now)
local ranges = redis.call('HGET', KEYS[2], 'ranges')
if ranges then
  local n = 0
  for _ in string.gmatch(ranges, '(%-?%d+):(%-?%d*)') do
    local job = ARGV[3] .. n .. ':' .. ARGV[4]
    if redis.call('EXISTS', job) == 0 then
      redis.call('HSET', job, 'state', 'cancelled', 'finished', now, 'epoch', 0)
      redis.call('EXPIRE', job, ARGV[1])
      if redis.call('HSETNX', KEYS[3], 'j:' .. n, 1) == 1 then redis.call('HINCRBY', KEYS[3], 'done', 1) end
      local entry = redis.call('HGET', KEYS[2], 'e:' .. n)
      if entry then
        redis.pcall('XACK', KEYS[4], ARGV[2], entry)
        redis.pcall('XDEL', KEYS[4], entry)
      end
    end
    n = n + 1
  end
end
return 'cancelling'
