-- Twin of ratelimit/strategies/leaky_bucket.py (GCRA), all in whole microseconds.
-- State: (theoretical_arrival). Integer division is floor(a / b): exact for integers
-- below 2^53, which script.py guarantees.
-- Built on first use: a call pays only for the strategies it names.
strategies['lb'] = function()
  local function lb_interval(window, limit)
    local interval = math.floor(window / limit)
    if interval * limit < window then
      interval = interval + 1
    end
    return interval
  end

  return {
    read = read_fields,
    encode = function(state)
      return struct.pack('<d', state[1])
    end,
    decide = function(state, now, cost, need, limit, window, burst)
      local interval = lb_interval(window, limit)
      local tolerance = burst * interval
      -- How far the theoretical arrival time runs ahead of now.
      local backlog = 0
      if state then
        backlog = math.max(0, state[1] - now)
      end
      if backlog + need * interval <= tolerance then
        local new_state = nil
        if cost > 0 then
          backlog = backlog + cost * interval
          new_state = {now + backlog}
        end
        return new_state, true, burst, math.floor((tolerance - backlog) / interval), 0, backlog
      end
      return nil, false, burst, math.floor((tolerance - backlog) / interval),
        backlog + need * interval - tolerance, backlog
    end,
  }
end
