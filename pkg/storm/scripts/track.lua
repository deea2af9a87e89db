-- ARGV: 1 storm id, 2 incident id, 3 count, 4 target, 5 now ms, 6 retain
-- ms, 7 the storm's detection ms the caller knows, 8 affected targets it
-- holds (see reply)
local now, retain = tonumber(ARGV[5]), tonumber(ARGV[6])
local r = load(ARGV[1])
if not r then return {'gone'} end
if addMember(r, ARGV[2], tonumber(ARGV[3]), ARGV[4], now, false, retain) then save(r, now, retain) end
return {'ok', reply(r, tonumber(ARGV[7]), tonumber(ARGV[8]))}
