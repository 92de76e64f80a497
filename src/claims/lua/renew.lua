-- `renew(key, active; owner, lease_ms, window_s, payload, event_id, checkpoint)`. A missing hash
-- (Redis restarted without persistence) is written again, owned by us: we are still sending.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local owner = redis.call('HGET', KEYS[1], 'owner')
if not owner then
  redis.call('HSET', KEYS[1], 'state', 'running', 'owner', ARGV[1], 'lease_until', now + tonumber(ARGV[2]),
    'payload', ARGV[4], 'attempts', 1, 'checkpoint', ARGV[6])
  redis.call('ZADD', KEYS[2], now, ARGV[5])
  return 1
end
if owner ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'lease_until', now + tonumber(ARGV[2]))
return 1
