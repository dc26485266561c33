// fuseray_math.cuh: NumPy's elementwise semantics as overloaded CUDA device functions.
//
// Stage: backend (CUDA). Every elementwise row of fuseray/ops.py whose CUDA template calls a
// helper ("fr_<name>(...)") finds it here, overloaded for every dtype NumPy's loop resolution can
// hand it: bool, signed/unsigned 8..64-bit integers, __half, float and double. Operands always
// arrive in the op's loop dtype (the front end inserts the casts), so nothing here promotes.
//
// Rules kept throughout:
//  * float16 (__half) is computed in float32 and rounded back to half after every op, as NumPy's
//    half loops do (for + - * / and sqrt that equals exact half arithmetic: float carries more
//    than 2p+2 bits, so the double rounding is innocuous).
//  * Integer arithmetic wraps (two's complement) as NumPy's does: it is done on unsigned types,
//    since signed overflow is undefined behaviour in C++ and NVVM may exploit it.
//  * Integer division and remainder by zero give 0, and INT_MIN / -1 wraps, as NumPy does (NumPy
//    also warns; a kernel cannot).
//  * Results follow NumPy on x86-64 where the C standard leaves them open (integer reciprocal of
//    0, shifts by >= the bit width, out-of-range float to small-integer casts).
#pragma once

// FR_HALF=0 leaves float16 out: no cuda_fp16.h to parse (about half of a small kernel's NVRTC
// time), no __half overloads. Generated kernels set it from their dtypes; standalone use gets all.
#ifndef FR_HALF
#define FR_HALF 1
#endif
#if FR_HALF
#include <cuda_fp16.h>
typedef __half fr_half_t;
#else
struct fr_no_half {};  // stands in for __half in templates that ask "is this type half?"
typedef fr_no_half fr_half_t;
#endif

// ------------------------------------------------------------------------------------------
// type traits (NVRTC has no <type_traits> without extra headers; these few are all we need)
// ------------------------------------------------------------------------------------------

template <class A, class B> struct fr_same { static constexpr bool value = false; };
template <class A> struct fr_same<A, A> { static constexpr bool value = true; };

template <bool C, class T = void> struct fr_enable_if {};
template <class T> struct fr_enable_if<true, T> { typedef T type; };

// is_int: the integer dtypes (not bool). uwide: the unsigned type arithmetic wraps in (at least
// 32 bits, so that C++'s promotion to int can never overflow a signed int first).
template <class T> struct fr_int_traits { static constexpr bool is_int = false; };
#define FR_INT_TRAITS(T, SIGNED, BITS, UW, UT)                                                   \
  template <> struct fr_int_traits<T> {                                                        \
    static constexpr bool is_int = true;                                                       \
    static constexpr bool is_signed = SIGNED;                                                  \
    static constexpr int bits = BITS;                                                          \
    typedef UW uwide;                                                                          \
    typedef UT utype;                                                                          \
  };
FR_INT_TRAITS(signed char, true, 8, unsigned int, unsigned char)
FR_INT_TRAITS(short, true, 16, unsigned int, unsigned short)
FR_INT_TRAITS(int, true, 32, unsigned int, unsigned int)
FR_INT_TRAITS(long, true, 64, unsigned long long, unsigned long)
FR_INT_TRAITS(long long, true, 64, unsigned long long, unsigned long long)
FR_INT_TRAITS(unsigned char, false, 8, unsigned int, unsigned char)
FR_INT_TRAITS(unsigned short, false, 16, unsigned int, unsigned short)
FR_INT_TRAITS(unsigned int, false, 32, unsigned int, unsigned int)
FR_INT_TRAITS(unsigned long, false, 64, unsigned long long, unsigned long)
FR_INT_TRAITS(unsigned long long, false, 64, unsigned long long, unsigned long long)
#undef FR_INT_TRAITS

#define FR_IF_INT(T, R) typename fr_enable_if<fr_int_traits<T>::is_int, R>::type
#define FR_IF_SINT(T, R) \
  typename fr_enable_if<fr_int_traits<T>::is_int && fr_int_traits<T>::is_signed, R>::type
#define FR_IF_UINT(T, R) \
  typename fr_enable_if<fr_int_traits<T>::is_int && !fr_int_traits<T>::is_signed, R>::type
