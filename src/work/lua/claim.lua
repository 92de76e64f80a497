-- `claim(claim, active, recent [, parent]; owner, lease_ms, window_s, payload, member, recent_max)`
-- Returns {verdict, epoch, checkpoint, attempts, failures, counts...}. Verdicts: `claimed` (new),
-- `resumed` (its owner's lease ran out: ours now, a new epoch), `busy`, `done` (finished within
-- the window, or cancelled), `cancel` (ours now, to be finished as cancelled: its parent event or
-- itself was cancelled). A unit listed by `member` is kept in `active` until it is finished, so a
-- scan can take it over; units that come back through a stream pass '' and are not listed.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local key, owner, lease = KEYS[1], ARGV[1], tonumber(ARGV[2])
local function counts()
  local out = {}
  local all = redis.call('HGETALL', key)
  for i = 1, #all, 2 do
    if string.sub(all[i], 1, 2) == 'c:' then
      table.insert(out, string.sub(all[i], 3)); table.insert(out, all[i + 1])
    end
  end
  return out
end
local function reply(verdict)
  local out = {verdict, redis.call('HGET', key, 'epoch') or '0', redis.call('HGET', key, 'checkpoint') or '',
    redis.call('HGET', key, 'attempts') or '0', redis.call('HGET', key, 'failures') or '0'}
  for _, v in ipairs(counts()) do table.insert(out, v) end
  return out
end
local parent_cancelled = false
if KEYS[4] then
  local ps = redis.call('HGET', KEYS[4], 'state')
  parent_cancelled = (ps == 'cancelling' or ps == 'cancelled')
end
local state = redis.call('HGET', key, 'state')
if not state then
  redis.call('HSET', key, 'state', 'running', 'owner', owner, 'epoch', 1, 'lease_until', now + lease,
    'payload', ARGV[4], 'attempts', 1, 'failures', 0, 'checkpoint', '', 'started', now)
  if ARGV[5] ~= '' then
    redis.call('ZADD', KEYS[2], now, ARGV[5])
    redis.call('ZADD', KEYS[3], now, ARGV[5])
    redis.call('ZREMRANGEBYRANK', KEYS[3], 0, -(tonumber(ARGV[6]) + 1))
  end
  if parent_cancelled then
    redis.call('HSET', key, 'state', 'cancelling')
    return reply('cancel')
  end
  return reply('claimed')
end
if state ~= 'running' and state ~= 'cancelling' then return reply('done') end
if tonumber(redis.call('HGET', key, 'lease_until') or '0') > now then return reply('busy') end
redis.call('HSET', key, 'owner', owner, 'lease_until', now + lease)
redis.call('HINCRBY', key, 'epoch', 1)
redis.call('HINCRBY', key, 'attempts', 1)
if state == 'cancelling' or parent_cancelled then
  redis.call('HSET', key, 'state', 'cancelling')
  return reply('cancel')
end
return reply('resumed')
