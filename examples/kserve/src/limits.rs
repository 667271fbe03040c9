//! Size limits checked before anything is allocated.

/// Limits on what a request may ask the server to hold.
///
/// ```
/// let limits = example_kserve::Limits::default().max_body_bytes(8 << 20);
/// assert_eq!(limits.max_body_bytes, 8 << 20);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The largest request body (REST) or message (gRPC) in bytes; larger
    /// ones get 413, or `OUT_OF_RANGE` from tonic's decoder. Default 32 MiB.
    pub max_body_bytes: usize,
    /// The most elements one input tensor's shape may claim; more get 413 /
    /// `RESOURCE_EXHAUSTED` before any allocation. Default 16 Mi.
    pub max_elements: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: 32 << 20,
            max_elements: 16 << 20,
        }
    }
}

impl Limits {
    /// Sets [`Limits::max_body_bytes`].
    pub fn max_body_bytes(mut self, bytes: usize) -> Self {
        self.max_body_bytes = bytes;
        self
    }

    /// Sets [`Limits::max_elements`].
    pub fn max_elements(mut self, elements: usize) -> Self {
        self.max_elements = elements;
        self
    }
}
