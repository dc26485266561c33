// fuseray_reduce.cuh: reduction operators and deterministic warp / block combines.
//
// Stage: backend (CUDA). The code generator names one operator struct per reduce node
// (FrSum<float>, FrArgMax<__half>, ...). Each has
//   acc                 the accumulator type (float16 and float32 accumulate in float32, integers
//                       in a wrapping unsigned type, arg reductions in a (value, index) pair),
//   identity()          the neutral element,
//   lift(x, j)          an element (and its C-order index j over the reduced axes) as an acc,
//   combine(a, b)       commutative and associative,
//   final(a, n)         the node's value from the combined acc of n elements.
// Combines are deterministic: the order of every combine depends only on the launch shape (block
// and grid), never on timing, and there are no floating-point atomics.
#pragma once

#include "fuseray_math.cuh"

// ------------------------------------------------------------------------------------------
// accumulator types
// ------------------------------------------------------------------------------------------

template <class T> struct fr_sum_acc { typedef T type; };
#if FR_HALF
template <> struct fr_sum_acc<__half> { typedef float type; };
#endif
template <> struct fr_sum_acc<signed char> { typedef unsigned int type; };
template <> struct fr_sum_acc<short> { typedef unsigned int type; };
template <> struct fr_sum_acc<int> { typedef unsigned int type; };
template <> struct fr_sum_acc<long long> { typedef unsigned long long type; };
template <> struct fr_sum_acc<unsigned char> { typedef unsigned int type; };
template <> struct fr_sum_acc<unsigned short> { typedef unsigned int type; };
template <> struct fr_sum_acc<unsigned long long> { typedef unsigned long long type; };

// Values of max/min/arg reductions are compared in float for half (exact: float holds every half).
template <class T> struct fr_cmp_type { typedef T type; };
#if FR_HALF
template <> struct fr_cmp_type<__half> { typedef float type; };
#endif

template <class V> struct fr_arg {
  V v;
  long long i;
};

// ------------------------------------------------------------------------------------------
// operators
// ------------------------------------------------------------------------------------------

template <class T> struct FrSum {
  typedef typename fr_sum_acc<T>::type acc;
  static FR_D acc identity() { return fr_cast<acc>(0); }
  static FR_D acc lift(T x, long long) { return fr_cast<acc>(x); }
  static FR_D acc combine(acc a, acc b) {
    if constexpr (fr_same<acc, bool>::value) {
      return a || b;  // np.sum(dtype=bool) is logical or
    } else {
      return a + b;
    }
  }
  static FR_D T final(acc a, long long) { return fr_cast<T>(a); }
};

template <class T> struct FrProd {
  typedef typename fr_sum_acc<T>::type acc;
  static FR_D acc identity() { return fr_cast<acc>(1); }
  static FR_D acc lift(T x, long long) { return fr_cast<acc>(x); }
  static FR_D acc combine(acc a, acc b) {
    if constexpr (fr_same<acc, bool>::value) {
      return a && b;
    } else {
      return a * b;
    }
  }
  static FR_D T final(acc a, long long) { return fr_cast<T>(a); }
};

// mean = sum / max(n - DDOF, 0), the division in the result's precision as NumPy's.
template <class T, int DDOF> struct FrMean {
  typedef typename fr_sum_acc<T>::type acc;
  static FR_D acc identity() { return fr_cast<acc>(0); }
  static FR_D acc lift(T x, long long) { return fr_cast<acc>(x); }
  static FR_D acc combine(acc a, acc b) { return a + b; }
  static FR_D T final(acc a, long long n) {
    const long long d = n - DDOF > 0 ? n - DDOF : 0;
    if constexpr (fr_same<acc, float>::value) {
      return fr_cast<T>(a / (float)d);
    } else if constexpr (fr_same<acc, double>::value) {
      return a / (double)d;
    } else {
      return fr_cast<T>((double)fr_cast<T>(a) / (double)d);  // mean(dtype=int) truncates
    }
  }
};

// A reduction's max/min combine: NaN-propagating like fr_maximum/fr_minimum, but for float one
// instruction (max.NaN / min.NaN, sm_80+) instead of four compares and a select, in the hot loop
// of every max/min reduction (softmax's first pass). A NaN result is the canonical NaN rather
// than the NaN operand itself.
template <class A> FR_D A fr_max_combine(A a, A b) { return fr_maximum(a, b); }
template <class A> FR_D A fr_min_combine(A a, A b) { return fr_minimum(a, b); }
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
template <> FR_D float fr_max_combine<float>(float a, float b) {
  float d;
  asm("max.NaN.f32 %0, %1, %2;" : "=f"(d) : "f"(a), "f"(b));
  return d;
}
template <> FR_D float fr_min_combine<float>(float a, float b) {
  float d;
  asm("min.NaN.f32 %0, %1, %2;" : "=f"(d) : "f"(a), "f"(b));
  return d;
}
#endif