#define FR_D __device__ __forceinline__

// The wrapping view of an integer: generated code computes infix + - * on these and casts the
// result back to the node's type.
template <class T> FR_D FR_IF_INT(T, typename fr_int_traits<T>::uwide) fr_u(T x) {
  // Sign-extend first (through the signed type's own promotion), then reinterpret.
  return (typename fr_int_traits<T>::uwide)x;
}

template <class T> FR_D T fr_min_value();
template <class T> FR_D T fr_max_value();
#define FR_LIMITS(T, LO, HI)                         \
  template <> FR_D T fr_min_value<T>() { return LO; } \
  template <> FR_D T fr_max_value<T>() { return HI; }
FR_LIMITS(bool, false, true)
FR_LIMITS(signed char, (signed char)-128, (signed char)127)
FR_LIMITS(short, (short)-32768, (short)32767)
FR_LIMITS(int, (int)(-2147483647 - 1), 2147483647)
FR_LIMITS(long long, (long long)(-9223372036854775807LL - 1), 9223372036854775807LL)
FR_LIMITS(unsigned char, (unsigned char)0, (unsigned char)255)
FR_LIMITS(unsigned short, (unsigned short)0, (unsigned short)65535)
FR_LIMITS(unsigned int, 0u, 4294967295u)
FR_LIMITS(unsigned long long, 0ull, 18446744073709551615ull)
FR_LIMITS(float, -__int_as_float(0x7f800000), __int_as_float(0x7f800000))
FR_LIMITS(double, -__longlong_as_double(0x7ff0000000000000LL),
          __longlong_as_double(0x7ff0000000000000LL))
#undef FR_LIMITS

// ------------------------------------------------------------------------------------------
// half <-> float plumbing
// ------------------------------------------------------------------------------------------

#if FR_HALF
FR_D float fr_f(__half x) { return __half2float(x); }
FR_D __half fr_h(float x) { return __float2half_rn(x); }
FR_D unsigned short fr_hbits(__half x) { return __half_as_ushort(x); }
#endif

// ------------------------------------------------------------------------------------------
// conversions: fr_cast<To>(from), C casting semantics as NumPy's astype
// ------------------------------------------------------------------------------------------

template <class T> struct fr_caster {
  template <class S> static FR_D T from(S x) {
    if constexpr (fr_same<S, fr_half_t>::value) {
      return fr_caster<T>::from(fr_f(x));
    } else if constexpr (fr_same<T, bool>::value) {
      return x != 0;  // NaN is true, as in NumPy
    } else if constexpr ((fr_same<S, float>::value || fr_same<S, double>::value) &&
                         fr_int_traits<T>::is_int) {
      // NumPy on x86-64 converts through a 32- or 64-bit integer and then truncates, so that
      // e.g. 300.0 -> uint8 gives 44 and -1.0 -> uint32 gives 4294967295; PTX would saturate.
      if constexpr (fr_int_traits<T>::bits < 32) {
        return (T)(int)x;
      } else if constexpr (fr_int_traits<T>::bits == 32 && !fr_int_traits<T>::is_signed) {
        return (T)(long long)x;
      } else {
        return (T)x;
      }
    } else {
      return (T)x;
    }
  }
};

#if FR_HALF
template <> struct fr_caster<__half> {
  template <class S> static FR_D __half from(S x) {
    if constexpr (fr_same<S, __half>::value) {
      return x;
    } else if constexpr (fr_same<S, double>::value) {
      return __double2half(x);  // one rounding, as NumPy's npy_double_to_half
    } else if constexpr (fr_same<S, bool>::value) {
      return fr_h(x ? 1.0f : 0.0f);
    } else {
      // Integers that float cannot hold exactly are far beyond half's range (inf either way).
      return fr_h((float)x);
    }
  }
};
#endif

template <class T, class S> FR_D T fr_cast(S x) { return fr_caster<T>::from(x); }

// ------------------------------------------------------------------------------------------
// float helpers written once in float/double and lifted to half
// ------------------------------------------------------------------------------------------

#if FR_HALF
#define FR_LIFT_HALF1(name) \
  FR_D __half name(__half x) { return fr_h(name(fr_f(x))); }
