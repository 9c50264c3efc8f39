//! The one retry schedule: exponential backoff with jitter, for a source that lost its server
//! (retried inside the pipeline) and for a pipeline that stopped on a transient sink error
//! (restarted from the durable position).

use std::time::Duration;

/// How retries are spaced: from `min`, doubling (with jitter) up to `max`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    pub min: Duration,
    pub max: Duration,
}

impl RetryPolicy {
    /// A source reconnecting: soon, since a server restart takes seconds.
    pub const SOURCE: RetryPolicy = RetryPolicy {
        min: Duration::from_millis(200),
        max: Duration::from_secs(30),
    };
    /// The whole pipeline restarting after a transient sink failure.
    pub const PIPELINE: RetryPolicy = RetryPolicy {
        min: Duration::from_secs(1),
        max: Duration::from_secs(60),
    };

    pub fn schedule(self) -> RetrySchedule {
        RetrySchedule {
            policy: self,
            delays: Self::delays(self),
        }
    }

    fn delays(self) -> backon::ExponentialBackoff {
        backon::BackoffBuilder::build(
            backon::ExponentialBuilder::default()
                .with_min_delay(self.min)
                .with_max_delay(self.max)
                .with_jitter()
                .without_max_times(),
        )
    }
}

/// A run that lasted this long was healthy: the next failure starts the backoff over.
const HEALTHY_RUN: Duration = Duration::from_secs(60);

/// The delays of one series of retries.
pub struct RetrySchedule {
    policy: RetryPolicy,
    delays: backon::ExponentialBackoff,
}

impl RetrySchedule {
    /// The wait before the next attempt, after an attempt that ran for `ran_for`.
    pub fn next_delay(&mut self, ran_for: Duration) -> Duration {
        if ran_for > HEALTHY_RUN {
            self.delays = self.policy.delays();
        }
        self.delays.next().unwrap_or(self.policy.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_to_the_maximum_and_start_over_after_a_healthy_run() {
        let mut schedule = RetryPolicy::SOURCE.schedule();
        let first = schedule.next_delay(Duration::ZERO);
        assert!(first >= RetryPolicy::SOURCE.min && first <= 2 * RetryPolicy::SOURCE.min);
        let mut last = first;
        for _ in 0..20 {
            last = schedule.next_delay(Duration::ZERO);
            assert!(last <= 2 * RetryPolicy::SOURCE.max, "{last:?}");
        }
        assert!(
            last >= RetryPolicy::SOURCE.max / 2,
            "grown to the maximum: {last:?}"
        );
        let again = schedule.next_delay(HEALTHY_RUN + Duration::from_secs(1));
        assert!(
            again <= 2 * RetryPolicy::SOURCE.min,
            "started over: {again:?}"
        );
    }
}
