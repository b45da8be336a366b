-- A model call's usage adds to its job's (in all, `usage_*`, and in this
-- attempt, `usage_a_*`), to its batch's when the job is a part, and to the
-- counters of `web/metrics.py` (tokens by model, type and kind; calls). A call
-- of an attempt that is over adds nothing.
--
-- KEYS[1] job hash   KEYS[2] the counters of `web/metrics.py`   KEYS[3] its batch's hash (a part's; optional)
-- ARGV[1] attempt   ARGV[2] prompt tokens   ARGV[3] completion tokens   ARGV[4] cost in US dollars ('' = no
--   price)   ARGV[5] '1' when the tokens are an estimate (the server reported none)   ARGV[6] model
--   ARGV[7..] the usage fields to return
-- Returns the job's usage fields after it (`USAGE_FIELDS` of `writer.py`), or 0 when the attempt is over.
local job, stats = KEYS[1], KEYS[2]
local cur = redis.call('HMGET', job, 'attempt', 'type')
if cur[1] ~= ARGV[1] then return 0 end
local FIELDS = {}
for i = 7, #ARGV do FIELDS[#FIELDS + 1] = ARGV[i] end

local into = {1}
if #KEYS > 2 and redis.call('EXISTS', KEYS[3]) == 1 then into[2] = 3 end
for _, k in ipairs(into) do
  for _, scope in ipairs({'usage_', 'usage_a_'}) do
    redis.call('HINCRBY', KEYS[k], scope .. 'calls', 1)
    redis.call('HINCRBY', KEYS[k], scope .. 'prompt', ARGV[2])
    redis.call('HINCRBY', KEYS[k], scope .. 'completion', ARGV[3])
    if ARGV[4] ~= '' then
      local had = redis.call('HGET', KEYS[k], scope .. 'cost')
      if had and had ~= '' then redis.call('HINCRBYFLOAT', KEYS[k], scope .. 'cost', ARGV[4])
      else redis.call('HSET', KEYS[k], scope .. 'cost', ARGV[4]) end  -- (a new attempt's starts empty)
    end
    if ARGV[5] == '1' then redis.call('HSET', KEYS[k], scope .. 'estimated', '1') end
  end
end
local label = ARGV[6] .. '|' .. cur[2]
redis.call('HINCRBY', stats, 'model_calls|' .. label, 1)
redis.call('HINCRBY', stats, 'model_tokens|' .. label .. '|prompt', ARGV[2])
redis.call('HINCRBY', stats, 'model_tokens|' .. label .. '|completion', ARGV[3])
return redis.call('HMGET', job, unpack(FIELDS))