#define FR_LIFT_HALF2(name) \
  FR_D __half name(__half x, __half y) { return fr_h(name(fr_f(x), fr_f(y))); }
#else
#define FR_LIFT_HALF1(name)
#define FR_LIFT_HALF2(name)
#endif

#define FR_UNARY_FLOAT(name, FEXPR, DEXPR)  \
  FR_D float name(float x) { return FEXPR; } \
  FR_D double name(double x) { return DEXPR; } \
  FR_LIFT_HALF1(name)

// Correctly rounded float sqrt without a branch. sqrtf compiles to one rsqrt-and-Newton step
// (fr_sqrt_step) for positive normal x >= 2^-101, but sends every other x to a subroutine behind
// a branch: in a chain such as 5 x (sin, sqrt) those branches keep ptxas from interleaving
// independent elements (benchmarks/NOTES.md G14). Here tiny x is scaled by 2^64 into the step's
// range (exact) and the special operands are selected: +-0 -> x, x < 0 -> NaN, inf and NaN -> x.
// fr_sqrt_normal is for operands the code generator proved to be >= 2^-100 or NaN (abs(y) + 0.5,
// say): the step alone, and +inf. Both equal sqrtf on all 2^32 inputs (tests/cuda). Under
// --use_fast_math both are sqrtf, which is approximate there.
#if __USE_FAST_MATH__  // NVRTC defines it as 0 or 1
FR_D float fr_sqrt_f32(float x) { return sqrtf(x); }
FR_D float fr_sqrt_normal(float x) { return sqrtf(x); }
#else
FR_D float fr_sqrt_step(float x) {
  float r;
  asm("rsqrt.approx.ftz.f32 %0, %1;" : "=f"(r) : "f"(x));
  const float y = x * r;
  return fmaf(fmaf(-y, y, x), 0.5f * r, y);
}
FR_D float fr_sqrt_f32(float x) {
  const bool tiny = x < 0x1p-100f;
  float q = fr_sqrt_step(tiny ? x * 0x1p+64f : x);
  q = tiny ? q * 0x1p-32f : q;
  const float special = x < 0.0f ? __int_as_float(0x7fffffff) : x;
  const bool finite_positive = x > 0.0f && x < __int_as_float(0x7f800000);
  return finite_positive ? q : special;
}
FR_D float fr_sqrt_normal(float x) {
  return x < __int_as_float(0x7f800000) ? fr_sqrt_step(x) : x;
}
#endif
FR_UNARY_FLOAT(fr_sqrt, fr_sqrt_f32(x), sqrt(x))

