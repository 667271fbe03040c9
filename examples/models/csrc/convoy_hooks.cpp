// convoy's libtorch allocator hooks: every byte libtorch allocates for a
// model is charged to that model's convoy-gpu-pool tenant.
//
// The Rust side (examples/models/src/hooks/) owns the tenants, the quotas and
// the accounting; this file only routes libtorch's allocations there, through
// Rust functions that take and return integers:
//
//   convoy_hooks_charge(tenant, bytes)  -> 0 charged, 1 refused (quota),
//                                          2 unknown tenant (not charged)
//   convoy_hooks_credit(tenant, bytes)     gives charged bytes back
//   convoy_hooks_cuda_alloc(tenant, bytes, device, stream) -> address, 0: refused
//   convoy_hooks_cuda_free(address)
//
// Attribution: a thread-local "current tenant", set by the model thread
// around loading and each forward pass (convoy_shim_enter/exit). libtorch's
// intra-op work runs on OpenMP worker threads; libgomp gives each thread that
// opens parallel regions its own pool of workers, reused in order for every
// team it starts. convoy_shim_tag_workers opens one region of the size
// libtorch's own regions will have on this thread and sets the tenant on each
// worker, so the workers that run the forward pass's parallel_for are tagged
// with the tenant whose forward pass they serve.
//
// The CPU allocator wraps the one installed before it (libtorch's default):
// allocate() charges the current tenant, then allocates; a header before the
// data keeps the tenant and the size, so the deleter credits the same tenant
// whichever thread frees it.

#include <c10/core/Allocator.h>
#include <c10/core/CPUAllocator.h>
#include <c10/util/Exception.h>

#include <atomic>
#include <cstdint>
#include <map>
#include <mutex>
#include <unordered_map>
#include <utility>
#include <vector>

#include <sys/mman.h>
#include <string>

#ifdef _OPENMP
#include <omp.h>
#endif

#ifdef CONVOY_HOOKS_CUDA
#include <c10/cuda/CUDAStream.h>
#include <torch/csrc/cuda/CUDAPluggableAllocator.h>

#include <optional>
#endif

namespace at {
// libtorch's intra-op thread count for this thread (ATen/Parallel.h); it also
// runs libtorch's lazy per-thread OpenMP set-up, so a region opened after it
// has the size of libtorch's own.
int get_num_threads();
}  // namespace at

extern "C" {
// Implemented in Rust: examples/models/src/hooks/ffi.rs.
uint32_t convoy_hooks_charge(uint64_t tenant, uint64_t bytes);
void convoy_hooks_credit(uint64_t tenant, uint64_t bytes);
uint64_t convoy_hooks_quota(uint64_t tenant);
#ifdef CONVOY_HOOKS_CUDA
uint64_t convoy_hooks_cuda_alloc(uint64_t tenant, uint64_t bytes, int32_t device,
                                 uint64_t stream);
void convoy_hooks_cuda_free(uint64_t address);
#endif
}

