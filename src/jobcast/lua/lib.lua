-- Shared by every script: `store.py` puts this file in front of each one.

-- cjson writes '/' as '\/': valid JSON, but noise on the wire; unescape it.
local function json_string(s) return (string.gsub(cjson.encode(s), '\\/', '/')) end

-- The data of a `state` event, twice: the JSON object clients get live, and
-- the same values as an array (no keys, the time as its digits: under half the
-- bytes) that the job's log keeps; `store.logged_data` turns it back into the
-- object when it reads the log. An empty string is null.
local function state_json(status, progress, message, stage, attempt, position, eta, ts)
  local function str(v) if v == nil or v == '' then return 'null' end return json_string(v) end
  local function num(v) if v == nil or v == '' then return 'null' end return v end
  local s, m, st, p, e = json_string(status), json_string(message), str(stage), num(position), num(eta)
  return '{"status":' .. s .. ',"progress":' .. progress .. ',"message":' .. m .. ',"stage":' .. st ..
         ',"attempt":' .. attempt .. ',"queue_position":' .. p .. ',"eta_s":' .. e .. ',"ts":"' .. ts .. '"}',
         '[' .. s .. ',' .. progress .. ',' .. m .. ',' .. st .. ',' .. attempt .. ',' .. p .. ',' .. e ..
         ',' .. (ts ~= '' and string.gsub(ts, '%D', '') or 'null') .. ']'
end


local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
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
-- `metrics.py`, `{p}:stats`) and publish it live (as `data`).
local function append_event(events, stats, channel, seq, name, data, kept, stored)
  redis.call('XADD', events, 'MAXLEN', '~', kept, '0-' .. seq, 'e', name, 'd', stored or data)
  redis.call('HINCRBY', stats, 'events', 1)
  redis.call('PUBLISH', channel, seq .. ' ' .. name .. ' ' .. data)
end
