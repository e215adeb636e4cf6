-- Shared helpers of the rate-limit script: exact waits, number formatting, and state
-- (de)serialisation (struct packs with '<' everywhere: little-endian, whatever the
-- host). Redis's Lua numbers are doubles; every time here is an integer number of
-- microseconds well below 2^53, so integer arithmetic on them is exact, and float
-- operations run in the same order as in Python.
local US = 1000000

-- Python's a % b for non-negative integers; Lua's % computes a - floor(a/b)*b, whose
-- float division can be off by one for large a, while fmod is exact.
local function mod(a, b)
  return math.fmod(a, b)
end

-- Smallest whole-microsecond wait >= 1 at which admits_at holds: the closed-form
-- estimate moved down and then up with the admitting arithmetic itself, as the Python
-- strategies do (token bucket's _wait_for, sliding window's _first_admitting_wait).
-- Being the smallest, it names the same instant whenever it is asked, which the memory
-- storage relies on to answer repeated rejections. Float error moves the estimate by
-- a microsecond at most; the bounds keep a script from ever spinning inside Redis.
local function exact_wait_us(admits_at, now, estimate)
  local wait = math.max(1, math.ceil(estimate))
  for _ = 1, 8 do
    if wait <= 1 or not admits_at(now + wait - 1) then
      break
    end
    wait = wait - 1
  end
  for _ = 1, 8 do
    if admits_at(now + wait) then
      return wait
    end
    wait = wait + 1
  end
  return wait
end

-- A state is one to three numbers stored as little-endian doubles: exact, and several
-- times cheaper to read and write than formatted text. nil for a fresh key.
local STATE_FORMATS = {[8] = '<d', [16] = '<dd', [24] = '<ddd'}

local function read_fields(key)
  local raw = redis.call('GET', key)
  if not raw then
    return nil
  end
  local format = STATE_FORMATS[#raw]
  if not format then
    return nil  -- not a state this script wrote: start afresh rather than fail every call
  end
  -- unpack also returns the next position, which lands after the fields and is unused.
  return {struct.unpack(format, raw)}
end

-- Store a state until the moment (ms, rounded up) its horizon ends.
local function write_fields(key, encoded, expire_at_ms)
  -- Redis writes a number argument exactly (unlike Lua's own 14-digit tostring).
  redis.call('SET', key, encoded, 'PXAT', expire_at_ms)
end

local strategies = {}
