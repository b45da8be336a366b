-- A job read for a client holding ids this Redis may never have had (a
-- Last-Event-ID past the job's log, a set cursor past the owner's feed): after
-- a failover or a restart, ids the old server handed out and lost. The job is
-- carried over first (`carried` in lib.lua), so the snapshot the client gets
-- next has an id no event ever had.
--
-- KEYS[1] job hash   KEYS[2] event stream   KEYS[3] the owner's feed   KEYS[4] its marker
-- Returns the job's event id now (0: no such job).
local v = redis.call('HMGET', KEYS[1], 'seq', 'primary')
if not v[1] then return 0 end
return carried(KEYS[1], KEYS[2], 3, tonumber(v[1]), v[2])
