-- The running attempt's output grows: an item is appended to the output list
-- (the newest `items_kept` kept), or a delta to the record's `text`.
--
-- KEYS[1] job hash   KEYS[2] event stream   KEYS[3] output item list   KEYS[4] the counters of `web/metrics.py`
-- KEYS[5] the owner's feed   KEYS[6] its marker   (a part's parent's keys last: `parent_of` in lib.lua)
-- ARGV[1] options (JSON): statuses, attempt, run, op (see `begin` in lib.lua); feed_channel, feed_kept; kind ('item' | 'delta'),
--   event, channel; events_kept, items_kept
-- ARGV[2] the event's JSON   ARGV[3] the item's JSON, or the delta's text
-- Returns {seq, cancel, 'ok' | 'refused' | 'missing'}.
local job, events, items, stats = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local o = cjson.decode(ARGV[1])
local cur, reply = begin(job, o, events, 5)
if not cur then return reply end
local set = {}
if o.kind == 'item' then
  redis.call('RPUSH', items, ARGV[3])
  redis.call('LTRIM', items, -tonumber(o.items_kept), -1)
else
  set.text = (redis.call('HGET', job, 'text') or '') .. ARGV[3]
end
local seq = commit(job, cur, set, o.op, 'ok')
append_event(events, stats, o.channel, seq, o.event, ARGV[2], o.events_kept, nil, feed_of(5, o))
local parent = parent_of(o)
if parent and o.kind == 'item' then to_parent(parent, o, stats, 5, {item = ARGV[3], item_event = ARGV[2]}) end
return {seq, cur.cancel, 'ok'}
