-- `checkpoint(key; owner, checkpoint)`: 1 written, 0 owned by another, -1 no claim at all
-- (Redis lost it: the caller renews, which writes it again).
local owner = redis.call('HGET', KEYS[1], 'owner')
if not owner then return -1 end
if owner ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'checkpoint', ARGV[2])
return 1
