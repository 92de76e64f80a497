-- `cancel_pushes(entries, stream; window_s, group, push_prefix)`: stops the `POST /push`
-- notifications of one request (its `Idempotency-Key`'s entries). One no replica has started is
-- settled here, as cancelled, and its entry dropped from the backlog; a running one becomes
-- `cancelling`, and its run finds out at its next renewal. Returns {settled, stopping, done}, or
-- {} when the key names no request within the window.
local ids = redis.call('LRANGE', KEYS[1], 0, -1)
if #ids == 0 then return {} end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local settled, stopping, done = 0, 0, 0
for _, id in ipairs(ids) do
  local claim = ARGV[3] .. id
  local state = redis.call('HGET', claim, 'state')
  if not state then
    redis.call('HSET', claim, 'state', 'cancelled', 'finished', now, 'epoch', 0)
    redis.call('EXPIRE', claim, ARGV[1])
    redis.pcall('XACK', KEYS[2], ARGV[2], id)
    redis.pcall('XDEL', KEYS[2], id)
    settled = settled + 1
  elseif state == 'running' then
    redis.call('HSET', claim, 'state', 'cancelling', 'cancelled_at', now)
    stopping = stopping + 1
  elseif state == 'cancelling' then
    stopping = stopping + 1
  elseif state == 'cancelled' then
    settled = settled + 1
  else
    done = done + 1
  end
end
return {settled, stopping, done}
