-- Create a job record, its first event and its place in the owner's index, and
-- tell how many jobs are ahead of it in its RQ queue. Runs inside the same
-- MULTI as RQ's enqueue, which follows it, so the count is exact. The event
-- goes to the owner's feed too, so that the streams of many jobs see the job
-- join.
--
-- KEYS[1] job hash   KEYS[2] event stream   KEYS[3] owner index   KEYS[4] RQ queue list
-- KEYS[5] the counters of `web/metrics.py`   KEYS[6] the owner's feed   KEYS[7] its marker (`Keys.feed_primary`)
-- ARGV[1] job id   ARGV[2] the owner index entry ('{created_ms:015d}:{id}')   ARGV[3] ts (ISO 8601)
-- ARGV[4] message template with '{n}' for the number ahead   ARGV[5] the owner's feed channel
-- ARGV[6] feed entries kept   ARGV[7..] field, value pairs of the record
local ahead = redis.call('LLEN', KEYS[4])
local message = string.gsub(ARGV[4], '{n}', tostring(ahead))
local flat = {'seq', 1, 'queue_position', ahead, 'message', message}
if primary() then flat[#flat + 1] = 'primary'; flat[#flat + 1] = primary() end  -- (see SEQ_JUMP in lib.lua)
for i = 7, #ARGV do flat[#flat + 1] = ARGV[i] end
redis.call('HSET', KEYS[1], unpack(flat))
redis.call('ZADD', KEYS[3], 0, ARGV[2])
local rec = redis.call('HMGET', KEYS[1], 'status', 'progress', 'stage', 'attempt')
local data, stored = state_json(rec[1], rec[2], message, rec[3], rec[4], ahead, '', ARGV[3])
redis.call('XADD', KEYS[2], '0-1', 'e', 'state', 'd', stored)
local stats = KEYS[5]
redis.call('HINCRBY', stats, 'submitted|' .. redis.call('HGET', KEYS[1], 'type'), 1)
redis.call('HINCRBY', stats, 'events', 1)
if primary() then carry_feed(KEYS[6], KEYS[7]) end
local n = redis.call('XADD', KEYS[6], 'MAXLEN', '~', ARGV[6], '0-*', 'j', ARGV[1], 's', 1)
redis.call('PUBLISH', ARGV[5], string.sub(n, 3) .. ' ' .. ARGV[1] .. ' 1 state ' .. data)
return ahead
