-- An attempt starts (`runner.Attempt.start`): the job becomes `running` with
-- no output, its wait goes into the `wait` histogram, and its heartbeat
-- deadline into the running set. When its owner runs its limit of jobs already
-- (or has jobs waiting for a slot ahead of it), it is parked at the end of the
-- owner's waiting list instead (outcome 'parked'), to be promoted when a slot
-- comes free (`promote.lua`).
--
-- KEYS[1] job hash   KEYS[2] event stream   KEYS[3] output item list   KEYS[4] running jobs (zset)
-- KEYS[5] jobs handed to RQ and not started yet (zset)   KEYS[6] the counters of `web/metrics.py`
-- KEYS[7] the owner's slots (set)   KEYS[8] the owner's waiting list   KEYS[9] owners with waiting jobs (set)
-- KEYS[10] the owner's feed (see `append_event` in lib.lua)   KEYS[11] its marker; a part's parent's keys last (`parent_of` in lib.lua)
-- ARGV[1] options (JSON): statuses, attempt, run, op (see `begin` in lib.lua); feed_channel, feed_kept; id, event, channel, ts;
--   events_kept; heartbeat_ms (the first deadline, '' = none); limit (jobs one owner may run at once, 0 = no limit);
--   waiting_message ('{n}' for the number ahead)
-- ARGV[2], ARGV[3] unused   ARGV[4..] field, value pairs of the running job
-- Returns {seq, cancel, 'ok' | 'parked' | 'same' | 'refused' | 'missing'}.
local job, events, items, running, queued, stats, active, waiting, waiting_owners =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8], KEYS[9]
local o = cjson.decode(ARGV[1])
local cur, reply = begin(job, o, events, 10)
if not cur then return reply end
local set, id, outcome = changes(ARGV), o.id, 'ok'

local limit = tonumber(o.limit)
if limit > 0 and redis.call('SISMEMBER', active, id) == 0 then
  -- No slot taken ahead of the owner's jobs already waiting for one.
  if redis.call('SCARD', active) >= limit or redis.call('LLEN', waiting) > 0 then
    if not redis.call('LPOS', waiting, id) then redis.call('RPUSH', waiting, id) end
    redis.call('SADD', waiting_owners, redis.call('HGET', job, 'owner'))
    local position = tostring(redis.call('LPOS', waiting, id))
    set = {stage = 'waiting', queue_position = position, message = (string.gsub(o.waiting_message, '{n}', position))}
    outcome = 'parked'
  else
    redis.call('SADD', active, id)
  end
end

if outcome == 'ok' then
  local now = now_ms()
  local since = redis.call('HGET', job, 'queued_ms') or redis.call('HGET', job, 'created_ms')
  observe(stats, 'wait', redis.call('HGET', job, 'type'), math.max(0, now - tonumber(since or now)))
  set.started_ms = tostring(now)
end

local data, stored = state_event(job, cur, set, o.ts)
if not data then return {cur.seq, cur.cancel, 'same'} end
if outcome == 'ok' then
  redis.call('DEL', items)
  set.text = ''
end
local seq = commit(job, cur, set, o.op, outcome)
append_event(events, stats, o.channel, seq, o.event, data, o.events_kept, stored, feed_of(10, o))

if outcome == 'ok' and o.heartbeat_ms ~= '' then redis.call('ZADD', running, o.heartbeat_ms, id) end
local parent = parent_of(o)
if parent and outcome == 'ok' then to_parent(parent, o, stats, 10, {from = cur.status, to = 'running'}) end
-- Started or parked: no longer in RQ's hands waiting to start.
redis.call('ZREM', queued, id)
return {seq, cur.cancel, outcome}
