-- A model call asks for one of the model's `limit` calls at once, shared by
-- every worker (`JOBCAST_MODEL_CONCURRENCY`). Calls that wait take turns by
-- owner: each waiting call gets its owner's next turn, never earlier than the
-- turn last served, so a call of an owner who just came waits behind at most
-- one call of each other owner, however many those have waiting. A lease
-- expires unless renewed (a dead worker's capacity comes back); a waiting call
-- that stops asking is dropped after `stale_ms`.
--
-- KEYS[1] the model's leases (zset: lease id -> expiry ms)   KEYS[2] its waiting calls (zset: lease id -> turn)
-- KEYS[3] its turns (hash: owner -> next turn, `_served`, `seen:<lease id>` -> ms)
-- ARGV[1] lease id   ARGV[2] owner   ARGV[3] limit   ARGV[4] lease ms   ARGV[5] stale ms
-- Returns 1 (the lease is held now) or 0 (wait, and ask again).
local leases, waiting, turns = KEYS[1], KEYS[2], KEYS[3]
local id, owner, limit = ARGV[1], ARGV[2], tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', leases, '-inf', now)
for _, other in ipairs(redis.call('ZRANGE', waiting, 0, -1)) do
  local seen = tonumber(redis.call('HGET', turns, 'seen:' .. other) or '0')
  if now - seen > tonumber(ARGV[5]) and other ~= id then
    redis.call('ZREM', waiting, other)
    redis.call('HDEL', turns, 'seen:' .. other)
  end
end
if not redis.call('ZSCORE', waiting, id) then
  local served = tonumber(redis.call('HGET', turns, '_served') or '0')
  local turn = math.max(tonumber(redis.call('HGET', turns, owner) or '0'), served)
  redis.call('HSET', turns, owner, turn + 1)
  redis.call('ZADD', waiting, turn, id)
end
redis.call('HSET', turns, 'seen:' .. id, now)
local free = limit - redis.call('ZCARD', leases)
if free > 0 and redis.call('ZRANK', waiting, id) < free then
  redis.call('HSET', turns, '_served', redis.call('ZSCORE', waiting, id))
  redis.call('ZREM', waiting, id)
  redis.call('HDEL', turns, 'seen:' .. id)
  redis.call('ZADD', leases, now + tonumber(ARGV[4]), id)
  return 1
end
return 0