// sin of an operand the code generator proved to be in [-1.25, 1.25] or NaN (codegen.SIN_SMALL:
// sqrt(abs(sin(y)) + 0.5) * 0.99 + 0.01, say). sinf reduces x by multiples of pi/2 and selects a
// sin or a cos polynomial by quadrant, behind a branch to Payne-Hanek reduction for huge x; on
// this domain one odd polynomial needs none of that: x + x^3 P(x^2), P of degree 3, fitted for
// relative error and checked against double on every float32 in the domain: at most 1.04 ulp
// (sinf's documented bound: 2 ulp). Seven instructions against sinf's ~25 (benchmarks/NOTES.md
// G24). Fast math keeps __sinf, as for sinf.
#if __USE_FAST_MATH__
FR_D float fr_sin_small(float x) { return sinf(x); }
#else
FR_D float fr_sin_small(float x) {
  const float s = x * x;
  float p = fmaf(2.660642394403112e-06f, s, -1.9828647782560438e-04f);
  p = fmaf(p, s, 8.333267644047737e-03f);
  p = fmaf(p, s, -1.666666567325592e-01f);
  // sin keeps x's sign on this domain; the sum alone would turn -0 into +0
  return copysignf(fmaf(x * s, p, x), x);
}
#endif
FR_UNARY_FLOAT(fr_cbrt, cbrtf(x), cbrt(x))
FR_UNARY_FLOAT(fr_exp, expf(x), exp(x))
FR_UNARY_FLOAT(fr_exp2, exp2f(x), exp2(x))
FR_UNARY_FLOAT(fr_expm1, expm1f(x), expm1(x))
FR_UNARY_FLOAT(fr_log, logf(x), log(x))
FR_UNARY_FLOAT(fr_log2, log2f(x), log2(x))
FR_UNARY_FLOAT(fr_log10, log10f(x), log10(x))
FR_UNARY_FLOAT(fr_log1p, log1pf(x), log1p(x))
FR_UNARY_FLOAT(fr_sin, sinf(x), sin(x))
FR_UNARY_FLOAT(fr_cos, cosf(x), cos(x))
FR_UNARY_FLOAT(fr_tan, tanf(x), tan(x))
FR_UNARY_FLOAT(fr_arcsin, asinf(x), asin(x))
FR_UNARY_FLOAT(fr_arccos, acosf(x), acos(x))
FR_UNARY_FLOAT(fr_arctan, atanf(x), atan(x))
FR_UNARY_FLOAT(fr_sinh, sinhf(x), sinh(x))
FR_UNARY_FLOAT(fr_cosh, coshf(x), cosh(x))
FR_UNARY_FLOAT(fr_tanh, tanhf(x), tanh(x))
FR_UNARY_FLOAT(fr_arcsinh, asinhf(x), asinh(x))
FR_UNARY_FLOAT(fr_arccosh, acoshf(x), acosh(x))
FR_UNARY_FLOAT(fr_arctanh, atanhf(x), atanh(x))
// NumPy's constants: 180/pi and pi/180 rounded to the type, one multiply.
FR_UNARY_FLOAT(fr_degrees, x * 57.29577951308232f, x * 57.29577951308232)
FR_UNARY_FLOAT(fr_radians, x * 0.017453292519943295f, x * 0.017453292519943295)
FR_UNARY_FLOAT(fr_rint, rintf(x), rint(x))  // round half to even
FR_UNARY_FLOAT(fr_erf, erff(x), erf(x))
FR_UNARY_FLOAT(fr_erfc, erfcf(x), erfc(x))
// scipy.special.expit / logit, in the argument's precision.
FR_UNARY_FLOAT(fr_expit, 1.0f / (1.0f + expf(-x)), 1.0 / (1.0 + exp(-x)))
FR_UNARY_FLOAT(fr_logit, logf(x / (1.0f - x)), log(x / (1.0 - x)))
#undef FR_UNARY_FLOAT

// floor / ceil / trunc: identity on integers and bool (NumPy has those loops).
#define FR_ROUNDING(name, F, D)                              \
  FR_D float name(float x) { return F(x); }                  \
  FR_D double name(double x) { return D(x); }                \
  FR_LIFT_HALF1(name)                                        \
  FR_D bool name(bool x) { return x; }                       \
  template <class T> FR_D FR_IF_INT(T, T) name(T x) { return x; }
FR_ROUNDING(fr_floor, floorf, floor)
FR_ROUNDING(fr_ceil, ceilf, ceil)
FR_ROUNDING(fr_trunc, truncf, trunc)
#undef FR_ROUNDING

// ------------------------------------------------------------------------------------------
// sign, absolute value, reciprocal
// ------------------------------------------------------------------------------------------

FR_D float fr_absolute(float x) { return fabsf(x); }
FR_D double fr_absolute(double x) { return fabs(x); }
#if FR_HALF
FR_D __half fr_absolute(__half x) { return __ushort_as_half(fr_hbits(x) & 0x7fffu); }
#endif
FR_D bool fr_absolute(bool x) { return x; }
template <class T> FR_D FR_IF_SINT(T, T) fr_absolute(T x) {
  return x < 0 ? (T)(0u - fr_u(x)) : x;  // abs(INT_MIN) wraps to INT_MIN, as NumPy's
}
template <class T> FR_D FR_IF_UINT(T, T) fr_absolute(T x) { return x; }

// sign(NaN) is NaN; sign(+-0) is +0.
FR_D float fr_sign(float x) { return x > 0.0f ? 1.0f : (x < 0.0f ? -1.0f : (x == 0.0f ? 0.0f : x)); }
FR_D double fr_sign(double x) { return x > 0.0 ? 1.0 : (x < 0.0 ? -1.0 : (x == 0.0 ? 0.0 : x)); }
FR_LIFT_HALF1(fr_sign)
template <class T> FR_D FR_IF_SINT(T, T) fr_sign(T x) { return (T)((x > 0) - (x < 0)); }
template <class T> FR_D FR_IF_UINT(T, T) fr_sign(T x) { return (T)(x > 0); }

