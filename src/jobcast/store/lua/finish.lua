-- An attempt ends the job: `completed`, `failed` or `canceled`. The record
-- takes `fields`, the terminal event carries the whole job object, the owner's
-- slot is given back, the figures of `web/metrics.py` count the end (and the run
-- time of a running attempt), and the job's keys get the job TTL.
--
-- KEYS[1] job hash   KEYS[2] event stream   KEYS[3] output item list   KEYS[4] running jobs (zset)
-- KEYS[5] delayed retries (zset)   KEYS[6] jobs handed to RQ and not started yet (zset)
-- KEYS[7] the counters of `web/metrics.py`   KEYS[8] the owner's slots (set)   KEYS[9] the owner's waiting list
-- KEYS[10] the owner's feed   KEYS[11] its marker   (a part's parent's keys last: `parent_of` in lib.lua)
-- ARGV[1] options (JSON): statuses, attempt, run, op (see `begin` in lib.lua); feed_channel, feed_kept; id, event, channel;
--   events_kept, ttl (seconds); limit (jobs one owner may run at once, 0 = no limit)
-- ARGV[2] the job object's JSON without its opening brace ('last_event_id' is put in front here)
-- ARGV[3] unused   ARGV[4..] field, value pairs of the ended job (its `status` among them)
-- Returns {seq, cancel, 'ok' | 'refused' | 'missing', how many of the owner's jobs wait for a slot now}.
local job, events, items, running, delayed, queued, stats, active, waiting =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8], KEYS[9]
local o = cjson.decode(ARGV[1])
local cur, reply = begin(job, o, events, 10)
if not cur then return reply end
local set, id, still_waiting = changes(ARGV), o.id, 0
if tonumber(o.limit) > 0 then
  redis.call('SREM', active, id)
  redis.call('LREM', waiting, 0, id)
  still_waiting = redis.call('LLEN', waiting)
end
if cur.status == 'running' then observe_run(job, stats, now_ms()) end
redis.call('HINCRBY', stats, 'finished|' .. redis.call('HGET', job, 'type') .. '|' .. set.status, 1)

local seq = commit(job, cur, set, o.op, 'ok')
append_event(events, stats, o.channel, seq, o.event, '{"last_event_id":' .. seq .. ',' .. ARGV[2], o.events_kept, nil,
             feed_of(10, o))

redis.call('ZREM', running, id)
redis.call('ZREM', delayed, id)
redis.call('ZREM', queued, id)
-- Redis gives a stream's newest node 4 KiB up front, more than the whole log
-- of most jobs; rewriting a short finished log gives back what it does not
-- use (a long one gains little for its cost; skipped where DUMP or RESTORE is
-- renamed away: it only saves memory).
if redis.call('XLEN', events) <= 100 then
  local dumped = redis.pcall('DUMP', events)
  if type(dumped) == 'string' then redis.pcall('RESTORE', events, 0, dumped, 'REPLACE') end
end
local ttl = tonumber(o.ttl)
redis.call('EXPIRE', job, ttl)
redis.call('EXPIRE', events, ttl)
redis.call('EXPIRE', items, ttl)
local parent = parent_of(o)
if parent then to_parent(parent, o, stats, 10, {from = cur.status, to = set.status, progress = '100'}) end
return {seq, cur.cancel, 'ok', still_waiting}
