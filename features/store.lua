-- leadscore feature store: one atomic call applies a batch of events and returns, for each
-- event, the lead's feature vector right after it. The tables below the marker are generated
-- from features/definitions.py (see features/lua.py); the offline replay in features/offline.py
-- implements the same rules in Python and must agree with this script exactly.
--
-- Per lead (all keys share the lead's hash tag, so a lead's keys sit in one cluster slot):
--   ls:{id}:b    string: the lead's state, MessagePack. Read once per call and written back
--                once at its end, so applying an event costs table operations, not a round
--                of hash commands and field-name parsing (measured here: server time per
--                event down from ~130 to ~80 us).
--                m: latest event ts; o: 1 while the lead opts out of scoring;
--                g: {lw, le, la, cr, ls, li} (last web, last email engagement,
--                last activity, created, last social, last intent surge);
--                p: {attr = profile or enrichment value}; s: {attr = "ts|event_id"
--                stamp}; c: {"<code><res>" = {bucket = count}}; e: {day = engagement points};
--                es: {day = social engagement points}, ei: {day = intent points} (each
--                decay pool's field: POOLS, made on a lead's first point of it, so a lead
--                without one stores as before)
--   ls:{id}:i    sorted set: event_id scored by ts, for duplicate suppression
--   ls:{id}:r    string: the lead's latest score record (JSON), written by mode 's' or 'a'
--   ls:{id}:a    string: the lead's announced tier "tier|ms|model version" (mode 'a';
--                features/alerting.py has the rule in Python)
--   ls:{id}:p    hash: event_id -> feature vector of applied events whose score records are
--                not yet confirmed on the broker (see "pending" below)
--   An erased lead (integrations/erase.py) has, for the suppression period, only ls:{id}:b
--   holding {x = erased at ms} (no other field) and ls:{id}:x: its events are dropped ('X').
--@SPEC@

local floor = math.floor
local format = string.format

-- Counts as text, each number converted once per call: table.concat would format every
-- number it joins with sprintf('%.14g'), and a vector holds a couple dozen counts, mostly
-- the same few small numbers. tostring gives the very same text. (Measured on the bench's
-- traffic: script time per event 86-89 -> 75-86 us, four interleaved runs each.)
local COUNT_TEXT = setmetatable({}, { __index = function(t, n)
  local s = tostring(n)
  t[n] = s
  return s
end })

local function bucket(ts, r) return floor(ts / RES_MS[r]) end

-- Stamps compare by ts, then by event_id, so the winner doesn't depend on arrival order.
local function newer(ts, eid, stamp)
  if not stamp then return true end
  local sts, seid = string.match(stamp, '^(%-?%d+)|(.*)$')
  sts = tonumber(sts)
  if ts ~= sts then return ts > sts end
  return eid > seid
end

-- Drops the buckets no window can reach any more, measured from `from` (the lead's latest
-- event): memory stays bounded on long histories. Once per lead per call, at its end, not
-- per event (that cost ~6 us of the ~33 us per event): the vectors can't differ, as a
-- dropped bucket lies outside every window of every later `ref` >= `from`, and the stored
-- state is the same, since the latest event's prune is the last and widest either way.
local function prune(st, from)
  local limit = { m = bucket(from, 'm') - KEEP.m, h = bucket(from, 'h') - KEEP.h,
                  d = bucket(from, 'd') - KEEP.d }
  for cr, buckets in pairs(st.c) do
    local lim = limit[string.sub(cr, -1)]
    for b in pairs(buckets) do
      if b <= lim then buckets[b] = nil end
    end
    if next(buckets) == nil then st.c[cr] = nil end
  end
  for _, pool in ipairs(POOLS) do
    local days_of = st[pool]
    if days_of then
      for b in pairs(days_of) do
        if b <= limit.d then days_of[b] = nil end
      end
      if pool ~= 'e' and next(days_of) == nil then st[pool] = nil end
    end
  end
end

-- Scratch tables every compute() of a call reuses, and each counter key's resolution:
-- three new tables and a string.sub per event, then collecting them, took about a third of
-- compute()'s time.
local counts, out, days = {}, {}, {}
local EMPTY = {}
local RES_OF = setmetatable({}, { __index = function(t, cr)
  local r = string.sub(cr, -1)
  t[cr] = r
  return r
end })

