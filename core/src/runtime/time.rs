//! Time as the core sees it: a number the driver passes in, never a clock the core reads.

use std::fmt;

/// A point in time: microseconds since an epoch the driver chooses.
///
/// The core only compares and adds times, so any monotonic source works: the stdio
/// driver uses `Instant` since start-up, the simulator a virtual clock.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(transparent)]
pub struct Time(u64);

impl Time {
    /// The epoch.
    pub const ZERO: Time = Time(0);

    /// A time `us` microseconds after the epoch.
    pub const fn from_micros(us: u64) -> Time {
        Time(us)
    }

    /// A time `ms` milliseconds after the epoch.
    pub const fn from_millis(ms: u64) -> Time {
        Time(ms.saturating_mul(1000))
    }

    /// Microseconds since the epoch.
    pub const fn as_micros(self) -> u64 {
        self.0
    }

    /// Whole milliseconds since the epoch.
    pub const fn as_millis(self) -> u64 {
        self.0 / 1000
    }

    /// This time plus `us` microseconds, saturating at the far future.
    pub const fn plus_micros(self, us: u64) -> Time {
        Time(self.0.saturating_add(us))
    }

    /// This time plus `ms` milliseconds, saturating at the far future.
    pub const fn plus_millis(self, ms: u64) -> Time {
        self.plus_micros(ms.saturating_mul(1000))
    }

    /// This time minus `ms` milliseconds, or time zero if that is earlier.
    pub const fn minus_millis(self, ms: u64) -> Time {
        Time(self.0.saturating_sub(ms.saturating_mul(1000)))
    }

    /// Microseconds from `earlier` to `self`, or 0 if `earlier` is later.
    pub const fn micros_since(self, earlier: Time) -> u64 {
        self.0.saturating_sub(earlier.0)
    }
}

impl fmt::Display for Time {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:06}s", self.0 / 1_000_000, self.0 % 1_000_000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_saturates_instead_of_wrapping() {
        let t = Time::from_millis(5);
        assert_eq!(t.as_micros(), 5000);
        assert_eq!(t.plus_millis(2).as_millis(), 7);
        assert_eq!(
            Time::from_micros(u64::MAX).plus_millis(1),
            Time::from_micros(u64::MAX)
        );
        assert_eq!(Time::ZERO.micros_since(t), 0);
        assert_eq!(t.micros_since(Time::ZERO), 5000);
        assert_eq!(Time::from_micros(1_500_042).to_string(), "1.500042s");
    }
}
