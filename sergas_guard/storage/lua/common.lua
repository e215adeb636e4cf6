-- Shared helpers of the rate-limit script: exact waits, number formatting, and state
-- (de)serialisation. Redis's Lua numbers are doubles; every
-- time here is an integer number of microseconds well below 2^53, so integer arithmetic
-- on them is exact, and float operations run in the same order as in Python.
local US = 1000000

-- Redis converts Lua numbers to strings with 14 significant digits; state and replies
-- must round-trip exactly, so every number leaves the script through one of these.
local function fmt_float(x)
  if x == 0 then
    return '0'  -- the common case (no wait), without a format call
  end
  return string.format('%.17g', x)
end

local function fmt_int(x)
  return string.format('%.0f', x)
end

-- Python's a % b for non-negative integers; Lua's % computes a - floor(a/b)*b, whose
-- float division can be off by one for large a, while fmod is exact.
local function mod(a, b)
  return math.fmod(a, b)
end

-- Smallest whole-microsecond wait >= ceil(estimate), >= 1, at which admits_at holds:
-- the closed form confirmed with the admitting arithmetic, as the Python strategies do
-- (token bucket's _wait_for, sliding window's loop). Float error moves the estimate by a
-- microsecond at most; the bound keeps a script from ever spinning inside Redis.
local function exact_wait_us(admits_at, now, estimate)
  local wait = math.max(1, math.ceil(estimate))
  for _ = 1, 8 do
    if admits_at(now + wait) then
      return wait
    end
    wait = wait + 1
  end
  return wait
end

-- A state stored as up to three space-separated numbers, or nil for a fresh key.
local function read_fields(key)
  local raw = redis.call('GET', key)
  if not raw then
    return nil
  end
  local a, b, c = string.match(raw, '^(%S+) ?(%S*) ?(%S*)$')
  return {tonumber(a), tonumber(b), tonumber(c)}
end

-- Store encoded state until the moment (ms, rounded up) its horizon ends.
local function write_fields(key, encoded, expire_at_ms)
  redis.call('SET', key, encoded, 'PXAT', fmt_int(expire_at_ms))
end

local strategies = {}