-- The feature vector as of `ref`.
local function compute(st, ref)
  local rbm, rbh, rbd = bucket(ref, 'm'), bucket(ref, 'h'), bucket(ref, 'd')
  for _, fi in ipairs(COUNT_FEATURES) do counts[fi] = 0 end
  for cr, buckets in pairs(st.c) do
    local targets = BY_CODE_RES[cr]
    if targets then
      local r = RES_OF[cr]
      local rb = rbd
      if r == 'm' then rb = rbm elseif r == 'h' then rb = rbh end
      for b, c in pairs(buckets) do
        if b <= rb then
          for _, t in ipairs(targets) do
            if b > rb - t[2] then counts[t[1]] = counts[t[1]] + c end
          end
        end
      end
    end
  end
  local g, p = st.g, st.p
  for i, f in ipairs(FEATURES) do
    local t = f.t
    if t == 'c' then
      -- Integers are written exactly (as '%d' would) below 1e14.
      out[i] = COUNT_TEXT[counts[i]]
    elseif t == 'rate' then
      local den = counts[f.b]
      if den > 0 then out[i] = format('%.17g', counts[f.a] / den) else out[i] = '' end
    elseif t == 'rec' then
      local last = g[f.g]
      if last and last <= ref then out[i] = format('%.17g', (ref - last) / DAY_MS) else out[i] = '' end
    elseif t == 'dec' then
      -- Ascending day order, as in the Python replay: float sums depend on order.
      local nd = 0
      local pool = st[f.pool] or EMPTY
      for b in pairs(pool) do
        if b > rbd - KEEP.d and b <= rbd then
          nd = nd + 1
          days[nd] = b
        end
      end
      for j = #days, nd + 1, -1 do days[j] = nil end
      table.sort(days)
      local total = 0.0
      for j = 1, nd do
        local b = days[j]
        total = total + pool[b] * DECAY[rbd - b]
      end
      out[i] = format('%.17g', total)
    elseif t == 'prof' then
      out[i] = p[f.a] or ''
    elseif t == 'flag' then
      local bits = p[f.a]
      if bits then out[i] = string.sub(bits, f.k, f.k) else out[i] = '' end
    end
  end
  return table.concat(out, SEP, 1, #FEATURES)
end

-- Leads loaded by this call, in first-touch order; written back (and their TTLs and id-set
-- trim refreshed) once at the end of the call if an event changed them.
local leads = {}
local lead_order = {}

local function load(kB, kI, kP)
  local L = leads[kB]
  if L then return L end
  local raw = redis.call('GET', kB)
  local st
  if raw then
    st = cmsgpack.unpack(raw)
  else
    st = { g = {}, p = {}, s = {}, c = {}, e = {} }
  end
  L = { st = st, kI = kI, kP = kP, dirty = false, applied = false }
  leads[kB] = L
  lead_order[#lead_order + 1] = kB
  return L
end

local function finish()
  for _, kB in ipairs(lead_order) do
    local L = leads[kB]
    if L.dirty then
      if L.st.m then prune(L.st, L.st.m) end
      redis.call('SET', kB, cmsgpack.pack(L.st), 'EX', TTL_S)
      redis.call('EXPIRE', L.kI, TTL_S)
      if L.applied then redis.call('EXPIRE', L.kP, PENDING_TTL_S) end
      if L.st.m then
        redis.call('ZREMRANGEBYSCORE', L.kI, '-inf', '(' .. (L.st.m - RETENTION_MS))
      end
    end
  end
end

-- Recency (max/min of a timestamp) and profile stamps are order-independent and idempotent,
-- so every non-duplicate event updates them, late ones included: a lead's final state then
-- doesn't depend on the order its events arrive in across the three input topics.
local function update_stamps(st, eid, ts, k, prof)
  if k then
    local g = st.g
    for _, grp in ipairs(k.groups) do
      local cur = g[grp]
      if grp == 'cr' then
        if not cur or ts < cur then g[grp] = ts end
      elseif not cur or ts > cur then
        g[grp] = ts
      end
    end
  end
  if prof ~= '' then
    local attrs = cjson.decode(prof)
    for _, a in ipairs(PROFILE) do
      local v = attrs[a]
      if v ~= nil and newer(ts, eid, st.s[a]) then
        st.s[a] = ts .. '|' .. eid
        if v == cjson.null then st.p[a] = nil else st.p[a] = v end
      end
    end
    -- The opt-out (features/definitions.py, OPT_OUT_FIELD): stamped like a profile value,
    -- kept apart from the profile (it is not a feature).
    local o = attrs[OPT_OUT]
    if o ~= nil and newer(ts, eid, st.s[OPT_OUT]) then
      st.s[OPT_OUT] = ts .. '|' .. eid
      if o == cjson.null then st.o = nil else st.o = 1 end
    end
  end
end

-- Pending: the worker applies a batch here, then publishes its scores, then confirms them in
-- its next call. If it dies in between, Kafka redelivers the batch; those events are already
-- in the id set, but their vectors are still pending, so they are returned again ('R') and
-- scored from the features they had, instead of being dropped as duplicates.
local applied_now = {}

local function apply(kB, kI, kP, eid, ts, kind, prof)
  local L = load(kB, kI, kP)
  local st = L.st
  -- Erased: checked here, in the call that would apply the event, so an erasure racing a
  -- batch can't bring the lead back (the erasure's own write is atomic too).
  if st.x then return 'X' end
  local maxts = st.m
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
  update_stamps(st, eid, ts, k, prof)
  L.dirty = true
  -- A late event's buckets lie outside every window (retention >= the longest window), so
  -- its counts could never be read: skip them and keep no id for it.
  if maxts and ts < maxts - RETENTION_MS then return 'L' end
  redis.call('ZADD', kI, ts, eid)
  if not maxts or ts > maxts then
    maxts = ts
    st.m = ts
  end
  if k then
    for _, r in ipairs(k.res) do
      local cr = k.code .. r
      local buckets = st.c[cr]
      if not buckets then
        buckets = {}
        st.c[cr] = buckets
      end
      local b = bucket(ts, r)
      buckets[b] = (buckets[b] or 0) + 1
    end
    for _, pp in ipairs(k.pts) do
      local pool = st[pp[1]]
      if not pool then
        pool = {}
        st[pp[1]] = pool
      end
      local d = bucket(ts, 'd')
      pool[d] = (pool[d] or 0) + pp[2]
    end
  end
  -- Opted out: the state stays exact (a lifted opt-out scores from it), but no score.
  if st.o then return 'O' end
  local vector = compute(st, maxts)
  redis.call('HSET', kP, eid, vector)
  L.applied = true
  applied_now[kP .. eid] = true
  return 'F' .. vector
end

local mode = ARGV[1]
-- KEYS[1] is the state marker, ARGV[2] the generation the caller holds (features/state.py).
-- A Redis that lost its data (restarted empty, flushed, swapped) has no marker, or another
-- one after a rebuild: the call changes nothing and fails, so nothing is scored from a
-- partial state.
if redis.call('GET', KEYS[1]) ~= ARGV[2] then
  return redis.error_reply(STATE_LOST_REPLY .. ' the feature store marker is missing or changed')
end
-- The generation also names the state layout it holds (features/state.py: a '-L<n>' suffix,
-- none for layout 1). A script only writes the layout it was generated for, so two releases
-- of the worker side by side never mix layouts in one lead's keys.
local state_layout = tonumber(string.match(ARGV[2], '%-L(%d+)$')) or 1
if state_layout ~= LAYOUT then
  return redis.error_reply(STATE_LAYOUT_REPLY .. ' the feature state has layout ' ..
    state_layout .. ', this script writes layout ' .. LAYOUT)
end
if mode == 'u' then
  -- ARGV: 'u', generation, n events, m confirmations, n x (event_id, ts, kind, profile),
  -- m x event_id. KEYS: marker, n x (state, ids, pending), m x pending.
  -- Returns each event's result ('F' or 'R' and its vector, 'D', 'L', 'X' (erased lead),
  -- 'O' (applied, but the lead opted out of scoring), or 'E' and an error message),
  -- RS-separated.
  local n, m = tonumber(ARGV[3]), tonumber(ARGV[4])
  for c = 1, m do
    redis.call('HDEL', KEYS[1 + 3 * n + c], ARGV[4 + 4 * n + c])
  end
  local out = {}
  for e = 0, n - 1 do
    local a = 5 + e * 4
    local k = 2 + e * 3
    -- One event that fails (a lead's keys of the wrong type, say) fails alone: the others
    -- of the call still apply, and the worker sends that event to the dead-letter topic.
    local ok, res = pcall(apply, KEYS[k], KEYS[k + 1], KEYS[k + 2], ARGV[a],
                          tonumber(ARGV[a + 1]), ARGV[a + 2], ARGV[a + 3])
    if ok then
      out[e + 1] = res
    else
      out[e + 1] = 'E' .. string.gsub(tostring(res), '%c', ' ')
    end
  end
  finish()
  -- One string, the results separated by RS: one bulk reply instead of one per event
  -- (vectors never hold a control character: profile values have them replaced).
  return table.concat(out, RESULT_SEP)
elseif mode == 's' then
  -- Latest score record per lead. ARGV: 's', generation, n records; KEYS: marker, n
  -- latest-score keys. Returns each lead's previous tier (false if none), for tier-change
  -- alerts.
  local out = {}
  for i = 2, #KEYS do
    local old = redis.call('GET', KEYS[i])
    redis.call('SET', KEYS[i], ARGV[i + 1], 'EX', TTL_S)
    local tier = false
    if old then
      tier = string.match(old, '"tier":"(%a+)"')
      if not tier then tier = cjson.decode(old).tier or false end
    end
    out[i - 1] = tier
  end
  return out
elseif mode == 'a' then
  -- Latest score records and tier-change decisions (features/alerting.py: the same rule in
  -- Python). ARGV: 'a', generation, now ms, margin, interval ms, then per record: payload,
  -- score, tier, hot, warm, model version. KEYS: marker, then per record: latest-score key,
  -- announced-tier key. Returns per record '' or 'A' .. the tier announced before
  -- (announce), 'M' (within the margin), 'I' (within the interval), 'S' (another model).
  local now, margin, interval = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
  local RANK = { cold = 0, warm = 1, hot = 2 }
  local out = {}
  for i = 1, (#KEYS - 1) / 2 do
    local kL, kA = KEYS[2 * i], KEYS[2 * i + 1]
    local a = 6 * i
    local payload, score, tier = ARGV[a], tonumber(ARGV[a + 1]), ARGV[a + 2]
    local hot, warm, version = tonumber(ARGV[a + 3]), tonumber(ARGV[a + 4]), ARGV[a + 5]
    local old = redis.call('GET', kL)
    redis.call('SET', kL, payload, 'EX', TTL_S)
    local atier, at, aver
    local st = redis.call('GET', kA)
    if st then
      atier, at, aver = string.match(st, '^(%a+)|(%d+)|(.*)$')
      at = tonumber(at)
    elseif old then
      -- Scores saved before announcements were kept: the last score told its tier.
      atier = string.match(old, '"tier":"(%a+)"')
      aver = string.match(old, '"model_version":"([^"]*)"') or version
      at = 0
    end
    local res = ''
    if not atier then
      atier, at, aver = tier, 0, version
    elseif aver ~= version then
      if atier ~= tier then res = 'S' end
      atier, aver = tier, version
    elseif atier ~= tier then
      local past
      if RANK[tier] > RANK[atier] then
        past = score >= ((tier == 'hot') and hot or warm) + margin
      else
        past = score < ((tier == 'cold') and warm or hot) - margin
      end
      if not past then
        res = 'M'
      elseif at > 0 and now - at < interval then
        res = 'I'
      else
        res = 'A' .. atier
        atier, at = tier, now
      end
    end
    local now_st = atier .. '|' .. format('%d', at) .. '|' .. aver
    -- Written only when it changes: an expired one is rebuilt from the latest score above
    -- (then without the last alert's time, which only the interval reads).
    if now_st ~= st then redis.call('SET', kA, now_st, 'EX', TTL_S) end
    out[i] = res
  end
  return out
elseif mode == 'r' then
  -- KEYS: marker, state; ARGV: 'r', generation, as-of time in ms or '' for the lead's latest
  -- event
  local raw = redis.call('GET', KEYS[2])
  if not raw then return false end
  local st = cmsgpack.unpack(raw)
  if not st.m then return false end
  local ref = st.m
  if ARGV[3] ~= '' then ref = tonumber(ARGV[3]) end
  return compute(st, ref)
end
return redis.error_reply('leadscore store: unknown mode ' .. tostring(mode))