namespace {

constexpr uint32_t kCharged = 0;
constexpr uint32_t kRefused = 1;

thread_local uint64_t current_tenant = 0;
// The reason of the last refusal on this thread, set by Rust before it
// answers kRefused (convoy_shim_set_refusal).
thread_local std::string refusal;

std::atomic<uint64_t> total_bytes{0};
std::atomic<uint64_t> unattributed_bytes{0};
std::atomic<uint64_t> refused_allocations{0};

// Every allocation carries a header before its data: the tenant charged
// (0: none) and the size, so the deleter credits the same tenant whichever
// thread frees it. The DataPtr's context is its data pointer (a "simple"
// DataPtr, as the default allocator's), so libtorch's raw_allocate and
// raw_deallocate, which kernels use for scratch buffers, work through the
// hook too. The magic word sits right before the data: memory the default
// allocator gave out before the hook was installed has glibc's chunk size
// there instead, and goes back to the default allocator's deleter.
constexpr size_t kHeader = 64;  // keeps c10's 64-byte alignment
constexpr uint64_t kMagic = 0x636f6e766f79a11cULL;

struct Header {
  uint64_t bytes;
  uint64_t tenant;
  uint64_t block;  // the tenant block's size; 0: from the default allocator
  uint64_t magic;  // last: the 8 bytes right before the data
};
static_assert(sizeof(Header) <= kHeader, "the header fits its space");

c10::DeleterFnPtr base_deleter = nullptr;

// Tenant blocks: a tenant's allocations of kLarge bytes or more (a tensor's
// data: nearly all of a forward pass's bytes) are whole mappings of a size
// class, kept in the tenant's cache when freed and reused by its next
// allocations of that class, so a model's passes touch no new pages once
// warm. A tenant's blocks, in use and cached, stay within its quota: a new
// mapping first unmaps cached blocks until they fit. Memory one tenant
// frees is never resident for another, so the process's resident memory
// stays within the sum of the quotas; through glibc's arenas instead, a
// freed tensor stays resident in the freeing thread's arena, where another
// model's thread cannot reuse it (measured: 2.4 times the bytes a batch of
// MiniLM had charged), and unmapping every freed tensor costs a page fault
// per page on the next pass (measured: +46 % CPU per item).
constexpr size_t kLarge = 128 * 1024;

// `s` (at least kLarge) rounded up to its size class: four classes per
// power of two, at most 25 % above `s` (and untouched pages of a mapping
// are not resident).
size_t block_size(size_t s) {
  const int k = 63 - __builtin_clzll(static_cast<unsigned long long>(s));
  const size_t step = size_t{1} << (k - 2);
  return (s + step - 1) & ~(step - 1);
}

struct TenantBlocks {
  uint64_t quota = 0;
  uint64_t live = 0;    // bytes of blocks in use
  uint64_t cached = 0;  // bytes of blocks kept for reuse
  bool forgotten = false;
  std::map<size_t, std::vector<void*>> free;  // cached blocks by size
};

std::mutex blocks_mutex;
// Never destroyed: blocks may be freed while the process exits.
auto* blocks = new std::unordered_map<uint64_t, TenantBlocks>();

void unmap_all(const std::vector<std::pair<void*, size_t>>& gone) {
  for (const auto& [p, size] : gone) {
    munmap(p, size);
  }
}

// A block of `size` bytes for `tenant`: a cached one, or a new mapping
// (nullptr when the mapping failed).
void* take_block(uint64_t tenant, size_t size) {
  std::vector<std::pair<void*, size_t>> evicted;
  {
    std::lock_guard<std::mutex> lock(blocks_mutex);
    TenantBlocks& t = (*blocks)[tenant];
    if (t.quota == 0 && !t.forgotten) {
      t.quota = convoy_hooks_quota(tenant);
    }
    auto it = t.free.find(size);
    if (it != t.free.end()) {
      void* p = it->second.back();
      it->second.pop_back();
      if (it->second.empty()) {
        t.free.erase(it);
      }
      t.cached -= size;
      t.live += size;
      return p;
    }
    // Largest first, until the new block fits beside the cache.
    while (t.cached > 0 && t.live + t.cached + size > t.quota) {
      auto last = std::prev(t.free.end());
      evicted.emplace_back(last->second.back(), last->first);
      last->second.pop_back();
      t.cached -= last->first;
      if (last->second.empty()) {
        t.free.erase(last);
      }
    }
    t.live += size;
  }
  unmap_all(evicted);
  void* p = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) {
    std::lock_guard<std::mutex> lock(blocks_mutex);
    (*blocks)[tenant].live -= size;
    return nullptr;
  }
  return p;
}

// Gives a block back to its tenant's cache (unmapped if the tenant is gone).
void give_block(uint64_t tenant, void* p, size_t size) {
  {
    std::lock_guard<std::mutex> lock(blocks_mutex);
    auto it = blocks->find(tenant);
    if (it != blocks->end()) {
      TenantBlocks& t = it->second;
      t.live -= size;
      if (!t.forgotten) {
        t.free[size].push_back(p);
        t.cached += size;
        return;
      }
      if (t.live == 0) {
        blocks->erase(it);
      }
    }
  }
  munmap(p, size);
}

Header* header_of(void* data) {
  return reinterpret_cast<Header*>(static_cast<char*>(data) - sizeof(Header));
}

void release(void* data) {
  if (data == nullptr) {
    return;
  }
  Header* h = header_of(data);
  if (h->magic != kMagic) {
    base_deleter(data);  // from the default allocator, before the hook
    return;
  }
  const uint64_t tenant = h->tenant;
  const uint64_t bytes = h->bytes;
  const uint64_t block = h->block;
  h->magic = 0;
  void* raw = static_cast<char*>(data) - kHeader;
  if (block != 0) {
    give_block(tenant, raw, block);
  } else {
    base_deleter(raw);
  }
  if (tenant != 0) {
    convoy_hooks_credit(tenant, bytes);
  }
}

class TenantCpuAllocator final : public c10::Allocator {
 public:
  explicit TenantCpuAllocator(c10::Allocator* base) : base_(base) {}

