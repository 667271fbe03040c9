//! The KServe Open Inference Protocol v2 (being built).
