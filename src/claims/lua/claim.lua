-- `claim(key, active; owner, lease_ms, window_s, payload, event_id)`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local state = redis.call('HGET', KEYS[1], 'state')
if not state then
  -- No expiry while running: a long event must not lose its claim. FINISH sets the window.
  redis.call('HSET', KEYS[1], 'state', 'running', 'owner', ARGV[1], 'lease_until', now + tonumber(ARGV[2]),
    'payload', ARGV[4], 'attempts', 1, 'checkpoint', '')
  redis.call('ZADD', KEYS[2], now, ARGV[5])
  return {'claimed', '', 1}
end
if state ~= 'running' then return {'done', '', 0} end
if tonumber(redis.call('HGET', KEYS[1], 'lease_until') or '0') > now then return {'busy', '', 0} end
redis.call('HSET', KEYS[1], 'owner', ARGV[1], 'lease_until', now + tonumber(ARGV[2]))
local attempts = redis.call('HINCRBY', KEYS[1], 'attempts', 1)
return {'resumed', redis.call('HGET', KEYS[1], 'checkpoint') or '', attempts}
