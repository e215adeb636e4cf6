-- Twin of ratelimit/strategies/leaky_bucket.py (GCRA). State: "theoretical_arrival",
-- whole microseconds (the backlog is rounded up when it grows).
local function lb_backlog(state, t)
  if not state then
    return 0
  end
  return math.max(0, state[1] - t)
end

strategies['lb'] = {
  read = read_fields,
  encode = function(state)
    return fmt_int(state[1])
  end,
  decide = function(state, now, cost, limit, window, burst)
    local interval = window / limit
    local tolerance = burst * interval
    local backlog = lb_backlog(state, now)
    local need = cost
    if need == 0 then
      need = 1
    end
    if backlog + need * interval <= tolerance then
      local new_state = nil
      if cost > 0 then
        backlog = math.ceil(backlog + cost * interval)
        new_state = {now + backlog}
      end
      return new_state, true, burst, math.max(0, math.floor((tolerance - backlog) / interval)),
        0.0, backlog / US
    end
    local wait = exact_wait_us(function(t)
      return lb_backlog(state, t) + need * interval <= tolerance
    end, now, backlog + need * interval - tolerance)
    return nil, false, burst, math.max(0, math.floor((tolerance - backlog) / interval)),
      wait / US, backlog / US
  end,
}
