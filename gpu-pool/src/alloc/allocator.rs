use std::collections::{BTreeSet, VecDeque};
use std::fmt;

use serde::{Deserialize, Serialize};

use super::AllocatorConfig;
use crate::error::ConfigError;

const NIL: u32 = u32::MAX;

/// A stream of work on a device, as the allocator sees it: blocks freed on a
/// stream are reusable at once on that stream, and on others only after the
/// work queued on it before the free has completed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct StreamId(pub u32);

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "stream#{}", self.0)
    }
}

/// A chunk of device memory registered with the allocator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ChunkId(u32);

/// A live block; stale ids (already freed) are detected, never trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BlockId {
    idx: u32,
    gen: u32,
}

/// Which chunks a request is served from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum SizeClass {
    /// Up to `small_max`: packed into small chunks.
    Small,
    /// Up to `never_split`: large chunks, split with a coarse remainder.
    Large,
    /// From `never_split`: one chunk each, never split.
    Oversize,
}

impl SizeClass {
    fn key(self) -> u8 {
        match self {
            SizeClass::Small => 0,
            SizeClass::Large => 1,
            SizeClass::Oversize => 2,
        }
    }
}

/// A range handed out by [`Allocator::alloc`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Allocation {
    /// Handle to give back to [`Allocator::free`].
    pub block: BlockId,
    /// The chunk the range lies in.
    pub chunk: ChunkId,
    /// Offset of the range inside the chunk.
    pub offset: u64,
    /// Bytes granted (the request rounded up, plus any tail that was too
    /// small to split off).
    pub size: u64,
    /// Base address of the chunk plus `offset`.
    pub addr: u64,
}

/// Why [`Allocator::alloc`] returned no range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Miss {
    /// No free block fits: register a chunk of `chunk_size` bytes of this
    /// class with [`Allocator::add_chunk`] and retry.
    NeedChunk {
        /// Size class of the request.
        class: SizeClass,
        /// Bytes the new chunk must have.
        chunk_size: u64,
    },
    /// A block of `granted` bytes was found but the `accept` check (a quota)
    /// refused it; nothing changed.
    Refused {
        /// Bytes the request would have consumed.
        granted: u64,
    },
    /// The request cannot be represented (size overflow).
    TooLarge,
}

/// The block id was not live (double free or foreign id).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidBlock;

impl fmt::Display for InvalidBlock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("block is not live in this allocator")
    }
}

impl std::error::Error for InvalidBlock {}

/// A chunk given back by [`Allocator::release_empty_chunks`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReleasedChunk {
    /// Base address the chunk was registered with.
    pub base: u64,
    /// Its size.
    pub size: u64,
}

/// Counters and gauges of an allocator (or a pool).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllocatorStats {
    /// Bytes in chunks (memory held from the device).
    pub reserved_bytes: u64,
    /// Bytes in live blocks (granted sizes).
    pub allocated_bytes: u64,
    /// Bytes asked for by live blocks (before rounding).
    pub requested_bytes: u64,
    /// Highest `allocated_bytes` seen.
    pub peak_allocated_bytes: u64,
    /// Highest `reserved_bytes` seen.
    pub peak_reserved_bytes: u64,
    /// Allocations made since creation.
    pub allocations: u64,
    /// Frees since creation.
    pub frees: u64,
    /// Live blocks.
    pub live_blocks: u64,
    /// Registered chunks.
    pub chunks: u64,
    /// Bytes in free blocks (`reserved - allocated`).
    pub free_bytes: u64,
    /// Free bytes still waiting for a stream's event before other streams may use them.
    pub pending_bytes: u64,
    /// Largest single free block.
    pub largest_free_block: u64,
    /// Sum over chunks of each chunk's largest free block.
    pub largest_free_per_chunk_sum: u64,
}

