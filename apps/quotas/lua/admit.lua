-- Admission: check every level of one request, then reserve on all of them, atomically.
--
-- Redis runs a script without interleaving any other command, so "check all,
-- then apply all" cannot be raced by another request or another web process.
-- Keys are built here from the prefix and the level scopes (single Redis primary,
-- not Redis Cluster). Times come from Redis's own clock (TIME), so replicas
-- with skewed clocks share one set of windows.
--
-- Every redis.call costs a few µs inside a script (a write also goes to the AOF), so the
-- layout keeps them few: per level one HMGET of the month budget and one HSET of what it
-- holds; one hash per scope for its RPM/TPM minutes (fields r<minute>, t<minute>: the
-- current and the previous minute are one HMGET); the reservation is one string written
-- with SET NX PX, which is also the duplicate check.
--
-- ARGV: 1 prefix, 2 request id, 3 estimated tokens, 4 estimated yen (1/10,000 yen),
--       5 month (YYYYMM), 6 seconds to the end of the month, 7 reservation lifetime (ms),
--       8 ministry id, 9 number of levels, then per level 6 values:
--       scope, token budget, yen budget, rpm, tpm, max concurrent (each -1 = no limit).
--       Only levels that have limits are passed: a level without any limit keeps no counter.
--       Optionally after the levels: the usage journal's stream and the request's ``started``
--       entry (apps.quotas.journal), appended only if the request is admitted.
-- Returns {"ok", expiry ms, 1 if the journal entry was appended else 0} or {"no", level number (1-based), kind, retry after (s)} or {"dup"}.
--
-- The reservation record ("rs:<request id>", read by settle.lua, reseed.lua, platform.lua):
--   released(0|1) TAB ministry TAB tokens TAB yen TAB month TAB expiry ms TAB minute
--   TAB budget scopes TAB TPM scopes TAB concurrency scopes (scopes separated by "\n").
local P = ARGV[1]
local rid = ARGV[2]
local est_tok = tonumber(ARGV[3])
local est_yen = tonumber(ARGV[4])
local month = ARGV[5]
local month_retry = tonumber(ARGV[6])
local ttl_ms = tonumber(ARGV[7])
local mid = ARGV[8]
local n = tonumber(ARGV[9])

-- Numbers are doubles in Lua: write them as integers, never in exponent notation.
local function int(x)
  if x == 0 then
    return '0'  -- never "-0", which Redis does not take as an integer
  end
  return string.format('%.0f', x)
end

local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local minute = math.floor(now_ms / 60000)
local into = (now_ms % 60000) / 60000
local rf, tf = 'r' .. minute, 't' .. minute
local rf_prev, tf_prev = 'r' .. (minute - 1), 't' .. (minute - 1)

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

local worst_i, worst_kind, worst_retry = nil, nil, nil
local function refuse(i, kind, retry)
  if worst_i == nil or retry > worst_retry then
    worst_i, worst_kind, worst_retry = i, kind, retry
  end
end

