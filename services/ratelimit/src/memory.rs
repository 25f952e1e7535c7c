//! The in-process limiter: the same semantics as the Redis script, under one mutex.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

use crate::limiter::{
    AcquireParams, Admission, BackendError, Clock, DAY_MS, Decision, Limit, Limiter, Limits,
    RequestClass, SystemClock, Usage, ceil_div, gcra,
};

#[derive(Debug, Default)]
struct SubjectState {
    /// GCRA theoretical arrival time, µs.
    tat_us: i64,
    /// lease id → expiry ms.
    leases: HashMap<String, i64>,
    /// reservation id → (amount, expiry ms).
    reservations: HashMap<String, (u64, i64)>,
    reserved: u64,
    /// UTC day number `used` belongs to.
    day: i64,
    used: u64,
    /// released reservation id → forget-after ms.
    released: HashMap<String, i64>,
    /// GCRA TAT per request class (µs), indexed by `RequestClass::index`.
    class_tat_us: [i64; 3],
}

impl SubjectState {
    /// Drops what has expired at `now`; rolls the day over.
    fn cleanup(&mut self, now_ms: i64) {
        self.leases.retain(|_, exp| *exp > now_ms);
        let mut freed = 0u64;
        self.reservations.retain(|_, (amount, exp)| {
            let keep = *exp > now_ms;
            if !keep {
                freed += *amount;
            }
            keep
        });
        self.reserved = self.reserved.saturating_sub(freed);
        self.released.retain(|_, exp| *exp > now_ms);
        let today = now_ms.div_euclid(DAY_MS);
        if self.day != today {
            self.day = today;
            self.used = 0;
        }
    }

    fn usage(&self, limits: &Limits, now_us: i64) -> Usage {
        let now_ms = now_us.div_euclid(1000);
        let t = limits.emission_us();
        let period = t * i64::from(limits.requests_per_minute);
        let tat = self.tat_us.max(now_us);
        let remaining =
            ((now_us + period - tat) / t).clamp(0, i64::from(limits.requests_per_minute));
        let reset = if remaining > 0 {
            now_ms
        } else {
            ceil_div(tat - period + t, 1000)
        };
        Usage {
            requests_remaining: remaining as u32,
            requests_reset_at_ms: reset,
            streams_in_use: self.leases.len() as u32,
            tokens_used: self.used,
            tokens_reserved: self.reserved,
            now_ms,
        }
    }

    /// Nothing left worth remembering.
    fn idle(&self, now_us: i64) -> bool {
        self.tat_us <= now_us
            && self.class_tat_us.iter().all(|t| *t <= now_us)
            && self.leases.is_empty()
            && self.reservations.is_empty()
            && self.released.is_empty()
            && self.used == 0
    }
}

/// In-process limiter for the single-machine mode.
pub struct MemoryLimiter {
    limits: Limits,
    clock: Arc<dyn Clock>,
    subjects: Mutex<HashMap<String, SubjectState>>,
    calls: AtomicU64,
}

impl MemoryLimiter {
    pub fn new(limits: Limits) -> Self {
        Self::with_clock(limits, Arc::new(SystemClock))
    }

    pub fn with_clock(limits: Limits, clock: Arc<dyn Clock>) -> Self {
        Self {
            limits,
            clock,
            subjects: Mutex::new(HashMap::new()),
            calls: AtomicU64::new(0),
        }
    }

    /// Runs `f` on the subject's state after cleanup; sweeps idle subjects now and then
    /// so memory stays bounded by active subjects.
    fn with_subject<R>(&self, subject: &str, f: impl FnOnce(&mut SubjectState, i64) -> R) -> R {
        let now_us = self.clock.now_us();
        let now_ms = now_us.div_euclid(1000);
        let mut map = self.subjects.lock();
        if self.calls.fetch_add(1, Ordering::Relaxed) % 4096 == 4095 {
            map.retain(|_, s| {
                s.cleanup(now_ms);
                !s.idle(now_us)
            });
        }
        let state = map.entry(subject.to_owned()).or_default();
        state.cleanup(now_ms);
        f(state, now_us)
    }

    /// Subjects currently tracked (for tests of the sweep).
    pub fn tracked_subjects(&self) -> usize {
        self.subjects.lock().len()
    }
}

#[async_trait::async_trait]
impl Limiter for MemoryLimiter {
    fn limits(&self) -> &Limits {
        &self.limits
    }

