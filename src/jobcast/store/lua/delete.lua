-- Forget a finished job: its record, events, output, index entry and Idempotency-Key.
-- KEYS[1] job hash   KEYS[2] event stream   KEYS[3] output items   KEYS[4] owner index
-- KEYS[5] running set   KEYS[6] delayed set   KEYS[7] the job's Idempotency-Key (its `idem_key`), if it has one
-- ARGV[1] job id   ARGV[2] ',completed,failed,canceled,'
-- Returns 'ok', 'missing', or the job's status when it is not finished.
local rec = redis.call('HMGET', KEYS[1], 'status', 'created_ms', 'idem_key')
if not rec[1] then return 'missing' end
if not string.find(ARGV[2], ',' .. rec[1] .. ',', 1, true) then return rec[1] end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
redis.call('ZREM', KEYS[4], string.format('%015d', tonumber(rec[2])) .. ':' .. ARGV[1])
redis.call('ZREM', KEYS[5], ARGV[1])
redis.call('ZREM', KEYS[6], ARGV[1])
-- The job's Idempotency-Key, unless another request has taken the key over since.
if KEYS[7] and rec[3] == KEYS[7] then
  local claim = redis.call('GET', KEYS[7])
  if claim and string.sub(claim, 1, #ARGV[1] + 1) == ARGV[1] .. ' ' then redis.call('DEL', KEYS[7]) end
end
return 'ok'