FR_D float fr_reciprocal(float x) { return 1.0f / x; }
FR_D double fr_reciprocal(double x) { return 1.0 / x; }
FR_LIFT_HALF1(fr_reciprocal)
// NumPy computes (T)(1.0 / x): truncation toward zero, and 1/0 = inf converted by x86's
// cvttsd2si, which gives INT_MIN for 32/64-bit signed targets and 0 once truncated smaller.
template <class T> FR_D FR_IF_INT(T, T) fr_reciprocal(T x) {
  if (x == 0) {
    if constexpr (fr_int_traits<T>::is_signed && fr_int_traits<T>::bits >= 32) {
      return fr_min_value<T>();
    } else {
      return (T)0;
    }
  }
  if constexpr (fr_int_traits<T>::is_signed) {
    return (T)(x == 1 ? 1 : (x == -1 ? -1 : 0));
  } else {
    return (T)(x == 1 ? 1 : 0);
  }
}

// ------------------------------------------------------------------------------------------
// division family
// ------------------------------------------------------------------------------------------

FR_D float fr_divide(float a, float b) { return a / b; }
FR_D double fr_divide(double a, double b) { return a / b; }
FR_LIFT_HALF2(fr_divide)

// NumPy's npy_divmod: the floor quotient and Python-signed remainder built on fmod, which keeps
// the results exact and consistent (a == q * b + r) including infinities and signed zeros.
template <class F> FR_D F fr_float_divmod(F a, F b, F* modulus) {
  F mod = fmod(a, b);
  if (b == (F)0) {
    *modulus = mod;
    return a / b;
  }
  F div = (a - mod) / b;
  if (mod != (F)0) {
    if ((b < (F)0) != (mod < (F)0)) {
      mod += b;
      div -= (F)1;
    }
  } else {
    mod = copysign((F)0, b);
  }
  F floordiv;
  if (div != (F)0) {
    floordiv = floor(div);
    if (div - floordiv > (F)0.5) floordiv += (F)1;
  } else {
    floordiv = copysign((F)0, a / b);
  }
  *modulus = mod;
  return floordiv;
}

FR_D float fr_floor_divide(float a, float b) {
  float m;
  return fr_float_divmod(a, b, &m);
}
FR_D double fr_floor_divide(double a, double b) {
  double m;
  return fr_float_divmod(a, b, &m);
}
FR_LIFT_HALF2(fr_floor_divide)

FR_D float fr_remainder(float a, float b) {
  if (b == 0.0f) return fmodf(a, b);
  float m;
  fr_float_divmod(a, b, &m);
  return m;
}
FR_D double fr_remainder(double a, double b) {
  if (b == 0.0) return fmod(a, b);
  double m;
  fr_float_divmod(a, b, &m);
  return m;
}
FR_LIFT_HALF2(fr_remainder)

FR_D float fr_fmod(float a, float b) { return fmodf(a, b); }
FR_D double fr_fmod(double a, double b) { return fmod(a, b); }
FR_LIFT_HALF2(fr_fmod)

template <class T> FR_D FR_IF_INT(T, T) fr_floor_divide(T a, T b) {
  if (b == 0) return (T)0;
  if constexpr (fr_int_traits<T>::is_signed) {
    if (b == (T)-1) return (T)(0u - fr_u(a));  // MIN // -1 wraps to MIN
    T q = a / b;
    if ((a % b != 0) && ((a < 0) != (b < 0))) q -= 1;
    return q;
  } else {
    return a / b;
  }
}

template <class T> FR_D FR_IF_INT(T, T) fr_remainder(T a, T b) {
  if (b == 0) return (T)0;
  if constexpr (fr_int_traits<T>::is_signed) {
    if (b == (T)-1) return (T)0;  // MIN % -1 is undefined in C
    T r = a % b;
    if (r != 0 && ((r < 0) != (b < 0))) r += b;  // Python's sign: that of the divisor
    return r;
  } else {
    return a % b;
  }
}

template <class T> FR_D FR_IF_INT(T, T) fr_fmod(T a, T b) {
  if (b == 0) return (T)0;
  if constexpr (fr_int_traits<T>::is_signed) {
    if (b == (T)-1) return (T)0;
  }
  return a % b;  // C's sign: that of the dividend, as np.fmod
}

