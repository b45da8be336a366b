-- A job's record, its current output items and, while it waits in an RQ queue,
-- how many jobs are ahead of it: one consistent read.
--
-- KEYS[1] job hash   KEYS[2] output item list
-- ARGV[1] the RQ queue key prefix ('rq:queue:')
-- Returns nil for an unknown job, else {flat record, items, queue position or nil}.
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
  position = redis.call('LPOS', ARGV[1] .. queue, rq_id)
end
return {rec, redis.call('LRANGE', KEYS[2], 0, -1), position}
