use serde::{Deserialize, Serialize};

/// How a backend is chosen for requests without a sticky key or override.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PickStrategy {
    /// nginx smooth weighted round-robin, shared by all clones: the
    /// observed split tracks the target at every prefix (within one request
    /// for two backends).
    #[default]
    SmoothRoundRobin,
    /// Independent weighted random choice per request.
    WeightedRandom,
}

/// What to do when the picked backend is not ready.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WhenNotReady {
    /// Wait for the picked backend (the split stays exact).
    #[default]
    Wait,
    /// Send the request to another ready backend with a non-zero weight and
    /// count it in `convoy_router_spillover_total` for the picked backend.
    Spill,
}

/// How sticky keys map to backends.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StickyStrategy {
    /// Cumulative intervals for up to two backends, rendezvous for more.
    #[default]
    Auto,
    /// Fixed space of 65,536 buckets cut into cumulative intervals in
    /// backend order. Minimal movement when two backends change weights.
    Intervals,
    /// Weighted rendezvous hashing over 65,536 buckets: when one backend's
    /// weight changes, keys move only to or from that backend.
    Rendezvous,
}

/// Settings of a [`Split`](crate::Split) (backends are added with the builder).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SplitConfig {
    /// Name used as the `split` metric label.
    pub name: String,
    /// Pick strategy for requests without a key or override.
    pub pick: PickStrategy,
    /// Behaviour when the picked backend is not ready.
    pub when_not_ready: WhenNotReady,
    /// Sticky mapping (used only when a key extractor is set).
    pub sticky: StickyStrategy,
    /// Time each request for the latency histogram (two clock reads per
    /// request). Counts of requests and errors are always kept.
    pub record_latency: bool,
}

impl Default for SplitConfig {
    fn default() -> Self {
        Self {
            name: "split".to_owned(),
            pick: PickStrategy::default(),
            when_not_ready: WhenNotReady::default(),
            sticky: StickyStrategy::default(),
            record_latency: true,
        }
    }
}
