//! The registry's Lua scripts: each decision that reads and writes shared state is one
//! atomic script, so two replicas never both claim an orphan or both take the last slot.
//! Keys of one generation share a hash tag; the `running` set is global (one Redis node,
//! not a cluster).

/// The current time in milliseconds from Redis (one clock for every replica).
const NOW: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
";

/// KEYS: meta, events, running. ARGV: id, replica, owner, anon, conv, msg, detached,
/// lease_ms, safety_ttl_s. Creates or re-creates (after Redis lost it) the generation and
/// its lease. Returns the last sequence stored, or -2 when another replica took it over.
pub fn begin() -> String {
    format!(
        "{NOW}{}",
        r"
local st = redis.call('HGET', KEYS[1], 'state')
if st and (st ~= 'running' or redis.call('HGET', KEYS[1], 'replica') ~= ARGV[2]) then return -2 end
if not st then
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'last', 0)
end
redis.call('HSET', KEYS[1], 'state', 'running', 'replica', ARGV[2], 'owner', ARGV[3],
  'anon', ARGV[4], 'conv', ARGV[5], 'msg', ARGV[6], 'detached', ARGV[7])
redis.call('EXPIRE', KEYS[1], ARGV[9])
redis.call('ZADD', KEYS[3], now + tonumber(ARGV[8]), ARGV[1])
return tonumber(redis.call('HGET', KEYS[1], 'last'))
"
    )
}

/// KEYS: meta, events. ARGV: replica, maxlen, safety_ttl_s, then (seq, payload) pairs.
/// Appends events the stream lacks. Returns the last sequence stored, -1 when the
/// generation is unknown (Redis restarted: re-begin), -2 when taken over.
pub const APPEND: &str = r"
local st = redis.call('HGET', KEYS[1], 'state')
if not st then return -1 end
if st ~= 'running' or redis.call('HGET', KEYS[1], 'replica') ~= ARGV[1] then return -2 end
local last = tonumber(redis.call('HGET', KEYS[1], 'last'))
for i = 4, #ARGV, 2 do
  local s = tonumber(ARGV[i])
  if s > last then
    redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], s .. '-0', 'e', ARGV[i + 1])
    last = s
  end
end
redis.call('HSET', KEYS[1], 'last', last)
redis.call('EXPIRE', KEYS[2], ARGV[3])
return last
";

/// KEYS: meta, running. ARGV: id, replica, lease_ms. 1, or -1 / -2 as for APPEND.
pub fn renew() -> String {
    format!(
        "{NOW}{}",
        r"
local st = redis.call('HGET', KEYS[1], 'state')
if not st then return -1 end
if st ~= 'running' or redis.call('HGET', KEYS[1], 'replica') ~= ARGV[2] then return -2 end
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[3]), ARGV[1])
return 1
"
    )
}

/// KEYS: meta, events, running. ARGV: id, replica, ttl_s. After the last event: the
/// generation stays for re-attach `ttl_s`. 1, or -1 / -2 as for APPEND.
pub const FINISH: &str = r"
local st = redis.call('HGET', KEYS[1], 'state')
if not st then return -1 end
if st ~= 'running' or redis.call('HGET', KEYS[1], 'replica') ~= ARGV[2] then return -2 end
redis.call('HSET', KEYS[1], 'state', 'finished')
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('EXPIRE', KEYS[2], ARGV[3])
return 1
";

/// KEYS: running. ARGV: key prefix, limit. Claims generations whose lease expired:
/// each becomes `interrupted`, with one sequence number reserved for its Failed event.
/// Returns [id, seq, owner, anon, conv, msg, detached] per claimed generation.
pub fn claim() -> String {
    format!(
        "{NOW}{}",
        r"
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[2]))
local out = {}
for _, id in ipairs(ids) do
  redis.call('ZREM', KEYS[1], id)
  local meta = ARGV[1] .. '{' .. id .. '}:meta'
  if redis.call('HGET', meta, 'state') == 'running' then
    redis.call('HSET', meta, 'state', 'interrupted')
    local seq = redis.call('HINCRBY', meta, 'last', 1)
    local m = redis.call('HMGET', meta, 'owner', 'anon', 'conv', 'msg', 'detached')
    table.insert(out, {id, tostring(seq), m[1] or '', m[2] or '', m[3] or '', m[4] or '', m[5] or ''})
  end
end
return out
"
    )
}

/// KEYS: detached. ARGV: slot, max, lease_ms. 1 when the slot is taken, 0 when the
/// owner's slots (across replicas) are all in use. Slots of a dead replica expire.
pub fn detach() -> String {
    format!(
        "{NOW}{}",
        r"
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
"
    )
}

/// KEYS: detached. ARGV: slot, lease_ms. Keeps a slot (re-taking it after Redis lost it).
pub fn renew_slot() -> String {
    format!(
        "{NOW}{}",
        r"
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
"
    )
}
