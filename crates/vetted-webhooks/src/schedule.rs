//! The retry schedule as data (svix-style `retry_schedule`), plus the delivery tuning knobs.
//!
//! The default schedule is exponential from 30 s, doubling, 10 attempts in all; tests configure
//! millisecond schedules so the whole retry story runs in a blink.

use std::time::Duration;

use rand::Rng;
use serde::{Deserialize, Serialize};

/// How deliveries are retried and throttled.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct DeliveryConfig {
    /// Delay before each retry in milliseconds: `retry_schedule[n]` follows failed attempt `n + 1`.
    /// Attempts in all = `retry_schedule.len() + 1`; then the delivery is a dead letter.
    pub retry_schedule: Vec<u64>,
    /// Each delay is multiplied by a random factor in `1 ± jitter` (0.2 = ±20%), so a receiver
    /// coming back up is not hit by every retry at once.
    pub jitter: f64,
    /// A `Retry-After` longer than this is capped (a receiver must not park deliveries for weeks).
    pub max_retry_after_ms: u64,
    /// Per-request timeout (connect + response headers + body).
    pub request_timeout_ms: u64,
    /// Requests in flight at once to one application's endpoint.
    pub per_endpoint_concurrency: usize,
    /// Requests in flight at once in total.
    pub max_in_flight: usize,
    /// How often the worker looks for new outbox rows when nothing woke it.
    pub poll_interval_ms: u64,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        DeliveryConfig {
            retry_schedule: exponential(Duration::from_secs(30), 2, 9),
            jitter: 0.2,
            max_retry_after_ms: 24 * 3600 * 1000,
            request_timeout_ms: 15_000,
            per_endpoint_concurrency: 32,
            max_in_flight: 256,
            poll_interval_ms: 5,
        }
    }
}

/// `retries` delays starting at `first`, each `factor` times the previous, in milliseconds.
pub fn exponential(first: Duration, factor: u64, retries: usize) -> Vec<u64> {
    let mut delay = u64::try_from(first.as_millis()).unwrap_or(u64::MAX);
    let mut out = Vec::with_capacity(retries);
    for _ in 0..retries {
        out.push(delay);
        delay = delay.saturating_mul(factor);
    }
    out
}

impl DeliveryConfig {
    /// A configuration whose schedule is `retry_schedule` (ms) with no jitter; everything else default.
    pub fn with_schedule(retry_schedule: Vec<u64>) -> Self {
        DeliveryConfig {
            retry_schedule,
            jitter: 0.0,
            ..DeliveryConfig::default()
        }
    }

    /// Attempts in all before a dead letter.
    pub fn max_attempts(&self) -> usize {
        self.retry_schedule.len() + 1
    }

    /// Delay before the next attempt after `failed_attempts` failures in this round, or `None`
    /// when the budget is spent. A `retry_after` from the receiver wins when it is longer.
    pub fn next_delay(
        &self,
        failed_attempts: usize,
        retry_after: Option<Duration>,
    ) -> Option<Duration> {
        let base = *self.retry_schedule.get(failed_attempts.checked_sub(1)?)?;
        let jitter = self.jitter.clamp(0.0, 1.0);
        let factor = if jitter > 0.0 {
            rand::rng().random_range(1.0 - jitter..=1.0 + jitter)
        } else {
            1.0
        };
        // Float rounding of a millisecond delay is irrelevant; the cast saturates on overflow.
        let scheduled = Duration::from_millis((base as f64 * factor) as u64);
        let asked = retry_after.map(|d| d.min(Duration::from_millis(self.max_retry_after_ms)));
        Some(asked.map_or(scheduled, |a| a.max(scheduled)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_first_retry_is_after_30_seconds_and_10_attempts_in_all() {
        let config = DeliveryConfig {
            jitter: 0.0,
            ..DeliveryConfig::default()
        };
        assert_eq!(config.max_attempts(), 10);
        assert_eq!(config.next_delay(1, None), Some(Duration::from_secs(30)));
        assert_eq!(config.next_delay(2, None), Some(Duration::from_secs(60)));
        assert_eq!(
            config.next_delay(9, None),
            Some(Duration::from_secs(30 * 256))
        );
        assert_eq!(config.next_delay(10, None), None);
    }

    #[test]
    fn jitter_stays_within_its_band() {
        let config = DeliveryConfig::default();
        for _ in 0..200 {
            let d = config.next_delay(1, None).unwrap();
            assert!(
                d >= Duration::from_secs(24) && d <= Duration::from_secs(36),
                "{d:?}"
            );
        }
    }

    #[test]
    fn a_longer_retry_after_is_honoured_and_capped() {
        let config = DeliveryConfig {
            max_retry_after_ms: 60_000,
            ..DeliveryConfig::with_schedule(vec![10, 20])
        };
        assert_eq!(
            config.next_delay(1, Some(Duration::from_secs(5))),
            Some(Duration::from_secs(5))
        );
        assert_eq!(
            config.next_delay(1, Some(Duration::from_secs(3600))),
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            config.next_delay(2, Some(Duration::from_millis(1))),
            Some(Duration::from_millis(20))
        );
    }

    #[test]
    fn the_schedule_reads_from_configuration_data() {
        let config: DeliveryConfig =
            serde_json::from_str(r#"{"retrySchedule":[5,10,15],"jitter":0}"#).unwrap();
        assert_eq!(config.max_attempts(), 4);
        assert_eq!(config.request_timeout_ms, 15_000);
    }
}
