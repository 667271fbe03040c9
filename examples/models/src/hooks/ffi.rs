//! The FFI between the allocator hooks in Rust ([`super`]) and the C++ shim
//! (`csrc/convoy_hooks.cpp`, built by `build.rs`). The only file of the
//! examples with `unsafe` (scripts/check_unsafe.sh names it): calling C++ is
//! `unsafe` in Rust whatever the function does.
//!
//! Kept small on purpose: the functions the shim calls take and return
//! integers only (a tenant key, byte counts, an address), so no Rust code
//! here reads or writes through a raw pointer; the one pointer passed is a
//! `&str`'s, handed to C++ for the length of a call that copies it. Each
//! function of the shim gets a safe wrapper here and nothing else.

#![allow(unsafe_code)]

// The shim's side, defined in csrc/convoy_hooks.cpp.
extern "C" {
    fn convoy_shim_install_cpu() -> i32;
    fn convoy_shim_enter(tenant: u64) -> u64;
    fn convoy_shim_current() -> u64;
    fn convoy_shim_tag_workers(tenant: u64) -> i32;
    fn convoy_shim_set_refusal(message: *const u8, len: usize);
    fn convoy_shim_total_bytes() -> u64;
    fn convoy_shim_unattributed_bytes() -> u64;
    fn convoy_shim_refused_allocations() -> u64;
    fn convoy_shim_has_cuda() -> i32;
    fn convoy_shim_probe_workers(bytes: u64) -> i32;
    fn convoy_shim_forget(tenant: u64);
    fn convoy_shim_block_bytes(tenant: u64, cached: i32) -> u64;
    #[cfg(convoy_shim_cuda)]
    fn convoy_shim_install_cuda() -> i32;
    #[cfg(convoy_shim_cuda)]
    fn convoy_shim_cuda_stream_enter(stream: u64, device: i32) -> i32;
    #[cfg(convoy_shim_cuda)]
    fn convoy_shim_cuda_stream_exit();
    #[cfg(convoy_shim_cuda)]
    fn convoy_shim_cuda_current_stream(device: i32) -> u64;
}

/// Makes the tenant allocator libtorch's CPU allocator (once; later calls
/// only check). Whether it is the CPU allocator now.
pub(super) fn install_cpu() -> bool {
    // SAFETY: takes no arguments; the shim creates the allocator once under
    // a function-local static (thread-safe initialisation) and registers it
    // with c10's allocator table, which libtorch synchronises.
    unsafe { convoy_shim_install_cpu() == 1 }
}

/// Sets this thread's current tenant key (0: none); returns the previous.
pub(super) fn enter(tenant: u64) -> u64 {
    // SAFETY: writes an integer to a C++ thread_local of this thread.
    unsafe { convoy_shim_enter(tenant) }
}

/// This thread's current tenant key (0: none).
pub(super) fn current() -> u64 {
    // SAFETY: reads an integer from a C++ thread_local of this thread.
    unsafe { convoy_shim_current() }
}

/// Tags the OpenMP workers of this thread's parallel regions with `tenant`;
/// returns libtorch's intra-op thread count of this thread.
pub(super) fn tag_workers(tenant: u64) -> usize {
    // SAFETY: opens an OpenMP parallel region (unless already inside one)
    // whose body writes an integer to each worker's C++ thread_local; it
    // takes no pointers and throws nothing.
    let n = unsafe { convoy_shim_tag_workers(tenant) };
    usize::try_from(n).unwrap_or(1)
}

/// Unmaps a tenant's cached blocks; its blocks in use are unmapped when
/// freed.
pub(super) fn forget(tenant: u64) {
    // SAFETY: takes an integer; the shim unmaps only blocks its cache holds
    // (no tensor points into them) under its own mutex.
    unsafe { convoy_shim_forget(tenant) }
}

/// Bytes of a tenant's blocks: (in use, cached for reuse).
pub(super) fn block_bytes(tenant: u64) -> (u64, u64) {
    // SAFETY: takes and returns integers; the shim reads its block table
    // under its own mutex.
    unsafe {
        (
            convoy_shim_block_bytes(tenant, 0),
            convoy_shim_block_bytes(tenant, 1),
        )
    }
}

/// Sets the message the shim's next refusal on this thread throws.
fn set_refusal(message: &str) {
    // SAFETY: the pointer and length describe `message`, valid for reads
    // for the length of the call; the shim copies the bytes into a C++
    // std::string and keeps no pointer.
    unsafe { convoy_shim_set_refusal(message.as_ptr(), message.len()) }
}

/// The shim's process-wide counters: bytes libtorch asked the CPU allocator
/// for, bytes of those on threads without a tenant, refused allocations.
pub(super) fn counters() -> (u64, u64, u64) {
    // SAFETY: three relaxed loads of C++ std::atomic<uint64_t> counters.
    unsafe {
        (
            convoy_shim_total_bytes(),
            convoy_shim_unattributed_bytes(),
            convoy_shim_refused_allocations(),
        )
    }
}

