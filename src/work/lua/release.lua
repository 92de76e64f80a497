-- `release(claim; owner, epoch, failed, checkpoint, name, count, …)`: the run stops unfinished.
-- Its checkpoint and counts are stored and the lease ends now, so another run resumes at once; a
-- run that failed counts one failure (resumes after a stop do not count against the limit).
local held = redis.call('HGET', KEYS[1], 'epoch')
if not held or held ~= ARGV[2] or redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'checkpoint', ARGV[4], 'lease_until', 0)
if ARGV[3] == '1' then redis.call('HINCRBY', KEYS[1], 'failures', 1) end
for i = 5, #ARGV, 2 do redis.call('HSET', KEYS[1], 'c:' .. ARGV[i], ARGV[i + 1]) end
return 1
