-- Circuit breaker state machine: the Lua twin of sergas_guard/circuit_breaker/core.py.
-- One breaker per key (with a {hash tag}, so Redis Cluster works); the state is a
-- cmsgpack blob, read, changed and written back atomically by this one script.
-- Keep every rule identical to core.py: a differential test compares the two.
--
-- KEYS[1]  the breaker's key
-- ARGV[1]  op: acquire | record | release | transition | reset | snapshot
-- ARGV[2]  now in seconds ("" = the server's TIME)
-- ARGV[3]  TTL of the key in seconds
-- ARGV[4..15] config: window_type, window_size, minimum_calls, failure_rate_threshold,
--          slow_call_duration, slow_call_rate_threshold, wait_duration_in_open,
--          wait_backoff_multiplier, max_wait_duration_in_open (-1 = none),
--          permitted_calls_in_half_open, max_wait_in_half_open, probe_timeout
-- ARGV[16..20] op arguments: generation, probe, duration, failed (0/1), target state
-- ARGV[21] calls the caller refused on its own since its last step (added to the
--          rejected count before the op: the caller decided them from a cached OPEN)
--
-- Reply: permitted, state, generation, probe, retry_after, buffered, failed, slow,
-- rejected, not_permitted, probes_in_flight, consecutive_opens, now, open_until (the
-- time the OPEN wait ends, "" in other states), then for each event five items: kind,
-- state after it, from, to, rate ("" when absent). Floats travel as strings because
-- Redis truncates Lua numbers to integers.

local key = KEYS[1]
local op = ARGV[1]
local now = tonumber(ARGV[2])
if now == nil then
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local ttl = tonumber(ARGV[3])
local cfg = {
  window_type = ARGV[4],
  window_size = tonumber(ARGV[5]),
  minimum_calls = tonumber(ARGV[6]),
  failure_threshold = tonumber(ARGV[7]),
  slow_duration = tonumber(ARGV[8]),
  slow_threshold = tonumber(ARGV[9]),
  wait = tonumber(ARGV[10]),
  multiplier = tonumber(ARGV[11]),
  max_wait = tonumber(ARGV[12]),
  permitted = tonumber(ARGV[13]),
  max_half_open = tonumber(ARGV[14]),
  probe_timeout = tonumber(ARGV[15]),
}
local MAX_BACKOFF_EXPONENT = 30

local function fmt(x)
  return string.format('%.17g', x)
end

local function zeros(n)
  local t = {}
  for i = 1, n do t[i] = 0 end
  return t
end

-- ---- window (CountWindow / TimeWindow) ----------------------------------------
local function window_clear(S)
  S.wt = cfg.window_type
  S.ws = cfg.window_size
  S.calls, S.fails, S.slow = 0, 0, 0
  if S.wt == 'count' then
    S.ring = zeros(S.ws)
    S.nx = 0
  else
    S.bc, S.bf, S.bs = zeros(S.ws), zeros(S.ws), zeros(S.ws)
    S.head = -1
  end
end

local function window_refresh(S)
  if S.wt == 'count' then return end
  local second = math.floor(now)
  if second <= S.head then return end
  local size = S.ws
  for passed = math.max(S.head + 1, second - size + 1), second do
    local i = passed % size + 1
    S.calls = S.calls - S.bc[i]
    S.fails = S.fails - S.bf[i]
    S.slow = S.slow - S.bs[i]
    S.bc[i], S.bf[i], S.bs[i] = 0, 0, 0
  end
  S.head = second
end

local function window_add(S, failed, slow)
  if S.wt == 'count' then
    local i = S.nx + 1
    local old = S.ring[i]
    if old ~= 0 then
      S.calls = S.calls - 1
      S.fails = S.fails - (old - 1) % 2
      S.slow = S.slow - math.floor((old - 1) / 2)
    end
    S.ring[i] = 1 + failed + 2 * slow
    S.nx = (S.nx + 1) % S.ws
  else
    window_refresh(S)
    local i = S.head % S.ws + 1
    S.bc[i] = S.bc[i] + 1
    S.bf[i] = S.bf[i] + failed
    S.bs[i] = S.bs[i] + slow
  end
  S.calls = S.calls + 1
  S.fails = S.fails + failed
  S.slow = S.slow + slow
end

-- ---- state ------------------------------------------------------------------------
local raw = redis.call('GET', key)
local S
if raw then
  S = cmsgpack.unpack(raw)
else
  S = {s = 'closed', at = now, ow = 0, co = 0, gen = 0, np = 1, pr = {},
       hc = 0, hf = 0, hs = 0, rej = 0, nper = 0}
  window_clear(S)
end
if S.wt ~= cfg.window_type or S.ws ~= cfg.window_size then
  window_clear(S)  -- the window was reconfigured: its old contents mean nothing now
end
local events = {}

local function rate(part, whole)
  if whole == 0 then return 0 end
  return part * 100.0 / whole
end

local function emit(kind, from, to, r)
  local n = #events
  events[n + 1] = kind
  events[n + 2] = S.s
  events[n + 3] = from or ''
  events[n + 4] = to or ''
  events[n + 5] = r and fmt(r) or ''
end

local function open_wait(opens)
  local exponent = math.min(math.max(0, opens - 1), MAX_BACKOFF_EXPONENT)
  local wait = cfg.wait * cfg.multiplier ^ exponent
  if cfg.max_wait >= 0 then wait = math.min(wait, cfg.max_wait) end
  return wait
end

local function enter(target)
  local previous = S.s
  S.s = target
  S.at = now
  S.gen = S.gen + 1
  S.pr = {}
  S.hc, S.hf, S.hs = 0, 0, 0
  if target == 'open' then
    S.co = S.co + 1
    S.ow = open_wait(S.co)
  elseif target == 'closed' or target == 'disabled' or target == 'metrics_only' then
    S.co = 0
    window_clear(S)
  end
  emit('state_transition', previous, target, nil)
end

local function judge(calls, fails, slow)
  local fr = rate(fails, calls)
  local sr = rate(slow, calls)
  local tripped = false
  if fr >= cfg.failure_threshold then
    emit('failure_rate_exceeded', nil, nil, fr)
    tripped = true
  end
  if sr >= cfg.slow_threshold then
    emit('slow_call_rate_exceeded', nil, nil, sr)
    tripped = true
  end
  return tripped
end

local function probe_count()
  local n = 0
  for _ in pairs(S.pr) do n = n + 1 end
  return n
end

local function refresh()
  if S.s == 'open' and now >= S.at + S.ow then
    enter('half_open')
  end
  if S.s == 'half_open' then
    if cfg.max_half_open > 0 and now >= S.at + cfg.max_half_open then
      enter('open')
    else
      local expired = {}
      for probe, ends in pairs(S.pr) do
        if ends <= now then expired[#expired + 1] = probe end
      end
      for _, probe in ipairs(expired) do S.pr[probe] = nil end
    end
  end
end

local function retry_after()
  if S.s == 'open' then return math.max(0, S.at + S.ow - now) end
  return cfg.wait
end

-- ---- operations ---------------------------------------------------------------------
local permitted, probe, wait_hint = 0, 0, 0
local refused_by_caller = tonumber(ARGV[21]) or 0
if refused_by_caller > 0 then S.rej = S.rej + refused_by_caller end
refresh()
if op == 'acquire' then
  local s = S.s
  if s == 'closed' or s == 'metrics_only' or s == 'disabled' then
    permitted = 1
  elseif s == 'half_open' and probe_count() + S.hc < cfg.permitted then
    probe = S.np
    S.np = S.np + 1
    S.pr[probe] = now + cfg.probe_timeout
    permitted = 1
  else
    if s == 'half_open' then S.nper = S.nper + 1 else S.rej = S.rej + 1 end
    emit('call_not_permitted', nil, nil, nil)
    wait_hint = retry_after()
  end
elseif op == 'record' then
  local generation = tonumber(ARGV[16])
  local held = tonumber(ARGV[17])
  local duration = tonumber(ARGV[18])
  local failed = tonumber(ARGV[19])
  if generation == S.gen then
    local slow = 0
    if duration >= cfg.slow_duration then slow = 1 end
    local s = S.s
    if s == 'closed' or s == 'metrics_only' then
      window_add(S, failed, slow)
      if S.calls >= cfg.minimum_calls and judge(S.calls, S.fails, S.slow) and s == 'closed' then
        enter('open')
      end
    elseif s == 'half_open' and S.pr[held] ~= nil then
      S.pr[held] = nil
      S.hc = S.hc + 1
      S.hf = S.hf + failed
      S.hs = S.hs + slow
      if S.hc >= cfg.permitted then
        if judge(S.hc, S.hf, S.hs) then enter('open') else enter('closed') end
      end
    end
  end
elseif op == 'release' then
  if tonumber(ARGV[16]) == S.gen then S.pr[tonumber(ARGV[17])] = nil end
elseif op == 'transition' then
  local target = ARGV[20]
  if target ~= S.s then enter(target) end
elseif op == 'reset' then
  if S.s ~= 'closed' then
    enter('closed')
  else
    S.gen = S.gen + 1
    window_clear(S)
  end
  S.co, S.rej, S.nper = 0, 0, 0
elseif op == 'snapshot' then
  window_refresh(S)
else
  return redis.error_reply('unknown breaker operation ' .. tostring(op))
end

-- Write only what changed: admitting a call while closed leaves the state as it was.
local packed = cmsgpack.pack(S)
if packed ~= raw then
  redis.call('SET', key, packed, 'EX', ttl)
end

local buffered, failed_calls, slow_calls = S.calls, S.fails, S.slow
if S.s == 'half_open' then buffered, failed_calls, slow_calls = S.hc, S.hf, S.hs end
if op == 'snapshot' and (S.s == 'open' or S.s == 'forced_open') then
  wait_hint = retry_after()
end
local open_until = ''
if S.s == 'open' then open_until = fmt(S.at + S.ow) end
local reply = {permitted, S.s, S.gen, probe, fmt(wait_hint), buffered, failed_calls,
               slow_calls, S.rej, S.nper, probe_count(), S.co, fmt(now), open_until}
for _, item in ipairs(events) do reply[#reply + 1] = item end
return reply