impl AllocatorStats {
    /// Fragmentation inside chunks: `1 - Σ largest_free(chunk) / free_bytes`,
    /// the formula `1 - largest_free / total_free` applied chunk by chunk.
    /// 0 when each chunk's free space is one block (or there is none), close
    /// to 1 when it is in crumbs.
    ///
    /// Chunks are separate device allocations, never adjacent, so free space
    /// in two chunks can never be one block; counting that as fragmentation
    /// (see [`AllocatorStats::global_fragmentation`]) would report a pool
    /// with every chunk empty as fragmented.
    pub fn fragmentation(&self) -> f64 {
        if self.free_bytes == 0 {
            0.0
        } else {
            1.0 - self.largest_free_per_chunk_sum as f64 / self.free_bytes as f64
        }
    }

    /// `1 - largest_free_block / free_bytes` over the whole pool: how far the
    /// free space is from one single block (across chunks too).
    pub fn global_fragmentation(&self) -> f64 {
        if self.free_bytes == 0 {
            0.0
        } else {
            1.0 - self.largest_free_block as f64 / self.free_bytes as f64
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lane {
    /// Reusable by every stream.
    Any,
    /// Freed on `stream` at `epoch`; other streams wait for the epoch.
    Pending { stream: StreamId, epoch: u64 },
}

impl Lane {
    fn key(self) -> u64 {
        match self {
            Lane::Any => 0,
            Lane::Pending { stream, .. } => u64::from(stream.0) + 1,
        }
    }

    fn merge(self, other: Lane) -> Option<Lane> {
        match (self, other) {
            (Lane::Any, Lane::Any) => Some(Lane::Any),
            (
                Lane::Pending {
                    stream: a,
                    epoch: ea,
                },
                Lane::Pending {
                    stream: b,
                    epoch: eb,
                },
            ) if a == b => Some(Lane::Pending {
                stream: a,
                epoch: ea.max(eb),
            }),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Vacant,
    Allocated { requested: u64 },
    Free { lane: Lane },
}

#[derive(Debug, Clone)]
struct Node {
    chunk: u32,
    offset: u64,
    size: u64,
    prev: u32,
    next: u32,
    gen: u32,
    /// Position in its small bin (small blocks free for every stream).
    pos: u32,
    stream: StreamId,
    state: State,
}

#[derive(Debug, Clone)]
struct Chunk {
    base: u64,
    size: u64,
    class: SizeClass,
    head: u32,
}

/// (class, lane, size, node): best fit is the first key at or after
/// (class, lane, size, 0).
type FreeKey = (u8, u64, u64, u32);

/// Level 1: a pure offset allocator over chunks registered by the caller.
///
/// It never touches memory: it hands out `(chunk, offset, size)` ranges with
/// best fit, coalesces neighbours on free, keeps small and large requests in
/// separate chunks, never splits oversize blocks, and applies the
/// stream-ordering rule (see [`Allocator::free`] and [`Allocator::settle`]).
/// The pool drives it under its lock; tests and fuzzers drive it directly.
///
/// ```
/// use convoy_gpu_pool::{Allocator, AllocatorConfig, Miss, StreamId};
///
/// let mut a = Allocator::new(AllocatorConfig::default()).unwrap();
/// let s = StreamId(0);
/// let chunk_size = match a.alloc(1000, s, |_| true) {
///     Err(Miss::NeedChunk { class, chunk_size }) => {
///         a.add_chunk(0x1000_0000, chunk_size, class);
///         chunk_size
///     }
///     other => panic!("{other:?}"),
/// };
/// let x = a.alloc(1000, s, |_| true).unwrap();
/// assert_eq!(x.size, 1024); // rounded to 256 B
/// a.free(x.block, None).unwrap();
/// assert_eq!(a.stats().largest_free_block, chunk_size); // coalesced again
/// ```
#[derive(Debug, Clone)]
pub struct Allocator {
    cfg: AllocatorConfig,
    /// log2(alignment).
    shift: u32,
    nodes: Vec<Node>,
    vacant: Vec<u32>,
    chunks: Vec<Option<Chunk>>,
    free_chunk_ids: Vec<u32>,
    /// Free blocks, except small ones free for every stream.
    index: BTreeSet<FreeKey>,
    /// Small blocks free for every stream: the hot path, O(1).
    bins: SmallBins,
    /// Per stream: (epoch, node, gen) of blocks waiting for that stream.
    pending: Vec<VecDeque<(u64, u32, u32)>>,
    pending_retain_at: Vec<usize>,
    stats: AllocatorStats,
}

impl Allocator {
    /// An empty allocator; fails when the config is invalid.
    pub fn new(cfg: AllocatorConfig) -> Result<Self, ConfigError> {
        cfg.validate()?;
        let shift = cfg.alignment.trailing_zeros();
        let nbins = (cfg.small_chunk / cfg.alignment) as usize + 1;
        Ok(Self {
            shift,
            cfg,
            nodes: Vec::new(),
            vacant: Vec::new(),
            chunks: Vec::new(),
            free_chunk_ids: Vec::new(),
            index: BTreeSet::new(),
            bins: SmallBins::new(nbins),
            pending: Vec::new(),
            pending_retain_at: Vec::new(),
            stats: AllocatorStats::default(),
        })
    }

    /// The config in use.
    pub fn config(&self) -> &AllocatorConfig {
        &self.cfg
    }

    /// `size` rounded up to the alignment (a zero-byte request takes one
    /// aligned unit so every block has a distinct address); `None` on overflow.
    pub fn round(&self, size: u64) -> Option<u64> {
        let a = self.cfg.alignment;
        size.max(1).checked_add(a - 1).map(|s| s & !(a - 1))
    }

    /// The class of a rounded size.
    pub fn class_of(&self, rounded: u64) -> SizeClass {
        if rounded <= self.cfg.small_max {
            SizeClass::Small
        } else if rounded < self.cfg.never_split {
            SizeClass::Large
        } else {
            SizeClass::Oversize
        }
    }

    /// The size of the chunk to register when a rounded request misses.
    pub fn chunk_size_for(&self, rounded: u64) -> Option<u64> {
        match self.class_of(rounded) {
            SizeClass::Small => Some(self.cfg.small_chunk),
            SizeClass::Large if rounded <= self.cfg.large_chunk / 2 => Some(self.cfg.large_chunk),
            _ => {
                let r = self.cfg.large_round;
                rounded.checked_add(r - 1).map(|s| s / r * r)
            }
        }
    }

    fn best_in(&self, class: SizeClass, lane: u64, size: u64) -> Option<(u64, u32)> {
        if class == SizeClass::Small && lane == 0 {
            let bin = self.bins.find((size >> self.shift) as usize)?;
            let idx = *self.bins.bins[bin].last()?;
            return Some(((bin as u64) << self.shift, idx));
        }
        let c = class.key();
        self.index
            .range((c, lane, size, 0)..=(c, lane, u64::MAX, u32::MAX))
            .next()
            .map(|&(_, _, s, i)| (s, i))
    }

    fn index_insert(&mut self, class: SizeClass, lane: Lane, size: u64, i: u32) {
        if class == SizeClass::Small && lane == Lane::Any {
            let pos = self.bins.insert((size >> self.shift) as usize, i);
            self.nodes[i as usize].pos = pos;
        } else {
            self.index.insert((class.key(), lane.key(), size, i));
        }
    }

    fn index_remove(&mut self, class: SizeClass, lane: Lane, size: u64, i: u32) {
        if class == SizeClass::Small && lane == Lane::Any {
            let pos = self.nodes[i as usize].pos;
            if let Some(moved) = self.bins.remove((size >> self.shift) as usize, pos) {
                self.nodes[moved as usize].pos = pos;
            }
        } else {
            self.index.remove(&(class.key(), lane.key(), size, i));
        }
    }

    fn index_contains(&self, class: SizeClass, lane: Lane, size: u64, i: u32) -> bool {
        if class == SizeClass::Small && lane == Lane::Any {
            let pos = self.nodes[i as usize].pos as usize;
            self.bins
                .bins
                .get((size >> self.shift) as usize)
                .and_then(|b| b.get(pos))
                == Some(&i)
        } else {
            self.index.contains(&(class.key(), lane.key(), size, i))
        }
    }

    /// Best-fit allocation of `size` bytes for use on `stream`.
    ///
    /// Candidates are blocks free for every stream and blocks freed on
    /// `stream` itself (stream order makes them safe at once). `accept` is
    /// called with the bytes the block would consume before anything
    /// changes; returning `false` leaves the allocator untouched
    /// ([`Miss::Refused`]). This is how the pool checks a quota atomically.
    pub fn alloc(
        &mut self,
        size: u64,
        stream: StreamId,
        accept: impl FnOnce(u64) -> bool,
    ) -> Result<Allocation, Miss> {
        let rounded = self.round(size).ok_or(Miss::TooLarge)?;
        let class = self.class_of(rounded);
        let has_own = self
            .pending
            .get(stream.0 as usize)
            .is_some_and(|q| !q.is_empty());
        let own = if has_own {
            self.best_in(class, u64::from(stream.0) + 1, rounded)
        } else {
            None
        };
        let any = self.best_in(class, 0, rounded);
        let pick = match (own, any) {
            (Some(o), Some(a)) => Some(if o.0 <= a.0 { o } else { a }),
            (o, a) => o.or(a),
        };
        let pick = pick.filter(|&(s, _)| {
            class != SizeClass::Oversize || s - rounded <= self.cfg.oversize_waste
        });
        let Some((bsize, idx)) = pick else {
            let chunk_size = self.chunk_size_for(rounded).ok_or(Miss::TooLarge)?;
            return Err(Miss::NeedChunk { class, chunk_size });
        };
        let rest = bsize - rounded;
        let split = match class {
            SizeClass::Small => rest >= self.cfg.alignment,
            SizeClass::Large => rest > self.cfg.min_large_split,
            SizeClass::Oversize => false,
        };
        let granted = if split { rounded } else { bsize };
        if !accept(granted) {
            return Err(Miss::Refused { granted });
        }
        let lane = match self.nodes[idx as usize].state {
            State::Free { lane } => lane,
            _ => unreachable!("indexed node is free"),
        };
        self.index_remove(class, lane, bsize, idx);
        if split {
            let (chunk, offset, next) = {
                let n = &self.nodes[idx as usize];
                (n.chunk, n.offset, n.next)
            };
            let tail = self.new_node(Node {
                chunk,
                offset: offset + rounded,
                size: rest,
                prev: idx,
                next,
                gen: 0,
                pos: 0,
                stream: self.nodes[idx as usize].stream,
                state: State::Free { lane },
            });
            if next != NIL {
                self.nodes[next as usize].prev = tail;
            }
            let n = &mut self.nodes[idx as usize];
            n.next = tail;
            n.size = rounded;
            self.insert_free(tail);
        }
        let n = &mut self.nodes[idx as usize];
        n.state = State::Allocated { requested: size };
        n.stream = stream;
        n.gen = n.gen.wrapping_add(1);
        let (chunk, offset, gen) = (n.chunk, n.offset, n.gen);
        let base = self.chunks[chunk as usize].as_ref().map_or(0, |c| c.base);
        if let Lane::Pending { .. } = lane {
            self.stats.pending_bytes -= bsize;
        }
        let s = &mut self.stats;
        s.allocated_bytes += granted;
        s.requested_bytes += size;
        s.peak_allocated_bytes = s.peak_allocated_bytes.max(s.allocated_bytes);
        s.allocations += 1;
        s.live_blocks += 1;
        s.free_bytes -= granted;
        if split {
            if let Lane::Pending { .. } = lane {
                s.pending_bytes += rest;
            }
        }
        Ok(Allocation {
            block: BlockId { idx, gen },
            chunk: ChunkId(chunk),
            offset,
            size: granted,
            addr: base + offset,
        })
    }

    /// Gives a block back; returns the bytes it consumed.
    ///
    /// With `pending_epoch: None` the block is free for every stream at once
    /// (the caller knows the stream's work on it has completed). With
    /// `Some(epoch)` it is reusable at once on the stream that allocated it
    /// and on other streams only after [`Allocator::settle`] reports that
    /// stream done up to `epoch`. Neighbours in the same state coalesce.
    pub fn free(
        &mut self,
        block: BlockId,
        pending_epoch: Option<u64>,
    ) -> Result<u64, InvalidBlock> {
        let n = self.nodes.get_mut(block.idx as usize).ok_or(InvalidBlock)?;
        let requested = match n.state {
            State::Allocated { requested } if n.gen == block.gen => requested,
            _ => return Err(InvalidBlock),
        };
        let lane = match pending_epoch {
            None => Lane::Any,
            Some(epoch) => Lane::Pending {
                stream: n.stream,
                epoch,
            },
        };
        n.state = State::Free { lane };
        let size = n.size;
        let s = &mut self.stats;
        s.allocated_bytes -= size;
        s.requested_bytes -= requested;
        s.frees += 1;
        s.live_blocks -= 1;
        s.free_bytes += size;
        if pending_epoch.is_some() {
            s.pending_bytes += size;
        }
        self.merge_and_insert(block.idx);
        Ok(size)
    }

    /// Streams that hold blocks waiting for their epoch.
    pub fn pending_streams(&self) -> impl Iterator<Item = StreamId> + '_ {
        self.pending
            .iter()
            .enumerate()
            .filter(|(_, q)| !q.is_empty())
            .map(|(i, _)| StreamId(i as u32))
    }

    /// `stream` completed all work up to `done_epoch`: its blocks freed at
    /// or before that epoch become free for every stream (and coalesce).
    pub fn settle(&mut self, stream: StreamId, done_epoch: u64) {
        let si = stream.0 as usize;
        while let Some(&(epoch, idx, gen)) = self.pending.get(si).and_then(|q| q.front()) {
            if epoch > done_epoch {
                break;
            }
            self.pending[si].pop_front();
            let n = &self.nodes[idx as usize];
            if n.gen != gen {
                continue;
            }
            let State::Free {
                lane:
                    lane @ Lane::Pending {
                        stream: s,
                        epoch: e,
                    },
            } = n.state
            else {
                continue;
            };
            if s != stream || e > done_epoch {
                continue;
            }
            let class = self.chunk_class(n.chunk);
            let size = n.size;
            self.index_remove(class, lane, size, idx);
            self.stats.pending_bytes -= size;
            self.nodes[idx as usize].state = State::Free { lane: Lane::Any };
            self.merge_and_insert(idx);
        }
    }

    /// Every stream is idle (after a device synchronize): settle them all.
    pub fn settle_all(&mut self) {
        for s in 0..self.pending.len() {
            self.settle(StreamId(s as u32), u64::MAX);
        }
    }

    /// Registers a chunk of `size` bytes at `base` that will serve `class`.
    pub fn add_chunk(&mut self, base: u64, size: u64, class: SizeClass) -> ChunkId {
        let cid = match self.free_chunk_ids.pop() {
            Some(c) => c,
            None => {
                self.chunks.push(None);
                (self.chunks.len() - 1) as u32
            }
        };
        let head = self.new_node(Node {
            chunk: cid,
            offset: 0,
            size,
            prev: NIL,
            next: NIL,
            gen: 0,
            pos: 0,
            stream: StreamId(0),
            state: State::Free { lane: Lane::Any },
        });
        self.chunks[cid as usize] = Some(Chunk {
            base,
            size,
            class,
            head,
        });
        self.insert_free(head);
        let s = &mut self.stats;
        s.reserved_bytes += size;
        s.free_bytes += size;
        s.chunks += 1;
        s.peak_reserved_bytes = s.peak_reserved_bytes.max(s.reserved_bytes);
        ChunkId(cid)
    }

    /// Removes every chunk that is one free block (free for all streams) and
    /// returns them so the caller can give the memory back.
    pub fn release_empty_chunks(&mut self) -> Vec<ReleasedChunk> {
        let mut out = Vec::new();
        for cid in 0..self.chunks.len() {
            let Some(c) = &self.chunks[cid] else { continue };
            let head = c.head;
            let n = &self.nodes[head as usize];
            if n.next != NIL || n.state != (State::Free { lane: Lane::Any }) {
                continue;
            }
            let (base, size, class) = (c.base, c.size, c.class);
            self.index_remove(class, Lane::Any, size, head);
            self.vacate(head);
            self.chunks[cid] = None;
            self.free_chunk_ids.push(cid as u32);
            let s = &mut self.stats;
            s.reserved_bytes -= size;
            s.free_bytes -= size;
            s.chunks -= 1;
            out.push(ReleasedChunk { base, size });
        }
        out
    }

    /// Counters, plus the largest free blocks (computed on call, linear in
    /// the number of free blocks).
    pub fn stats(&self) -> AllocatorStats {
        let mut s = self.stats;
        let mut per_chunk = vec![0u64; self.chunks.len()];
        let small = self.bins.bins.iter().flatten();
        for idx in self.index.iter().map(|k| k.3).chain(small.copied()) {
            let n = &self.nodes[idx as usize];
            let c = n.chunk as usize;
            per_chunk[c] = per_chunk[c].max(n.size);
        }
        s.largest_free_block = per_chunk.iter().copied().max().unwrap_or(0);
        s.largest_free_per_chunk_sum = per_chunk.iter().sum();
        s
    }

    /// Live ranges as `(chunk, offset, size, stream)`, for checks.
    pub fn live_blocks(&self) -> impl Iterator<Item = (ChunkId, u64, u64, StreamId)> + '_ {
        self.nodes.iter().filter_map(|n| match n.state {
            State::Allocated { .. } => Some((ChunkId(n.chunk), n.offset, n.size, n.stream)),
            _ => None,
        })
    }

    /// Number of free blocks per chunk, for checks of coalescing.
    pub fn free_blocks_per_chunk(&self) -> Vec<(ChunkId, u64, usize)> {
        self.chunks
            .iter()
            .enumerate()
            .filter_map(|(cid, c)| {
                let c = c.as_ref()?;
                let mut count = 0;
                let mut i = c.head;
                while i != NIL {
                    if matches!(self.nodes[i as usize].state, State::Free { .. }) {
                        count += 1;
                    }
                    i = self.nodes[i as usize].next;
                }
                Some((ChunkId(cid as u32), c.size, count))
            })
            .collect()
    }

    /// Walks every chunk and the index and checks the structural
    /// invariants: blocks tile each chunk exactly, links agree, no two
    /// neighbours that could merge are left apart, the index holds exactly
    /// the free blocks, and the counters match. For tests and fuzzing.
    pub fn check_consistency(&self) -> Result<(), String> {
        let mut free_seen = 0usize;
        let (mut allocated, mut free, mut reserved, mut pending) = (0u64, 0u64, 0u64, 0u64);
        for (cid, c) in self.chunks.iter().enumerate() {
            let Some(c) = c else { continue };
            reserved += c.size;
            let (mut i, mut prev, mut off) = (c.head, NIL, 0u64);
            let mut prev_lane: Option<Lane> = None;
            while i != NIL {
                let n = &self.nodes[i as usize];
                if n.chunk as usize != cid || n.offset != off || n.prev != prev {
                    return Err(format!("chunk {cid}: broken tiling at node {i}"));
                }
                if !n.offset.is_multiple_of(self.cfg.alignment) || n.size == 0 {
                    return Err(format!("chunk {cid}: misaligned or empty node {i}"));
                }
                match n.state {
                    State::Vacant => return Err(format!("vacant node {i} linked")),
                    State::Allocated { .. } => {
                        allocated += n.size;
                        prev_lane = None;
                    }
                    State::Free { lane } => {
                        free += n.size;
                        free_seen += 1;
                        if let Lane::Pending { .. } = lane {
                            pending += n.size;
                        }
                        if prev_lane.and_then(|p| p.merge(lane)).is_some() {
                            return Err(format!("chunk {cid}: mergeable neighbours at {i}"));
                        }
                        if !self.index_contains(c.class, lane, n.size, i) {
                            return Err(format!("free node {i} not indexed"));
                        }
                        prev_lane = Some(lane);
                    }
                }
                off += n.size;
                prev = i;
                i = n.next;
            }
            if off != c.size {
                return Err(format!("chunk {cid}: blocks cover {off} of {}", c.size));
            }
        }
        let indexed = self.index.len() + self.bins.len;
        if free_seen != indexed {
            return Err(format!(
                "index holds {indexed} keys for {free_seen} free blocks"
            ));
        }
        let s = &self.stats;
        if (allocated, free, reserved, pending)
            != (
                s.allocated_bytes,
                s.free_bytes,
                s.reserved_bytes,
                s.pending_bytes,
            )
        {
            return Err(format!(
                "counters drifted: walked ({allocated}, {free}, {reserved}, {pending}) vs {s:?}"
            ));
        }
        Ok(())
    }

    fn chunk_class(&self, chunk: u32) -> SizeClass {
        self.chunks[chunk as usize]
            .as_ref()
            .map_or(SizeClass::Small, |c| c.class)
    }

    fn new_node(&mut self, node: Node) -> u32 {
        match self.vacant.pop() {
            Some(i) => {
                let gen = self.nodes[i as usize].gen.wrapping_add(1);
                self.nodes[i as usize] = Node { gen, ..node };
                i
            }
            None => {
                self.nodes.push(node);
                (self.nodes.len() - 1) as u32
            }
        }
    }

    fn vacate(&mut self, i: u32) {
        let n = &mut self.nodes[i as usize];
        n.state = State::Vacant;
        n.gen = n.gen.wrapping_add(1);
        n.prev = NIL;
        n.next = NIL;
        self.vacant.push(i);
    }

    /// Merges free node `i` with compatible free neighbours, then indexes it.
    fn merge_and_insert(&mut self, mut i: u32) {
        let class = self.chunk_class(self.nodes[i as usize].chunk);
        let lane_of = |n: &Node| match n.state {
            State::Free { lane } => Some(lane),
            _ => None,
        };
        let prev = self.nodes[i as usize].prev;
        if prev != NIL {
            let (pl, il) = (
                lane_of(&self.nodes[prev as usize]),
                lane_of(&self.nodes[i as usize]),
            );
            if let (Some(pl), Some(il)) = (pl, il) {
                if let Some(m) = pl.merge(il) {
                    let psize = self.nodes[prev as usize].size;
                    self.index_remove(class, pl, psize, prev);
                    let (isize, inext) = {
                        let n = &self.nodes[i as usize];
                        (n.size, n.next)
                    };
                    let p = &mut self.nodes[prev as usize];
                    p.size += isize;
                    p.next = inext;
                    p.state = State::Free { lane: m };
                    if inext != NIL {
                        self.nodes[inext as usize].prev = prev;
                    }
                    self.vacate(i);
                    i = prev;
                }
            }
        }
        let next = self.nodes[i as usize].next;
        if next != NIL {
            let (nl, il) = (
                lane_of(&self.nodes[next as usize]),
                lane_of(&self.nodes[i as usize]),
            );
            if let (Some(nl), Some(il)) = (nl, il) {
                if let Some(m) = il.merge(nl) {
                    let (nsize, nnext) = {
                        let n = &self.nodes[next as usize];
                        (n.size, n.next)
                    };
                    self.index_remove(class, nl, nsize, next);
                    let n = &mut self.nodes[i as usize];
                    n.size += nsize;
                    n.next = nnext;
                    n.state = State::Free { lane: m };
                    if nnext != NIL {
                        self.nodes[nnext as usize].prev = i;
                    }
                    self.vacate(next);
                }
            }
        }
        let n = &mut self.nodes[i as usize];
        n.gen = n.gen.wrapping_add(1);
        self.insert_free(i);
    }

    fn insert_free(&mut self, i: u32) {
        let n = &self.nodes[i as usize];
        let State::Free { lane } = n.state else {
            return;
        };
        let (size, chunk, gen) = (n.size, n.chunk, n.gen);
        let class = self.chunk_class(chunk);
        self.index_insert(class, lane, size, i);
        if let Lane::Pending { stream, epoch } = lane {
            let si = stream.0 as usize;
            if self.pending.len() <= si {
                self.pending.resize_with(si + 1, VecDeque::new);
                self.pending_retain_at.resize(si + 1, 64);
            }
            self.pending[si].push_back((epoch, i, gen));
            if self.pending[si].len() > self.pending_retain_at[si] {
                // Entries of blocks merged or reused since are stale; drop them
                // so a stream that never completes cannot grow this forever.
                let nodes = &self.nodes;
                self.pending[si].retain(|&(_, idx, g)| nodes[idx as usize].gen == g);
                self.pending_retain_at[si] = 2 * self.pending[si].len() + 64;
            }
        }
    }
}

/// Exact-size bins of small free blocks with a two-level bitmap: best fit
/// in O(1) (the first non-empty bin at or above the request).
#[derive(Debug, Clone)]
struct SmallBins {
    bins: Vec<Vec<u32>>,
    words: Vec<u64>,
    summary: Vec<u64>,
    len: usize,
}

impl SmallBins {
    fn new(nbins: usize) -> Self {
        let words = nbins.div_ceil(64);
        Self {
            bins: vec![Vec::new(); nbins],
            words: vec![0; words],
            summary: vec![0; words.div_ceil(64)],
            len: 0,
        }
    }

    fn insert(&mut self, bin: usize, idx: u32) -> u32 {
        let b = &mut self.bins[bin];
        b.push(idx);
        if b.len() == 1 {
            self.words[bin / 64] |= 1 << (bin % 64);
            self.summary[bin / 4096] |= 1 << ((bin / 64) % 64);
        }
        self.len += 1;
        (b.len() - 1) as u32
    }

    /// Removes the entry at `pos`; returns the entry moved into its place.
    fn remove(&mut self, bin: usize, pos: u32) -> Option<u32> {
        let b = &mut self.bins[bin];
        b.swap_remove(pos as usize);
        self.len -= 1;
        let moved = b.get(pos as usize).copied();
        if b.is_empty() {
            let w = bin / 64;
            self.words[w] &= !(1 << (bin % 64));
            if self.words[w] == 0 {
                self.summary[w / 64] &= !(1 << (w % 64));
            }
        }
        moved
    }

    /// The smallest non-empty bin at or above `bin`.
    fn find(&self, bin: usize) -> Option<usize> {
        let w = bin / 64;
        let m = *self.words.get(w)? & (!0u64 << (bin % 64));
        if m != 0 {
            return Some(w * 64 + m.trailing_zeros() as usize);
        }
        let w = w + 1;
        let mut sw = w / 64;
        let mut m = *self.summary.get(sw)? & (!0u64 << (w % 64));
        loop {
            if m != 0 {
                let wi = sw * 64 + m.trailing_zeros() as usize;
                return Some(wi * 64 + self.words[wi].trailing_zeros() as usize);
            }
            sw += 1;
            m = *self.summary.get(sw)?;
        }
    }
}
