-- Give free slots of an owner's to the jobs waiting for them, in order: each
-- one promoted takes a slot, becomes `Queued` and is due in the delayed set at
-- once, from where it goes to RQ (the caller does that at once, or else the
-- janitor). Returns the ids promoted.
--
-- KEYS[1] the owner's slots (set)   KEYS[2] the owner's waiting list   KEYS[3] owners with waiting jobs
-- KEYS[4] the delayed set   KEYS[5] the counters of `metrics.py`
-- (The promoted jobs' own keys are built here from the prefix, as `keys.py` lays them out: which jobs
-- they are is only known once they leave the waiting list.)
-- ARGV[1] the limit   ARGV[2] the key prefix   ARGV[3] the owner   ARGV[4] ts   ARGV[5] events kept
-- ARGV[6] now (ms)
local promoted = {}
while redis.call('SCARD', KEYS[1]) < tonumber(ARGV[1]) do
  local id = redis.call('LPOP', KEYS[2])
  if not id then break end
  local job = ARGV[2] .. ':job:{' .. id .. '}'
  local cur = redis.call('HMGET', job, 'status', 'stage', 'progress', 'attempt', 'seq')
  if cur[1] == 'queued' and cur[2] == 'waiting' then
    redis.call('SADD', KEYS[1], id)
    redis.call('ZADD', KEYS[4], ARGV[6], id)
    local seq = tonumber(cur[5]) + 1
    redis.call('HSET', job, 'stage', 'queued', 'message', 'Queued', 'queue_position', '', 'seq', seq)
    local data, stored = state_json('queued', cur[3], 'Queued', 'queued', cur[4], '', '', ARGV[4])
    append_event(ARGV[2] .. ':ev:{' .. id .. '}', KEYS[5], ARGV[2] .. ':ch:{' .. id .. '}', seq, 'state', data, ARGV[5],
                 stored)
    promoted[#promoted + 1] = id
  end
end
if redis.call('LLEN', KEYS[2]) == 0 then redis.call('SREM', KEYS[3], ARGV[3]) end
return promoted
