-- `finish(claim, active [, stream]; owner, epoch, state, window_s, member, group, entry, name,
-- count, …)`: the run's end, recorded once by the run that holds `epoch`: `done`, `failed` or
-- `cancelled` with its counts (`c:<name>`), kept for the dedup window, no longer active. When a
-- stream entry carried the unit, it is acknowledged and deleted in the same step (one group reads
-- that stream: an acknowledged entry is pending nowhere). A unit being cancelled that ends `done`
-- ends `cancelled`: the cancel came before its run's renewal told it (a split event whose jobs,
-- told first, ended while its coordinator looked away), and the cancel's answer promised that end.
-- Returns the state recorded, or '' when another run holds the unit.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local held = redis.call('HGET', KEYS[1], 'epoch')
if held and (held ~= ARGV[2] or redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1]) then return '' end
local state = ARGV[3]
if state == 'done' and redis.call('HGET', KEYS[1], 'state') == 'cancelling' then state = 'cancelled' end
redis.call('HSET', KEYS[1], 'state', state, 'owner', ARGV[1], 'epoch', ARGV[2], 'finished', now)
redis.call('HDEL', KEYS[1], 'checkpoint', 'lease_until')
for i = 8, #ARGV, 2 do redis.call('HSET', KEYS[1], 'c:' .. ARGV[i], ARGV[i + 1]) end
redis.call('EXPIRE', KEYS[1], ARGV[4])
if ARGV[5] ~= '' then redis.call('ZREM', KEYS[2], ARGV[5]) end
if KEYS[3] and ARGV[7] ~= '' then
  redis.pcall('XACK', KEYS[3], ARGV[6], ARGV[7])
  redis.pcall('XDEL', KEYS[3], ARGV[7])
end
return state
