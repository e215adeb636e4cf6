-- Twin of ratelimit/strategies/fixed_window.py. State: (window_start, used).
-- Built on first use: a call pays only for the strategies it names.
strategies['fw'] = function()
  return {
    read = read_fields,
    encode = function(state)
      return struct.pack('<dd', state[1], state[2])
    end,
    decide = function(state, now, cost, need, limit, window, _)
      local start = now - mod(now, window)
      local used = 0
      if state and state[1] == start then
        used = state[2]
      end
      local until_next = start + window - now
      if used + need <= limit then
        local new_state = nil
        if cost > 0 then
          used = used + cost
          new_state = {start, used}
        end
        local reset = 0
        if used ~= 0 then
          reset = until_next
        end
        return new_state, true, limit, limit - used, 0, reset
      end
      return nil, false, limit, limit - used, until_next, until_next
    end,
  }
end
