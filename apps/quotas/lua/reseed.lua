-- Reseed one ministry's month counters from the ledger, atomically.
--
-- For every counter of the ministry and month:
--   used = the ledger's sum (PostgreSQL, passed in)
--        + usage settled in Redis whose UsageRecord was not yet in that ledger snapshot
--   held = the estimates of the reservations still open
-- so whatever drift crept in (a lost settle, a crashed process, a hand-made INCRBY)
-- is replaced by the truth. Nothing can settle or reserve in between: Redis runs
-- the script alone.
--
-- ARGV: 1 prefix, 2 ministry id, 3 month (YYYYMM), 4 now (s), 5 max age (s) of a
--       settled note, 6 number of notes now in the ledger snapshot (dropped), then
--       their request ids, then the number of counters, then per counter
--       3 values: scope, ledger tokens, ledger yen (1/10,000 yen).
-- Returns the number of counters written.
local P, mid, month = ARGV[1], ARGV[2], ARGV[3]
local now_s, max_age = tonumber(ARGV[4]), tonumber(ARGV[5])
local nd = tonumber(ARGV[6])
local sk = P .. 'settled:' .. mid
local function int(x)
  if x == 0 then
    return '0'  -- never "-0", which Redis does not take as an integer
  end
  return string.format('%.0f', x)
end

for i = 1, nd do
  redis.call('HDEL', sk, ARGV[6 + i])
end

local mine = 'm' .. mid
local function is_mine(sv)
  if sv == mine then
    return true
  end
  local c = string.sub(sv, #mine + 1, #mine + 1)
  return string.sub(sv, 1, #mine) == mine and (c == ':' or c == '|')
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

local pos = 7 + nd
local nc = tonumber(ARGV[pos])
for i = 0, nc - 1 do
  local b = pos + 1 + i * 3
  local s = slot(ARGV[b])
  s[1] = s[1] + tonumber(ARGV[b + 1])
  s[2] = s[2] + tonumber(ARGV[b + 2])
end

local notes = redis.call('HGETALL', sk)
for i = 1, #notes, 2 do
  local ts, tok, yen, mo, svs = string.match(notes[i + 1], '^(%d+)|(-?%d+)|(-?%d+)|(%d+)|(.*)$')
  if ts == nil or now_s - tonumber(ts) > max_age then
    -- Never reached the ledger within max age: the ledger is the truth, forget it.
    redis.call('HDEL', sk, notes[i])
  elseif mo == month then
    for sv in string.gmatch(svs, '[^\n]+') do
      if is_mine(sv) then
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
      if is_mine(sv) then
        local s = slot(sv)
        s[3] = s[3] + tonumber(tok)
        s[4] = s[4] + tonumber(yen)
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
