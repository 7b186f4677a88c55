//! Token bucket arithmetic: a continuously refilling bucket, in exact integer time units.
//!
//! The state of one bucket is a single number, its *theoretical arrival time* (TAT, as in GCRA):
//! the instant at which the bucket will be full again. `TAT <= now` means full. Taking a token
//! moves TAT forward by the time one token takes to refill; a request is allowed when the new TAT
//! is at most `capacity` ahead of now. This is exactly a token bucket of `maxTokens` tokens that
//! refills continuously at `tokensPerFill / fillInterval`, and it starts full (TAT 0).
//!
//! To stay exact when a token's refill time is not a whole number of nanoseconds (1 s / 3 tokens),
//! time is counted in *scaled units* of `1 / tokensPerFill` ns: now = `now_ns * tokensPerFill`,
//! one token = `fillInterval_ns` units, the capacity = `maxTokens * fillInterval_ns` units. Every
//! quantity is an integer in `u128` (at most ~2^97 with the validated ranges), so nothing is ever
//! rounded and long runs do not drift. See docs/rate-limit.md.

/// Validated bucket parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TokenBucket {
    max_tokens: u32,
    tokens_per_fill: u32,
    fill_interval_ns: u64,
}

/// The outcome of taking one token, with what the response headers report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// `maxTokens` of the bucket.
    pub limit: u32,
    /// Tokens left after this request.
    pub remaining: u64,
    /// Seconds (rounded up) until the next token is added; 0 when the bucket is full.
    pub reset_secs: u64,
    /// Seconds (rounded up, at least 1) until a request would be allowed; 0 when allowed.
    pub retry_after_secs: u64,
    /// Seconds (rounded up, at least 1) to refill an empty bucket: the IETF policy window `w`.
    pub window_secs: u64,
}

const NANOS_PER_SEC: u128 = 1_000_000_000;

/// `ceil(a / b)`, 0 for a zero divisor (which validated buckets never have).
fn div_ceil(a: u128, b: u128) -> u128 {
    match (a.checked_div(b), a.checked_rem(b)) {
        (Some(q), Some(0)) => q,
        (Some(q), Some(_)) => q.saturating_add(1),
        _ => 0,
    }
}

fn to_u64(v: u128) -> u64 {
    u64::try_from(v).unwrap_or(u64::MAX)
}

impl TokenBucket {
    /// `None` unless every parameter is at least 1.
    pub fn new(max_tokens: u32, tokens_per_fill: u32, fill_interval_ns: u64) -> Option<Self> {
        (max_tokens > 0 && tokens_per_fill > 0 && fill_interval_ns > 0).then_some(Self {
            max_tokens,
            tokens_per_fill,
            fill_interval_ns,
        })
    }

    pub fn max_tokens(&self) -> u32 {
        self.max_tokens
    }
    pub fn tokens_per_fill(&self) -> u32 {
        self.tokens_per_fill
    }
    pub fn fill_interval_ns(&self) -> u64 {
        self.fill_interval_ns
    }

    /// Scaled units per nanosecond.
    fn scale(&self) -> u128 {
        u128::from(self.tokens_per_fill)
    }
    /// Scaled units one token takes to refill.
    fn token_units(&self) -> u128 {
        u128::from(self.fill_interval_ns)
    }
    /// Scaled units to refill the whole bucket.
    fn capacity_units(&self) -> u128 {
        self.token_units()
            .saturating_mul(u128::from(self.max_tokens))
    }
    fn now_units(&self, now_ns: u64) -> u128 {
        u128::from(now_ns).saturating_mul(self.scale())
    }

    /// How long (ns, rounded up) until a bucket with this TAT is full again; 0 when it is full.
    pub fn deficit_ns(&self, tat: u128, now_ns: u64) -> u128 {
        div_ceil(tat.saturating_sub(self.now_units(now_ns)), self.scale())
    }

    /// The TAT of this bucket when it is `deficit_ns` away from full: how a key that takes over
    /// another key's slot inherits that bucket's level. Not capped at this bucket's capacity: a
    /// deficit larger than the capacity is an overdrawn bucket (no tokens, and a longer wait),
    /// which keeps "time to full" exactly what the evicted bucket had (docs/rate-limit.md).
    pub fn tat_for_deficit(&self, deficit_ns: u128, now_ns: u64) -> u128 {
        self.now_units(now_ns)
            .saturating_add(deficit_ns.saturating_mul(self.scale()))
    }

