//! convoy-batcher (under construction).
