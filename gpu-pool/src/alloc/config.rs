use serde::{Deserialize, Serialize};

use crate::error::{ConfigError, ConfigErrorKind};

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;

/// Tuning of the offset allocator: alignment, size classes and chunk sizes.
///
/// The defaults follow PyTorch's caching allocator: requests up to 1 MiB are
/// packed into 2 MiB chunks, larger ones into 20 MiB chunks (or a chunk of
/// their own, rounded to 2 MiB, when they are 10 MiB or more).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct AllocatorConfig {
    /// Every block starts at a multiple of this and its size is rounded up
    /// to it (power of two, default 256 B, the CUDA allocation granularity
    /// that keeps any vector type aligned).
    pub alignment: u64,
    /// Requests up to this size are small; they come from small chunks.
    pub small_max: u64,
    /// Size of a chunk that holds small blocks.
    pub small_chunk: u64,
    /// Size of a chunk that holds large blocks (requests below half of it
    /// share one); larger requests get a chunk of their own.
    pub large_chunk: u64,
    /// Large chunks are rounded up to a multiple of this.
    pub large_round: u64,
    /// A large free block is split only when the rest is more than this;
    /// smaller tails stay with the block (internal slack, counted).
    pub min_large_split: u64,
    /// Never-split threshold: requests of this size or more are "oversize";
    /// their blocks are never split and are reused only by oversize requests
    /// that would waste at most `oversize_waste` bytes.
    pub never_split: u64,
    /// Slack tolerated when an oversize request reuses an oversize block.
    pub oversize_waste: u64,
}

impl Default for AllocatorConfig {
    fn default() -> Self {
        Self {
            alignment: 256,
            small_max: MIB,
            small_chunk: 2 * MIB,
            large_chunk: 20 * MIB,
            large_round: 2 * MIB,
            min_large_split: MIB,
            never_split: 256 * MIB,
            oversize_waste: 20 * MIB,
        }
    }
}

impl AllocatorConfig {
    /// Sets [`AllocatorConfig::alignment`].
    pub fn alignment(mut self, bytes: u64) -> Self {
        self.alignment = bytes;
        self
    }

    /// Sets [`AllocatorConfig::never_split`].
    pub fn never_split(mut self, bytes: u64) -> Self {
        self.never_split = bytes;
        self
    }

    /// Sets the small class: requests up to `small_max` packed in chunks of
    /// `small_chunk` bytes.
    pub fn small_class(mut self, small_max: u64, small_chunk: u64) -> Self {
        self.small_max = small_max;
        self.small_chunk = small_chunk;
        self
    }

    /// Sets the large chunk size and the rounding of large chunks.
    pub fn large_chunk(mut self, large_chunk: u64, large_round: u64) -> Self {
        self.large_chunk = large_chunk;
        self.large_round = large_round;
        self
    }

    /// Checks the values; the allocator only accepts a validated config.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |msg: String| Err(ConfigError::new(ConfigErrorKind::Allocator, msg));
        if self.alignment == 0 || !self.alignment.is_power_of_two() {
            return bad(format!(
                "alignment must be a power of two, got {}",
                self.alignment
            ));
        }
        if self.small_max == 0 || self.small_chunk < self.small_max {
            return bad(format!(
                "small_chunk ({}) must hold at least one small_max ({}) block, small_max > 0",
                self.small_chunk, self.small_max
            ));
        }
        if self.large_round == 0 || self.large_chunk < self.small_max {
            return bad("large_chunk must exceed small_max and large_round be > 0".into());
        }
        for (name, v) in [
            ("small_chunk", self.small_chunk),
            ("large_chunk", self.large_chunk),
            ("large_round", self.large_round),
        ] {
            if v % self.alignment != 0 {
                return bad(format!(
                    "{name} ({v}) must be a multiple of alignment ({})",
                    self.alignment
                ));
            }
        }
        if self.small_chunk / self.alignment > 1 << 16 {
            return bad(format!(
                "small_chunk / alignment must be at most 65536 (one bin per size), got {}",
                self.small_chunk / self.alignment
            ));
        }
        if self.never_split <= self.small_max {
            return bad("never_split must be larger than small_max".into());
        }
        Ok(())
    }
}