// ------------------------------------------------------------------------------------------
// powers
// ------------------------------------------------------------------------------------------

FR_D float fr_power(float a, float b) { return powf(a, b); }
FR_D double fr_power(double a, double b) { return pow(a, b); }
FR_LIFT_HALF2(fr_power)

// NumPy's integer loop: exponentiation by squaring, wrapping. NumPy raises for a negative
// exponent; a kernel cannot, so it returns the truncated exact value (1 for a base of 1, +-1 for
// -1, otherwise 0), which is what 1 / a**-b would give.
template <class T> __device__ __noinline__ FR_IF_INT(T, T) fr_power(T a, T b) {
  if constexpr (fr_int_traits<T>::is_signed) {
    if (b < 0) {
      if (a == 1) return (T)1;
      if (a == -1) return (b & 1) ? (T)-1 : (T)1;
      return (T)0;
    }
  }
  typename fr_int_traits<T>::uwide base = fr_u(a), out = 1;
  typename fr_int_traits<T>::uwide e = (typename fr_int_traits<T>::uwide)b;
  // Not inlined, one step per exponent bit: inlined into a kernel with many outputs and uniform
  // operands, NVRTC 13 spent minutes optimising this loop (seen with int8 and int16).
  for (int k = 0; k < fr_int_traits<T>::bits && e; ++k) {
    if (e & 1) out *= base;
    base *= base;
    e >>= 1;
  }
  return (T)out;
}

FR_D double fr_float_power(double a, double b) { return pow(a, b); }

// ------------------------------------------------------------------------------------------
// exponential sums, angles, magnitudes
// ------------------------------------------------------------------------------------------

// NumPy's npy_logaddexp: equal arguments (infinities of one sign included) short-circuit, and
// the larger argument is factored out so exp never overflows.
FR_D float fr_logaddexp(float x, float y) {
  if (x == y) return x + 0.693147180559945309f;
  const float d = x - y;
  if (d > 0.0f) return x + log1pf(expf(-d));
  if (d <= 0.0f) return y + log1pf(expf(d));
  return d;  // NaN
}
FR_D double fr_logaddexp(double x, double y) {
  if (x == y) return x + 0.693147180559945309;
  const double d = x - y;
  if (d > 0.0) return x + log1p(exp(-d));
  if (d <= 0.0) return y + log1p(exp(d));
  return d;
}
FR_LIFT_HALF2(fr_logaddexp)

FR_D float fr_logaddexp2(float x, float y) {
  if (x == y) return x + 1.0f;
  const float d = x - y;
  if (d > 0.0f) return x + 1.44269504088896341f * log1pf(exp2f(-d));
  if (d <= 0.0f) return y + 1.44269504088896341f * log1pf(exp2f(d));
  return d;
}
FR_D double fr_logaddexp2(double x, double y) {
  if (x == y) return x + 1.0;
  const double d = x - y;
  if (d > 0.0) return x + 1.44269504088896341 * log1p(exp2(-d));
  if (d <= 0.0) return y + 1.44269504088896341 * log1p(exp2(d));
  return d;
}
FR_LIFT_HALF2(fr_logaddexp2)

FR_D float fr_arctan2(float y, float x) { return atan2f(y, x); }
FR_D double fr_arctan2(double y, double x) { return atan2(y, x); }
FR_LIFT_HALF2(fr_arctan2)

FR_D float fr_hypot(float a, float b) { return hypotf(a, b); }
FR_D double fr_hypot(double a, double b) { return hypot(a, b); }
FR_LIFT_HALF2(fr_hypot)

FR_D float fr_copysign(float a, float b) { return copysignf(a, b); }
FR_D double fr_copysign(double a, double b) { return copysign(a, b); }
#if FR_HALF
FR_D __half fr_copysign(__half a, __half b) {
  return __ushort_as_half((fr_hbits(a) & 0x7fffu) | (fr_hbits(b) & 0x8000u));
}
#endif

// ------------------------------------------------------------------------------------------
// rounding to decimals: np.round(x, decimals)
// ------------------------------------------------------------------------------------------

