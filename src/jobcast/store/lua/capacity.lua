-- A model call asks for its way to the model, shared by every worker: one of
-- the model's `limit` calls at once (`JOBCAST_MODEL_CONCURRENCY`), a request of
-- its `rpm` per minute and its tokens of the `tpm` per minute (`JOBCAST_MODEL_RPM`,
-- `JOBCAST_MODEL_TPM`; 0: no limit), none while a 429's pause holds. Calls
-- that wait take turns by owner: each waiting call gets its owner's next turn,
-- never earlier than the turn last served, so a call of an owner who just came
-- waits behind at most one call of each other owner, however many those have
-- waiting; and a call goes only when every call ahead of it in line fits too.
-- A lease expires unless renewed (a dead worker's capacity comes back); a
-- waiting call that stops asking is dropped after `stale_ms`.
--
-- The minute is a moving window of `window_ms` (a little over 60 s: a call let
-- through here reaches the provider some milliseconds later, and the provider
-- must never see more than `rpm` requests in any 60 s): every call let through
-- is kept there with the tokens it reserved (its prompt and `max_tokens`, an
-- estimate that `lua/tokens_used.lua` corrects once the real usage is known).
--
-- KEYS[1] the model's leases (zset: lease id -> expiry ms)   KEYS[2] its waiting calls (zset: lease id -> turn)
-- KEYS[3] its turns (hash: owner -> next turn, `_served`, `seen:<lease id>` -> ms, `est:<lease id>` -> tokens)
-- KEYS[4] the window's calls (zset: lease id -> ms let through)   KEYS[5] their tokens (hash: lease id -> tokens,
-- `_sum`)   KEYS[6] the pause (ms until which every call waits: a 429's `Retry-After`)
-- ARGV[1] lease id   ARGV[2] owner   ARGV[3] limit   ARGV[4] lease ms   ARGV[5] stale ms   ARGV[6] rpm
-- ARGV[7] tpm   ARGV[8] this call's tokens   ARGV[9] window ms
-- Returns {1, ''} (held now), {0, what it waits for} (ask again: 'pause', 'calls', 'requests', 'tokens') or
-- {-1, 'tokens'} (the call alone needs more than `tpm`: it never fits).
local leases, waiting, turns, window, tokens, pause = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local id, owner = ARGV[1], ARGV[2]
local limit, rpm, tpm, est = tonumber(ARGV[3]), tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
local window_ms = tonumber(ARGV[9])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

local function leave_line(other)
  redis.call('ZREM', waiting, other)
  redis.call('HDEL', turns, 'seen:' .. other, 'est:' .. other)
end

if tpm > 0 and est > tpm then
  leave_line(id)
  return {-1, 'tokens'}
end
redis.call('ZREMRANGEBYSCORE', leases, '-inf', now)
local gone = redis.call('ZRANGEBYSCORE', window, '-inf', now - window_ms)
if #gone > 0 then
  for _, old in ipairs(gone) do
    redis.call('HINCRBY', tokens, '_sum', -tonumber(redis.call('HGET', tokens, old) or '0'))
    redis.call('HDEL', tokens, old)
  end
  redis.call('ZREMRANGEBYSCORE', window, '-inf', now - window_ms)
end
for _, other in ipairs(redis.call('ZRANGE', waiting, 0, -1)) do
  local seen = tonumber(redis.call('HGET', turns, 'seen:' .. other) or '0')
  if now - seen > tonumber(ARGV[5]) and other ~= id then
    leave_line(other)
  end
end
if not redis.call('ZSCORE', waiting, id) then
  local served = tonumber(redis.call('HGET', turns, '_served') or '0')
  local turn = math.max(tonumber(redis.call('HGET', turns, owner) or '0'), served)
  redis.call('HSET', turns, owner, turn + 1)
  redis.call('ZADD', waiting, turn, id)
end
redis.call('HSET', turns, 'seen:' .. id, now, 'est:' .. id, est)

if tonumber(redis.call('GET', pause) or '0') > now then
  return {0, 'pause'}
end
local rank = redis.call('ZRANK', waiting, id)
if limit > 0 and rank >= limit - redis.call('ZCARD', leases) then
  return {0, 'calls'}
end
if rpm > 0 and rank >= rpm - redis.call('ZCARD', window) then
  return {0, 'requests'}
end
if tpm > 0 then
  local need = est + tonumber(redis.call('HGET', tokens, '_sum') or '0')
  if rank > 0 then
    for _, ahead in ipairs(redis.call('ZRANGE', waiting, 0, rank - 1)) do
      need = need + tonumber(redis.call('HGET', turns, 'est:' .. ahead) or '0')
    end
  end
  if need > tpm then
    return {0, 'tokens'}
  end
end

redis.call('HSET', turns, '_served', redis.call('ZSCORE', waiting, id))
leave_line(id)
redis.call('ZADD', leases, now + tonumber(ARGV[4]), id)
if rpm > 0 or tpm > 0 then
  redis.call('ZADD', window, now, id)
  redis.call('HSET', tokens, id, est)
  redis.call('HINCRBY', tokens, '_sum', est)
  redis.call('PEXPIRE', window, 2 * window_ms)
  redis.call('PEXPIRE', tokens, 2 * window_ms)
end
return {1, ''}
