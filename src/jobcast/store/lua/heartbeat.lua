-- A running attempt's heartbeat: push its deadline in the running set out, if
-- the job is still running that attempt. Returns 1, or 0 when the attempt is
-- over (an old context must not keep a newer attempt's deadline alive).
--
-- KEYS[1] job hash   KEYS[2] running set
-- ARGV[1] job id   ARGV[2] attempt   ARGV[3] new deadline (ms)
local cur = redis.call('HMGET', KEYS[1], 'status', 'attempt')
if cur[1] ~= 'running' or cur[2] ~= ARGV[2] then return 0 end
redis.call('ZADD', KEYS[2], 'XX', ARGV[3], ARGV[1])
return 1