// NumPy multiplies by 10**decimals (a Python float, so in the array's precision), rounds half to
// even and divides back; negative decimals divide first. Every step rounds to the type.
template <class F> FR_D F fr_round_float(F x, int decimals) {
  F f = (F)1;
  const int n = decimals < 0 ? -decimals : decimals;
  double p = 1.0;
  for (int k = 0; k < n; ++k) p *= 10.0;
  f = (F)p;
  if (decimals >= 0) return rint(x * f) / f;
  return rint(x / f) * f;
}
FR_D float fr_round(float x, int decimals) { return fr_round_float<float>(x, decimals); }
FR_D double fr_round(double x, int decimals) { return fr_round_float<double>(x, decimals); }
#if FR_HALF
FR_D __half fr_round(__half x, int decimals) {
  const int n = decimals < 0 ? -decimals : decimals;
  double p = 1.0;
  for (int k = 0; k < n; ++k) p *= 10.0;
  const float f = fr_f(__double2half(p));
  if (decimals >= 0) return fr_h(fr_f(fr_h(rintf(fr_f(fr_h(fr_f(x) * f))))) / f);
  return fr_h(fr_f(fr_h(rintf(fr_f(fr_h(fr_f(x) / f))))) * f);
}
#endif
// Integers: decimals >= 0 is a copy (the front end never gets here); negative decimals are done
// in double, rint'ed, and converted back with C's wrapping, as NumPy's PyArray_Round.
template <class T> FR_D FR_IF_INT(T, T) fr_round(T x, int decimals) {
  if (decimals >= 0) return x;
  double f = 1.0;
  for (int k = 0; k < -decimals; ++k) f *= 10.0;
  return fr_cast<T>(rint((double)x / f) * f);
}

// ------------------------------------------------------------------------------------------
// extrema
// ------------------------------------------------------------------------------------------

// maximum/minimum propagate NaN; between equal values the second operand wins, which is what
// NumPy's SIMD loops return for +0/-0.
template <class F> FR_D F fr_maximum_f(F a, F b) { return a != a ? a : (b != b ? b : (a > b ? a : b)); }
template <class F> FR_D F fr_minimum_f(F a, F b) { return a != a ? a : (b != b ? b : (a < b ? a : b)); }
FR_D float fr_maximum(float a, float b) { return fr_maximum_f(a, b); }
FR_D double fr_maximum(double a, double b) { return fr_maximum_f(a, b); }
FR_D float fr_minimum(float a, float b) { return fr_minimum_f(a, b); }
FR_D double fr_minimum(double a, double b) { return fr_minimum_f(a, b); }
FR_LIFT_HALF2(fr_maximum)
FR_LIFT_HALF2(fr_minimum)
FR_D float fr_fmax(float a, float b) { return fmaxf(a, b); }  // NaN only if both are NaN
FR_D double fr_fmax(double a, double b) { return fmax(a, b); }
FR_D float fr_fmin(float a, float b) { return fminf(a, b); }
FR_D double fr_fmin(double a, double b) { return fmin(a, b); }
FR_LIFT_HALF2(fr_fmax)
FR_LIFT_HALF2(fr_fmin)
#define FR_INT_EXTREMA(name, OP)                                                           \
  template <class T> FR_D FR_IF_INT(T, T) name(T a, T b) { return a OP b ? a : b; }       \
  FR_D bool name(bool a, bool b) { return a OP b ? a : b; }
FR_INT_EXTREMA(fr_maximum, >=)
FR_INT_EXTREMA(fr_minimum, <=)
FR_INT_EXTREMA(fr_fmax, >=)
FR_INT_EXTREMA(fr_fmin, <=)
#undef FR_INT_EXTREMA

// ------------------------------------------------------------------------------------------
// classification
// ------------------------------------------------------------------------------------------

FR_D bool fr_signbit(float x) { return signbit(x); }
FR_D bool fr_signbit(double x) { return signbit(x); }
#if FR_HALF
FR_D bool fr_signbit(__half x) { return (fr_hbits(x) & 0x8000u) != 0; }
#endif

