-- `finish_job(claim, totals, jobs; owner, epoch, state, window_s, job, group, entry, ttl_s, name,
-- count, …)`: a job's end in one step, by the run that holds `epoch`: its claim `done` or
-- `cancelled` with its counts, the counts added once to the event's totals (`t:<name>`, guarded by
-- `j:<job>`, so a job finished twice counts once), and its stream entry acknowledged and deleted.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local held = redis.call('HGET', KEYS[1], 'epoch')
if held and (held ~= ARGV[2] or redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'state', ARGV[3], 'owner', ARGV[1], 'epoch', ARGV[2], 'finished', now)
redis.call('HDEL', KEYS[1], 'checkpoint', 'lease_until')
for i = 9, #ARGV, 2 do redis.call('HSET', KEYS[1], 'c:' .. ARGV[i], ARGV[i + 1]) end
redis.call('EXPIRE', KEYS[1], ARGV[4])
if redis.call('HSETNX', KEYS[2], 'j:' .. ARGV[5], 1) == 1 then
  for i = 9, #ARGV, 2 do redis.call('HINCRBY', KEYS[2], 't:' .. ARGV[i], ARGV[i + 1]) end
  redis.call('HINCRBY', KEYS[2], 'done', 1)
  if redis.call('TTL', KEYS[2]) < 0 then redis.call('EXPIRE', KEYS[2], ARGV[8]) end
end
if ARGV[7] ~= '' then
  redis.pcall('XACK', KEYS[3], ARGV[6], ARGV[7])
  redis.pcall('XDEL', KEYS[3], ARGV[7])
end
return 1