/// Whether the shim was built with the CUDA hooks.
pub(super) fn has_cuda() -> bool {
    // SAFETY: returns a compile-time constant.
    unsafe { convoy_shim_has_cuda() == 1 }
}

/// Allocates and frees `bytes` through libtorch's CPU allocator on each
/// OpenMP worker of a parallel region opened as ATen's are; how many did.
pub(super) fn probe_workers(bytes: u64) -> usize {
    // SAFETY: integers only; the shim catches every C++ exception inside
    // the region and frees what it allocated before returning.
    let n = unsafe { convoy_shim_probe_workers(bytes) };
    usize::try_from(n).unwrap_or(0)
}

/// Makes libtorch allocate CUDA memory through the tenants' pools. Must
/// run before libtorch's first CUDA allocation. Whether libtorch took it
/// (never without the CUDA hooks built in).
#[cfg(feature = "cuda")]
pub(super) fn install_cuda() -> bool {
    #[cfg(convoy_shim_cuda)]
    // SAFETY: takes no arguments; the shim catches every C++ exception and
    // answers 0 instead.
    return unsafe { convoy_shim_install_cuda() == 1 };
    #[cfg(not(convoy_shim_cuda))]
    return false;
}

/// Makes the CUDA stream `stream` (a `cudaStream_t` as an integer, alive
/// for as long as the scope) libtorch's current stream on `device` for this
/// thread. Whether it worked.
#[cfg(feature = "cuda")]
pub(super) fn cuda_stream_enter(stream: u64, device: i32) -> bool {
    #[cfg(convoy_shim_cuda)]
    // SAFETY: integers only; the shim catches every C++ exception. The
    // caller keeps the stream alive until `cuda_stream_exit` (the lease
    // holds it).
    return unsafe { convoy_shim_cuda_stream_enter(stream, device) == 1 };
    #[cfg(not(convoy_shim_cuda))]
    return {
        let _ = (stream, device);
        false
    };
}

/// Restores the stream current before [`cuda_stream_enter`].
/// libtorch's current stream on `device` for this thread (0: none known).
#[cfg(feature = "cuda")]
pub(super) fn cuda_current_stream(device: i32) -> u64 {
    #[cfg(convoy_shim_cuda)]
    // SAFETY: takes and returns integers; the shim reads libtorch's
    // thread-local current stream and catches libtorch's exceptions.
    return unsafe { convoy_shim_cuda_current_stream(device) };
    #[cfg(not(convoy_shim_cuda))]
    return {
        let _ = device;
        0
    };
}

#[cfg(feature = "cuda")]
pub(super) fn cuda_stream_exit() {
    #[cfg(convoy_shim_cuda)]
    // SAFETY: restores a stream object the shim saved on this thread; no
    // arguments, nothing thrown.
    unsafe {
        convoy_shim_cuda_stream_exit()
    }
}

// The Rust side the shim calls. Integers in and out; never panics (a panic
// cannot unwind into C++: `extern "C"` aborts instead).

/// Charges `bytes` to the tenant with key `tenant`: 0 charged, 1 refused
/// (the reason set for the shim's error), 2 unknown tenant (not charged).
#[no_mangle]
extern "C" fn convoy_hooks_charge(tenant: u64, bytes: u64) -> u32 {
    match super::charge(tenant, bytes) {
        super::Charge::Charged => 0,
        super::Charge::Refused(message) => {
            set_refusal(&message);
            1
        }
        super::Charge::Unknown => 2,
    }
}

/// Gives back `bytes` charged to `tenant`.
#[no_mangle]
extern "C" fn convoy_hooks_credit(tenant: u64, bytes: u64) {
    super::credit(tenant, bytes);
}

/// The shim asks for a tenant's quota, the bound of its blocks in use and
/// cached (0 for an unknown tenant: nothing is cached for it).
#[no_mangle]
extern "C" fn convoy_hooks_quota(tenant: u64) -> u64 {
    super::quota(tenant)
}

/// Allocates `bytes` of CUDA memory from the tenant's pool for work on
/// `stream`: the address, or 0 when refused (the reason set for the shim).
#[cfg(convoy_shim_cuda)]
#[no_mangle]
extern "C" fn convoy_hooks_cuda_alloc(tenant: u64, bytes: u64, device: i32, stream: u64) -> u64 {
    match super::cuda::alloc(tenant, bytes, device, stream) {
        Ok(addr) => addr,
        Err(message) => {
            set_refusal(&message);
            0
        }
    }
}

/// Frees CUDA memory [`convoy_hooks_cuda_alloc`] gave out.
#[cfg(convoy_shim_cuda)]
#[no_mangle]
extern "C" fn convoy_hooks_cuda_free(address: u64) {
    super::cuda::free(address);
}
