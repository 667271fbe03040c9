//! Level 1: the offset allocator (pure Rust, no device, no `unsafe`).
//!
//! It hands out `(chunk, offset, size)` ranges inside chunks the caller
//! registered. Best fit with coalescing of free neighbours; three size
//! classes (small requests packed in small chunks, large ones in large
//! chunks, oversize ones never split); every block aligned (256 B by
//! default); stream-ordered reuse: a freed block is reusable at once on the
//! stream that freed it and on another stream only after the freeing stream
//! has passed the recorded point (the pool tracks that with events).

mod allocator;
mod config;
#[cfg(test)]
mod tests;

pub use allocator::{
    Allocation, Allocator, AllocatorStats, BlockId, ChunkId, InvalidBlock, Miss, ReleasedChunk,
    SizeClass, StreamId,
};
pub use config::AllocatorConfig;
