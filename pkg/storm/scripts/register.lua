-- ARGV: 1 storm id. Marks the storm's deadline as registered in the
-- deadline index, so members stop re-registering it.
local s = b .. 's:' .. ARGV[1]
if redis.call('EXISTS', s) == 1 then redis.call('HSET', s, 'reg', 1) end
return 1
