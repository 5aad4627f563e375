-- Settle or release one reservation on every level it holds, atomically and at most once.
--
-- ARGV: 1 prefix, 2 request id, 3 mode ("s" settle to actual usage, "r" release
--       an expired reservation), 4 actual tokens, 5 actual yen (1/10,000 yen).
-- Settle: each level's held amount drops by the estimate and its used amount
-- grows by the actual usage; the minute token window is corrected; the
-- concurrency slots are freed; the usage is noted in the ministry's
-- "settled, maybe not in the ledger yet" hash for the reconciler; the
-- reservation is deleted, so a second settle finds nothing and does nothing.
-- Release: the held amounts and slots are given back but the record is kept,
-- marked released, so a request that outlived its reservation can still
-- settle its real usage later (used only, nothing held any more).
-- The record's format is described in admit.lua.
-- Returns 1 if something was done, 0 if the reservation was unknown or already settled.
-- Optionally ARGV 6 the usage journal's stream and 7 the request's "finished" entry
-- (apps.quotas.journal): appended first, whatever the reservation's state (an expired one
-- still ends in the ledger), with pcall (a journal that refuses it must not stop the settle);
-- then the reply is {the above, 1 if the entry was appended else 0}.
local P = ARGV[1]
local rid = ARGV[2]
local mode = ARGV[3]
local act_tok = tonumber(ARGV[4])
local act_yen = tonumber(ARGV[5])
local rk = P .. 'rs:' .. rid
local journaled = nil
if ARGV[6] then
  local added = redis.pcall('XADD', ARGV[6], '*', 'k', 'f', 'r', ARGV[7])
  journaled = (type(added) ~= 'table' or not added.err) and 1 or 0
end
local function done(v)
  if journaled == nil then
    return v
  end
  return {v, journaled}
end
-- Numbers are doubles in Lua: write them as integers, never in exponent notation.
local function int(x)
  if x == 0 then
    return '0'  -- never "-0", which Redis does not take as an integer
  end
  return string.format('%.0f', x)
end
-- Above this a double no longer holds every integer: such counters take HINCRBY (exact).
local EXACT = 4503599627370496

local record = redis.call('GET', rk)
if not record then
  return done(0)
end
local x, mid, tok, yen, mo, _exp, res_minute, svs, tps, cs = string.match(record,
  '^([01])\t(%d+)\t(%d+)\t(%d+)\t(%d+)\t(%d+)\t(%d+)\t([^\t]*)\t([^\t]*)\t([^\t]*)$')
if x == nil then
  return redis.error_reply('malformed reservation record ' .. rid)
end
local released = x == '1'
if released and mode == 'r' then
  return done(0)
end
local est_tok, est_yen = tonumber(tok), tonumber(yen)
local t = redis.call('TIME')

for sv in string.gmatch(svs, '[^\n]+') do
  local bkey = P .. sv .. ':b:' .. mo
  if not released and mode == 's' then
    -- Held down by the estimate, used up by the usage: one read and one write.
    local c = redis.call('HMGET', bkey, 'ut', 'ht', 'uy', 'hy')
    local ut, ht = tonumber(c[1]) or 0, tonumber(c[2]) or 0
    local uy, hy = tonumber(c[3]) or 0, tonumber(c[4]) or 0
    if ut + act_tok < EXACT and uy + act_yen < EXACT and ht < EXACT and hy < EXACT then
      redis.call('HSET', bkey, 'ut', int(ut + act_tok), 'ht', int(ht - est_tok),
        'uy', int(uy + act_yen), 'hy', int(hy - est_yen))
    else
      redis.call('HINCRBY', bkey, 'ht', int(-est_tok))
      redis.call('HINCRBY', bkey, 'hy', int(-est_yen))
      redis.call('HINCRBY', bkey, 'ut', ARGV[4])
      redis.call('HINCRBY', bkey, 'uy', ARGV[5])
    end
  else
    if not released then
      redis.call('HINCRBY', bkey, 'ht', int(-est_tok))
      if est_yen ~= 0 then
        redis.call('HINCRBY', bkey, 'hy', int(-est_yen))
      end
    end
    if mode == 's' then
      redis.call('HINCRBY', bkey, 'ut', ARGV[4])
      if act_yen ~= 0 then
        redis.call('HINCRBY', bkey, 'uy', ARGV[5])
      end
    end
  end
end
if not released then
  local now_minute = math.floor((tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)) / 60000)
  if mode == 's' and act_tok ~= est_tok and now_minute - tonumber(res_minute) <= 1 then
    -- Correct the reservation's minute to the actual usage while it still counts (this
    -- minute or the last: admit.lua keeps both, and the hash lives 130 s past its last minute).
    local tf = 't' .. res_minute
    for sv in string.gmatch(tps, '[^\n]+') do
      local wk = P .. sv .. ':w'
      if redis.call('HINCRBY', wk, tf, int(act_tok - est_tok)) < 0 then
        redis.call('HSET', wk, tf, 0)
      end
    end
  end
  for sv in string.gmatch(cs, '[^\n]+') do
    redis.call('ZREM', P .. sv .. ':c', rid)
  end
  redis.call('ZREM', P .. 'open:' .. mid, rid)
end

if mode == 'r' then
  redis.call('SET', rk, '1' .. string.sub(record, 2), 'KEEPTTL')
  return done(1)
end
redis.call('HSET', P .. 'settled:' .. mid, rid,
  t[1] .. '|' .. ARGV[4] .. '|' .. ARGV[5] .. '|' .. mo .. '|' .. svs)
redis.call('DEL', rk)
return done(1)
