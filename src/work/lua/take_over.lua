-- `take_over(claim, active; owner, lease_ms, member)`: a scan's take-over of a listed unit whose
-- owner's lease ran out (running, or being cancelled). Returns {state, epoch, payload,
-- checkpoint, attempts, failures, counts…}, or {} when there is nothing to take (a unit no longer
-- running is dropped from the list).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local key = KEYS[1]
local state = redis.call('HGET', key, 'state')
if state ~= 'running' and state ~= 'cancelling' then
  redis.call('ZREM', KEYS[2], ARGV[3])
  return {}
end
if tonumber(redis.call('HGET', key, 'lease_until') or '0') > now then return {} end
redis.call('HSET', key, 'owner', ARGV[1], 'lease_until', now + tonumber(ARGV[2]))
local epoch = redis.call('HINCRBY', key, 'epoch', 1)
local attempts = redis.call('HINCRBY', key, 'attempts', 1)
local out = {state, tostring(epoch), redis.call('HGET', key, 'payload') or '',
  redis.call('HGET', key, 'checkpoint') or '', tostring(attempts), redis.call('HGET', key, 'failures') or '0'}
local all = redis.call('HGETALL', key)
for i = 1, #all, 2 do
  if string.sub(all[i], 1, 2) == 'c:' then
    table.insert(out, string.sub(all[i], 3)); table.insert(out, all[i + 1])
  end
end
return out
