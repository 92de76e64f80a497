-- `plan(plan, totals, jobs, claim; owner, epoch, ranges, ttl_s, event_id, payload, done, name,
-- count, …)`: a split event's jobs, planned once. `ranges` is `after:upto,…` (the last `upto`
-- empty: open-ended). With no plan yet, the plan is stored, the event's totals are told how many
-- jobs there are, and one stream entry per job is added, all in this one step: a split that
-- fails part-way leaves nothing, and a redo finds the stored plan and keeps its cut points.
-- `done` (`3,5`) and the counts restore the totals of jobs finished before Redis lost them; those
-- jobs are not queued again. Returns {'planned', ranges} or {'existing', ranges}, or {'lost'}.
local held = redis.call('HGET', KEYS[4], 'epoch')
if held and (held ~= ARGV[2] or redis.call('HGET', KEYS[4], 'owner') ~= ARGV[1]) then return {'lost'} end
local existing = redis.call('HGET', KEYS[1], 'ranges')
if existing then return {'existing', existing} end
local done = {}
local finished = 0
for n in string.gmatch(ARGV[7], '%d+') do done[tonumber(n)] = true; finished = finished + 1 end
redis.call('HSET', KEYS[1], 'ranges', ARGV[3])
local n = 0
for after, upto in string.gmatch(ARGV[3], '(%-?%d+):(%-?%d*)') do
  if not done[n] then
    local id = redis.call('XADD', KEYS[3], '*', 'event_id', ARGV[5], 'job', n, 'after', after,
      'upto', upto, 'event', ARGV[6])
    redis.call('HSET', KEYS[1], 'e:' .. n, id)
  else
    redis.call('HSET', KEYS[2], 'j:' .. n, 1)
  end
  n = n + 1
end
redis.call('HSET', KEYS[2], 'jobs', n)
if finished > 0 then
  redis.call('HSET', KEYS[2], 'done', finished)
  for i = 8, #ARGV, 2 do redis.call('HSET', KEYS[2], 't:' .. ARGV[i], ARGV[i + 1]) end
end
redis.call('HSET', KEYS[4], 'jobs', n)
redis.call('EXPIRE', KEYS[1], ARGV[4])
redis.call('EXPIRE', KEYS[2], ARGV[4])
return {'planned', ARGV[3]}
