-- Tell the jobs at the front of a line (an RQ queue, or an owner's waiting
-- list) their new place in it: each one still waiting there whose position
-- changed gets a `state` event saying so ("Queued (N ahead)"). Called when a
-- job leaves the line.
--
-- KEYS[1] the line (a list)   KEYS[2] the counters of `web/metrics.py`,
-- then per job: its hash, its event stream, its owner's feed, the feed's marker
-- ARGV[1] ts   ARGV[2] message template with '{n}'   ARGV[3] events kept
-- ARGV[4] the stage of a job waiting in this line   ARGV[5] feed entries kept
-- ARGV[6..] per job: its id in the line (its RQ job id, or its jobcast id), its jobcast id, its channel,
-- its owner's feed channel
-- Returns how many jobs were told.
local told = 0
for i = 0, (#KEYS - 2) / 4 - 1 do
  local job, events, feed = KEYS[3 + 4 * i], KEYS[4 + 4 * i], KEYS[5 + 4 * i]
  local line_id, id, channel, feed_channel = ARGV[6 + 4 * i], ARGV[7 + 4 * i], ARGV[8 + 4 * i], ARGV[9 + 4 * i]
  local cur = redis.call('HMGET', job, 'status', 'stage', 'queue_position', 'progress', 'attempt', 'seq', 'primary')
  if cur[1] == 'queued' and cur[2] == ARGV[4] then
    local position = redis.call('LPOS', KEYS[1], line_id)
    if position and tostring(position) ~= cur[3] then
      local message = string.gsub(ARGV[2], '{n}', tostring(position))
      local seq = carried(job, events, 5 + 4 * i, tonumber(cur[6]), cur[7]) + 1
      redis.call('HSET', job, 'queue_position', position, 'message', message, 'seq', seq)
      local data, stored = state_json('queued', cur[4], message, ARGV[4], cur[5], position, '', ARGV[1])
      append_event(events, KEYS[2], channel, seq, 'state', data, ARGV[3], stored,
                   {key = feed, channel = feed_channel, kept = ARGV[5], job = id})
      told = told + 1
    end
  end
end
return told
