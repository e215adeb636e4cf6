-- Twin of ratelimit/strategies/sliding_window.py. State: (window_start, current, previous).
-- Built on first use: a call pays only for the strategies it names.
strategies['sw'] = function()
  local function sw_counts(state, start, window)
    if not state then
      return 0, 0
    end
    if state[1] == start then
      return state[2], state[3]
    end
    if state[1] == start - window then
      return 0, state[2]
    end
    return 0, 0
  end

  local function sw_estimate(state, t, window)
    local start = t - mod(t, window)
    local current, previous = sw_counts(state, start, window)
    return previous * ((window - (t - start)) / window) + current
  end

  local function sw_reset(current, previous, start, now, window)
    if current ~= 0 then
      return start + 2 * window - now
    end
    if previous ~= 0 then
      return start + window - now
    end
    return 0
  end

  return {
    read = read_fields,
    encode = function(state)
      return struct.pack('<ddd', state[1], state[2], state[3])
    end,
    decide = function(state, now, cost, need, limit, window, _)
      local start = now - mod(now, window)
      local current, previous = sw_counts(state, start, window)
      local used = previous * ((window - (now - start)) / window) + current
      if used + need <= limit then
        local new_state = nil
        if cost > 0 then
          current = current + cost
          used = used + cost
          new_state = {start, current, previous}
        end
        return new_state, true, limit, math.max(0, math.floor(limit - used)), 0,
          sw_reset(current, previous, start, now, window)
      end
      local target
      if current + need <= limit then
        target = start + window - (limit - current - need) * window / previous
      else
        target = start + 2 * window - (limit - need) * window / current
      end
      local wait = exact_wait_us(function(t)
        return sw_estimate(state, t, window) + need <= limit
      end, now, target - now)
      return nil, false, limit, math.max(0, math.floor(limit - used)), wait,
        sw_reset(current, previous, start, now, window)
    end,
  }
end
