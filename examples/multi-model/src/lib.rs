//! The multi-model server (being built).
