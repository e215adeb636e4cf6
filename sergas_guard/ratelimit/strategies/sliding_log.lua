-- Twin of ratelimit/strategies/sliding_log.py. State: a list of admission times, one
-- entry per unit of cost (a little-endian double), oldest first; entries are read where
-- needed, never all.
-- Built on first use: a call pays only for the strategies it names.
strategies['sl'] = function()
  local function sl_at(state, index)
    return (struct.unpack('<d', redis.call('LINDEX', state.key, index)))
  end

  -- Python's bisect.bisect_right over the list.
  local function sl_bisect_right(state, x)
    local lo, hi = 0, state.n
    while lo < hi do
      local mid = math.floor((lo + hi) / 2)
      if x < sl_at(state, mid) then
        hi = mid
      else
        lo = mid + 1
      end
    end
    return lo
  end

  return {
    read = function(key)
      return {key = key, n = redis.call('LLEN', key)}
    end,
    decide = function(state, now, cost, need, limit, window, _)
      local first_live = sl_bisect_right(state, now - window)
      local live = state.n - first_live
      if live + need <= limit then
        local new_state = nil
        local last = nil
        if cost > 0 then
          new_state = {trim = first_live, at = now, count = cost}
          live = live + cost
          last = now
        elseif live ~= 0 then
          last = sl_at(state, state.n - 1)
        end
        local reset = 0
        if live ~= 0 then
          reset = last + window - now
        end
        return new_state, true, limit, limit - live, 0, reset
      end
      -- The (live + need - limit)-th live entry must expire to make room.
      local freeing = sl_at(state, first_live + live + need - limit - 1)
      return nil, false, limit, limit - live, freeing + window - now,
        sl_at(state, state.n - 1) + window - now
    end,
    write = function(key, new_state, expire_at_ms)
      if new_state.trim > 0 then
        redis.call('LTRIM', key, new_state.trim, -1)
      end
      local entry = struct.pack('<d', new_state.at)
      local remaining = new_state.count
      while remaining > 0 do
        -- RPUSH takes the entries as arguments; bound how many go on Lua's stack at once.
        local batch = math.min(remaining, 512)
        local args = {}
        for i = 1, batch do
          args[i] = entry
        end
        redis.call('RPUSH', key, unpack(args))
        remaining = remaining - batch
      end
      redis.call('PEXPIREAT', key, expire_at_ms)
    end,
  }
end
