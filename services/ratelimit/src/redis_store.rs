//! The Redis limiter: every decision is one `EVALSHA` of one Lua script (one round trip,
//! atomic on the server). Time comes from Redis `TIME` inside the script, so replicas
//! with skewed clocks agree. A subject's keys share the hash tag `{subject}` (one
//! cluster slot) and every write sets an expiry, so nothing outlives its use.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::limiter::{
    AcquireParams, Admission, BackendError, Decision, Limit, Limiter, Limits, RequestClass,
    TimeShift, Usage,
};

/// Keys: 1 GCRA TAT (µs), 2 leases (zset id→expiry ms), 3 reservations (zset id→expiry ms),
/// 4 account (hash: day, used, reserved, r:<id> → amount), 5 released ids (zset id→forget ms).
/// ARGV: 1 op, 2 time offset ms, 3 emission µs, 4 requests/minute, 5 max streams,
/// 6 daily tokens, 7 lease ttl ms, 8 reservation ttl ms, 9 released retention ms, 10.. op args.
/// Reply: {allowed, denied_kind, retry_ms, remaining, req_reset_ms, streams, used, reserved, now_ms, renewed}.
pub const SCRIPT: &str = r#"
-- effects replication, so TIME before writes is allowed (default since Redis 5)
if redis.replicate_commands then redis.replicate_commands() end
local op = ARGV[1]
local t = redis.call('TIME')
local now_us = tonumber(t[1]) * 1000000 + tonumber(t[2]) + tonumber(ARGV[2]) * 1000
local now = math.floor(now_us / 1000)
local T = tonumber(ARGV[3])
local limit = tonumber(ARGV[4])
local max_streams = tonumber(ARGV[5])
local budget = tonumber(ARGV[6])
local lease_ttl = tonumber(ARGV[7])
local res_ttl = tonumber(ARGV[8])
local retention = tonumber(ARGV[9])
local period = T * limit
local DAY = 86400000
local today = math.floor(now / DAY)
local midnight = (today + 1) * DAY

-- expire leases, reservations and released markers; roll the day over
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', now)
local acct = redis.call('HMGET', KEYS[4], 'day', 'used', 'reserved')
local used = 0
if acct[1] and tonumber(acct[1]) == today then used = tonumber(acct[2] or '0') end
local reserved = tonumber(acct[3] or '0')
local expired = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now, 'LIMIT', 0, 1000)
if #expired > 0 then
  for _, id in ipairs(expired) do
    reserved = reserved - tonumber(redis.call('HGET', KEYS[4], 'r:' .. id) or '0')
    redis.call('HDEL', KEYS[4], 'r:' .. id)
    redis.call('ZREM', KEYS[3], id)
  end
  if reserved < 0 then reserved = 0 end
  redis.call('HSET', KEYS[4], 'reserved', reserved)
end

local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now_us then tat = now_us end

local function save_account()
  redis.call('HSET', KEYS[4], 'day', today, 'used', used, 'reserved', reserved)
  local keep = midnight - now
  if res_ttl > keep then keep = res_ttl end
  redis.call('PEXPIRE', KEYS[4], keep + 1000)
end

local allowed = 1
local kind = 0
local retry = 0
local renewed = 0
local function deny(k, wait)
  if wait < 1 then wait = 1 end
  if allowed == 1 or wait > retry then kind = k; retry = wait end
  allowed = 0
end

