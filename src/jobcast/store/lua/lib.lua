-- Shared by every script: `scripts.py` puts this file in front of each script that uses it.

-- cjson writes '/' as '\/': valid JSON, but noise on the wire; unescape it.
local function json_string(s) return (string.gsub(cjson.encode(s), '\\/', '/')) end

-- The data of a `state` event, twice: the JSON object clients get live, and
-- the same values as an array (no keys, the time as its digits: under half the
-- bytes) that the job's log keeps; `store.logged_data` turns it back into the
-- object when it reads the log. An empty string is null. `usage` (JSON, of a
-- job that called a model: `usage_json`) comes last when given.
local function state_json(status, progress, message, stage, attempt, position, eta, ts, usage)
  local function str(v) if v == nil or v == '' then return 'null' end return json_string(v) end
  local function num(v) if v == nil or v == '' then return 'null' end return v end
  local s, m, st, p, e = json_string(status), json_string(message), str(stage), num(position), num(eta)
  local u, tail = '', ']'
  if usage then u, tail = ',"usage":' .. usage, ',' .. usage .. ']' end
  return '{"status":' .. s .. ',"progress":' .. progress .. ',"message":' .. m .. ',"stage":' .. st ..
         ',"attempt":' .. attempt .. ',"queue_position":' .. p .. ',"eta_s":' .. e .. ',"ts":"' .. ts .. '"' ..
         u .. '}',
         '[' .. s .. ',' .. progress .. ',' .. m .. ',' .. st .. ',' .. attempt .. ',' .. p .. ',' .. e ..
         ',' .. (ts ~= '' and string.gsub(ts, '%D', '') or 'null') .. tail
end

