-- Shared by every script: `store.py` puts this file in front of each one.

-- cjson writes '/' as '\/': valid JSON, but noise on the wire; unescape it.
local function json_string(s) return (string.gsub(cjson.encode(s), '\\/', '/')) end

-- The data of a `state` event; an empty string is null.
local function state_json(status, progress, message, stage, attempt, position, eta, ts)
  local function str(v) if v == nil or v == '' then return 'null' end return json_string(v) end
  local function num(v) if v == nil or v == '' then return 'null' end return v end
  return '{"status":' .. json_string(status) .. ',"progress":' .. progress ..
         ',"message":' .. json_string(message) .. ',"stage":' .. str(stage) ..
         ',"attempt":' .. attempt .. ',"queue_position":' .. num(position) ..
         ',"eta_s":' .. num(eta) .. ',"ts":"' .. ts .. '"}'
end

-- Append event `seq` to a job's log (about `kept` kept) and publish it live.
local function append_event(events, channel, seq, name, data, kept)
  redis.call('XADD', events, 'MAXLEN', '~', kept, '0-' .. seq, 'e', name, 'd', data)
  redis.call('PUBLISH', channel, seq .. ' ' .. name .. ' ' .. data)
end