if op == 'acquire' then
  local est = tonumber(ARGV[10])
  local open = ARGV[11] == '1'
  local id = ARGV[12]
  local new_tat = tat + T
  if new_tat - now_us > period then deny(1, math.ceil((new_tat - period - now_us) / 1000)) end
  if open and redis.call('ZCARD', KEYS[2]) >= max_streams then
    local first = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
    deny(2, tonumber(first[2] or now) - now)
  end
  if est > 0 and used + reserved + est > budget then
    local wait = midnight - now
    if used + est <= budget then
      local first = redis.call('ZRANGE', KEYS[3], 0, 0, 'WITHSCORES')
      if first[2] and tonumber(first[2]) - now < wait then wait = tonumber(first[2]) - now end
    end
    deny(3, wait)
  end
  if allowed == 1 then
    tat = new_tat
    redis.call('SET', KEYS[1], string.format('%d', tat), 'PX', math.ceil((tat - now_us) / 1000) + 1000)
    if open then
      redis.call('ZADD', KEYS[2], now + lease_ttl, id)
      redis.call('PEXPIRE', KEYS[2], lease_ttl + 1000)
    end
    local prev = tonumber(redis.call('HGET', KEYS[4], 'r:' .. id) or '0')
    reserved = reserved - prev + est
    redis.call('HSET', KEYS[4], 'r:' .. id, est)
    redis.call('ZADD', KEYS[3], now + res_ttl, id)
    redis.call('PEXPIRE', KEYS[3], res_ttl + 1000)
    save_account()
  end
elseif op == 'release' then
  local rid = ARGV[10]
  local lid = ARGV[11]
  local actual = tonumber(ARGV[12])
  if lid ~= '' then redis.call('ZREM', KEYS[2], lid) end
  if rid ~= '' and not redis.call('ZSCORE', KEYS[5], rid) then
    local amt = redis.call('HGET', KEYS[4], 'r:' .. rid)
    if amt then
      reserved = reserved - tonumber(amt)
      if reserved < 0 then reserved = 0 end
      redis.call('HDEL', KEYS[4], 'r:' .. rid)
      redis.call('ZREM', KEYS[3], rid)
    end
    used = used + actual
    redis.call('ZADD', KEYS[5], now + retention, rid)
    redis.call('PEXPIRE', KEYS[5], retention + 1000)
    save_account()
  end
elseif op == 'renew' then
  local lid = ARGV[10]
  if redis.call('ZSCORE', KEYS[2], lid) then
    renewed = 1
    redis.call('ZADD', KEYS[2], 'XX', now + lease_ttl, lid)
    redis.call('PEXPIRE', KEYS[2], lease_ttl + 1000)
    local exp = redis.call('ZSCORE', KEYS[3], lid)
    if exp and tonumber(exp) < now + res_ttl then
      redis.call('ZADD', KEYS[3], 'XX', now + res_ttl, lid)
      redis.call('PEXPIRE', KEYS[3], res_ttl + 1000)
      save_account()
    end
  end
end

local remaining = math.floor((now_us + period - tat) / T)
if remaining < 0 then remaining = 0 end
if remaining > limit then remaining = limit end
local reset = now
if remaining == 0 then reset = math.ceil((tat - period + T) / 1000) end
return {allowed, kind, retry, remaining, reset, redis.call('ZCARD', KEYS[2]), used, reserved, now, renewed}
"#;

/// One request-class budget (GCRA). KEYS: 1 the class's TAT (µs).
/// ARGV: 1 time offset ms, 2 emission µs, 3 limit. Reply: {allowed, retry_ms, remaining, now_ms}.
pub const ADMIT_SCRIPT: &str = r#"
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now_us = tonumber(t[1]) * 1000000 + tonumber(t[2]) + tonumber(ARGV[1]) * 1000
local T = tonumber(ARGV[2])
local limit = tonumber(ARGV[3])
local burst = T * limit
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now_us then tat = now_us end
local new_tat = tat + T
local allowed = 1
local retry = 0
if new_tat - now_us > burst then
  allowed = 0
  retry = math.ceil((new_tat - burst - now_us) / 1000)
  if retry < 1 then retry = 1 end
else
  tat = new_tat
  redis.call('SET', KEYS[1], string.format('%d', tat), 'PX', math.ceil((tat - now_us) / 1000) + 1000)
end
local remaining = math.floor((now_us + burst - tat) / T)
if remaining < 0 then remaining = 0 end
if remaining > limit then remaining = limit end
return {allowed, retry, remaining, math.floor(now_us / 1000)}
"#;

/// The key of a subject's budget for one request class (same `{subject}` slot).
pub fn class_key(prefix: &str, subject: &str, class: RequestClass) -> String {
    format!("{prefix}{{{subject}}}:class:{}", class.label())
}

