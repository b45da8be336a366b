-- Give free slots of an owner's to the jobs waiting for them, in order: each
-- one promoted takes a slot, becomes `Queued` and is due in the delayed set at
-- once, from where it goes to RQ (the caller does that at once, or else the
-- janitor). The caller names the jobs at the front of the waiting list (at most
-- `limit` can get a slot), so that their keys are declared; an entry that is
-- no longer waiting is dropped from the list.
--
-- KEYS[1] the owner's slots (set)   KEYS[2] the owner's waiting list   KEYS[3] owners with waiting jobs
-- KEYS[4] the delayed set   KEYS[5] the counters of `web/metrics.py`   KEYS[6] the owner's feed   KEYS[7] its marker
-- KEYS[8..] per job: its hash, its event stream
-- ARGV[1] the limit   ARGV[2] the owner   ARGV[3] ts   ARGV[4] events kept   ARGV[5] now (ms)
-- ARGV[6] the owner's feed channel   ARGV[7] feed entries kept   ARGV[8..] per job: its id, its channel
-- Returns {the ids promoted, 1 if that is all there is to do now, 0 if the list was not as the caller read
-- it (read it again and call again)}.
local active, waiting, limit = KEYS[1], KEYS[2], tonumber(ARGV[1])
local promoted, settled = {}, 1
for i = 1, (#KEYS - 7) / 2 do
  if redis.call('SCARD', active) >= limit then break end
  local id, channel = ARGV[6 + 2 * i], ARGV[7 + 2 * i]
  if redis.call('LINDEX', waiting, 0) ~= id then settled = 0; break end
  redis.call('LPOP', waiting)
  local job, events = KEYS[6 + 2 * i], KEYS[7 + 2 * i]
  local cur = redis.call('HMGET', job, 'status', 'stage', 'progress', 'attempt', 'seq', 'primary')
  if cur[1] == 'queued' and cur[2] == 'waiting' then
    redis.call('SADD', active, id)
    redis.call('ZADD', KEYS[4], ARGV[5], id)
    local seq = carried(job, events, 6, tonumber(cur[5]), cur[6]) + 1
    redis.call('HSET', job, 'stage', 'queued', 'message', 'Queued', 'queue_position', '', 'seq', seq)
    local data, stored = state_json('queued', cur[3], 'Queued', 'queued', cur[4], '', '', ARGV[3])
    append_event(events, KEYS[5], channel, seq, 'state', data, ARGV[4], stored,
                 {key = KEYS[6], channel = ARGV[6], kept = ARGV[7], job = id})
    promoted[#promoted + 1] = id
  end
end
if settled == 1 and redis.call('SCARD', active) < limit and redis.call('LLEN', waiting) > 0 then settled = 0 end
if redis.call('LLEN', waiting) == 0 then redis.call('SREM', KEYS[3], ARGV[2]) end
return {promoted, settled}
