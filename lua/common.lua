-- common.lua: what the algorithm files and the driver share. The loader (ratelimit/scripts.py)
-- joins common.lua, the algorithm files and limiter.lua, in that order, into one Lua chunk:
-- loaded once as a Redis function library (FUNCTION LOAD, then FCALL), or sent as one script
-- per entry point (EVALSHA) where the server or the client has no functions. See limiter.lua.
--
-- Units: every number is an integer below 2^53, so a double holds it exactly. Time is counted
-- in the policy's unit: milliseconds, or a coarser unit (10 ms, 100 ms, ... see `tick`) for
-- large quotas whose products in milliseconds would leave 2^53. Policies refuse numbers that
-- could leave that range in their unit.

-- Algorithms by their one-letter code ("f", "s", "t"): each algorithm file adds its module,
-- a table of load, report and charge (see fixed_window.lua).
local algorithms = {}

-- The time unit of the policy being checked, set by the driver before each policy's calls:
-- `unit` milliseconds per tick, and `off` the milliseconds of `now` past the start of its tick.
-- write_state turns a TTL in ticks into milliseconds with it.
local tick = {unit = 1, off = 0}

-- floor(a / b) for integers a and b > 0, exact even where the double quotient a / b rounds.
local function floor_div(a, b)
  local q = math.floor(a / b)
  if q * b > a then
    q = q - 1
  elseif (q + 1) * b <= a then
    q = q + 1
  end
  return q
end

-- ceil(a / b) for integers a and b > 0.
local function ceil_div(a, b)
  return -floor_div(-a, b)
end

-- Reads a key's state: two or three integers separated by spaces, or nil when the key is
-- absent or holds anything else.
local function read_state(key, fields)
  local raw = redis.call('GET', key)
  if not raw then
    return nil
  end
  if fields == 2 then
    local a, b = string.match(raw, '^(%-?%d+) (%-?%d+)$')
    if a then
      return {tonumber(a), tonumber(b)}
    end
    return nil
  end
  local a, b, c = string.match(raw, '^(%-?%d+) (%-?%d+) (%-?%d+)$')
  if a then
    return {tonumber(a), tonumber(b), tonumber(c)}
  end
  return nil
end

-- Writes a key's state (two or three integers) with a TTL of `ttl` ticks; returns the TTL in
-- milliseconds (at least 1), which is also the policy's reset_after.
local function write_state(key, ttl, a, b, c)
  ttl = ttl * tick.unit - tick.off
  if ttl < 1 then
    ttl = 1
  end
  local value
  if c then
    value = string.format('%d %d %d', a, b, c)
  else
    value = string.format('%d %d', a, b)
  end
  -- the TTL as text: a Lua number given to redis.call is printed by the server with %.17g,
  -- which measured 4-7% slower per check than string.format
  redis.call('SET', key, value, 'PX', string.format('%d', ttl))
  return ttl
end
