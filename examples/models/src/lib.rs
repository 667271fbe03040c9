//! The model runtime of the multi-model server (being built).