template <class T> struct FrMax {
  typedef typename fr_cmp_type<T>::type acc;
  static FR_D acc identity() { return fr_min_value<acc>(); }
  static FR_D acc lift(T x, long long) { return fr_cast<acc>(x); }
  static FR_D acc combine(acc a, acc b) { return fr_max_combine(a, b); }  // NaN propagates
  static FR_D T final(acc a, long long) { return fr_cast<T>(a); }
};

template <class T> struct FrMin {
  typedef typename fr_cmp_type<T>::type acc;
  static FR_D acc identity() { return fr_max_value<acc>(); }
  static FR_D acc lift(T x, long long) { return fr_cast<acc>(x); }
  static FR_D acc combine(acc a, acc b) { return fr_min_combine(a, b); }
  static FR_D T final(acc a, long long) { return fr_cast<T>(a); }
};

template <class T> struct FrAny {
  typedef bool acc;
  static FR_D acc identity() { return false; }
  static FR_D acc lift(T x, long long) { return fr_cast<bool>(x); }
  static FR_D acc combine(acc a, acc b) { return a || b; }
  static FR_D T final(acc a, long long) { return fr_cast<T>(a); }
};

template <class T> struct FrAll {
  typedef bool acc;
  static FR_D acc identity() { return true; }
  static FR_D acc lift(T x, long long) { return fr_cast<bool>(x); }
  static FR_D acc combine(acc a, acc b) { return a && b; }
  static FR_D T final(acc a, long long) { return fr_cast<T>(a); }
};

// argmax / argmin: a NaN is the extreme (the first NaN wins), otherwise the first occurrence of
// the extreme value. Deciding ties by the index makes the combine commutative, so the answer
// does not depend on the order in which threads meet.
template <class T, bool MAX> struct FrArg {
  typedef typename fr_cmp_type<T>::type V;
  typedef fr_arg<V> acc;
  static FR_D acc identity() {
    acc a;
    a.v = MAX ? fr_min_value<V>() : fr_max_value<V>();
    a.i = 9223372036854775807LL;
    return a;
  }
  static FR_D acc lift(T x, long long j) {
    acc a;
    a.v = fr_cast<V>(x);
    a.i = j;
    return a;
  }
  static FR_D acc combine(acc a, acc b) {
    const bool an = fr_isnan(a.v), bn = fr_isnan(b.v);
    if (an || bn) {
      if (an && bn) return a.i <= b.i ? a : b;
      return an ? a : b;
    }
    if (MAX ? a.v > b.v : a.v < b.v) return a;
    if (MAX ? b.v > a.v : b.v < a.v) return b;
    return a.i <= b.i ? a : b;
  }
  static FR_D long long final(acc a, long long) { return a.i; }
};
template <class T> using FrArgMax = FrArg<T, true>;
template <class T> using FrArgMin = FrArg<T, false>;

// ------------------------------------------------------------------------------------------
// split reductions: a block's arrival on its row block's completion counter
// ------------------------------------------------------------------------------------------

// One atomic at GPU scope with acquire-release semantics, by one thread of the block between two
// barriers. Release: the partials the block's writers stored before the first barrier are visible
// to whoever reads the counter after it (the barrier carries them to the counting thread, and a
// release is cumulative). Acquire: after the second barrier, every thread of the block that sees
// the last count reads the partials of all blocks that arrived before. This replaces a
// sequentially consistent fence in the writers and another in every thread of the last block.
// Returns the count before this arrival.
FR_D unsigned fr_arrive(unsigned* counter) {
  unsigned before;
  asm volatile("atom.add.acq_rel.gpu.u32 %0, [%1], 1;" : "=r"(before) : "l"(counter) : "memory");
  return before;
}

// ------------------------------------------------------------------------------------------
// warp shuffles and cache-global loads for every accumulator type
// ------------------------------------------------------------------------------------------

#define FR_FULL_MASK 0xffffffffu
#define FR_SHFL(T)                                                                         \
  FR_D T fr_shfl_xor(T v, int m) { return __shfl_xor_sync(FR_FULL_MASK, v, m); }        \
  FR_D T fr_shfl(T v, int lane) { return __shfl_sync(FR_FULL_MASK, v, lane); }          \
  FR_D T fr_ldcg(const T* p) { return __ldcg(p); }
