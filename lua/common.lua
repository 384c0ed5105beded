-- common.lua: helpers shared by the algorithm files. Loaded first; the loader joins
-- common.lua, fixed_window.lua, sliding_window.lua, token_bucket.lua and limiter.lua into the
-- one script that Redis runs (see limiter.lua for its KEYS, ARGV and reply).
--
-- Units: every number is an integer (milliseconds, counts, token units) below 2^53, so a
-- double holds it exactly. Policies refuse numbers that could leave that range.

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

-- Writes a key's state (two or three integers) with a TTL in milliseconds (at least 1);
-- returns the TTL.
local function write_state(key, ttl, a, b, c)
  if ttl < 1 then
    ttl = 1
  end
  local value
  if c then
    value = string.format('%d %d %d', a, b, c)
  else
    value = string.format('%d %d', a, b)
  end
  redis.call('SET', key, value, 'PX', string.format('%d', ttl))
  return ttl
end
