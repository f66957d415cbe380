//! The clock port. Adapters: `crate::time::{SystemClock, ManualClock, OffsetClock}`.

use crate::time::Timestamp;

pub trait Clock: Send + Sync {
    /// Now, truncated to whole milliseconds so that what is stored reads back equal.
    fn now(&self) -> Timestamp;
}