-- A job's `usage` as JSON (the job object's: `record._usage`), from its
-- record's `usage_*` (all attempts) and `usage_a_*` (this one) fields, those
-- in `set` (a change about to be written) first; nil for a job that called no
-- model.
local USAGE = {'calls', 'prompt', 'completion', 'cost', 'estimated'}
local function usage_json(job, set)
  local fields = {}
  for _, scope in ipairs({'usage_', 'usage_a_'}) do
    for _, name in ipairs(USAGE) do fields[#fields + 1] = scope .. name end
  end
  local v = redis.call('HMGET', job, unpack(fields))
  for i, f in ipairs(fields) do if set[f] then v[i] = set[f] end end
  if not v[1] or v[1] == '' then return nil end
  local function int(x) if not x or x == '' then return '0' end return x end
  local function figures(i)
    local cost = 'null'
    if v[i + 3] and v[i + 3] ~= '' then  -- (rounded to 6 places, as the job object's)
      cost = string.gsub(string.format('%.6f', tonumber(v[i + 3])), '%.?0+$', '')
    end
    return '"calls":' .. int(v[i]) .. ',"prompt_tokens":' .. int(v[i + 1]) .. ',"completion_tokens":' ..
           int(v[i + 2]) .. ',"cost_usd":' .. cost .. ',"estimated":' .. ((v[i + 4] == '1') and 'true' or 'false')
  end
  return '{' .. figures(1) .. ',"attempt":{' .. figures(6) .. '}}'
end


local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Event ids are never handed out twice. A failover to a replica can lose the
-- last writes the old primary acknowledged, and so can a restart from an
-- append-only file fsynced once a second: their events reached clients, and a
-- job's next event would take one of their ids. So each record and owner's
-- feed notes the server history that last wrote it (the replication id, which
-- a promotion, a restart, and an hour without replicas change); the first
-- write to one written under another skips SEQ_JUMP ids and empties its log,
-- so a client holding a lost id resumes with a `snapshot` under a new id,
-- never with another event under an old one. (`jobcast dev`'s in-memory Redis
-- has no INFO: no ids to keep apart. A record of a version before this one has
-- no `primary` and is only marked.)
local SEQ_JUMP = 1000000
local here
local function primary()
  if here == nil then
    local info = redis.pcall('INFO', 'replication')
    here = type(info) == 'string' and string.match(info, 'master_replid:(%x+)') or false
  end
  return here
end

-- An owner's feed `feed` continues after every place another server history may have handed out (see
-- SEQ_JUMP): its marker `mark` (`Keys.feed_primary`) names the one that last wrote it.
local function carry_feed(feed, mark)
  local was = redis.call('GET', mark)
  if was == primary() then return end
  if was and redis.call('EXISTS', feed) == 1 then
    local info, last = redis.call('XINFO', 'STREAM', feed), '0-0'
    for i = 1, #info, 2 do if info[i] == 'last-generated-id' then last = info[i + 1] end end
    redis.call('XTRIM', feed, 'MAXLEN', 0)
    redis.call('XSETID', feed, '0-' .. (tonumber(string.match(last, '%-(%d+)$')) + SEQ_JUMP))
  end
  redis.call('SET', mark, primary())
end

-- The event id job `job` continues from, `seq` as its record says: past every id another server history may
-- have handed out when `written_on` (its `primary` field) names another (see SEQ_JUMP), its log `events`
-- then emptied; its owner's feed (KEYS[`at`], its marker KEYS[`at` + 1]) is carried over too.
local function carried(job, events, at, seq, written_on)
  if not primary() or written_on == primary() then return seq end
  if written_on then
    seq = seq + SEQ_JUMP
    redis.call('DEL', events)
  end
  redis.call('HSET', job, 'primary', primary(), 'seq', seq)
  carry_feed(KEYS[at], KEYS[at + 1])
  return seq
end

-- A duration (ms) into histogram `name` of job type `jtype`: field
-- `name|type|k` counts the durations of at most 4^k ms (k = 0..11), k = 12 the
-- longer ones (`metrics.BUCKETS_S` holds the same bounds in seconds).
local function observe(stats, name, jtype, ms)
  local k = 0
  while k < 12 and ms > 4 ^ k do k = k + 1 end
  redis.call('HINCRBY', stats, name .. '|' .. jtype .. '|' .. k, 1)
  redis.call('HINCRBYFLOAT', stats, name .. '_sum|' .. jtype, ms / 1000)
end

-- Append event `seq` to a job's log (about `kept` kept; as `stored` if given,
-- the compact form of a state event), count it in `stats` (the counters of
-- `web/metrics.py`, `{p}:stats`) and publish it live (as `data`). `feed` is
-- the job owner's feed, {key, channel, kept, job}: the event is added to it
-- too (entry `0-N`, the next N: `j` the job id, `s` the event's id) and
-- published there live as "N job seq name data", for the streams of many jobs.
local function append_event(events, stats, channel, seq, name, data, kept, stored, feed)
  redis.call('XADD', events, 'MAXLEN', '~', kept, '0-' .. seq, 'e', name, 'd', stored or data)
  redis.call('HINCRBY', stats, 'events', 1)
  redis.call('PUBLISH', channel, seq .. ' ' .. name .. ' ' .. data)
  local n = redis.call('XADD', feed.key, 'MAXLEN', '~', feed.kept, '0-*', 'j', feed.job, 's', seq)
  redis.call('PUBLISH', feed.channel, string.sub(n, 3) .. ' ' .. feed.job .. ' ' .. seq .. ' ' .. name .. ' ' .. data)
end

-- The owner's feed of a change script: KEYS[`at`], and the options' feed_channel and feed_kept.
local function feed_of(at, o)
  return {key = KEYS[at], channel = o.feed_channel, kept = o.feed_kept, job = o.id}
end

-- The record's fields a change reads before it decides anything.
local CURRENT = {'status', 'attempt', 'progress', 'message', 'stage', 'queue_position', 'cancel', 'seq', 'op', 'run',
                 'usage_calls', 'usage_shown', 'primary'}

-- What every change of a job (`start`, `report`, `output`, `again`, `finish`)
-- does first: read the record (its log `events`, its owner's feed KEYS[`at`]),
-- carry it over from another primary (`carried`) and check the writer's guards. `o` is the
-- script's options (ARGV[1]): `statuses` (',a,b,', '' = any), `attempt` and
-- `run` ('' = any) the writer belongs to, and `op`, the write's own id ('' =
-- none): a write sent again after a lost reply (the worker rides out Redis
-- trouble by resending) finds its id on the record and gets the first answer
-- back instead of being applied twice. Returns the current values, or nil and
-- the script's reply: {seq, cancel, 'missing' | 'refused' | the first answer}.
local function begin(job, o, events, at)
  local v = redis.call('HMGET', job, unpack(CURRENT))
  if not v[1] then return nil, {0, 0, 'missing'} end
  local cur = {}
  for i, f in ipairs(CURRENT) do cur[f] = v[i] end
  cur.seq = tonumber(cur.seq)
  cur.cancel = (cur.cancel == '1') and 1 or 0
  local done = cur.op
  if o.op ~= '' and done and string.sub(done, 1, #o.op + 1) == o.op .. ' ' then
    return nil, {cur.seq, cur.cancel, string.sub(done, #o.op + 2)}
  end
  if (o.statuses ~= '' and not string.find(o.statuses, ',' .. cur.status .. ',', 1, true))
     or (o.attempt ~= '' and o.attempt ~= cur.attempt)
     -- (a trip the janitor gave up on and enqueued again must not start beside the new one)
     or (o.run ~= '' and o.run ~= (cur.run or '1')) then
    return nil, {cur.seq, cur.cancel, 'refused'}
  end
  cur.seq = carried(job, events, at, cur.seq, cur.primary)
  return cur
end

-- The field, value pairs of ARGV[4..] as a table.
local function changes(argv)
  local set = {}
  for i = 4, #argv, 2 do set[argv[i]] = argv[i + 1] end
  return set
end

-- The `state` event of setting `set` on a record now at `cur`: its data as
-- published and as logged (`state_json`), or nil when nothing a client sees
-- would change (then only a new `eta_s` is written, and there is no event).
-- A job's usage is seen to change by its calls: `usage_shown` (in `set`, so
-- written with the change) is the count of calls of the last event's usage.
local STATE = {'status', 'attempt', 'progress', 'message', 'stage', 'queue_position'}
local function state_event(job, cur, set, ts)
  local new, changed = {}, false
  for _, f in ipairs(STATE) do
    new[f] = set[f] or cur[f] or ''
    if new[f] ~= (cur[f] or '') then changed = true end
  end
  if (cur.usage_calls or '') ~= (cur.usage_shown or '') then changed = true end
  if not changed then
    if set.eta_s then redis.call('HSET', job, 'eta_s', set.eta_s) end
    return nil
  end
  local eta = set.eta_s or redis.call('HGET', job, 'eta_s') or ''
  local usage = cur.usage_calls and usage_json(job, set)
  if usage then set.usage_shown = cur.usage_calls end
  return state_json(new.status, new.progress, new.message, new.stage, new.attempt, new.queue_position, eta, ts,
                    usage)
end

-- Write `set` on the record with the next event id, and the write's id with
-- its outcome (see `begin`); returns the new event id.
local function commit(job, cur, set, op, outcome)
  local flat = {}
  for f, v in pairs(set) do flat[#flat + 1] = f; flat[#flat + 1] = v end
  local seq = cur.seq + 1
  flat[#flat + 1] = 'seq'; flat[#flat + 1] = seq
  if op ~= '' then flat[#flat + 1] = 'op'; flat[#flat + 1] = op .. ' ' .. outcome end
  redis.call('HSET', job, unpack(flat))
  return seq
end

-- A running attempt ends (for good, or to be tried again): its run time goes
-- into the `run` histogram of `web/metrics.py`.
local function observe_run(job, stats, now)
  local jtype, started = redis.call('HGET', job, 'type'), redis.call('HGET', job, 'started_ms')
  observe(stats, 'run', jtype, math.max(0, now - tonumber(started or now)))
end

-- A part of a batch (a job with `o.parent`: see `batches.py`) changes its
-- parent in the same step. The parent's hash, log, item list and the delayed
-- set are then the last four KEYS. `c` says what changed: the part moved from
-- status `c.from` to `c.to` (the parent's `parts_<status>` counts), its
-- progress is now `c.progress` (the parent's progress is the parts' weighted
-- sum, `parts_psum` / `parts_wsum`, over what was left of 100 when it split,
-- `parts_from`, and never goes down), or it produced item
-- `c.item` (its event data `c.item_event`), which the parent's stream carries
-- with the part's index. Only a parent running its parts (stage `parts`, or
-- `retry` while a retried batch sends its parts again) gets events; in stage
-- `parts`, the last part to end moves it to stage `join`, due now in the
-- delayed set, from where a worker runs its join (`runner.Attempt`).
local function parent_of(o)
  if (o.parent or '') == '' then return nil end
  local n = #KEYS
  return {job = KEYS[n - 3], events = KEYS[n - 2], items = KEYS[n - 1], delayed = KEYS[n], id = o.parent,
          channel = o.parent_channel, part = o.part, weight = tonumber(o.weight)}
end

local PARENT = {'status', 'attempt', 'progress', 'message', 'stage', 'seq', 'parts_psum', 'parts_wsum', 'parts_total',
                'parts_completed', 'parts_failed', 'parts_canceled', 'parts_from', 'usage_calls', 'usage_shown',
                'primary'}

local function to_parent(p, o, stats, at, c)
  local job = p.job
  if redis.call('EXISTS', job) == 0 then return end
  if c.from then redis.call('HINCRBY', job, 'parts_' .. c.from, -1) end
  if c.to then redis.call('HINCRBY', job, 'parts_' .. c.to, 1) end
  local v = redis.call('HMGET', job, unpack(PARENT))
  local psum = tonumber(v[7] or '0')
  if c.progress then
    local before = tonumber(redis.call('HGET', job, 'pp:' .. p.part) or '0')
    psum = psum + p.weight * (tonumber(c.progress) - before)
    redis.call('HSET', job, 'parts_psum', tostring(psum), 'pp:' .. p.part, c.progress)
  end
  if v[1] ~= 'running' or (v[5] ~= 'parts' and v[5] ~= 'retry') then return end
  local feed = {key = KEYS[at], channel = o.feed_channel, kept = o.feed_kept, job = p.id}
  local seq = carried(job, p.events, at, tonumber(v[6]), v[16])
  if c.item then
    redis.call('RPUSH', p.items, c.item)
    redis.call('LTRIM', p.items, -tonumber(o.items_kept), -1)
    seq = seq + 1
    append_event(p.events, stats, p.channel, seq, 'output',
                 string.sub(c.item_event, 1, -2) .. ',"part":' .. p.part .. '}', o.events_kept, nil, feed)
  end
  local total = tonumber(v[9])
  local ended = tonumber(v[10] or '0') + tonumber(v[11] or '0') + tonumber(v[12] or '0')
  local from = tonumber(v[13] or '0')
  local share = math.min(1, psum / tonumber(v[8]) / 100)
  local progress = math.floor((from + (100 - from) * share) * 10 + 0.5) / 10
  if ended < total then progress = math.min(progress, 99.9) end  -- (100 once the join is done)
  progress = math.max(tonumber(v[3]), progress)
  local message, stage = ended .. '/' .. total .. ' parts done', v[5]
  if ended >= total and stage == 'parts' then
    message, stage = "Joining the parts' results", 'join'
    redis.call('ZADD', p.delayed, now_ms(), p.id)
  end
  local shown = string.format('%g', progress)
  if shown ~= v[3] or message ~= v[4] or stage ~= v[5] or (v[14] or '') ~= (v[15] or '') then
    seq = seq + 1
    local usage = v[14] and usage_json(job, {})
    local data, stored = state_json('running', shown, message, stage, v[2], '', '', o.ts, usage)
    redis.call('HSET', job, 'progress', shown, 'message', message, 'stage', stage, 'usage_shown', v[14] or '')
    append_event(p.events, stats, p.channel, seq, 'state', data, o.events_kept, stored, feed)
  end
  redis.call('HSET', job, 'seq', seq)
end

-- A part tried again while its batch runs its parts: the batch's output loses
-- the items of the part's attempt (list `items`), as the part's own output
-- does. (Each goes by value: of equal items, another part's may go instead,
-- which leaves the same output.)
local function forget_part_items(p, items)
  if redis.call('HGET', p.job, 'stage') ~= 'parts' then return end
  for _, item in ipairs(redis.call('LRANGE', items, 0, -1)) do redis.call('LREM', p.items, 1, item) end
end
