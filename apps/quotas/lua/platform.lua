-- Reseed the platform's month counters (after every ministry's was reseeded).
--
--   used = the ledger's sum over every ministry (passed in)
--        + usage settled in Redis whose UsageRecord was not yet in the ministries'
--          ledger snapshots (the notes left after the ministries' reseeds)
--   held = the estimates of the open reservations of every ministry
--
-- ARGV: 1 prefix, 2 month (YYYYMM), 3 number of ministries, then their ids, then the
--       number of counters, then per counter 3 values: scope ("p" or "p|<alias>"),
--       ledger tokens, ledger yen (1/10,000 yen).
-- Returns the number of counters written.
local P, month = ARGV[1], ARGV[2]
local nm = tonumber(ARGV[3])
local function int(x)
  if x == 0 then
    return '0'  -- never "-0", which Redis does not take as an integer
  end
  return string.format('%.0f', x)
end
local function is_platform(sv)
  return sv == 'p' or string.sub(sv, 1, 2) == 'p|'
end

local target, order = {}, {}
local function slot(sv)
  local s = target[sv]
  if s == nil then
    s = {0, 0, 0, 0}
    target[sv] = s
    order[#order + 1] = sv
  end
  return s
end

local pos = 4 + nm
local nc = tonumber(ARGV[pos])
for i = 0, nc - 1 do
  local b = pos + 1 + i * 3
  local s = slot(ARGV[b])
  s[1] = s[1] + tonumber(ARGV[b + 1])
  s[2] = s[2] + tonumber(ARGV[b + 2])
end

for m = 1, nm do
  local mid = ARGV[3 + m]
  local notes = redis.call('HGETALL', P .. 'settled:' .. mid)
  for i = 1, #notes, 2 do
    local ts, tok, yen, mo, svs = string.match(notes[i + 1], '^(%d+)|(-?%d+)|(-?%d+)|(%d+)|(.*)$')
    if ts ~= nil and mo == month then
      for sv in string.gmatch(svs, '[^\n]+') do
        if is_platform(sv) then
          local s = slot(sv)
          s[1] = s[1] + tonumber(tok)
          s[2] = s[2] + tonumber(yen)
        end
      end
    end
  end
  local open = redis.call('ZRANGE', P .. 'open:' .. mid, 0, -1)
  for _, rid in ipairs(open) do
    -- The reservation record (its format is described in admit.lua).
    local record = redis.call('GET', P .. 'rs:' .. rid)
    local x, tok, yen, mo, svs
    if record then
      x, tok, yen, mo, svs = string.match(record, '^([01])\t%d+\t(%d+)\t(%d+)\t(%d+)\t%d+\t%d+\t([^\t]*)\t')
    end
    if x == '0' and mo == month then
      for sv in string.gmatch(svs, '[^\n]+') do
        if is_platform(sv) then
          local s = slot(sv)
          s[3] = s[3] + tonumber(tok)
          s[4] = s[4] + tonumber(yen)
        end
      end
    end
  end
end

for _, sv in ipairs(order) do
  local s = target[sv]
  local bkey = P .. sv .. ':b:' .. month
  redis.call('HSET', bkey, 'ut', int(s[1]), 'uy', int(s[2]), 'ht', int(s[3]), 'hy', int(s[4]))
  redis.call('EXPIRE', bkey, 3456000)
end
return #order
