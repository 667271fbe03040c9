//! convoy-gpu-pool (under construction).