/// The five keys of a subject, all in the `{subject}` slot.
pub fn subject_keys(prefix: &str, subject: &str) -> [String; 5] {
    ["tat", "leases", "res", "acct", "released"].map(|k| format!("{prefix}{{{subject}}}:{k}"))
}

/// How long one Redis call may take before it counts as a backend failure.
pub const CALL_TIMEOUT: Duration = Duration::from_millis(500);

pub struct RedisLimiter {
    limits: Limits,
    conn: ConnectionManager,
    script: redis::Script,
    admit_script: redis::Script,
    prefix: String,
    shift: TimeShift,
}

impl RedisLimiter {
    /// Connects lazily: the limiter is usable (and fails per policy) while Redis is down,
    /// and the connection manager reconnects by itself.
    pub fn connect(url: &str, limits: Limits) -> Result<Self, redis::RedisError> {
        let client = redis::Client::open(url)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_millis(500)))
            .set_response_timeout(Some(CALL_TIMEOUT))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        let conn = ConnectionManager::new_lazy_with_config(client, config)?;
        Ok(Self {
            limits,
            conn,
            script: redis::Script::new(SCRIPT),
            admit_script: redis::Script::new(ADMIT_SCRIPT),
            prefix: "rl:".to_owned(),
            shift: TimeShift::default(),
        })
    }

    /// Key prefix (tests isolate themselves with one per test).
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// A time offset added to Redis `TIME` (tests only; zero otherwise).
    pub fn with_time_shift(mut self, shift: TimeShift) -> Self {
        self.shift = shift;
        self
    }

    async fn run(
        &self,
        subject: &str,
        op: &str,
        args: &[String],
    ) -> Result<Vec<i64>, BackendError> {
        let mut inv = self.script.prepare_invoke();
        for key in subject_keys(&self.prefix, subject) {
            inv.key(key);
        }
        let l = &self.limits;
        inv.arg(op)
            .arg(self.shift.offset_ms())
            .arg(l.emission_us())
            .arg(l.requests_per_minute)
            .arg(l.max_streams)
            .arg(l.daily_tokens)
            .arg(l.lease_ttl_ms())
            .arg(l.reservation_ttl_ms())
            .arg(l.released_retention_ms());
        for a in args {
            inv.arg(a);
        }
        let mut conn = self.conn.clone();
        let reply: Vec<i64> = tokio::time::timeout(CALL_TIMEOUT, inv.invoke_async(&mut conn))
            .await
            .map_err(|_| BackendError::Timeout(CALL_TIMEOUT))??;
        if reply.len() != 10 {
            return Err(BackendError::Protocol(format!("{} values", reply.len())));
        }
        Ok(reply)
    }
}

fn usage_of(r: &[i64]) -> Usage {
    Usage {
        requests_remaining: r[3].max(0) as u32,
        requests_reset_at_ms: r[4],
        streams_in_use: r[5].max(0) as u32,
        tokens_used: r[6].max(0) as u64,
        tokens_reserved: r[7].max(0) as u64,
        now_ms: r[8],
    }
}

#[async_trait::async_trait]
impl Limiter for RedisLimiter {
    fn limits(&self) -> &Limits {
        &self.limits
    }

    async fn acquire(
        &self,
        subject: &str,
        params: &AcquireParams,
    ) -> Result<Decision, BackendError> {
        let r = self
            .run(
                subject,
                "acquire",
                &[
                    params.estimated_tokens.to_string(),
                    if params.open_stream { "1" } else { "0" }.to_owned(),
                    params.id.clone(),
                ],
            )
            .await?;
        let denied_by =
            if r[0] == 1 {
                None
            } else {
                Some(Limit::from_code(r[1]).ok_or_else(|| {
                    BackendError::Protocol(format!("unknown limit kind {}", r[1]))
                })?)
            };
        Ok(Decision {
            denied_by,
            retry_after_ms: r[2],
            usage: usage_of(&r),
        })
    }

    async fn release(
        &self,
        subject: &str,
        reservation_id: &str,
        lease_id: &str,
        actual_tokens: u64,
    ) -> Result<Usage, BackendError> {
        let r = self
            .run(
                subject,
                "release",
                &[
                    reservation_id.to_owned(),
                    lease_id.to_owned(),
                    actual_tokens.to_string(),
                ],
            )
            .await?;
        Ok(usage_of(&r))
    }

