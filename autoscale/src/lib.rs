//! convoy-autoscale (under construction).

pub mod sim;
