-- The one way a job changes: update the record, append the event to the job's
-- log and publish it, in one atomic step, so the record, the log and the live
-- message can never disagree. Returns {seq, cancel, outcome}, outcome being
-- 'ok', 'same' (nothing a client sees changed: no event), 'refused' (a guard
-- failed: a stale writer), 'parked' (a start that must wait for a slot of its
-- owner's) or 'missing' (no such job).
--
-- KEYS[1] job hash   KEYS[2] event stream   KEYS[3] output item list
-- KEYS[4] running jobs (zset: heartbeat deadline)   KEYS[5] delayed retries (zset: due time)
-- KEYS[6] jobs handed to RQ and not started yet (zset: when last checked)
-- KEYS[7] the counters of `metrics.py`   KEYS[8] the owner's slots (set)   KEYS[9] the owner's waiting list
-- KEYS[10] owners with waiting jobs (set)
-- ARGV[1] the options, one JSON object of strings (`Store.emit` writes it from its arguments):
--   kind: 'state' | 'start' (a new attempt begins: output reset) | 'item' | 'delta' | 'end' (terminal)
--   event: the event name   channel: where it is published   id: the job id   ts: ISO 8601, for 'state'/'start'
--   statuses: the statuses the job must be in, ',a,b,' ('' = any)
--   attempt, run: the attempt and the trip through RQ the writer belongs to ('' = any)
--   events_kept, items_kept, ttl (seconds, set by an 'end')
--   heartbeat_ms: a heartbeat deadline to set ('' = none)   retry_at_ms: when the next attempt runs ('' = none)
--   limit: how many jobs one owner may run at once (0 = no limit)
--   waiting_message: the message of a job waiting for a slot, '{n}' for the number ahead
--   op: the write's own id ('' = none): a write sent again after a lost reply (the worker rides out
--       Redis trouble by resending) finds its id on the record and gets the first answer back instead
--       of being applied twice
-- ARGV[2] event data: the item or delta event's JSON; for 'end' the job object's JSON without its
--         opening brace ('last_event_id' is put in front here)
-- ARGV[3] raw output: the item's JSON, or the delta's text
-- ARGV[4..] field, value pairs to set on the record
-- A 'start' takes one of the owner's slots, or, when the owner runs its limit
-- already, parks the job in the owner's waiting list instead (outcome 'parked');
-- an 'end' gives the slot back.
-- A job leaving `running` leaves the running set; one going back to `queued`
-- loses the TTL its end may have set.
local job, events, items, stats = KEYS[1], KEYS[2], KEYS[3], KEYS[7]
local o = cjson.decode(ARGV[1])
local kind = o.kind

local cur = redis.call('HMGET', job, 'status', 'attempt', 'progress', 'message', 'stage',
                       'queue_position', 'cancel', 'seq', 'op', 'run')
