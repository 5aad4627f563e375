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
-- Returns 1 if something was done, 0 if the reservation was unknown or already settled.
local P = ARGV[1]
local rid = ARGV[2]
local mode = ARGV[3]
local act_tok = tonumber(ARGV[4])
local act_yen = tonumber(ARGV[5])
local res_key = P .. 'res:' .. rid
-- Numbers are doubles in Lua: write them as integers, never in exponent notation.
local function int(x)
  if x == 0 then
    return '0'  -- never "-0", which Redis does not take as an integer
  end
  return string.format('%.0f', x)
end

local raw = redis.call('HGETALL', res_key)
if #raw == 0 then
  return 0
end
local h = {}
for i = 1, #raw, 2 do
  h[raw[i]] = raw[i + 1]
end
local released = h['x'] == '1'
if released and mode == 'r' then
  return 0
end
local est_tok, est_yen = tonumber(h['t']), tonumber(h['y'])

for sv in string.gmatch(h['s'], '[^\n]+') do
  local bkey = P .. sv .. ':b:' .. h['mo']
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
if not released then
  if mode == 's' then
    -- Correct the minute's token count to the actual usage (if that minute still exists).
    for wk in string.gmatch(h['tp'], '[^\n]+') do
      if act_tok ~= est_tok and redis.call('EXISTS', wk) == 1 then
        if redis.call('HINCRBY', wk, 't', int(act_tok - est_tok)) < 0 then
          redis.call('HSET', wk, 't', 0)
        end
      end
    end
  end
  for ck in string.gmatch(h['c'], '[^\n]+') do
    redis.call('ZREM', ck, rid)
  end
  redis.call('ZREM', P .. 'open:' .. h['m'], rid)
end

if mode == 'r' then
  redis.call('HSET', res_key, 'x', '1')
  return 1
end
local t = redis.call('TIME')
redis.call('HSET', P .. 'settled:' .. h['m'], rid,
  t[1] .. '|' .. ARGV[4] .. '|' .. ARGV[5] .. '|' .. h['mo'] .. '|' .. h['s'])
redis.call('DEL', res_key)
return 1
