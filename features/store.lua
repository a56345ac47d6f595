-- leadscore feature store: one atomic call applies a batch of events and returns, for each
-- event, the lead's feature vector right after it. The tables below the marker are generated
-- from features/definitions.py (see features/lua.py); the offline replay in features/offline.py
-- implements the same rules in Python and must agree with this script exactly.
--
-- Per lead (all keys share the {lead_id} hash tag, so a lead's keys sit in one cluster slot):
--   ls:{id}:s    hash: max (latest event ts), lw/le/la/cr (last web, last email engagement,
--                last activity, created), p:<attr> profile value, @<attr> "ts|event_id" stamp
--   ls:{id}:c    hash: <code>:<res><bucket> -> count, e:d<day> -> engagement points
--   ls:{id}:i    sorted set: event_id scored by ts, for duplicate suppression
--   ls:{id}:r    string: the lead's latest score record (JSON), written by mode 's'
--   ls:{id}:p    hash: event_id -> feature vector of applied events whose score records are
--                not yet confirmed on the broker (see "pending" below)
--@SPEC@

local SEP = '\31'
local floor = math.floor

local function bucket(ts, r) return floor(ts / RES_MS[r]) end

-- Stamps compare by ts, then by event_id, so the winner doesn't depend on arrival order.
local function newer(ts, eid, stamp)
  if not stamp then return true end
  local sts, seid = string.match(stamp, '^(%-?%d+)|(.*)$')
  sts = tonumber(sts)
  if ts ~= sts then return ts > sts end
  return eid > seid
end

local function compute(kS, kC, ref, prune_from)
  local vals = {}
  for i = 1, #FEATURES do vals[i] = false end
  local refb = { m = bucket(ref, 'm'), h = bucket(ref, 'h'), d = bucket(ref, 'd') }
  local limit = nil
  if prune_from then
    limit = { m = bucket(prune_from, 'm') - KEEP.m, h = bucket(prune_from, 'h') - KEEP.h,
              d = bucket(prune_from, 'd') - KEEP.d }
  end
  local counts = {}
  for _, fi in ipairs(COUNT_FEATURES) do counts[fi] = 0 end
  local eng_days, eng_pts = {}, {}
  local flat = redis.call('HGETALL', kC)
  local stale = {}
  for j = 1, #flat, 2 do
    local code, r, b = string.match(flat[j], '^(%w+):(%a)(%-?%d+)$')
    b = tonumber(b)
    local c = tonumber(flat[j + 1])
    if limit and b <= limit[r] then
      stale[#stale + 1] = flat[j]
    elseif code == 'e' then
      if b > refb.d - KEEP.d and b <= refb.d then
        eng_days[#eng_days + 1] = b
        eng_pts[b] = c
      end
    else
      local targets = BY_CODE_RES[code .. r]
      if targets then
        local rb = refb[r]
        for _, t in ipairs(targets) do
          if b > rb - t[2] and b <= rb then counts[t[1]] = counts[t[1]] + c end
        end
      end
    end
  end
  if #stale > 0 then redis.call('HDEL', kC, unpack(stale)) end
  local state = {}
  local sflat = redis.call('HGETALL', kS)
  for j = 1, #sflat, 2 do state[sflat[j]] = sflat[j + 1] end
  for i, f in ipairs(FEATURES) do
    local t = f.t
    if t == 'c' then
      vals[i] = string.format('%d', counts[i])
    elseif t == 'rate' then
      local den = counts[f.b]
      if den > 0 then vals[i] = string.format('%.17g', counts[f.a] / den) end
    elseif t == 'rec' then
      local last = tonumber(state[f.g])
      if last and last <= ref then vals[i] = string.format('%.17g', (ref - last) / DAY_MS) end
    elseif t == 'dec' then
      -- Ascending day order, as in the Python replay: float sums depend on order.
      table.sort(eng_days)
      local total = 0.0
      for _, b in ipairs(eng_days) do total = total + eng_pts[b] * DECAY[refb.d - b] end
      vals[i] = string.format('%.17g', total)
    elseif t == 'prof' then
      vals[i] = state['p:' .. f.a] or false
    end
  end
  local out = {}
  for i = 1, #FEATURES do
    if vals[i] then out[i] = vals[i] else out[i] = '' end
  end
  return table.concat(out, SEP)
end

-- Keys touched by this call: their TTLs and the id-set trim are refreshed once per lead at
-- the end of the call instead of once per event (a batch often holds several events a lead).
local touched = {}
local touched_order = {}

local function touch(kS, kC, kI, kP, maxts, applied)
  local t = touched[kS]
  if not t then
    t = { kC = kC, kI = kI, kP = kP, maxts = maxts, applied = applied }
    touched[kS] = t
    touched_order[#touched_order + 1] = kS
  else
    if maxts and (not t.maxts or maxts > t.maxts) then t.maxts = maxts end
    t.applied = t.applied or applied
  end
end

local function finish_touched()
  for _, kS in ipairs(touched_order) do
    local t = touched[kS]
    redis.call('EXPIRE', kS, TTL_S)
    redis.call('EXPIRE', t.kC, TTL_S)
    redis.call('EXPIRE', t.kI, TTL_S)
    if t.applied then redis.call('EXPIRE', t.kP, PENDING_TTL_S) end
    if t.maxts then
      redis.call('ZREMRANGEBYSCORE', t.kI, '-inf', '(' .. (t.maxts - RETENTION_MS))
    end
  end
end

-- Recency (max/min of a timestamp) and profile stamps are order-independent and idempotent,
-- so every non-duplicate event updates them, late ones included: a lead's final state then
-- doesn't depend on the order its events arrive in across the three input topics.
local function update_stamps(kS, eid, ts, k, prof)
  if k then
    for _, grp in ipairs(k.groups) do
      local cur = tonumber(redis.call('HGET', kS, grp))
      if grp == 'cr' then
        if not cur or ts < cur then redis.call('HSET', kS, grp, ts) end
      elseif not cur or ts > cur then
        redis.call('HSET', kS, grp, ts)
      end
    end
  end
  if prof ~= '' then
    local attrs = cjson.decode(prof)
    for _, a in ipairs(PROFILE) do
      local v = attrs[a]
      if v ~= nil and newer(ts, eid, redis.call('HGET', kS, '@' .. a)) then
        redis.call('HSET', kS, '@' .. a, ts .. '|' .. eid)
        if v == cjson.null then redis.call('HDEL', kS, 'p:' .. a)
        else redis.call('HSET', kS, 'p:' .. a, v) end
      end
    end
  end
end

-- Pending: the worker applies a batch here, then publishes its scores, then confirms them in
-- its next call. If it dies in between, Kafka redelivers the batch; those events are already
-- in the id set, but their vectors are still pending, so they are returned again ('R') and
-- scored from the features they had, instead of being dropped as duplicates.
local applied_now = {}

local function apply(kS, kC, kI, kP, eid, ts, kind, prof)
  local maxts = tonumber(redis.call('HGET', kS, 'max'))
  local seen = redis.call('ZSCORE', kI, eid)
  -- Ids older than the retention count as forgotten even before the end-of-call trim.
  if seen and (not maxts or tonumber(seen) >= maxts - RETENTION_MS) then
    if not applied_now[kP .. eid] then
      local pending = redis.call('HGET', kP, eid)
      if pending then return 'R' .. pending end
    end
    return 'D'
  end
  local k = KINDS[kind]
  update_stamps(kS, eid, ts, k, prof)
  -- A late event's buckets lie outside every window (retention >= the longest window), so
  -- its counts could never be read: skip them and keep no id for it.
  if maxts and ts < maxts - RETENTION_MS then
    touch(kS, kC, kI, kP, maxts, false)
    return 'L'
  end
  redis.call('ZADD', kI, ts, eid)
  if not maxts or ts > maxts then
    maxts = ts
    redis.call('HSET', kS, 'max', ts)
  end
  if k then
    for _, r in ipairs(k.res) do
      redis.call('HINCRBY', kC, k.code .. ':' .. r .. bucket(ts, r), 1)
    end
    if k.pts > 0 then redis.call('HINCRBY', kC, 'e:d' .. bucket(ts, 'd'), k.pts) end
  end
  local vector = compute(kS, kC, maxts, maxts)
  redis.call('HSET', kP, eid, vector)
  touch(kS, kC, kI, kP, maxts, true)
  applied_now[kP .. eid] = true
  return 'F' .. vector
end

local mode = ARGV[1]
if mode == 'u' then
  -- ARGV: 'u', n events, m confirmations, n x (event_id, ts, kind, profile), m x event_id
  -- KEYS: n x (state, counters, ids, pending), m x pending
  local n, m = tonumber(ARGV[2]), tonumber(ARGV[3])
  for c = 1, m do
    redis.call('HDEL', KEYS[4 * n + c], ARGV[3 + 4 * n + c])
  end
  local out = {}
  for e = 0, n - 1 do
    local a = 4 + e * 4
    local k = 1 + e * 4
    local res = apply(KEYS[k], KEYS[k + 1], KEYS[k + 2], KEYS[k + 3], ARGV[a],
                      tonumber(ARGV[a + 1]), ARGV[a + 2], ARGV[a + 3])
    out[e + 1] = res
  end
  finish_touched()
  return out
elseif mode == 's' then
  -- Latest score record per lead. ARGV: 's', n records; KEYS: n latest-score keys.
  -- Returns each lead's previous tier (false if none), for tier-change alerts.
  local out = {}
  for i = 1, #KEYS do
    local old = redis.call('GET', KEYS[i])
    redis.call('SET', KEYS[i], ARGV[i + 1], 'EX', TTL_S)
    local tier = false
    if old then
      tier = string.match(old, '"tier":"(%a+)"')
      if not tier then tier = cjson.decode(old).tier or false end
    end
    out[i] = tier
  end
  return out
elseif mode == 'r' then
  local maxts = tonumber(redis.call('HGET', KEYS[1], 'max'))
  if not maxts then return false end
  local ref = maxts
  if ARGV[2] ~= '' then ref = tonumber(ARGV[2]) end
  return compute(KEYS[1], KEYS[2], ref, nil)
end
return redis.error_reply('leadscore store: unknown mode ' .. tostring(mode))
