// fuseray_index.cuh: vector accesses, index bounds, and the umbrella every generated kernel
// includes.
//
// Stage: backend (CUDA). Generated code addresses memory with plain element offsets computed
// from kernel arguments (sizes and strides are never compiled in); the helpers it needs are the
// aligned vector type below, for 16-byte loads and stores on the contiguous fast path, and the
// bounds record that gathers (take) and scatters report an out-of-range index to.
#pragma once

// 1 in the quick tier's build (tiers.py): generated kernels leave out their fast-path copies.
#ifndef FR_QUICK
#define FR_QUICK 0
#endif

#include "fuseray_math.cuh"
#include "fuseray_reduce.cuh"

// Programmatic dependent launch (sm_90 and later). The launcher may let a kernel's grid start
// before the grid ahead of it in the stream has finished (driver.py, ``Function.dependent``), so
// that its blocks are scheduled while that grid's last blocks run. Every generated kernel
// therefore begins with this wait, before any memory access: it returns once the grid ahead
// has completed and its writes are visible, and at once for a kernel launched as usual.
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
#define FR_WAIT_FOR_PRIOR_GRID() asm volatile("griddepcontrol.wait;" ::: "memory")
#else
#define FR_WAIT_FOR_PRIOR_GRID() ((void)0)
#endif

// N consecutive elements as one aligned access (16 bytes for N * sizeof(T) == 16: LDG.128).
template <class T, int N> struct alignas(sizeof(T) * N) fr_vec {
  T v[N];
};

template <int N, class T, class I> FR_D fr_vec<T, N> fr_load_vec(const T* __restrict__ p, I v) {
  return reinterpret_cast<const fr_vec<T, N>*>(p)[v];
}

template <int N, class T, class I> FR_D void fr_store_vec(T* __restrict__ p, I v, const fr_vec<T, N>& x) {
  reinterpret_cast<fr_vec<T, N>*>(p)[v] = x;
}

// The zero of T (generated code cannot write T{} for two-word types such as long long).
template <class T> FR_D T fr_zero() { return T(); }

// True when p may be accessed as fr_vec<T, N> (the base pointer, view offset included, is aligned).
template <int N, class T> FR_D bool fr_aligned(const T* p) {
  return (reinterpret_cast<unsigned long long>(p) % (sizeof(T) * N)) == 0ull;
}

// ------------------------------------------------------------------------------------------
// indices computed at run time (take, scatter)
// ------------------------------------------------------------------------------------------

// One per device (fuseray/backends/cuda/launch_index.py allocates it zeroed, reads it back at the
// next synchronisation and raises NumPy's IndexError, then zeroes it again). The first thread to
// find a bad index claims the record (state 0 -> 1), writes it, and publishes it (state 2); the
// host only reports a published record, so it never sees a half-written one.
struct fr_bounds {
  unsigned long long state;  // 0 clear, 1 being written, 2 written
  long long index;
  long long size;
};

FR_D void fr_report_bounds(fr_bounds* rec, long long i, long long n) {
  // the plain read first: once one bad index is recorded, the others cost no atomic
  if (*(volatile unsigned long long*)&rec->state == 0ull &&
      atomicCAS(&rec->state, 0ull, 1ull) == 0ull) {
    rec->index = i;
    rec->size = n;
    __threadfence();
    atomicExch(&rec->state, 2ull);
  }
}

// NumPy's valid range for an axis of n elements is -n <= i < n; anything else is recorded.
FR_D bool fr_index_ok(long long i, long long n, fr_bounds* rec) {
  if (i >= -n && i < n) return true;
  fr_report_bounds(rec, i, n);
  return false;
}

// The position a valid index names (negatives count back from the end).
FR_D long long fr_wrap_index(long long i, long long n) { return i < 0 ? i + n : i; }
