//! convoy-router (under construction).
