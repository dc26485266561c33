// fuseray_index.cuh: vector accesses and the umbrella every generated kernel includes.
//
// Stage: backend (CUDA). Generated code addresses memory with plain element offsets computed
// from kernel arguments (sizes and strides are never compiled in); the only helpers it needs are
// the aligned vector type below, for 16-byte loads and stores on the contiguous fast path.
#pragma once

#include "fuseray_math.cuh"
#include "fuseray_reduce.cuh"

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

// True when p may be accessed as fr_vec<T, N> (the base pointer, view offset included, is aligned).
template <int N, class T> FR_D bool fr_aligned(const T* p) {
  return (reinterpret_cast<unsigned long long>(p) % (sizeof(T) * N)) == 0ull;
}
