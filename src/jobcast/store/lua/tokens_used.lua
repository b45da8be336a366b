-- A model call is over: the tokens it reserved in the model's minute (`lua/capacity.lua`) become the tokens
-- it used, as the server reported them. Nothing changes once the call has left the window.
--
-- KEYS[1] the window's tokens (hash: lease id -> tokens, `_sum`)
-- ARGV[1] lease id   ARGV[2] the tokens used
local reserved = redis.call('HGET', KEYS[1], ARGV[1])
if reserved then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
  redis.call('HINCRBY', KEYS[1], '_sum', tonumber(ARGV[2]) - tonumber(reserved))
end
return 1