FR_SHFL(float)
FR_SHFL(double)
FR_SHFL(int)
FR_SHFL(unsigned int)
FR_SHFL(long long)
FR_SHFL(unsigned long long)
#undef FR_SHFL
// 8- and 16-bit accumulators (max/min of small integers) travel as int
#define FR_SHFL_SMALL(T)                                                                         \
  FR_D T fr_shfl_xor(T v, int m) { return (T)__shfl_xor_sync(FR_FULL_MASK, (int)v, m); }      \
  FR_D T fr_shfl(T v, int lane) { return (T)__shfl_sync(FR_FULL_MASK, (int)v, lane); }        \
  FR_D T fr_ldcg(const T* p) { return __ldcg(p); }
FR_SHFL_SMALL(signed char)
FR_SHFL_SMALL(unsigned char)
FR_SHFL_SMALL(short)
FR_SHFL_SMALL(unsigned short)
#undef FR_SHFL_SMALL
FR_D bool fr_shfl_xor(bool v, int m) { return __shfl_xor_sync(FR_FULL_MASK, (int)v, m) != 0; }
FR_D bool fr_shfl(bool v, int lane) { return __shfl_sync(FR_FULL_MASK, (int)v, lane) != 0; }
FR_D bool fr_ldcg(const bool* p) { return __ldcg((const unsigned char*)p) != 0; }
template <class V> FR_D fr_arg<V> fr_shfl_xor(fr_arg<V> a, int m) {
  a.v = fr_shfl_xor(a.v, m);
  a.i = fr_shfl_xor(a.i, m);
  return a;
}
template <class V> FR_D fr_arg<V> fr_shfl(fr_arg<V> a, int lane) {
  a.v = fr_shfl(a.v, lane);
  a.i = fr_shfl(a.i, lane);
  return a;
}
template <class V> FR_D fr_arg<V> fr_ldcg(const fr_arg<V>* p) {
  fr_arg<V> a;
  a.v = fr_ldcg(&p->v);
  a.i = fr_ldcg(&p->i);
  return a;
}

// ------------------------------------------------------------------------------------------
// group combines: every thread of a row's group gets the row's combined value
// ------------------------------------------------------------------------------------------

// "inner" layout: the blockDim.x threads of a row are consecutive lanes (blockDim.x a power of
// two); blockDim.y rows per block. Butterfly inside the warp, then a fixed-order pass over the
// warps' results in shared memory. All threads of the block must call this (it synchronises when
// a row spans several warps). smem holds blockDim.y * blockDim.x / 32 accumulators.
template <class Op>
FR_D typename Op::acc fr_group_inner(typename Op::acc v, typename Op::acc* smem) {
  const unsigned W = blockDim.x;
  const unsigned width = W < 32u ? W : 32u;
  for (unsigned off = width >> 1; off > 0u; off >>= 1) v = Op::combine(v, fr_shfl_xor(v, off));
  // Lanes combined in different orders; take one lane's value so the row agrees bit for bit.
  const unsigned lane = (threadIdx.x + threadIdx.y * blockDim.x) & 31u;
  v = fr_shfl(v, (int)(lane & ~(width - 1u)));
  if (W > 32u) {
    const unsigned nw = W >> 5;
    __syncthreads();  // earlier readers of smem are done
    if ((threadIdx.x & 31u) == 0u) smem[threadIdx.y * nw + (threadIdx.x >> 5)] = v;
    __syncthreads();
    v = smem[threadIdx.y * nw];
    for (unsigned k = 1; k < nw; ++k) v = Op::combine(v, smem[threadIdx.y * nw + k]);
  }
  return v;
}

// "outer" layout: the blockDim.y threads of a row share threadIdx.x (blockDim.y a power of two);
// blockDim.x rows per block. A fixed tree over y in shared memory (blockDim.x * blockDim.y accs).
template <class Op>
FR_D typename Op::acc fr_group_outer(typename Op::acc v, typename Op::acc* smem) {
  const unsigned TY = blockDim.y, TX = blockDim.x, x = threadIdx.x, y = threadIdx.y;
  if (TY == 1u) return v;
  __syncthreads();
  smem[y * TX + x] = v;
  __syncthreads();
  for (unsigned s = TY >> 1; s > 0u; s >>= 1) {
    if (y < s) smem[y * TX + x] = Op::combine(smem[y * TX + x], smem[(y + s) * TX + x]);
    __syncthreads();
  }
  return smem[x];
}
