-- Twin of ratelimit/strategies/token_bucket.py. State: "tokens updated_at".
local function tb_tokens(state, t, rate, burst)
  if not state then
    return burst
  end
  return math.min(burst, state[1] + math.max(0, t - state[2]) * rate)
end

local function tb_reset(tokens, rate, burst)
  if tokens < burst then
    return math.ceil((burst - tokens) / rate) / US
  end
  return 0.0
end

strategies['tb'] = {
  read = read_fields,
  encode = function(state)
    return fmt_float(state[1]) .. ' ' .. fmt_int(state[2])
  end,
  decide = function(state, now, cost, limit, window, burst)
    local rate = limit / window
    local tokens = tb_tokens(state, now, rate, burst)
    local need = cost
    if need == 0 then
      need = 1
    end
    if tokens >= need then
      local new_state = nil
      if cost > 0 then
        tokens = tokens - cost
        new_state = {tokens, now}
      end
      return new_state, true, limit, math.floor(tokens), 0.0, tb_reset(tokens, rate, burst)
    end
    local wait = exact_wait_us(function(t)
      return tb_tokens(state, t, rate, burst) >= need
    end, now, (need - tokens) / rate)
    return nil, false, limit, math.floor(tokens), wait / US, tb_reset(tokens, rate, burst)
  end,
}
