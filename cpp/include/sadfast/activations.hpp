// Activation functions with their first and second derivatives (shared/CONVENTIONS.md).
//
// Each activation is written as two pieces so that the CPU SIMD path can batch the expensive
// part:
//   * `pre`: the transcendental function(s) of z the activation needs (one exp-like call, at most
//     two), computed here with the C math library;
//   * `finish`: branch-light arithmetic turning z and those values into (value, d1, d2).
// `eval` composes them and is the scalar reference used on the host and (later) on the device.
// The SIMD path in src/ computes the same `pre` quantities with vector math and calls the same
// `finish`, so the two paths differ only by the rounding of the transcendental calls.
#pragma once

#include <cmath>
#include <type_traits>

#include "sadfast/common.hpp"

namespace sadfast {

enum class Activation : int {
  sigmoid = 0,
  tanh,
  softplus,
  swish,
  gelu,
  mish,
  elu,
  softsign,
  relu,
  leaky_relu,
  identity,
};

inline constexpr int kNumActivations = 11;

inline const char* activation_name(Activation a) {
  switch (a) {
    case Activation::sigmoid: return "sigmoid";
    case Activation::tanh: return "tanh";
    case Activation::softplus: return "softplus";
    case Activation::swish: return "swish";
    case Activation::gelu: return "gelu";
    case Activation::mish: return "mish";
    case Activation::elu: return "elu";
    case Activation::softsign: return "softsign";
    case Activation::relu: return "relu";
    case Activation::leaky_relu: return "leaky_relu";
    case Activation::identity: return "identity";
  }
  return "?";
}

namespace act {

inline constexpr Real kLeakySlope = 0.01;
inline constexpr Real kInvSqrt2 = 0.70710678118654752440;
inline constexpr Real kInvSqrt2Pi = 0.39894228040143267794;

// Value and derivatives of one activation at one point (T = double on the CPU, float or double
// on the GPU).
template <class T>
struct Deriv {
  T f, d1, d2;
};

// sigmoid pieces from e = exp(-|z|): s = sigmoid(z), c = 1 - s = sigmoid(-z), both without
// cancellation.
template <class T>
SADFAST_HD void sigmoid_pair(T z, T e, T& s, T& c) {
  const T p = T(1) / (T(1) + e);
  const T q = e * p;
  s = z >= 0 ? p : q;
  c = z >= 0 ? q : p;
}

template <class T>
SADFAST_HD Deriv<T> finish_sigmoid(T z, T e) {
  T s, c;
  sigmoid_pair(z, e, s, c);
  const T d1 = s * c;
  return {s, d1, d1 * (c - s)};
}

// tanh from e = exp(-2|z|) in (0, 1]. For |z| > 0.625, tanh|z| = (1 - e)/(1 + e) has no
// cancellation; below, Cephes' rational approximation z + z^3 P(z^2)/Q(z^2) (relative error
// ~1e-16) avoids 1 - e. One division serves both branches. sech^2 is 1 - t^2 where t^2 <= 0.31
// (no cancellation) and 4e/(1+e)^2 beyond, accurate for every z.
// Cephes' coefficients (tanh z = z + z^3 P(z^2)/Q(z^2), |z| <= kTanhSmall), shared with the
// CPU kernels' vector form (src/kernels_impl.inc).
inline constexpr Real kTanhP2 = -9.64399179425052238628e-1, kTanhP1 = -9.92877231001918586564e1,
                      kTanhP0 = -1.61468768441708447952e3;
inline constexpr Real kTanhQ2 = 1.12811678491632931402e2, kTanhQ1 = 2.23548839060100448583e3,
                      kTanhQ0 = 4.84406305325125486048e3;
inline constexpr Real kTanhSmall = 0.625;

template <class T>
SADFAST_HD Deriv<T> finish_tanh(T z, T e) {
  const T a = z < 0 ? -z : z;
  const T s = z * z;
  const T p = (T(kTanhP2) * s + T(kTanhP1)) * s + T(kTanhP0);
  const T q = ((s + T(kTanhQ2)) * s + T(kTanhQ1)) * s + T(kTanhQ0);
  const bool small = a <= T(kTanhSmall);
  const T num = small ? z * q + z * s * p : (z < 0 ? e - T(1) : T(1) - e);
  const T r = T(1) / (small ? q : T(1) + e);
  const T t = num * r;
  const T d1 = small ? T(1) - t * t : T(4) * e * r * r;
  return {t, d1, T(-2) * t * d1};
}

// softplus = max(z,0) + log1p(e), e = exp(-|z|); l = log1p(e) is the second `pre` value.
template <class T>
SADFAST_HD Deriv<T> finish_softplus(T z, T e, T l) {
  T s, c;
  sigmoid_pair(z, e, s, c);
  const T f = (z > 0 ? z : T(0)) + l;
  return {f, s, s * c};
}

// swish = z * sigmoid(z).
template <class T>
SADFAST_HD Deriv<T> finish_swish(T z, T e) {
  T s, c;
  sigmoid_pair(z, e, s, c);
  const T d1 = s * (T(1) + z * c);
  const T d2 = s * c * (T(2) + z * (c - s));
  return {z * s, d1, d2};
}

// mish = z * tanh(softplus(z)). With e = exp(-|z|):
//   z >= 0: tanh(sp) = (1 + 2e) / (1 + 2e + 2e^2),  1 - tanh(sp) = 2e^2 / (1 + 2e + 2e^2)
//   z <  0: tanh(sp) = e(e+2) / (e(e+2) + 2),        1 - tanh(sp) = 2 / (e(e+2) + 2)
// Derivatives with t = tanh(sp), s = sigmoid(z), c = 1 - s, g = 1 - t^2:
//   f' = t + z g s,   f'' = g s (2 + z (c - 2 t s)).
template <class T>
SADFAST_HD Deriv<T> finish_mish(T z, T e) {
  T s, c;
  sigmoid_pair(z, e, s, c);
  T t, omt;
  if (z >= 0) {
    const T den = T(1) + T(2) * e + T(2) * e * e;
    t = (T(1) + T(2) * e) / den;
    omt = T(2) * e * e / den;
  } else {
    const T u = e * (e + T(2));
    const T den = u + T(2);
    t = u / den;
    omt = T(2) / den;
  }
  const T g = omt * (T(1) + t);
  const T d1 = t + z * g * s;
  const T d2 = g * s * (T(2) + z * (c - T(2) * t * s));
  return {z * t, d1, d2};
}

// gelu = z * Phi(z), Phi(z) = erfc(-z/sqrt2)/2 (no cancellation for z << 0), phi = exp(-z^2/2)
// / sqrt(2 pi):  f' = Phi + z phi,  f'' = phi (2 - z^2), written so that phi = 0 gives 0 even
// where z^2 overflows.
template <class T>
SADFAST_HD Deriv<T> finish_gelu(T z, T erfc_val, T expval) {
  const T Phi = T(0.5) * erfc_val;
  const T phi = T(kInvSqrt2Pi) * expval;
  const T zphi = z * phi;
  return {z * Phi, Phi + zphi, T(2) * phi - zphi * z};
}

// elu (alpha = 1) from m = expm1(min(z, 0)) (the value, accurate near 0) and e = exp(min(z, 0))
// (the derivatives, accurate for z << 0 where 1 + m cancels).
template <class T>
SADFAST_HD Deriv<T> finish_elu(T z, T m, T e) {
  if (z > 0) return {z, T(1), T(0)};
  return {m, e, e};
}

// The remaining activations need no transcendental function.
template <class T>
SADFAST_HD Deriv<T> eval_softsign(T z) {
  const T a = z < 0 ? -z : z;
  const T inv = T(1) / (T(1) + a);
  const T d1 = inv * inv;
  const T sgn = z > 0 ? T(1) : (z < 0 ? T(-1) : T(0));
  return {z * inv, d1, T(-2) * sgn * d1 * inv};
}

template <class T>
SADFAST_HD Deriv<T> eval_relu(T z) {
  return z > 0 ? Deriv<T>{z, T(1), T(0)} : Deriv<T>{T(0), T(0), T(0)};
}

template <class T>
SADFAST_HD Deriv<T> eval_leaky_relu(T z) {
  return z > 0 ? Deriv<T>{z, T(1), T(0)} : Deriv<T>{T(kLeakySlope) * z, T(kLeakySlope), T(0)};
}

template <class T>
SADFAST_HD Deriv<T> eval_identity(T z) { return {z, T(1), T(0)}; }

// One activation, chosen at compile time, with its derivatives at z (C math library).
template <Activation A, class T>
SADFAST_HD Deriv<T> eval_as(T z) {
  using std::erfc;
  using std::exp;
  using std::expm1;
  using std::fabs;
  using std::log1p;
  if constexpr (A == Activation::sigmoid) {
    return finish_sigmoid(z, exp(-fabs(z)));
  } else if constexpr (A == Activation::tanh) {
    return finish_tanh(z, exp(T(-2) * fabs(z)));
  } else if constexpr (A == Activation::softplus) {
    const T e = exp(-fabs(z));
    return finish_softplus(z, e, log1p(e));
  } else if constexpr (A == Activation::swish) {
    return finish_swish(z, exp(-fabs(z)));
  } else if constexpr (A == Activation::gelu) {
    return finish_gelu(z, erfc(-z * T(kInvSqrt2)), exp(T(-0.5) * z * z));
  } else if constexpr (A == Activation::mish) {
    return finish_mish(z, exp(-fabs(z)));
  } else if constexpr (A == Activation::elu) {
    const T zn = z < 0 ? z : T(0);
    return finish_elu(z, expm1(zn), exp(zn));
  } else if constexpr (A == Activation::softsign) {
    return eval_softsign(z);
  } else if constexpr (A == Activation::relu) {
    return eval_relu(z);
  } else if constexpr (A == Activation::leaky_relu) {
    return eval_leaky_relu(z);
  } else {
    static_assert(A == Activation::identity, "an activation without a case");
    return eval_identity(z);
  }
}

// Calls f(std::integral_constant<Activation, A>{}) for the runtime activation a: the one switch
// from a runtime name to the compile-time one, shared by eval and eval_n.
template <class F>
SADFAST_HD auto dispatch(Activation a, F&& f) {
  using A = Activation;
  switch (a) {
    case A::sigmoid: return f(std::integral_constant<A, A::sigmoid>{});
    case A::tanh: return f(std::integral_constant<A, A::tanh>{});
    case A::softplus: return f(std::integral_constant<A, A::softplus>{});
    case A::swish: return f(std::integral_constant<A, A::swish>{});
    case A::gelu: return f(std::integral_constant<A, A::gelu>{});
    case A::mish: return f(std::integral_constant<A, A::mish>{});
    case A::elu: return f(std::integral_constant<A, A::elu>{});
    case A::softsign: return f(std::integral_constant<A, A::softsign>{});
    case A::relu: return f(std::integral_constant<A, A::relu>{});
    case A::leaky_relu: return f(std::integral_constant<A, A::leaky_relu>{});
    case A::identity: return f(std::integral_constant<A, A::identity>{});
  }
  using R = decltype(f(std::integral_constant<A, A::identity>{}));
  if constexpr (!std::is_void_v<R>) return R{};  // not a named activation: zeros
}

// Scalar reference: the activation with its derivatives at z, using the C math library.
template <class T>
SADFAST_HD Deriv<T> eval(Activation a, T z) {
  return dispatch(a, [&](auto c) { return eval_as<decltype(c)::value>(z); });
}

// M independent evaluations under one switch, each handed to sink(r, Deriv) as it is done: M
// dependent chains of ~100 instructions each that the compiler can interleave
// (instruction-level parallelism), where M calls of `eval` run one after another, each behind
// its own branch. Bitwise the values of `eval`.
template <int M, class T, class Sink>
SADFAST_HD void eval_n(Activation a, const T* z, Sink&& sink) {
  dispatch(a, [&](auto c) {
    for (int r = 0; r < M; ++r) sink(r, eval_as<decltype(c)::value>(z[r]));
  });
}

}  // namespace act
}  // namespace sadfast
