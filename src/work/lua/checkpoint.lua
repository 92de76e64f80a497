-- `checkpoint(claim; owner, epoch, checkpoint, name, count, …)`: stores where the run stands and
-- its counts so far (`c:<name>`, what the event's status shows while it runs). 1 written, 0 held
-- by another run, -1 no claim at all (Redis lost it: the caller renews, which writes it again).
-- Never touches the lease: only a renewal proves the run may go on sending.
local held = redis.call('HGET', KEYS[1], 'epoch')
if not held then return -1 end
if held ~= ARGV[2] or redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then return 0 end
-- One HSET for the checkpoint and every count: it runs every C/5 pushes, and each call from Lua
-- is a command's worth of work.
local fields = {'checkpoint', ARGV[3]}
for i = 4, #ARGV, 2 do
  fields[#fields + 1] = 'c:' .. ARGV[i]
  fields[#fields + 1] = ARGV[i + 1]
end
redis.call('HSET', KEYS[1], unpack(fields))
return 1
