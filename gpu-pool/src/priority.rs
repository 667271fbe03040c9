//! Level 0: the priority of a tenant's streams and waiting work, shared by
//! the compute gate (level 3) and the pool (level 4).

use serde::{Deserialize, Serialize};

/// Priority of a tenant's streams and of its waiting work.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    /// Lowest stream priority of the device.
    Low = 0,
    /// The middle of the device's range.
    #[default]
    Normal = 1,
    /// Highest stream priority of the device.
    High = 2,
}

impl Priority {
    /// The device's stream priority for this level, inside `range` (the
    /// device's own numbers: for CUDA a lower number is a higher priority).
    pub(crate) fn stream_priority(self, least: i32, greatest: i32) -> i32 {
        match self {
            Priority::Low => least,
            Priority::High => greatest,
            Priority::Normal => least + (greatest - least) / 2,
        }
    }
}
