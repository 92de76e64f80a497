-- `take_over(key, active; owner, lease_ms, event_id)`: only a running event whose lease ran out.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local state = redis.call('HGET', KEYS[1], 'state')
if not state or state ~= 'running' then
  redis.call('ZREM', KEYS[2], ARGV[3])
  return {}
end
if tonumber(redis.call('HGET', KEYS[1], 'lease_until') or '0') > now then return {} end
redis.call('HSET', KEYS[1], 'owner', ARGV[1], 'lease_until', now + tonumber(ARGV[2]))
local attempts = redis.call('HINCRBY', KEYS[1], 'attempts', 1)
return {redis.call('HGET', KEYS[1], 'payload') or '', redis.call('HGET', KEYS[1], 'checkpoint') or '', attempts}
