-- Decide one request of ARGV[1] units against every limit in KEYS, all or nothing.
-- ARGV[1 + i] describes the limit of KEYS[i]: a two-letter strategy code, then limit,
-- window (us) and burst as little-endian doubles.
-- ARGV[#KEYS + 2], when present, is the time in microseconds (tests); otherwise the
-- server's clock (TIME) decides.
-- Reply: one string holding five integers per key: allowed (1/0), limit, remaining,
-- retry_after and reset_after. The strategies give both times in whole microseconds
-- (their Python twins divide those same integers by 10^6), so nothing here formats a
-- float: one string.format of integers per key, the cheapest exact reply.
local cost = tonumber(ARGV[1])
-- What must fit: the cost, or for a peek (cost 0) one unit (Python's `cost or 1`).
local need = cost
if need == 0 then
  need = 1
end
local now = ARGV[#KEYS + 2]
if now then
  now = tonumber(now)
else
  local time = redis.call('TIME')
  now = tonumber(time[1]) * US + tonumber(time[2])
end

local built = {}
local decided = {}
local all_allowed = true
for i = 1, #KEYS do
  local described = ARGV[1 + i]
  local code = string.sub(described, 1, 2)
  local limit, window, burst = struct.unpack('<ddd', described, 3)
  local strategy = built[code]
  if not strategy then
    strategy = strategies[code]()
    built[code] = strategy
  end
  local state = strategy.read(KEYS[i])
  local new_state, allowed, reported, remaining, retry_after, reset_after =
    strategy.decide(state, now, cost, need, limit, window, burst)
  decided[i] = {strategy, state, new_state, allowed, reported, remaining, retry_after,
    reset_after, limit, window, burst}
  all_allowed = all_allowed and allowed
end

local reply = {}
for i = 1, #KEYS do
  local d = decided[i]
  local strategy, allowed, reported, remaining, retry_after, reset_after =
    d[1], d[4], d[5], d[6], d[7], d[8]
  if all_allowed then
    if d[3] then
      -- The key lives exactly as long as its state matters: until its horizon.
      local expire_at_ms = math.ceil((now + reset_after) / 1000)
      if strategy.write then
        strategy.write(KEYS[i], d[3], expire_at_ms)
      else
        write_fields(KEYS[i], strategy.encode(d[3]), expire_at_ms)
      end
    end
  elseif allowed then
    -- Another limit rejected, so none consumes: report what a peek sees.
    local _
    _, allowed, reported, remaining, retry_after, reset_after =
      strategy.decide(d[2], now, 0, 1, d[9], d[10], d[11])
  end
  -- %d converts Lua's doubles to 64-bit integers: exact for every value here (< 2^53).
  reply[i] = string.format('%d %d %d %d %d', allowed and 1 or 0, reported, remaining,
    retry_after, reset_after)
end
return table.concat(reply, ' ')