  c10::DataPtr allocate(size_t n) override {
    uint64_t tenant = current_tenant;
    const uint64_t bytes = static_cast<uint64_t>(n);
    total_bytes.fetch_add(bytes, std::memory_order_relaxed);
    if (tenant != 0 && n != 0) {
      const uint32_t rc = convoy_hooks_charge(tenant, bytes);
      if (rc == kRefused) {
        refused_allocations.fetch_add(1, std::memory_order_relaxed);
        TORCH_CHECK(false, refusal);
      }
      if (rc != kCharged) {
        tenant = 0;
      }
    } else {
      tenant = 0;
    }
    if (tenant == 0) {
      unattributed_bytes.fetch_add(bytes, std::memory_order_relaxed);
    }
    void* raw = nullptr;
    uint64_t block = 0;
    if (tenant != 0 && n >= kLarge - kHeader) {
      block = block_size(n + kHeader);
      raw = take_block(tenant, block);
      if (raw == nullptr) {
        convoy_hooks_credit(tenant, bytes);
        TORCH_CHECK(false, "could not map ", block, " bytes for a tensor");
      }
    } else {
      try {
        raw = base_->raw_allocate(n + kHeader);
      } catch (...) {
        if (tenant != 0) {
          convoy_hooks_credit(tenant, bytes);
        }
        throw;
      }
    }
    void* data = static_cast<char*>(raw) + kHeader;
    *header_of(data) = Header{bytes, tenant, block, kMagic};
    return c10::DataPtr(data, data, &release, c10::Device(c10::DeviceType::CPU));
  }

  c10::DeleterFnPtr raw_deleter() const override { return &release; }

  void copy_data(void* dest, const void* src, std::size_t count) const override {
    default_copy_data(dest, src, count);
  }

 private:
  c10::Allocator* base_;
};

// The priority libtorch's default CPU allocator is registered with is 0;
// anything above replaces it.
constexpr uint8_t kCpuPriority = 100;

}  // namespace

extern "C" {

// Installs the CPU allocator hook once; later calls do nothing. Returns 1 when
// the hook is the CPU allocator now.
int32_t convoy_shim_install_cpu() {
  static TenantCpuAllocator* installed = []() -> TenantCpuAllocator* {
    c10::Allocator* base = c10::GetCPUAllocator();
    base_deleter = base->raw_deleter();
    if (base_deleter == nullptr) {
      return nullptr;  // wraps only an allocator of simple DataPtrs
    }
    auto* a = new TenantCpuAllocator(base);
    c10::SetCPUAllocator(a, kCpuPriority);
    return a;
  }();
  return installed != nullptr && c10::GetCPUAllocator() == installed ? 1 : 0;
}

// Drops a tenant's cached blocks (its registration ends); its blocks still in
// use are unmapped when freed.
void convoy_shim_forget(uint64_t tenant) {
  std::vector<std::pair<void*, size_t>> gone;
  {
    std::lock_guard<std::mutex> lock(blocks_mutex);
    auto it = blocks->find(tenant);
    if (it == blocks->end()) {
      return;
    }
    for (auto& [size, ptrs] : it->second.free) {
      for (void* p : ptrs) {
        gone.emplace_back(p, size);
      }
    }
    if (it->second.live == 0) {
      blocks->erase(it);
    } else {
      it->second.forgotten = true;
      it->second.free.clear();
      it->second.cached = 0;
    }
  }
  unmap_all(gone);
}

// Bytes of a tenant's blocks in use (`cached` 0) or cached for reuse (1).
uint64_t convoy_shim_block_bytes(uint64_t tenant, int32_t cached) {
  std::lock_guard<std::mutex> lock(blocks_mutex);
  auto it = blocks->find(tenant);
  if (it == blocks->end()) {
    return 0;
  }
  return cached != 0 ? it->second.cached : it->second.live;
}

// Sets this thread's current tenant; returns the previous one (0: none).
uint64_t convoy_shim_enter(uint64_t tenant) {
  const uint64_t prev = current_tenant;
  current_tenant = tenant;
  return prev;
}

// This thread's current tenant.
uint64_t convoy_shim_current() { return current_tenant; }

// Tags the OpenMP workers this thread's parallel regions run on with
// `tenant`. Returns the team size (1: libtorch runs intra-op work on this
// thread alone, nothing to tag).
int32_t convoy_shim_tag_workers(uint64_t tenant) {
  const int threads = at::get_num_threads();
#ifdef _OPENMP
  if (threads > 1 && !omp_in_parallel()) {
    // No num_threads clause, as in ATen's invoke_parallel: the same team
    // size, so the same workers of this thread's pool.
#pragma omp parallel
    { current_tenant = tenant; }
  }
#endif
  return threads;
}

// For the hooks' tests: opens a parallel region as ATen's parallel_for does
// (no num_threads clause, after libtorch's per-thread set-up) and allocates
// `bytes` through libtorch's CPU allocator on each worker, not on the calling
// thread. Returns how many workers allocated.
int32_t convoy_shim_probe_workers(uint64_t bytes) {
  std::atomic<int32_t> workers{0};
#ifdef _OPENMP
  if (at::get_num_threads() > 1 && !omp_in_parallel()) {
#pragma omp parallel
    {
      if (omp_get_thread_num() != 0) {
        try {
          c10::DataPtr p = c10::GetCPUAllocator()->allocate(static_cast<size_t>(bytes));
          workers.fetch_add(1);
        } catch (...) {
        }
      }
    }
  }
#endif
  return workers.load();
}

// Called by Rust before it answers kRefused: the message the c10::Error
// carries (convoy-gpu-pool's QuotaExceeded text). Copied.
void convoy_shim_set_refusal(const char* message, size_t len) {
  refusal.assign(message, len);
}

// Counters, process-wide: bytes libtorch asked the CPU allocator for, bytes
// of those on threads with no current tenant, allocations refused.
uint64_t convoy_shim_total_bytes() { return total_bytes.load(std::memory_order_relaxed); }
uint64_t convoy_shim_unattributed_bytes() {
  return unattributed_bytes.load(std::memory_order_relaxed);
}
uint64_t convoy_shim_refused_allocations() {
  return refused_allocations.load(std::memory_order_relaxed);
}

// 1 when this shim was built with the CUDA hooks.
int32_t convoy_shim_has_cuda() {
#ifdef CONVOY_HOOKS_CUDA
  return 1;
#else
  return 0;
#endif
}

}  // extern "C"

