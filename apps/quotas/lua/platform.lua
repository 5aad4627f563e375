-- Reseed the platform's month counters as the sum of every ministry's (after those were reseeded).
--
-- Every admission increments the platform counter and its ministry's counter in the
-- same script, so the platform's value is by construction the sum of the ministries'.
--
-- ARGV: 1 prefix, 2 month, 3 number of ministries, then their ids, then the number of
--       aliases, then the alias names ("" = all aliases is always included).
local P, month = ARGV[1], ARGV[2]
local nm = tonumber(ARGV[3])
local na = tonumber(ARGV[4 + nm])
local function int(x)
  if x == 0 then
    return '0'  -- never "-0", which Redis does not take as an integer
  end
  return string.format('%.0f', x)
end
local suffixes = {''}
for i = 1, na do
  suffixes[#suffixes + 1] = '|' .. ARGV[4 + nm + i]
end
for _, suffix in ipairs(suffixes) do
  local s = {0, 0, 0, 0}
  for i = 1, nm do
    local v = redis.call('HMGET', P .. 'm' .. ARGV[3 + i] .. suffix .. ':b:' .. month, 'ut', 'uy', 'ht', 'hy')
    for j = 1, 4 do
      s[j] = s[j] + (tonumber(v[j]) or 0)
    end
  end
  local bkey = P .. 'p' .. suffix .. ':b:' .. month
  redis.call('HSET', bkey, 'ut', int(s[1]), 'uy', int(s[2]), 'ht', int(s[3]), 'hy', int(s[4]))
  redis.call('EXPIRE', bkey, 3456000)
end
return #suffixes
