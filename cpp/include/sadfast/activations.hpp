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

// Value and derivatives of one activation at one point.
struct Deriv {
  Real f, d1, d2;
};

// sigmoid pieces from e = exp(-|z|): s = sigmoid(z), c = 1 - s = sigmoid(-z), both without
// cancellation.
SADFAST_HD void sigmoid_pair(Real z, Real e, Real& s, Real& c) {
  const Real p = Real(1) / (Real(1) + e);
  const Real q = e * p;
  s = z >= 0 ? p : q;
  c = z >= 0 ? q : p;
}

SADFAST_HD Deriv finish_sigmoid(Real z, Real e) {
  Real s, c;
  sigmoid_pair(z, e, s, c);
  const Real d1 = s * c;
  return {s, d1, d1 * (c - s)};
}

// tanh from e = exp(-2|z|) in (0, 1]. For |z| > 0.625, tanh|z| = (1 - e)/(1 + e) has no
// cancellation; below, Cephes' rational approximation z + z^3 P(z^2)/Q(z^2) (relative error
// ~1e-16) avoids 1 - e. One division serves both branches. sech^2 is 1 - t^2 where t^2 <= 0.31
// (no cancellation) and 4e/(1+e)^2 beyond, accurate for every z.
SADFAST_HD Deriv finish_tanh(Real z, Real e) {
  const Real a = z < 0 ? -z : z;
  const Real s = z * z;
  const Real p = (Real(-9.64399179425052238628e-1) * s + Real(-9.92877231001918586564e1)) * s +
                 Real(-1.61468768441708447952e3);
  const Real q = ((s + Real(1.12811678491632931402e2)) * s + Real(2.23548839060100448583e3)) * s +
                 Real(4.84406305325125486048e3);
  const bool small = a <= Real(0.625);
  const Real num = small ? z * q + z * s * p : (z < 0 ? e - Real(1) : Real(1) - e);
  const Real r = Real(1) / (small ? q : Real(1) + e);
  const Real t = num * r;
  const Real d1 = small ? Real(1) - t * t : Real(4) * e * r * r;
  return {t, d1, Real(-2) * t * d1};
}

// softplus = max(z,0) + log1p(e), e = exp(-|z|); l = log1p(e) is the second `pre` value.
SADFAST_HD Deriv finish_softplus(Real z, Real e, Real l) {
  Real s, c;
  sigmoid_pair(z, e, s, c);
  const Real f = (z > 0 ? z : Real(0)) + l;
  return {f, s, s * c};
}

// swish = z * sigmoid(z).
SADFAST_HD Deriv finish_swish(Real z, Real e) {
  Real s, c;
  sigmoid_pair(z, e, s, c);
  const Real d1 = s * (Real(1) + z * c);
  const Real d2 = s * c * (Real(2) + z * (c - s));
  return {z * s, d1, d2};
}

// mish = z * tanh(softplus(z)). With e = exp(-|z|):
//   z >= 0: tanh(sp) = (1 + 2e) / (1 + 2e + 2e^2),  1 - tanh(sp) = 2e^2 / (1 + 2e + 2e^2)
//   z <  0: tanh(sp) = e(e+2) / (e(e+2) + 2),        1 - tanh(sp) = 2 / (e(e+2) + 2)
// Derivatives with t = tanh(sp), s = sigmoid(z), c = 1 - s, g = 1 - t^2:
//   f' = t + z g s,   f'' = g s (2 + z (c - 2 t s)).
SADFAST_HD Deriv finish_mish(Real z, Real e) {
  Real s, c;
  sigmoid_pair(z, e, s, c);
  Real t, omt;
  if (z >= 0) {
    const Real den = Real(1) + Real(2) * e + Real(2) * e * e;
    t = (Real(1) + Real(2) * e) / den;
    omt = Real(2) * e * e / den;
  } else {
    const Real u = e * (e + Real(2));
    const Real den = u + Real(2);
    t = u / den;
    omt = Real(2) / den;
  }
  const Real g = omt * (Real(1) + t);
  const Real d1 = t + z * g * s;
  const Real d2 = g * s * (Real(2) + z * (c - Real(2) * t * s));
  return {z * t, d1, d2};
}

// gelu = z * Phi(z), Phi(z) = erfc(-z/sqrt2)/2 (no cancellation for z << 0), phi = exp(-z^2/2)
// / sqrt(2 pi):  f' = Phi + z phi,  f'' = phi (2 - z^2), written so that phi = 0 gives 0 even
// where z^2 overflows.
SADFAST_HD Deriv finish_gelu(Real z, Real erfc_val, Real expval) {
  const Real Phi = Real(0.5) * erfc_val;
  const Real phi = kInvSqrt2Pi * expval;
  const Real zphi = z * phi;
  return {z * Phi, Phi + zphi, Real(2) * phi - zphi * z};
}

// elu (alpha = 1) from m = expm1(min(z, 0)) (the value, accurate near 0) and e = exp(min(z, 0))
// (the derivatives, accurate for z << 0 where 1 + m cancels).
SADFAST_HD Deriv finish_elu(Real z, Real m, Real e) {
  if (z > 0) return {z, Real(1), Real(0)};
  return {m, e, e};
}

// The remaining activations need no transcendental function.
SADFAST_HD Deriv eval_softsign(Real z) {
  const Real a = z < 0 ? -z : z;
  const Real inv = Real(1) / (Real(1) + a);
  const Real d1 = inv * inv;
  const Real sgn = z > 0 ? Real(1) : (z < 0 ? Real(-1) : Real(0));
  return {z * inv, d1, Real(-2) * sgn * d1 * inv};
}

SADFAST_HD Deriv eval_relu(Real z) {
  return z > 0 ? Deriv{z, Real(1), Real(0)} : Deriv{Real(0), Real(0), Real(0)};
}

SADFAST_HD Deriv eval_leaky_relu(Real z) {
  return z > 0 ? Deriv{z, Real(1), Real(0)} : Deriv{kLeakySlope * z, kLeakySlope, Real(0)};
}

SADFAST_HD Deriv eval_identity(Real z) { return {z, Real(1), Real(0)}; }

// Scalar reference: the activation with its derivatives at z, using the C math library.
SADFAST_HD Deriv eval(Activation a, Real z) {
  using std::erfc;
  using std::exp;
  using std::expm1;
  using std::fabs;
  using std::log1p;
  switch (a) {
    case Activation::sigmoid: return finish_sigmoid(z, exp(-fabs(z)));
    case Activation::tanh: return finish_tanh(z, exp(Real(-2) * fabs(z)));
    case Activation::softplus: {
      const Real e = exp(-fabs(z));
      return finish_softplus(z, e, log1p(e));
    }
    case Activation::swish: return finish_swish(z, exp(-fabs(z)));
    case Activation::gelu: return finish_gelu(z, erfc(-z * kInvSqrt2), exp(Real(-0.5) * z * z));
    case Activation::mish: return finish_mish(z, exp(-fabs(z)));
    case Activation::elu: {
      const Real zn = z < 0 ? z : Real(0);
      return finish_elu(z, expm1(zn), exp(zn));
    }
    case Activation::softsign: return eval_softsign(z);
    case Activation::relu: return eval_relu(z);
    case Activation::leaky_relu: return eval_leaky_relu(z);
    case Activation::identity: return eval_identity(z);
  }
  return {Real(0), Real(0), Real(0)};
}

}  // namespace act
}  // namespace sadfast