    /// Tokens available at `now_ns` for a bucket with this TAT.
    pub fn tokens_at(&self, tat: u128, now_ns: u64) -> u64 {
        let now = self.now_units(now_ns);
        let deficit = tat.saturating_sub(now);
        to_u64(
            self.capacity_units()
                .saturating_sub(deficit)
                .checked_div(self.token_units())
                .unwrap_or(0),
        )
    }

    /// Try to take one token. Returns the new TAT when a token was taken.
    pub fn take(&self, tat: u128, now_ns: u64) -> (Option<u128>, Decision) {
        let now = self.now_units(now_ns);
        let start = tat.max(now);
        let after = start.saturating_add(self.token_units());
        let horizon = now.saturating_add(self.capacity_units());
        let window_secs = to_u64(div_ceil(
            div_ceil(self.capacity_units(), self.scale()),
            NANOS_PER_SEC,
        ))
        .max(1);
        let base = Decision {
            allowed: false,
            limit: self.max_tokens,
            remaining: 0,
            reset_secs: 0,
            retry_after_secs: 0,
            window_secs,
        };
        if after <= horizon {
            let remaining = horizon
                .saturating_sub(after)
                .checked_div(self.token_units())
                .unwrap_or(0);
            let decision = Decision {
                allowed: true,
                remaining: to_u64(remaining),
                reset_secs: self.next_token_secs(after.saturating_sub(now)),
                ..base
            };
            (Some(after), decision)
        } else {
            let wait_ns = div_ceil(after.saturating_sub(horizon), self.scale());
            let decision = Decision {
                reset_secs: self.next_token_secs(start.saturating_sub(now)),
                retry_after_secs: to_u64(div_ceil(wait_ns, NANOS_PER_SEC)).max(1),
                ..base
            };
            (None, decision)
        }
    }