if not cur[1] then return {0, 0, 'missing'} end
local cancel = (cur[7] == '1') and 1 or 0
local seq = tonumber(cur[8])
local op = o.op
local done = cur[9]
if op ~= '' and done and string.sub(done, 1, #op + 1) == op .. ' ' then
  return {seq, cancel, string.sub(done, #op + 2)}
end
if o.statuses ~= '' and not string.find(o.statuses, ',' .. cur[1] .. ',', 1, true) then
  return {seq, cancel, 'refused'}
end
if o.attempt ~= '' and o.attempt ~= cur[2] then return {seq, cancel, 'refused'} end
-- (A trip the janitor gave up on and enqueued again must not start beside the new one.)
if o.run ~= '' and o.run ~= (cur[10] or '1') then return {seq, cancel, 'refused'} end

local set = {}
for i = 4, #ARGV, 2 do set[ARGV[i]] = ARGV[i + 1] end

local id = o.id
local outcome = 'ok'
local limit = tonumber(o.limit)
local active, waiting = KEYS[8], KEYS[9]
if limit > 0 and (kind == 'start' or kind == 'end') then
  if kind == 'start' and redis.call('SISMEMBER', active, id) == 0 then
    -- No slot taken ahead of the owner's jobs already waiting for one.
    if redis.call('SCARD', active) >= limit or redis.call('LLEN', waiting) > 0 then
      if not redis.call('LPOS', waiting, id) then redis.call('RPUSH', waiting, id) end
      redis.call('SADD', KEYS[10], redis.call('HGET', job, 'owner'))
      local position = tostring(redis.call('LPOS', waiting, id))
      set = {stage = 'waiting', queue_position = position, message = (string.gsub(o.waiting_message, '{n}', position))}
      kind = 'state'
      outcome = 'parked'
    else
      redis.call('SADD', active, id)
    end
  elseif kind == 'end' then
    redis.call('SREM', active, id)
    redis.call('LREM', waiting, 0, id)
  end
end

-- The figures of `metrics.py`: queue wait (from submit, or from when a retry
-- was due, to the start), run time of each attempt, ends and retries.
local leaving = cur[1] == 'running' and set.status ~= nil and set.status ~= 'running'
if kind == 'start' or kind == 'end' or leaving then
  local jtype, now = redis.call('HGET', job, 'type'), now_ms()
  if kind == 'start' then
    local since = redis.call('HGET', job, 'queued_ms') or redis.call('HGET', job, 'created_ms')
    observe(stats, 'wait', jtype, math.max(0, now - tonumber(since or now)))
    set.started_ms = tostring(now)
  end
  if leaving then
    observe(stats, 'run', jtype, math.max(0, now - tonumber(redis.call('HGET', job, 'started_ms') or now)))
    if set.status == 'queued' then redis.call('HINCRBY', stats, 'retried|' .. jtype, 1) end
  end
  if kind == 'end' then redis.call('HINCRBY', stats, 'finished|' .. jtype .. '|' .. set.status, 1) end
end
if o.retry_at_ms ~= '' then set.queued_ms = o.retry_at_ms end

local name, data, stored = o.event, ARGV[2], nil
if kind == 'state' or kind == 'start' then
  -- Progress never goes down within one attempt: a lower value is ignored
  -- (a 'start' begins an attempt, at whatever progress it says).
  if kind == 'state' and set.progress and (set.attempt == nil or set.attempt == cur[2])
     and tonumber(set.progress) < tonumber(cur[3]) then
    set.progress = nil
  end
  local new = {}
  local names = {'status', 'attempt', 'progress', 'message', 'stage', 'queue_position'}
  local changed = false
  for i, f in ipairs(names) do
    new[f] = set[f] or cur[i] or ''
    if new[f] ~= (cur[i] or '') then changed = true end
  end
  if not changed then
    if set.eta_s then redis.call('HSET', job, 'eta_s', set.eta_s) end
    return {seq, cancel, 'same'}
  end
  local eta = set.eta_s or redis.call('HGET', job, 'eta_s') or ''
  data, stored = state_json(new.status, new.progress, new.message, new.stage, new.attempt,
                            new.queue_position, eta, o.ts)
  -- A new attempt starts with no output ('start', or a change of attempt).
  if kind == 'start' or (set.attempt and set.attempt ~= cur[2]) then
    redis.call('DEL', items)
    set.text = ''
  end
elseif kind == 'item' then
  redis.call('RPUSH', items, ARGV[3])
  redis.call('LTRIM', items, -tonumber(o.items_kept), -1)
elseif kind == 'delta' then
  set.text = (redis.call('HGET', job, 'text') or '') .. ARGV[3]
end

local flat = {}
for f, v in pairs(set) do flat[#flat + 1] = f; flat[#flat + 1] = v end
seq = seq + 1
flat[#flat + 1] = 'seq'; flat[#flat + 1] = seq
if op ~= '' then flat[#flat + 1] = 'op'; flat[#flat + 1] = op .. ' ' .. outcome end
redis.call('HSET', job, unpack(flat))

if kind == 'end' then data = '{"last_event_id":' .. seq .. ',' .. data end
append_event(events, stats, o.channel, seq, name, data, o.events_kept, stored)

if o.heartbeat_ms ~= '' and outcome ~= 'parked' then redis.call('ZADD', KEYS[4], o.heartbeat_ms, id)
elseif set.status and set.status ~= 'running' then redis.call('ZREM', KEYS[4], id) end
if o.retry_at_ms ~= '' then redis.call('ZADD', KEYS[5], o.retry_at_ms, id) end
-- Started, parked, ended or due again later: no longer in RQ's hands waiting to start.
if outcome == 'parked' or o.retry_at_ms ~= '' or (set.status and set.status ~= 'queued') then
  redis.call('ZREM', KEYS[6], id)
end
if set.status == 'queued' then
  redis.call('PERSIST', job)
  redis.call('PERSIST', events)
  redis.call('PERSIST', items)
end

if kind == 'end' then
  redis.call('ZREM', KEYS[5], id)
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
end
return {seq, cancel, outcome}