FR_D bool fr_isnan(float x) { return isnan(x); }
FR_D bool fr_isnan(double x) { return isnan(x); }
#if FR_HALF
FR_D bool fr_isnan(__half x) { return (fr_hbits(x) & 0x7fffu) > 0x7c00u; }
#endif
FR_D bool fr_isinf(float x) { return isinf(x); }
FR_D bool fr_isinf(double x) { return isinf(x); }
#if FR_HALF
FR_D bool fr_isinf(__half x) { return (fr_hbits(x) & 0x7fffu) == 0x7c00u; }
#endif
FR_D bool fr_isfinite(float x) { return isfinite(x); }
FR_D bool fr_isfinite(double x) { return isfinite(x); }
#if FR_HALF
FR_D bool fr_isfinite(__half x) { return (fr_hbits(x) & 0x7c00u) != 0x7c00u; }
#endif
#define FR_INT_CLASS(name, VALUE)                                        \
  template <class T> FR_D FR_IF_INT(T, bool) name(T) { return VALUE; } \
  FR_D bool name(bool) { return VALUE; }
FR_INT_CLASS(fr_isnan, false)
FR_INT_CLASS(fr_isinf, false)
FR_INT_CLASS(fr_isfinite, true)
#undef FR_INT_CLASS

// ------------------------------------------------------------------------------------------
// comparisons: one template for equal types, exact ones for NumPy's mixed int64/uint64 loops
// ------------------------------------------------------------------------------------------

#if FR_HALF
#define FR_COMPARE_HALF(name, OP) \
  FR_D bool name(__half a, __half b) { return fr_f(a) OP fr_f(b); }
#else
#define FR_COMPARE_HALF(name, OP)
#endif
#define FR_COMPARE(name, OP)                                                                \
  template <class T> FR_D bool name(T a, T b) { return a OP b; }                             \
  FR_COMPARE_HALF(name, OP)                                                                \
  FR_D bool name(long long a, unsigned long long b) {                                        \
    return a < 0 ? (0 OP 1) : ((unsigned long long)a OP b);                                  \
  }                                                                                          \
  FR_D bool name(unsigned long long a, long long b) {                                        \
    return b < 0 ? (1 OP 0) : (a OP (unsigned long long)b);                                  \
  }
// "a < 0 compared with b >= 0" is decided by the sign alone: encode it as 0 OP 1 (a is smaller).
FR_COMPARE(fr_less, <)
FR_COMPARE(fr_less_equal, <=)
FR_COMPARE(fr_greater, >)
FR_COMPARE(fr_greater_equal, >=)
FR_COMPARE(fr_equal, ==)
FR_COMPARE(fr_not_equal, !=)
#undef FR_COMPARE
#undef FR_COMPARE_HALF

// ------------------------------------------------------------------------------------------
// bitwise
// ------------------------------------------------------------------------------------------

#define FR_BITWISE(name, OP)                                                       \
  template <class T> FR_D FR_IF_INT(T, T) name(T a, T b) { return (T)(a OP b); } \
  FR_D bool name(bool a, bool b) { return (bool)(a OP b); }
FR_BITWISE(fr_bitwise_and, &)
FR_BITWISE(fr_bitwise_or, |)
FR_BITWISE(fr_bitwise_xor, ^)
#undef FR_BITWISE

template <class T> FR_D FR_IF_INT(T, T) fr_invert(T x) { return (T)~fr_u(x); }
FR_D bool fr_invert(bool x) { return !x; }

// Shifts by at least the type's width (negative counts included, compared unsigned) give 0 for
// a left shift, and the sign fill for a right shift: NumPy's npy_lshift / npy_rshift.
template <class T> FR_D FR_IF_INT(T, T) fr_left_shift(T a, T b) {
  typedef typename fr_int_traits<T>::utype U;
  if ((U)b >= (U)fr_int_traits<T>::bits) return (T)0;
  return (T)(fr_u(a) << (unsigned)b);
}
template <class T> FR_D FR_IF_INT(T, T) fr_right_shift(T a, T b) {
  typedef typename fr_int_traits<T>::utype U;
  if ((U)b >= (U)fr_int_traits<T>::bits) {
    if constexpr (fr_int_traits<T>::is_signed) {
      return a < 0 ? (T)-1 : (T)0;
    } else {
      return (T)0;
    }
  }
  return (T)(a >> (unsigned)b);  // arithmetic for signed types on every CUDA target
}

#undef FR_LIFT_HALF1
#undef FR_LIFT_HALF2
