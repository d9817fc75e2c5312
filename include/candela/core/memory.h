// Process-wide memory settings for hosts that run many model evaluations.
#pragma once

namespace candela {

// Keeps the memory the process frees for its own later use instead of handing it back to the
// system at once. By default glibc's malloc returns every block above its mmap threshold (128 KiB,
// rising to at most 32 MiB) to the kernel when it is freed and trims the heap's free top, and
// LibTorch's posix_memalign'd tensors never fit the holes they leave: each batch's activations
// arrive as fresh pages, which the kernel faults in and zeroes 4 KiB at a time. With it on, large
// blocks come from the heap (no mmap), the heap is not trimmed, and LibTorch's CPU allocator is
// replaced by one whose freed blocks are whole malloc chunks (batching.cpp), so later batches
// reuse memory already mapped. resnet18, IG 50 steps at 10 and 25 rows a batch: 1.1-1.2x faster,
// with 4-7x less system time and a 20-28% lower peak RSS (bench/compare/README.md).
// For processes that run model evaluations: the CLI, the tests and the benchmarks call it first;
// the server also hands free memory back whenever its queue empties. Returns whether it took
// effect: glibc only, not under ASan, and not when CANDELA_NO_MEMORY_REUSE=1 or the user set
// glibc's own MALLOC_MMAP_THRESHOLD_/MALLOC_TRIM_THRESHOLD_/MALLOC_MMAP_MAX_/MALLOC_TOP_PAD_.
// Tensors the replaced allocator makes are not reported to LibTorch's memory profiler.
bool reuse_freed_memory();
bool reusing_freed_memory();  // whether reuse_freed_memory() took effect in this process
// Hands free memory back to the system (malloc_trim): for a host between jobs.
void release_freed_memory();

}  // namespace candela