-- 1. Check every level; change nothing but expired concurrency slots.
local budgets, windows = {}, {}
local svs, tps, cs = {}, {}, {}
for i = 1, n do
  local b = 4 + i * 6
  local sv = ARGV[b]
  local lt, ly = tonumber(ARGV[b + 1]), tonumber(ARGV[b + 2])
  local rpm, tpm, conc = tonumber(ARGV[b + 3]), tonumber(ARGV[b + 4]), tonumber(ARGV[b + 5])
  svs[i] = sv
  local v = redis.call('HMGET', P .. sv .. ':b:' .. month, 'ut', 'ht', 'uy', 'hy')
  budgets[i] = v
  local ut, ht = tonumber(v[1]) or 0, tonumber(v[2]) or 0
  local uy, hy = tonumber(v[3]) or 0, tonumber(v[4]) or 0
  if lt >= 0 and ut + ht + est_tok > lt then
    refuse(i, 'budget', month_retry)
  end
  if ly >= 0 and uy + hy + est_yen > ly then
    refuse(i, 'budget', month_retry)
  end
  if rpm >= 0 or tpm >= 0 then
    -- One hash per scope: r<minute> = requests, t<minute> = tokens (this minute and the last).
    local w = redis.call('HMGET', P .. sv .. ':w', rf, tf, rf_prev, tf_prev)
    windows[i] = w
    if rpm >= 0 then
      local c, p = tonumber(w[1]) or 0, tonumber(w[3]) or 0
      if p * (1 - into) + c + 1 > rpm then
        refuse(i, 'rpm', window_retry(c, p, 1, rpm))
      end
    end
    if tpm >= 0 then
      tps[#tps + 1] = sv
      local c, p = tonumber(w[2]) or 0, tonumber(w[4]) or 0
      if p * (1 - into) + c + est_tok > tpm then
        refuse(i, 'tpm', window_retry(c, p, est_tok, tpm))
      end
    end
  end
  if conc >= 0 then
    cs[#cs + 1] = sv
    local ck = P .. sv .. ':c'
    local running = redis.call('ZCARD', ck)
    if running + 1 > conc then
      -- A slot whose reservation expired (its process died) frees itself here.
      redis.call('ZREMRANGEBYSCORE', ck, '-inf', now_ms)
      running = redis.call('ZCARD', ck)
    end
    if running + 1 > conc then
      refuse(i, 'concurrency', 1)
    end
  end
end
if worst_i then
  return {'no', worst_i, worst_kind, worst_retry}
end

-- 2. The record first: it is the duplicate check, and nothing has been written before it.
-- Kept a day past expiry, so the reconciler (and a late settle) still find what it held.
local exp = now_ms + ttl_ms
local record = table.concat({'0', mid, ARGV[3], ARGV[4], month, exp, minute,
  table.concat(svs, '\n'), table.concat(tps, '\n'), table.concat(cs, '\n')}, '\t')
if not redis.call('SET', P .. 'rs:' .. rid, record, 'NX', 'PX', ttl_ms + 86400000) then
  return {'dup'}
end

-- 3. Reserve on every level.
for i = 1, n do
  local b = 4 + i * 6
  local sv = ARGV[b]
  local rpm, tpm, conc = tonumber(ARGV[b + 3]), tonumber(ARGV[b + 4]), tonumber(ARGV[b + 5])
  local bkey = P .. sv .. ':b:' .. month
  local v = budgets[i]
  if est_yen ~= 0 then
    -- Held amounts are the sums of open estimates (small): exact as doubles.
    redis.call('HSET', bkey, 'ht', int((tonumber(v[2]) or 0) + est_tok), 'hy', int((tonumber(v[4]) or 0) + est_yen))
  else
    redis.call('HINCRBY', bkey, 'ht', ARGV[3])
  end
  if not v[1] and not v[2] then
    redis.call('EXPIRE', bkey, 3456000)  -- 40 days: the month, plus time for late settles
  end
  local w = windows[i]
  if w then
    local wk = P .. sv .. ':w'
    local cr, ct = tonumber(w[1]) or 0, tonumber(w[2]) or 0
    if not w[1] and not w[2] then
      -- First request of this scope in this minute: drop the older minutes, keep the last.
      local f = {}
      if rpm >= 0 then
        f[#f + 1] = rf
        f[#f + 1] = 1
        if w[3] then
          f[#f + 1] = rf_prev
          f[#f + 1] = w[3]
        end
      end
      if tpm >= 0 then
        f[#f + 1] = tf
        f[#f + 1] = ARGV[3]
        if w[4] then
          f[#f + 1] = tf_prev
          f[#f + 1] = w[4]
        end
      end
      redis.call('DEL', wk)
      redis.call('HSET', wk, unpack(f))
      redis.call('EXPIRE', wk, 130)
    elseif rpm >= 0 and tpm >= 0 then
      redis.call('HSET', wk, rf, int(cr + 1), tf, int(ct + est_tok))
    elseif rpm >= 0 then
      redis.call('HINCRBY', wk, rf, 1)
    else
      redis.call('HINCRBY', wk, tf, ARGV[3])
    end
  end
  if conc >= 0 then
    -- No expiry on the slot set: a live one must never vanish; the reconciler drops
    -- expired slots of idle scopes (reconcile.release_expired), and Redis deletes empty sets.
    redis.call('ZADD', P .. sv .. ':c', exp, rid)
  end
end
redis.call('ZADD', P .. 'open:' .. mid, exp, rid)
-- The request's "started" usage-journal entry, when the caller passes one: written in the
-- same atomic step as the reservation, so a request holds budget exactly when its ledger
-- row is on its way, and the hot path writes one command instead of two.
-- pcall: a journal that cannot take it (wrong type, out of memory) must not fail the
-- reservation already written; the third value tells the caller to journal it itself.
local jb = 10 + n * 6
if ARGV[jb] then
  local added = redis.pcall('XADD', ARGV[jb], '*', 'k', 's', 'r', ARGV[jb + 1])
  if type(added) ~= 'table' or not added.err then
    return {'ok', exp, 1}
  end
end
return {'ok', exp, 0}
