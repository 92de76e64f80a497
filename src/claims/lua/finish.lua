-- `finish(key, active; owner, state, window_s, event_id, name, count, …)`: the counts are kept
-- as `c:<name>` for the API's event status.
local owner = redis.call('HGET', KEYS[1], 'owner')
if owner and owner ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'state', ARGV[2], 'owner', ARGV[1])
redis.call('HDEL', KEYS[1], 'payload', 'checkpoint', 'lease_until')
for i = 5, #ARGV, 2 do redis.call('HSET', KEYS[1], 'c:' .. ARGV[i], ARGV[i + 1]) end
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('ZREM', KEYS[2], ARGV[4])
return 1