    /// Seconds until the token count next goes up, for a bucket `deficit` units from full.
    fn next_token_secs(&self, deficit: u128) -> u64 {
        if deficit == 0 {
            return 0;
        }
        let token = self.token_units();
        let wait = match deficit.checked_rem(token) {
            Some(0) | None => token,
            Some(r) => r,
        };
        to_u64(div_ceil(div_ceil(wait, self.scale()), NANOS_PER_SEC)).max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: u64 = 1_000_000_000;

    fn bucket(max: u32, per_fill: u32, interval_ns: u64) -> TokenBucket {
        TokenBucket::new(max, per_fill, interval_ns).unwrap()
    }

    /// Take as many tokens as possible at `now`, returning how many were taken.
    fn drain(b: &TokenBucket, tat: &mut u128, now: u64) -> u64 {
        let mut n = 0;
        while let (Some(next), _) = b.take(*tat, now) {
            *tat = next;
            n += 1;
        }
        n
    }

    #[test]
    fn rejects_zero_parameters() {
        assert!(TokenBucket::new(0, 1, 1).is_none());
        assert!(TokenBucket::new(1, 0, 1).is_none());
        assert!(TokenBucket::new(1, 1, 0).is_none());
    }

    #[test]
    fn starts_full_and_counts_exactly() {
        let b = bucket(100, 100, SEC);
        let mut tat = 0;
        let t0 = 1_700_000_000 * SEC;
        assert_eq!(b.tokens_at(tat, t0), 100);
        let (next, d) = b.take(tat, t0);
        assert!(d.allowed);
        assert_eq!(d.remaining, 99);
        assert_eq!(d.limit, 100);
        tat = next.unwrap();
        assert_eq!(drain(&b, &mut tat, t0), 99);
        let (next, d) = b.take(tat, t0);
        assert!(next.is_none());
        assert!(!d.allowed);
        assert_eq!(d.remaining, 0);
        // One token takes 10 ms: retry after 1 s (rounded up), next token in 1 s (rounded up).
        assert_eq!(d.retry_after_secs, 1);
        assert_eq!(d.reset_secs, 1);
        assert_eq!(d.window_secs, 1);
    }

    #[test]
    fn refills_continuously() {
        // 10 tokens, 1 token per 100 ms.
        let b = bucket(10, 10, SEC);
        let t0 = 5 * SEC;
        let mut tat = 0;
        assert_eq!(drain(&b, &mut tat, t0), 10);
        assert_eq!(drain(&b, &mut tat, t0 + 99_999_999), 0);
        assert_eq!(drain(&b, &mut tat, t0 + 100_000_000), 1);
        assert_eq!(drain(&b, &mut tat, t0 + 350_000_000), 2);
        // Never more than the capacity, however long the pause.
        assert_eq!(drain(&b, &mut tat, t0 + 3600 * SEC), 10);
    }

    #[test]
    fn fractional_token_time_does_not_drift() {
        // 3 tokens per second: a token every 333,333,333.3 ns, which ns arithmetic would round.
        // Visits every ~143 ms drain the bucket before it is ever full, so no accrued fraction
        // is lost: the total is exact.
        let b = bucket(5, 3, SEC);
        let t0 = 1_000 * SEC;
        let mut tat = 0;
        let mut allowed = 0u64;
        let step = SEC / 7;
        let visits = 10_000 * 7;
        for k in 0..=visits {
            allowed += drain(&b, &mut tat, t0 + k * step);
        }
        let expected = 5 + u128::from(visits * step) * 3 / u128::from(SEC);
        assert_eq!(u128::from(allowed), expected);
    }

    #[test]
    fn exact_token_count_over_a_long_run() {
        // Sum over a long run, sampled at exact token boundaries: no drift at all.
        let b = bucket(5, 7, 3 * SEC);
        let t0 = 10 * SEC;
        let mut tat = 0;
        let mut total = drain(&b, &mut tat, t0);
        assert_eq!(total, 5);
        for k in 1..=100_000u64 {
            // every 3 s exactly 7 tokens accrue (capacity 5 limits the draw per visit)
            total += drain(&b, &mut tat, t0 + k * 3 * SEC);
        }
        assert_eq!(total, 5 + 100_000 * 5);
        // Irregular visits that never let the bucket fill up: every accrued fraction of a token
        // is kept, so the total is exactly the initial tokens plus floor(elapsed * rate).
        let b = bucket(10, 7, 3 * SEC);
        let mut tat = 0;
        let mut total = 0u64;
        let step = 1_000_000_007u64;
        for k in 0..=100_000u64 {
            total += drain(&b, &mut tat, t0 + k * step);
        }
        let elapsed = u128::from(100_000 * step);
        let expected = 10 + u64::try_from(elapsed * 7 / u128::from(3 * SEC)).unwrap();
        assert_eq!(total, expected);
    }

    #[test]
    fn large_interval_and_extreme_values_do_not_overflow() {
        let b = bucket(u32::MAX, u32::MAX, 366 * 24 * 3600 * SEC);
        let mut tat = 0;
        let (next, d) = b.take(tat, u64::MAX);
        assert!(d.allowed);
        assert_eq!(d.remaining, u64::from(u32::MAX) - 1);
        tat = next.unwrap();
        assert_eq!(b.tokens_at(tat, u64::MAX), u64::from(u32::MAX) - 1);
        // One token a year: after it is taken, the next one is a year away.
        let b = bucket(1, 1, 366 * 24 * 3600 * SEC);
        let (next, _) = b.take(0, SEC);
        let (none, d) = b.take(next.unwrap(), SEC);
        assert!(none.is_none());
        assert_eq!(d.retry_after_secs, 366 * 24 * 3600);
        assert_eq!(d.window_secs, 366 * 24 * 3600);
        // A corrupt huge TAT denies instead of wrapping.
        let (none, d) = b.take(u128::MAX, SEC);
        assert!(none.is_none() && !d.allowed);
    }

    #[test]
    fn clock_going_backwards_is_conservative() {
        let b = bucket(2, 1, SEC);
        let mut tat = 0;
        assert_eq!(drain(&b, &mut tat, 100 * SEC), 2);
        // An earlier timestamp sees a larger deficit: nothing extra is granted.
        assert_eq!(drain(&b, &mut tat, 90 * SEC), 0);
        assert_eq!(drain(&b, &mut tat, 101 * SEC), 1);
    }

    #[test]
    fn inheriting_a_deficit_converts_between_buckets() {
        let a = bucket(10, 10, SEC); // 100 ms per token
        let b = bucket(4, 1, SEC); // 1 s per token
        let now = 50 * SEC;
        let mut tat = 0;
        for _ in 0..5 {
            tat = a.take(tat, now).0.unwrap();
        }
        assert_eq!(a.deficit_ns(tat, now), 500_000_000);
        let inherited = b.tat_for_deficit(a.deficit_ns(tat, now), now);
        assert_eq!(b.deficit_ns(inherited, now), 500_000_000);
        assert_eq!(b.tokens_at(inherited, now), 3);
        // A deficit beyond the capacity is kept: no tokens until it has run down.
        let inherited = b.tat_for_deficit(100 * 1_000_000_000, now);
        assert_eq!(b.tokens_at(inherited, now), 0);
        assert_eq!(b.deficit_ns(inherited, now), 100_000_000_000);
        assert!(!b.take(inherited, now + 96 * SEC).1.allowed);
        assert!(b.take(inherited, now + 97 * SEC).1.allowed);
    }
}
