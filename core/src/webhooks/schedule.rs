//! When failed deliveries are tried again.

use std::time::Duration;

use rand::RngExt as _;

/// The delays between attempts: the first attempt is immediate, attempt `n + 1` follows
/// attempt `n` after `delays[n - 1]` (give or take a tenth, so endpoints that failed together
/// are not retried together); after the last delay's attempt the delivery is dead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetrySchedule {
    delays: Vec<Duration>,
}

impl Default for RetrySchedule {
    /// 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 24 h: eight attempts over about 42 hours.
    fn default() -> Self {
        Self::parse("5s,5m,30m,2h,5h,10h,24h").expect("the default schedule parses")
    }
}

impl RetrySchedule {
    /// Parses a comma-separated list of delays such as `5s,5m,30m,2h`; units `ms`, `s`, `m`,
    /// `h`.
    pub fn parse(spec: &str) -> Result<Self, String> {
        let delays = spec
            .split(',')
            .map(|part| {
                let part = part.trim();
                let split = part
                    .find(|c: char| !c.is_ascii_digit())
                    .ok_or_else(|| format!("delay `{part}` has no unit: use ms, s, m or h"))?;
                let (number, unit) = part.split_at(split);
                let n: u64 = number
                    .parse()
                    .map_err(|_| format!("delay `{part}` does not start with a number"))?;
                Ok(match unit {
                    "ms" => Duration::from_millis(n),
                    "s" => Duration::from_secs(n),
                    "m" => Duration::from_secs(n * 60),
                    "h" => Duration::from_secs(n * 3600),
                    _ => {
                        return Err(format!(
                            "delay `{part}` has unit `{unit}`: use ms, s, m or h"
                        ));
                    }
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(Self { delays })
    }

    /// How many attempts a delivery gets in all.
    pub fn attempts(&self) -> usize {
        self.delays.len() + 1
    }

    /// How long to wait after the `attempts`-th failed attempt, jittered; `None` when it was
    /// the last.
    pub fn delay_after(&self, attempts: usize) -> Option<Duration> {
        let base = *self.delays.get(attempts.checked_sub(1)?)?;
        Some(base.mul_f64(rand::rng().random_range(0.9..=1.1)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_schedule_gives_eight_attempts_ending_after_a_day() {
        let schedule = RetrySchedule::default();
        assert_eq!(schedule.attempts(), 8);
        let first = schedule.delay_after(1).unwrap();
        assert!(first >= Duration::from_millis(4500) && first <= Duration::from_millis(5500));
        let last = schedule.delay_after(7).unwrap();
        assert!(last >= Duration::from_secs(21 * 3600));
        assert_eq!(schedule.delay_after(8), None);
    }

    #[test]
    fn schedules_parse_every_unit_and_refuse_nonsense() {
        let s = RetrySchedule::parse("100ms, 2s,1m,1h").unwrap();
        assert_eq!(s.attempts(), 5);
        for bad in ["", "5", "5d", "s", "5s,,5s"] {
            assert!(RetrySchedule::parse(bad).is_err(), "{bad}");
        }
    }
}