#ifdef CONVOY_HOOKS_CUDA

namespace {

void* cuda_alloc(size_t size, int device, cudaStream_t stream) {
  const uint64_t tenant = current_tenant;
  if (size == 0) {
    return nullptr;
  }
  const uint64_t addr = convoy_hooks_cuda_alloc(
      tenant, static_cast<uint64_t>(size), static_cast<int32_t>(device),
      reinterpret_cast<uint64_t>(stream));
  if (addr == 0) {
    refused_allocations.fetch_add(1, std::memory_order_relaxed);
    TORCH_CHECK(false, refusal);
  }
  return reinterpret_cast<void*>(addr);
}

void cuda_free(void* ptr, size_t, int, cudaStream_t) {
  if (ptr != nullptr) {
    convoy_hooks_cuda_free(reinterpret_cast<uint64_t>(ptr));
  }
}

thread_local std::optional<c10::cuda::CUDAStream> saved_stream;

}  // namespace

extern "C" {

// Makes libtorch allocate CUDA memory through convoy_hooks_cuda_alloc (the
// current tenant's pool). Must run before libtorch's first CUDA allocation.
// Returns 1 on success, 0 when libtorch refused (the message is logged by
// libtorch).
int32_t convoy_shim_install_cuda() {
  try {
    auto allocator =
        torch::cuda::CUDAPluggableAllocator::createCustomAllocator(cuda_alloc, cuda_free);
    torch::cuda::CUDAPluggableAllocator::changeCurrentAllocator(allocator);
    return 1;
  } catch (const std::exception&) {
    return 0;
  }
}

// Makes `stream` (a cudaStream_t from the tenant's lease) libtorch's current
// stream on `device` for this thread until convoy_shim_cuda_stream_exit.
// Returns 1 on success.
int32_t convoy_shim_cuda_stream_enter(uint64_t stream, int32_t device) {
  try {
    auto dev = static_cast<c10::DeviceIndex>(device);
    saved_stream = c10::cuda::getCurrentCUDAStream(dev);
    c10::cuda::setCurrentCUDAStream(
        c10::cuda::getStreamFromExternal(reinterpret_cast<cudaStream_t>(stream), dev));
    return 1;
  } catch (const std::exception&) {
    saved_stream.reset();
    return 0;
  }
}

// Restores the stream that was current before convoy_shim_cuda_stream_enter.
void convoy_shim_cuda_stream_exit() {
  if (saved_stream) {
    c10::cuda::setCurrentCUDAStream(*saved_stream);
    saved_stream.reset();
  }
}

// libtorch's current stream on `device` for this thread (its cudaStream_t as
// an integer; 0 on failure).
uint64_t convoy_shim_cuda_current_stream(int32_t device) {
  try {
    auto s = c10::cuda::getCurrentCUDAStream(static_cast<c10::DeviceIndex>(device));
    return reinterpret_cast<uint64_t>(s.stream());
  } catch (const std::exception&) {
    return 0;
  }
}

}  // extern "C"

#endif  // CONVOY_HOOKS_CUDA
