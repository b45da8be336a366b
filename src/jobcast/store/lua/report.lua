-- A change a client sees in a job's `state` that moves it nowhere: progress,
-- message, stage and ETA from the job's code (`context.py`), a cancel request
-- (`cancel` = '1', "Canceling"), a queued job's new stage. Progress never goes
-- down within an attempt: a lower value is ignored. Nothing visible changed:
-- outcome 'same', and no event.
--
-- KEYS[1] job hash   KEYS[2] event stream   KEYS[3] the counters of `web/metrics.py`   KEYS[4] the owner's feed
-- KEYS[5] its marker (`Keys.feed_primary`)   (a part's parent's keys last: `parent_of` in lib.lua)
-- (a part's parent's keys last: `parent_of` in lib.lua)
-- ARGV[1] options (JSON): statuses, attempt, run, op (see `begin` in lib.lua); feed_channel, feed_kept; event, channel, ts; events_kept
-- ARGV[2], ARGV[3] unused   ARGV[4..] field, value pairs to set (never `status` or `attempt`)
-- Returns {seq, cancel, 'ok' | 'same' | 'refused' | 'missing'}.
local job, events, stats = KEYS[1], KEYS[2], KEYS[3]
local o = cjson.decode(ARGV[1])
local cur, reply = begin(job, o, events, 4)
if not cur then return reply end
local set = changes(ARGV)
if set.progress and tonumber(set.progress) < tonumber(cur.progress) then set.progress = nil end
local data, stored = state_event(job, cur, set, o.ts)
if not data then return {cur.seq, cur.cancel, 'same'} end
local seq = commit(job, cur, set, o.op, 'ok')
append_event(events, stats, o.channel, seq, o.event, data, o.events_kept, stored, feed_of(4, o))
local parent = parent_of(o)
if parent and (set.progress or set.usage_shown) then
  to_parent(parent, o, stats, 4, {progress = set.progress})  -- (its batch's usage moved with its own)
end
return {seq, cur.cancel, 'ok'}
