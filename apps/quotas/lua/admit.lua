-- Admission: check every level of one request, then reserve on all of them, atomically.
--
-- Redis runs a script without interleaving any other command, so "check all,
-- then apply all" cannot be raced by another request or another web process.
-- Keys are built here from the prefix and the level ids (single Redis primary,
-- not Redis Cluster). Times come from Redis's own clock (TIME), so replicas
-- with skewed clocks share one set of windows.
--
-- ARGV: 1 prefix, 2 request id, 3 estimated tokens, 4 estimated yen (1/10,000 yen),
--       5 month (YYYYMM), 6 seconds to the end of the month, 7 reservation lifetime (ms),
--       8 ministry id, 9 number of levels, then per level 8 values:
--       scope, level name, alias ("" = all aliases), token budget, yen budget, rpm, tpm,
--       max concurrent (each -1 = no limit). Only levels that have limits are passed:
--       a level without any limit keeps no counter at all.
-- Returns {"ok", expiry ms} or {"no", level, kind, retry after (s), alias} or {"dup"}.
local P = ARGV[1]
local rid = ARGV[2]
local est_tok = tonumber(ARGV[3])
local est_yen = tonumber(ARGV[4])
local month = ARGV[5]
local month_retry = tonumber(ARGV[6])
local ttl_ms = tonumber(ARGV[7])
local mid = ARGV[8]
local n = tonumber(ARGV[9])

local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local minute = math.floor(now_ms / 60000)
local into = (now_ms % 60000) / 60000

local res_key = P .. 'res:' .. rid
if redis.call('EXISTS', res_key) == 1 then
  return {'dup'}
end

-- Sliding-window estimate: the previous minute's count weighted by how much of it
-- still lies inside the last 60 s, plus the current minute's count.
local function window_retry(cur, prev, cost, lim)
  if cost > lim then
    return 60
  end
  if cur + cost <= lim then
    local x = (1 - (lim - cur - cost) / prev - into) * 60
    return math.max(1, math.ceil(x))
  end
  return math.max(1, math.ceil((1 - into) * 60 + (1 - (lim - cost) / cur) * 60))
end

local worst = nil
local function refuse(level, alias, kind, retry)
  if worst == nil or retry > worst[3] then
    worst = {level, kind, retry, alias}
  end
end

-- 1. Check every level; change nothing but expired concurrency slots.
local budget_new, window_new = {}, {}
for i = 0, n - 1 do
  local b = 10 + i * 8
  local sv, level, alias = ARGV[b], ARGV[b + 1], ARGV[b + 2]
  local lt, ly = tonumber(ARGV[b + 3]), tonumber(ARGV[b + 4])
  local rpm, tpm, conc = tonumber(ARGV[b + 5]), tonumber(ARGV[b + 6]), tonumber(ARGV[b + 7])
  local v = redis.call('HMGET', P .. sv .. ':b:' .. month, 'ut', 'ht', 'uy', 'hy')
  budget_new[i] = not v[1] and not v[2]
  local ut, ht = tonumber(v[1]) or 0, tonumber(v[2]) or 0
  local uy, hy = tonumber(v[3]) or 0, tonumber(v[4]) or 0
  if lt >= 0 and ut + ht + est_tok > lt then
    refuse(level, alias, 'budget', month_retry)
  end
  if ly >= 0 and uy + hy + est_yen > ly then
    refuse(level, alias, 'budget', month_retry)
  end
  if rpm >= 0 or tpm >= 0 then
    -- One hash per scope and minute: r = requests, t = tokens.
    local cur = redis.call('HMGET', P .. sv .. ':w:' .. minute, 'r', 't')
    local prev = redis.call('HMGET', P .. sv .. ':w:' .. (minute - 1), 'r', 't')
    window_new[i] = not cur[1] and not cur[2]
    if rpm >= 0 then
      local c, p = tonumber(cur[1]) or 0, tonumber(prev[1]) or 0
      if p * (1 - into) + c + 1 > rpm then
        refuse(level, alias, 'rpm', window_retry(c, p, 1, rpm))
      end
    end
    if tpm >= 0 then
      local c, p = tonumber(cur[2]) or 0, tonumber(prev[2]) or 0
      if p * (1 - into) + c + est_tok > tpm then
        refuse(level, alias, 'tpm', window_retry(c, p, est_tok, tpm))
      end
    end
  end
  if conc >= 0 then
    local ck = P .. sv .. ':c'
    local running = redis.call('ZCARD', ck)
    if running + 1 > conc then
      -- A slot whose reservation expired (its process died) frees itself here.
      redis.call('ZREMRANGEBYSCORE', ck, '-inf', now_ms)
      running = redis.call('ZCARD', ck)
    end
    if running + 1 > conc then
      refuse(level, alias, 'concurrency', 1)
    end
  end
end
if worst then
  return {'no', worst[1], worst[2], worst[3], worst[4]}
end

-- 2. Reserve on every level.
local exp = now_ms + ttl_ms
local svs, windows, concs = {}, {}, {}
for i = 0, n - 1 do
  local b = 10 + i * 8
  local sv = ARGV[b]
  local rpm, tpm, conc = tonumber(ARGV[b + 5]), tonumber(ARGV[b + 6]), tonumber(ARGV[b + 7])
  local bkey = P .. sv .. ':b:' .. month
  redis.call('HINCRBY', bkey, 'ht', ARGV[3])
  if est_yen ~= 0 then
    redis.call('HINCRBY', bkey, 'hy', ARGV[4])
  end
  if budget_new[i] then
    redis.call('EXPIRE', bkey, 3456000)  -- 40 days: the month, plus time for late settles
  end
  svs[#svs + 1] = sv
  if rpm >= 0 or tpm >= 0 then
    local wk = P .. sv .. ':w:' .. minute
    if rpm >= 0 then
      redis.call('HINCRBY', wk, 'r', 1)
    end
    if tpm >= 0 then
      redis.call('HINCRBY', wk, 't', ARGV[3])
      windows[#windows + 1] = wk
    end
    if window_new[i] then
      redis.call('EXPIRE', wk, 130)
    end
  end
  if conc >= 0 then
    local ck = P .. sv .. ':c'
    redis.call('ZADD', ck, exp, rid)
    redis.call('PEXPIRE', ck, ttl_ms + 60000)
    concs[#concs + 1] = ck
  end
end
redis.call('HSET', res_key, 'm', mid, 't', ARGV[3], 'y', ARGV[4], 'mo', month, 'e', exp,
  's', table.concat(svs, '\n'), 'tp', table.concat(windows, '\n'), 'c', table.concat(concs, '\n'))
-- Kept a day past expiry, so the reconciler (and a late settle) still find what it held.
redis.call('PEXPIRE', res_key, ttl_ms + 86400000)
redis.call('ZADD', P .. 'open:' .. mid, exp, rid)
return {'ok', exp}
