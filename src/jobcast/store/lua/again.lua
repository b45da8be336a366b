-- A job goes back to `queued` for its next attempt, due at `retry_at_ms` in
-- the delayed set (from where `transitions.requeue` sends it to RQ): a failed
-- attempt with attempts left (from `running`), or `POST /retry` (from `failed`
-- or `canceled`). The new attempt starts with no output; a running attempt's
-- run time goes into the `run` histogram and counts as a retry; the TTL the
-- job's end set is taken off.
--
-- KEYS[1] job hash   KEYS[2] event stream   KEYS[3] output item list   KEYS[4] running jobs (zset)
-- KEYS[5] delayed retries (zset)   KEYS[6] jobs handed to RQ and not started yet (zset)
-- KEYS[7] the counters of `web/metrics.py`   KEYS[8] the owner's feed   KEYS[9] its marker
-- (a part's parent's keys last: `parent_of` in lib.lua)
-- ARGV[1] options (JSON): statuses, attempt, run, op (see `begin` in lib.lua); feed_channel, feed_kept; id, event, channel, ts;
--   events_kept; retry_at_ms (when the next attempt is due)
-- ARGV[2], ARGV[3] unused   ARGV[4..] field, value pairs of the queued job (its new `attempt` among them)
-- Returns {seq, cancel, 'ok' | 'refused' | 'missing'}.
local job, events, items, running, delayed, queued, stats = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6],
  KEYS[7]
local o = cjson.decode(ARGV[1])
local cur, reply = begin(job, o, events, 8)
if not cur then return reply end
local set, id = changes(ARGV), o.id
set.status = 'queued'
if cur.status == 'running' then
  observe_run(job, stats, now_ms())
  redis.call('HINCRBY', stats, 'retried|' .. redis.call('HGET', job, 'type'), 1)
end
set.queued_ms = o.retry_at_ms
local data, stored = state_event(job, cur, set, o.ts)
local parent = parent_of(o)
if parent then forget_part_items(parent, items) end
redis.call('DEL', items)
set.text = ''
local seq = commit(job, cur, set, o.op, 'ok')
append_event(events, stats, o.channel, seq, o.event, data, o.events_kept, stored, feed_of(8, o))

redis.call('ZREM', running, id)
redis.call('ZADD', delayed, o.retry_at_ms, id)
redis.call('ZREM', queued, id)
redis.call('PERSIST', job)
redis.call('PERSIST', events)
redis.call('PERSIST', items)
if parent then to_parent(parent, o, stats, 8, {from = cur.status, to = 'queued', progress = '0'}) end
return {seq, cur.cancel, 'ok'}
