-- A job's record, its current output items and, while it waits in the RQ
-- queue, how many jobs are ahead of it: one consistent read.
--
-- KEYS[1] job hash   KEYS[2] output item list   KEYS[3] the RQ queue jobs are enqueued on (`JOBCAST_QUEUE`)
-- ARGV[1] that queue's name
-- Returns nil for an unknown job, else {flat record, items, queue position or nil}; a queued job that
-- waits in another queue (enqueued before `JOBCAST_QUEUE` changed) gets its queue's name instead of
-- the position, for the caller to look it up there.
local rec = redis.call('HGETALL', KEYS[1])
if #rec == 0 then return nil end
local status, queue, rq_id
for i = 1, #rec, 2 do
  local f = rec[i]
  if f == 'status' then status = rec[i + 1]
  elseif f == 'queue' then queue = rec[i + 1]
  elseif f == 'rq_id' then rq_id = rec[i + 1] end
end
local position = false
if status == 'queued' and queue and rq_id then
  if queue ~= ARGV[1] then return {rec, redis.call('LRANGE', KEYS[2], 0, -1), false, queue} end
  position = redis.call('LPOS', KEYS[3], rq_id)
end
return {rec, redis.call('LRANGE', KEYS[2], 0, -1), position}
