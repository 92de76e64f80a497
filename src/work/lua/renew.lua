-- `renew(claim, active [, parent]; owner, epoch, lease_ms, payload, member, checkpoint)`: extends
-- the lease of the run holding `epoch` and stores its checkpoint (a run holds new pushes while its
-- progress is not stored, so each renewal keeps it). Returns `renewed`, `recreated` (Redis had lost the claim,
-- restarted without persistence: written again as ours, since we are still the ones sending),
-- `cancelled` (it, or its parent event, is being cancelled: the lease is still extended, so
-- nobody takes it over while the run drains) or `lost` (another run holds it now).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local key, owner, epoch, lease = KEYS[1], ARGV[1], ARGV[2], tonumber(ARGV[3])
local held = redis.call('HGET', key, 'epoch')
if not held then
  redis.call('HSET', key, 'state', 'running', 'owner', owner, 'epoch', epoch, 'lease_until', now + lease,
    'payload', ARGV[4], 'attempts', 1, 'failures', 0, 'checkpoint', ARGV[6], 'started', now)
  if ARGV[5] ~= '' then redis.call('ZADD', KEYS[2], now, ARGV[5]) end
  return 'recreated'
end
if held ~= epoch or redis.call('HGET', key, 'owner') ~= owner then return 'lost' end
local state = redis.call('HGET', key, 'state')
if state ~= 'running' and state ~= 'cancelling' then return 'lost' end
redis.call('HSET', key, 'lease_until', now + lease, 'checkpoint', ARGV[6])
if state == 'cancelling' then return 'cancelled' end
if KEYS[3] then
  local ps = redis.call('HGET', KEYS[3], 'state')
  if ps == 'cancelling' or ps == 'cancelled' then
    redis.call('HSET', key, 'state', 'cancelling')
    return 'cancelled'
  end
end
return 'renewed'
