//! Deterministic discrete-event simulator (under construction).