    async fn renew(&self, subject: &str, lease_id: &str) -> Result<bool, BackendError> {
        let r = self.run(subject, "renew", &[lease_id.to_owned()]).await?;
        Ok(r[9] == 1)
    }

    async fn usage(&self, subject: &str) -> Result<Usage, BackendError> {
        Ok(usage_of(&self.run(subject, "quota", &[]).await?))
    }

    async fn admit(&self, subject: &str, class: RequestClass) -> Result<Admission, BackendError> {
        let budget = self.limits.budget(class);
        let mut inv = self.admit_script.prepare_invoke();
        inv.key(class_key(&self.prefix, subject, class))
            .arg(self.shift.offset_ms())
            .arg(budget.emission_us())
            .arg(budget.limit.max(1));
        let mut conn = self.conn.clone();
        let r: Vec<i64> = tokio::time::timeout(CALL_TIMEOUT, inv.invoke_async(&mut conn))
            .await
            .map_err(|_| BackendError::Timeout(CALL_TIMEOUT))??;
        if r.len() != 4 {
            return Err(BackendError::Protocol(format!("{} values", r.len())));
        }
        Ok(Admission {
            allowed: r[0] == 1,
            retry_after_ms: r[1],
            remaining: u32::try_from(r[2].max(0)).unwrap_or(u32::MAX),
            now_ms: r[3],
        })
    }

    async fn ping(&self) -> Result<(), BackendError> {
        let mut conn = self.conn.clone();
        let _: String =
            tokio::time::timeout(CALL_TIMEOUT, redis::cmd("PING").query_async(&mut conn))
                .await
                .map_err(|_| BackendError::Timeout(CALL_TIMEOUT))??;
        Ok(())
    }
}

/// The naive way (for the benchmark's baseline): the same decision as several
/// round trips, read-then-write, not atomic across replicas.
pub mod naive {
    use redis::AsyncCommands;

    use super::*;

    pub async fn acquire(
        conn: &mut ConnectionManager,
        limits: &Limits,
        prefix: &str,
        subject: &str,
        params: &AcquireParams,
    ) -> Result<bool, BackendError> {
        let [tat_k, leases_k, res_k, acct_k, _] = subject_keys(prefix, subject);
        let (secs, micros): (i64, i64) = redis::cmd("TIME").query_async(conn).await?;
        let now_us = secs * 1_000_000 + micros;
        let now = now_us / 1000;
        let _: () = conn.zrembyscore(&leases_k, "-inf", now).await?;
        let _: () = conn.zrembyscore(&res_k, "-inf", now).await?;
        let tat: Option<i64> = conn.get(&tat_k).await?;
        let streams: u64 = conn.zcard(&leases_k).await?;
        let (used, reserved): (Option<u64>, Option<u64>) = redis::cmd("HMGET")
            .arg(&acct_k)
            .arg("used")
            .arg("reserved")
            .query_async(conn)
            .await?;
        let t = limits.emission_us();
        let new_tat = tat.unwrap_or(0).max(now_us) + t;
        let (used, reserved) = (used.unwrap_or(0), reserved.unwrap_or(0));
        let ok = new_tat - now_us <= t * i64::from(limits.requests_per_minute)
            && (!params.open_stream || streams < u64::from(limits.max_streams))
            && used + reserved + params.estimated_tokens <= limits.daily_tokens;
        if ok {
            let _: () = conn.set_ex(&tat_k, new_tat, 61).await?;
            if params.open_stream {
                let _: () = conn
                    .zadd(&leases_k, &params.id, now + limits.lease_ttl_ms())
                    .await?;
            }
            let _: () = conn
                .zadd(&res_k, &params.id, now + limits.reservation_ttl_ms())
                .await?;
            let _: () = conn
                .hincr(&acct_k, "reserved", params.estimated_tokens)
                .await?;
            let _: () = conn.expire(&acct_k, 86_400).await?;
        }
        Ok(ok)
    }
}
