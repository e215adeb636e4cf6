-- Twin of ratelimit/strategies/token_bucket.py. State: (tokens, updated_at).
-- Built on first use: a call pays only for the strategies it names.
strategies['tb'] = function()
  local function tb_tokens(state, t, rate, burst)
    if not state then
      return burst
    end
    -- A clock that went backwards (another server's) refills nothing rather than draining.
    return math.min(burst, state[1] + math.max(0, t - state[2]) * rate)
  end

  -- Microseconds until the bucket is exactly full again (so the key may be forgotten then).
  local function tb_reset(state, now, tokens, rate, burst)
    if tokens >= burst then
      return 0
    end
    return exact_wait_us(function(t)
      return tb_tokens(state, t, rate, burst) >= burst
    end, now, (burst - tokens) / rate)
  end

  return {
    read = read_fields,
    encode = function(state)
      return struct.pack('<dd', state[1], state[2])
    end,
    decide = function(state, now, cost, need, limit, window, burst)
      local rate = limit / window
      local tokens = tb_tokens(state, now, rate, burst)
      if tokens >= need then
        local new_state = nil
        if cost > 0 then
          tokens = tokens - cost
          new_state = {tokens, now}
          state = new_state
        end
        return new_state, true, burst, math.floor(tokens), 0,
          tb_reset(state, now, tokens, rate, burst)
      end
      local wait = exact_wait_us(function(t)
        return tb_tokens(state, t, rate, burst) >= need
      end, now, (need - tokens) / rate)
      return nil, false, burst, math.floor(tokens), wait,
        tb_reset(state, now, tokens, rate, burst)
    end,
  }
end
