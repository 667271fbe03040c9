//! convoy-autoscale (under construction).