    async fn acquire(
        &self,
        subject: &str,
        params: &AcquireParams,
    ) -> Result<Decision, BackendError> {
        let limits = &self.limits;
        Ok(self.with_subject(subject, |s, now_us| {
            let now_ms = now_us.div_euclid(1000);
            let t = limits.emission_us();
            let period = t * i64::from(limits.requests_per_minute);
            let mut denied: Option<(Limit, i64)> = None;
            let mut deny = |limit: Limit, wait_ms: i64| {
                let wait_ms = wait_ms.max(1);
                if denied.is_none_or(|(_, w)| wait_ms > w) {
                    denied = Some((limit, wait_ms));
                }
            };

            let new_tat = s.tat_us.max(now_us) + t;
            if new_tat - now_us > period {
                deny(
                    Limit::RequestsPerMinute,
                    ceil_div(new_tat - period - now_us, 1000),
                );
            }
            if params.open_stream && s.leases.len() as u64 >= u64::from(limits.max_streams) {
                let first = s.leases.values().min().copied().unwrap_or(now_ms);
                deny(Limit::ConcurrentStreams, first - now_ms);
            }
            let est = params.estimated_tokens;
            if est > 0 && s.used + s.reserved + est > limits.daily_tokens {
                let mut wait = (now_ms.div_euclid(DAY_MS) + 1) * DAY_MS - now_ms;
                if s.used + est <= limits.daily_tokens {
                    // It fits once requests in flight settle.
                    if let Some(first) = s.reservations.values().map(|(_, e)| *e).min() {
                        wait = wait.min(first - now_ms);
                    }
                }
                deny(Limit::DailyTokens, wait);
            }

            if let Some((limit, wait)) = denied {
                return Decision {
                    denied_by: Some(limit),
                    retry_after_ms: wait,
                    usage: s.usage(limits, now_us),
                };
            }
            s.tat_us = new_tat;
            if params.open_stream {
                s.leases
                    .insert(params.id.clone(), now_ms + limits.lease_ttl_ms());
            }
            let previous = s.reservations.insert(
                params.id.clone(),
                (est, now_ms + limits.reservation_ttl_ms()),
            );
            s.reserved = s.reserved - previous.map_or(0, |(a, _)| a) + est;
            Decision {
                denied_by: None,
                retry_after_ms: 0,
                usage: s.usage(limits, now_us),
            }
        }))
    }

    async fn release(
        &self,
        subject: &str,
        reservation_id: &str,
        lease_id: &str,
        actual_tokens: u64,
    ) -> Result<Usage, BackendError> {
        let limits = &self.limits;
        Ok(self.with_subject(subject, |s, now_us| {
            let now_ms = now_us.div_euclid(1000);
            if !lease_id.is_empty() {
                s.leases.remove(lease_id);
            }
            if !reservation_id.is_empty() && !s.released.contains_key(reservation_id) {
                if let Some((amount, _)) = s.reservations.remove(reservation_id) {
                    s.reserved = s.reserved.saturating_sub(amount);
                }
                s.used += actual_tokens;
                s.released.insert(
                    reservation_id.to_owned(),
                    now_ms + limits.released_retention_ms(),
                );
            }
            s.usage(limits, now_us)
        }))
    }

    async fn renew(&self, subject: &str, lease_id: &str) -> Result<bool, BackendError> {
        let limits = &self.limits;
        Ok(self.with_subject(subject, |s, now_us| {
            let now_ms = now_us.div_euclid(1000);
            let Some(exp) = s.leases.get_mut(lease_id) else {
                return false;
            };
            *exp = now_ms + limits.lease_ttl_ms();
            if let Some((_, exp)) = s.reservations.get_mut(lease_id) {
                *exp = (*exp).max(now_ms + limits.reservation_ttl_ms());
            }
            true
        }))
    }

    async fn usage(&self, subject: &str) -> Result<Usage, BackendError> {
        let limits = &self.limits;
        Ok(self.with_subject(subject, |s, now_us| s.usage(limits, now_us)))
    }

    async fn admit(&self, subject: &str, class: RequestClass) -> Result<Admission, BackendError> {
        let budget = self.limits.budget(class);
        Ok(self.with_subject(subject, |s, now_us| {
            let tat = &mut s.class_tat_us[class.index()];
            let (new_tat, admission) = gcra(*tat, now_us, budget);
            if let Some(t) = new_tat {
                *tat = t;
            }
            admission
        }))
    }

    async fn ping(&self) -> Result<(), BackendError> {
        Ok(())
    }
}
