-- ARGV: 1 storm id, 2 incident id, 3 count, 4 target, 5 now ms, 6 retain ms
local id = ARGV[1]
if redis.call('EXISTS', b .. 's:' .. id) == 0 then return {'gone'} end
addMember(id, ARGV[2], tonumber(ARGV[3]), ARGV[4], tonumber(ARGV[5]), false)
expireStorm(id, tonumber(ARGV[6]))
return {'ok', 0, snapshot(id)}
