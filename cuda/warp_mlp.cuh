// One warp evaluates one flow: loss, gradient and (optionally) the exact Hessian-vector product
// of the MLP over the shared data, with the data points of each 32-point tile across the lanes.
//
//  * theta (and v) sit in the warp's shared memory and are read by all lanes at once
//    (broadcast); each lane runs the forward and backward pass of its own data point, keeping
//    every layer's values in a shared "tile" (rows = features, columns = the 32 lanes, padded
//    to 33 against bank conflicts).
//  * Then the lanes switch roles: lane p owns parameters p, p + 32, ... and sums the outer
//    products of the tile's back-propagated signals and activations over the 32 points, in a
//    fixed order. Results thus do not depend on which warp, block or batch evaluates a flow.
//  * Opt-in (set_layer_kernel, api.hpp): layers at least 16 wide on both sides run instead as
//    register-tiled warp GEMMs (tiled_* below), in kernels instantiated with Tiled = true: the
//    gradient kernel and Dormand-Prince's steps (RKC, training and the HVP keep the lanes path).
//
// The math per element is the shared code of activations.hpp and losses.hpp (the CPU path's
// reference); only the summation order differs from the CPU kernels.
#pragma once

#include <cuda_runtime.h>

#include "sadfast/activations.hpp"
#include "sadfast/losses.hpp"

namespace sadfast::gpu {

inline constexpr int kWarp = 32;
inline constexpr int kTileStride = 33;  // tile row length: 32 lanes + 1 pad
inline constexpr int kMaxLayers = 8;
inline constexpr int kMaxOutCE = 64;  // cross_entropy: outputs held per lane
// Build-time knobs of the lanes path, for measuring (pass -DSADFAST_...=n in CUDAFLAGS; every
// setting gives bitwise the same values: each neuron's sum runs in one chain, in order). Each knob
// is set for both dtypes by its plain name, or for one by its _F64 / _F32 name (which wins): the
// float64 and float32 kernels are separate instantiations, so one build can carry each dtype's
// best setting.
//
// SADFAST_ROW_BLOCK (4 or 8): neurons per block of the forward pass and inputs per block of the
// backward pass, each one an independent FMA chain per lane. 4 is the measured default. 8 is for
// the networks whose shared memory allows few warps per SM (poly4d: 4 warps, with issue slots
// 23% busy and "fixed latency execution dependency" the main stall in
// benchmarks/results/profile_gpu_h200.txt), at the cost of registers where they bound the warps.
// Not yet timed on a GPU. ptxas (sm_90, nvcc 13.0) gives Dormand-Prince's advance_kernel (lanes)
// 186 registers in float64 with 4 or 8, and 195 instead of 207 in float32.
#ifndef SADFAST_ROW_BLOCK
#define SADFAST_ROW_BLOCK 4
#endif
#ifndef SADFAST_ROW_BLOCK_F64
#define SADFAST_ROW_BLOCK_F64 SADFAST_ROW_BLOCK
#endif
#ifndef SADFAST_ROW_BLOCK_F32
#define SADFAST_ROW_BLOCK_F32 SADFAST_ROW_BLOCK
#endif
//
// SADFAST_ACT_ILP (0, 1, 2, 4): activations evaluated together, under one switch, in a block
// (1, 2 or 4 interleaved chains), or 0: one at a time in a loop that is not unrolled (the code
// before session 15). 4 is the measured best on an H200: loss+gradient +7/+17/+17% on
// poly1d/2d/4d float64 against one at a time (benchmarks/results/bench_gpu_h200.json against
// bench_gpu_h200_2e9de79.json; a first version's ILP 2 and 4 in bench_gpu_act_ilp*_h200.json).
// Its cost is float32's registers: ptxas (sm_90, nvcc 13.0) gives advance_kernel<float> (lanes)
// 207 registers with 1, 2 or 4 (the block's unrolled copies of the switch), 148 with 0, while
// advance_kernel<double> has 186 with either; poly1d float32 flows, register-bound, lost 11%.
#ifndef SADFAST_ACT_ILP
#define SADFAST_ACT_ILP 4
#endif
#ifndef SADFAST_ACT_ILP_F64
#define SADFAST_ACT_ILP_F64 SADFAST_ACT_ILP
#endif
#ifndef SADFAST_ACT_ILP_F32
#define SADFAST_ACT_ILP_F32 SADFAST_ACT_ILP
#endif

template <class T>
inline constexpr int kRowBlock = sizeof(T) == sizeof(double) ? SADFAST_ROW_BLOCK_F64 : SADFAST_ROW_BLOCK_F32;
template <class T>
inline constexpr int kActIlp = sizeof(T) == sizeof(double) ? SADFAST_ACT_ILP_F64 : SADFAST_ACT_ILP_F32;

template <class T>
constexpr bool valid_knobs() {
  constexpr int rb = kRowBlock<T>, ilp = kActIlp<T>;
  return (rb == 4 || rb == 8) && (ilp == 0 || ilp == 1 || ilp == 2 || ilp == 4);  // so ilp <= rb
}
static_assert(valid_knobs<double>(), "SADFAST_ROW_BLOCK(_F64): 4 or 8; SADFAST_ACT_ILP(_F64): 0, 1, 2, 4");
static_assert(valid_knobs<float>(), "SADFAST_ROW_BLOCK(_F32): 4 or 8; SADFAST_ACT_ILP(_F32): 0, 1, 2, 4");

// Shapes of the network, passed by value to every kernel.
struct Arch {
  int L = 0;                        // weight layers
  int width[kMaxLayers + 1] = {};   // width[0] = d_in, width[L] = d_out
  int w_off[kMaxLayers] = {}, b_off[kMaxLayers] = {};
  int row[kMaxLayers + 1] = {};     // first tile row of layer l's values (row[0]: the input)
  int rows = 0;                     // tile rows: sum of the widths
  int P = 0, N = 0;
  Activation act = Activation::tanh;
  Loss loss = Loss::mse;
  double wd = 0;
  // Layers evaluated by the register-tiled warp GEMMs (see tiled_* below) instead of one data
  // point per lane, and where their transposed weights sit in WarpSmem::wt (rows of out + 1).
  bool tiled[kMaxLayers] = {};
  int wt_off[kMaxLayers] = {};
  int wt_elems = 0;
  // Networks whose WarpSmem does not fit in a block's shared memory: each warp's WarpSmem lies
  // in this global buffer instead (launch.cuh's bind_workspace), indexed by the warp's rank in
  // the grid, in the kernels' Global instantiations.
  void* global_ws = nullptr;
};

// Whether layer l (in -> out) is worth the register-tiled GEMMs: both sides at least this wide.
inline constexpr int kTiledMinWidth = 16;

__device__ __forceinline__ unsigned lane_id() { return threadIdx.x & (kWarp - 1); }

// Sum over the warp by a butterfly: the same tree on every lane, so every lane gets the same
// bits (addition is commutative exactly), and independent of everything but the inputs.
template <class T>
__device__ __forceinline__ T warp_sum(T x) {
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) x += __shfl_xor_sync(0xffffffffu, x, off);
  return x;
}

// Dot products of rows l0 .. l0 + 7 of V (rows of P; those at or past n count as zero) with x,
// both spread over the lanes (entries lane, lane + 32, ...): lane returns row l0 + (lane & 7)'s,
// with the same bits on the four lanes that share lane & 7. A transpose reduction: each lane sums
// its entries of the 8 products, then halves of the 8 partial sums are exchanged between lanes 4,
// 2 and 1 apart (4 + 2 + 1 shuffles) and the 4 lane groups' sums are added by a butterfly (2).
// 9 shuffles in 5 dependent steps, where 8 warp_sum take 40 in 40. Needs n >= 1.
template <class T>
__device__ __forceinline__ T warp_dots8(const T* V, int P, int l0, int n, const T* x) {
  const unsigned lane = lane_id();
  T p[8];
  const T* row[8];
#pragma unroll
  for (int r = 0; r < 8; ++r) {
    p[r] = T(0);
    row[r] = V + static_cast<std::size_t>(l0 + r < n ? l0 + r : n - 1) * P;  // clamped, dropped below
  }
  for (int i = static_cast<int>(lane); i < P; i += kWarp) {
    const T xi = x[i];
#pragma unroll
    for (int r = 0; r < 8; ++r) p[r] += row[r][i] * xi;
  }
#pragma unroll
  for (int r = 0; r < 8; ++r) {
    if (l0 + r >= n) p[r] = T(0);
  }
#pragma unroll
  for (int half = 4; half > 0; half >>= 1) {  // keep the half of the rows this lane's bit names
    const bool hi = (lane & static_cast<unsigned>(half)) != 0;
#pragma unroll
    for (int r = 0; r < half; ++r) {
      const T keep = hi ? p[r + half] : p[r], send = hi ? p[r] : p[r + half];
      p[r] = keep + __shfl_xor_sync(0xffffffffu, send, half);
    }
  }
  T sum = p[0];
  sum += __shfl_xor_sync(0xffffffffu, sum, 8);
  sum += __shfl_xor_sync(0xffffffffu, sum, 16);
  return sum;
}

// One warp's shared memory, carved from the block's dynamic shared memory:
//   theta, grad | a, d tiles | (HVP) v, hv | d2, rz, ra tiles | the rest of wt.
// The transposed weights of tiled layers (wt) are read by gradient-only evaluations, which leave
// the HVP tiles unused: with an HVP layout, wt starts at d2 and takes extra room only past ra.
template <class T>
struct WarpSmem {
  T* theta;  // P
  T* grad;   // P
  T* wt;     // transposed weights of the tiled layers (A.wt_elems; null when no layer is tiled)
  T* v;      // P (HVP)
  T* hv;     // P (HVP)
  T* a;      // tile: layer values (rows x 33)
  T* d;      // tile: activation derivative, then the back-propagated signal g
  T* d2;     // HVP tiles: second derivative, then R{g}
  T* rz;     //            R{z} of hidden layers
  T* ra;     //            R{a}

  static __host__ __device__ int padded(int P) { return (P + 1) & ~1; }
  static __host__ __device__ std::size_t tile_elems(const Arch& a) {
    return static_cast<std::size_t>(a.rows) * kTileStride;
  }
  static __host__ __device__ std::size_t elems(const Arch& a, bool hvp) {
    const std::size_t tile = tile_elems(a), pp = padded(a.P), wt = padded(a.wt_elems);
    if (!hvp) return 2 * pp + 2 * tile + wt;
    return 4 * pp + 2 * tile + (wt > 3 * tile ? wt : 3 * tile);
  }
  static __device__ WarpSmem carve(T* base, const Arch& a, bool hvp) {
    const std::size_t pp = padded(a.P), tile = tile_elems(a);
    WarpSmem s;
    T* q = base;
    s.theta = q;
    q += pp;
    s.grad = q;
    q += pp;
    s.a = q;
    q += tile;
    s.d = q;
    q += tile;
    s.v = s.hv = s.d2 = s.rz = s.ra = nullptr;
    if (hvp) {
      s.v = q;
      q += pp;
      s.hv = q;
      q += pp;
      s.d2 = q;
      s.rz = q + tile;
      s.ra = q + 2 * tile;
    }
    s.wt = a.wt_elems > 0 ? q : nullptr;
    return s;
  }
};

// ---- register-tiled warp GEMMs for the wide layers (Arch::tiled) ----------------------------------
// A wide layer's products over a 32-point tile are 32 x 32 blocks. Lane (rg = lane % 8,
// cg = lane / 8) computes rows rg + 8 r (r < 4) and columns cg + 4 c (c < 8) of a block: 32
// FMAs from 12 shared-memory loads (the lanes path loads 5 numbers per 4 FMAs in its forward and
// backward passes and 2 per FMA in its weight gradients). Each load touches 8 consecutive rows or
// 4 consecutive columns, so with the tile stride 33 it is free of bank conflicts. The forward and
// backward passes sum in the lanes path's order (bitwise the same values); the weight gradient
// sums each tile's 32 points in one chain (the lanes path: four chains).
inline constexpr int kTR = 4, kTC = 8;

// The tiled blocks are called, not inlined: warp_eval is inlined at every evaluation site of a
// kernel (Dormand-Prince's advance_kernel has four: two rk_step and two interpolations), and
// inlined copies of the unrolled blocks make ptxas take 107 s instead of 44 s for rk45.cu
// (sm_90, nvcc 13.0, measured when the kernels' evaluation sites were cut from nine to four; 327
// instead of 108 s before). Cost: the tiled float64 advance_kernel saves registers around the
// calls (255 registers, spills 56/56 B instead of 254 and 16/16 B; float 254 instead of 219).
#ifdef SADFAST_CUDA_EMULATION
#define SADFAST_NOINLINE
#else
#define SADFAST_NOINLINE __noinline__
#endif

__device__ __forceinline__ int tile_rg() { return static_cast<int>(lane_id() & 7u); }
__device__ __forceinline__ int tile_cg() { return static_cast<int>(lane_id() >> 3); }

// The blocks' inner loop: acc[r][c] += u[k us + uo[r]] v[k vs + vo[c]] for k = 0..n-1, in order.
template <class T>
__device__ __forceinline__ void tile_outer_sum(T (&acc)[kTR][kTC], const T* u, const int (&uo)[kTR], int us,
                                               const T* v, const int (&vo)[kTC], int vs, int n) {
  for (int k = 0; k < n; ++k) {
    T x[kTR], y[kTC];
#pragma unroll
    for (int r = 0; r < kTR; ++r) x[r] = u[k * us + uo[r]];
#pragma unroll
    for (int c = 0; c < kTC; ++c) y[c] = v[k * vs + vo[c]];
#pragma unroll
    for (int r = 0; r < kTR; ++r) {
#pragma unroll
      for (int c = 0; c < kTC; ++c) acc[r][c] += x[r] * y[c];
    }
  }
}

// Rows base + rg + 8 r of a block a lane owns, clamped to n - 1 (rows past the end are loaded
// and their sums dropped).
__device__ __forceinline__ void tile_rows(int base, int n, int (&rows)[kTR]) {
#pragma unroll
  for (int r = 0; r < kTR; ++r) {
    const int i = base + tile_rg() + 8 * r;
    rows[r] = i < n ? i : n - 1;
  }
}

// Offsets 4 c of the tile columns a lane owns, from its first one (cg).
__device__ __forceinline__ void tile_columns(int (&vo)[kTC]) {
#pragma unroll
  for (int c = 0; c < kTC; ++c) vo[c] = 4 * c;
}

// W^T of every tiled layer into s.wt: row i holds the out weights from input i (stride out + 1).
template <class T>
__device__ SADFAST_NOINLINE void tiled_transpose(const Arch& A, const WarpSmem<T>& s) {
  for (int l = 0; l < A.L; ++l) {
    if (!A.tiled[l]) continue;
    const int in = A.width[l], out = A.width[l + 1];
    const T* W = s.theta + A.w_off[l];
    T* wt = s.wt + A.wt_off[l];
    for (int p = static_cast<int>(lane_id()); p < out * in; p += kWarp) {
      const int j = p / in, i = p - j * in;
      wt[i * (out + 1) + j] = W[p];
    }
  }
}

// Forward through layer l: z = b + W a (bias first, then inputs 0..in-1, as the lanes path),
// then a = f(z) and f'(z) (hidden layers) or z (output layer) into the tiles.
template <class T>
__device__ SADFAST_NOINLINE void tiled_forward(const Arch& A, int l, const WarpSmem<T>& s) {
  const int in = A.width[l], out = A.width[l + 1], ws = out + 1;
  const int rg = tile_rg(), cg = tile_cg();
  const T* wt = s.wt + A.wt_off[l];
  const T* b = s.theta + A.b_off[l];
  const T* ap = s.a + A.row[l] * kTileStride + cg;
  const bool hidden = l + 1 < A.L;
  for (int jb = 0; jb < out; jb += kWarp) {
    int jr[kTR];
    tile_rows(jb, out, jr);
    T acc[kTR][kTC];
#pragma unroll
    for (int r = 0; r < kTR; ++r) {
#pragma unroll
      for (int c = 0; c < kTC; ++c) acc[r][c] = b[jr[r]];
    }
    int vo[kTC];
    tile_columns(vo);
    tile_outer_sum(acc, wt, jr, ws, ap, vo, kTileStride, in);
#pragma unroll
    for (int r = 0; r < kTR; ++r) {
      const int j = jb + rg + 8 * r;
      if (j >= out) continue;
      T* ao = s.a + (A.row[l + 1] + j) * kTileStride + cg;
      T* dl = s.d + (A.row[l + 1] + j) * kTileStride + cg;
#pragma unroll
      for (int c = 0; c < kTC; ++c) {
        if (hidden) {
          const act::Deriv<T> dv = act::eval(A.act, acc[r][c]);
          ao[4 * c] = dv.f;
          dl[4 * c] = dv.d1;
        } else {
          ao[4 * c] = acc[r][c];
        }
      }
    }
  }
}

// Backward through layer l (l >= 1): g_l = f'(z_l) (W_l^T g_{l+1}), in place of f'(z_l) in the
// tile rows of layer l (outputs 0..out-1 summed in order, as the lanes path).
template <class T>
__device__ SADFAST_NOINLINE void tiled_backward(const Arch& A, int l, const WarpSmem<T>& s) {
  const int in = A.width[l], out = A.width[l + 1];
  const int rg = tile_rg(), cg = tile_cg();
  const T* W = s.theta + A.w_off[l];
  const T* g = s.d + A.row[l + 1] * kTileStride + cg;
  for (int ib = 0; ib < in; ib += kWarp) {
    int ir[kTR];
    tile_rows(ib, in, ir);
    T acc[kTR][kTC] = {};
    int vo[kTC];
    tile_columns(vo);
    tile_outer_sum(acc, W, ir, in, g, vo, kTileStride, out);
#pragma unroll
    for (int r = 0; r < kTR; ++r) {
      const int i = ib + rg + 8 * r;
      if (i >= in) continue;
      T* dd = s.d + (A.row[l] + i) * kTileStride + cg;
#pragma unroll
      for (int c = 0; c < kTC; ++c) dd[4 * c] = dd[4 * c] * acc[r][c];
    }
  }
}

// Weight gradient of layer l over the tile: grad W[j][i] += sum over the 32 points m of
// g_{l+1}[j][m] a_l[i][m]. Rows of the blocks are inputs i, columns outputs j.
template <class T>
__device__ SADFAST_NOINLINE void tiled_weight_grad(const Arch& A, int l, const WarpSmem<T>& s) {
  const int in = A.width[l], out = A.width[l + 1];
  const int rg = tile_rg(), cg = tile_cg();
  T* gw = s.grad + A.w_off[l];
  for (int ib = 0; ib < in; ib += kWarp) {
    for (int jb = 0; jb < out; jb += kWarp) {
      int ar[kTR], gr[kTC];
      tile_rows(ib, in, ar);
#pragma unroll
      for (int r = 0; r < kTR; ++r) ar[r] = (A.row[l] + ar[r]) * kTileStride;
#pragma unroll
      for (int c = 0; c < kTC; ++c) {
        const int j = jb + cg + 4 * c;
        gr[c] = (A.row[l + 1] + (j < out ? j : out - 1)) * kTileStride;
      }
      T acc[kTR][kTC] = {};
      tile_outer_sum(acc, s.a, ar, 1, s.d, gr, 1, kWarp);  // over the tile's 32 points
#pragma unroll
      for (int r = 0; r < kTR; ++r) {
        const int i = ib + rg + 8 * r;
        if (i >= in) continue;
#pragma unroll
        for (int c = 0; c < kTC; ++c) {
          const int j = jb + cg + 4 * c;
          if (j < out) gw[j * in + i] += acc[r][c];
        }
      }
    }
  }
}

// Loss at s.theta; gradient into s.grad and, if HVP, H v into s.hv (v in s.v). X, Y are
// feature-major (d_in, N), (d_out, N). Every lane returns the same loss. Ends with __syncwarp.
// Tiled: the layers with A.tiled[l] run as the register-tiled GEMMs above. It is a template
// parameter, not only a flag of A, because registers are allocated per kernel: compiled in, the
// tiled blocks would raise every kernel's count (batch_kernel<double>: 128 -> 200 on sm_90).
template <class T, bool HVP, bool Tiled = false>
__device__ T warp_eval(const Arch& A, const T* __restrict__ X, const T* __restrict__ Y, const WarpSmem<T>& s) {
  static_assert(!(HVP && Tiled), "the HVP runs the lanes path");
  const int lane = static_cast<int>(lane_id());
  const int N = A.N, L = A.L;
  const T inv_n = T(1) / T(N);
  for (int i = lane; i < A.P; i += kWarp) {
    s.grad[i] = T(0);
    if constexpr (HVP) s.hv[i] = T(0);
  }
  if constexpr (Tiled) {
    if (A.wt_elems > 0) tiled_transpose(A, s);  // read after the __syncwarp of the first tiled layer
  }
  T loss_part = T(0);
  for (int base = 0; base < N; base += kWarp) {
    const int n = base + lane;
    const bool live = n < N;
    // ---- forward, lane = data point ----
    for (int i = 0; i < A.width[0]; ++i) s.a[i * kTileStride + lane] = live ? X[static_cast<std::size_t>(i) * N + n] : T(0);
    for (int l = 0; l < L; ++l) {
      if constexpr (Tiled) {
        if (A.tiled[l]) {  // reads and writes other lanes' points: barriers around it
          __syncwarp();
          tiled_forward(A, l, s);
          __syncwarp();
          continue;
        }
      }
      const int in = A.width[l], out = A.width[l + 1];
      const T* W = s.theta + A.w_off[l];
      const T* b = s.theta + A.b_off[l];
      const T* ap = s.a + A.row[l] * kTileStride + lane;
      T* ao = s.a + A.row[l + 1] * kTileStride + lane;
      T* dl = s.d + A.row[l + 1] * kTileStride + lane;
      const bool hidden = l + 1 < L;
      // kRowBlock neurons at a time: independent FMA chains per lane, each activation value
      // loaded once for kRowBlock products (rows past the end are clamped and their sums dropped).
      for (int j0 = 0; j0 < out; j0 += kRowBlock<T>) {
        T zb[kRowBlock<T>];
        const T* wr[kRowBlock<T>];
#pragma unroll
        for (int r = 0; r < kRowBlock<T>; ++r) {
          const int jr = j0 + r < out ? j0 + r : out - 1;
          wr[r] = W + jr * in;
          zb[r] = b[jr];
        }
        for (int i = 0; i < in; ++i) {
          const T av = ap[i * kTileStride];
#pragma unroll
          for (int r = 0; r < kRowBlock<T>; ++r) zb[r] += wr[r][i] * av;
        }
        const int nj = out - j0 < kRowBlock<T> ? out - j0 : kRowBlock<T>;
        if (hidden) {
          // The block's activations kActIlp at a time under one switch, so that their chains
          // interleave; each stored as soon as it is done (rows past the end are evaluated and
          // dropped).
          auto put = [&](int r, const act::Deriv<T>& dv) {
            if (r >= nj) return;
            const int j = j0 + r;
            ao[j * kTileStride] = dv.f;
            dl[j * kTileStride] = dv.d1;
            if constexpr (HVP) s.d2[(A.row[l + 1] + j) * kTileStride + lane] = dv.d2;
          };
          if constexpr (kActIlp<T> == 0) {
#pragma unroll 1
            for (int r = 0; r < nj; ++r) put(r, act::eval(A.act, zb[r]));
          } else {
#pragma unroll
            for (int h = 0; h < kRowBlock<T>; h += kActIlp<T>) {
              act::eval_n<kActIlp<T>>(A.act, zb + h,
                                      [&](int r, const act::Deriv<T>& dv) { put(h + r, dv); });
            }
          }
        } else {
          for (int r = 0; r < nj; ++r) ao[(j0 + r) * kTileStride] = zb[r];
        }
        if constexpr (HVP) {
          for (int r = 0; r < nj; ++r) {
            const int j = j0 + r;
            const T* w = wr[r];
            const T* vw = s.v + A.w_off[l] + j * in;
            T rz = s.v[A.b_off[l] + j];
            for (int i = 0; i < in; ++i) rz += vw[i] * ap[i * kTileStride];
            if (l > 0) {
              const T* rap = s.ra + A.row[l] * kTileStride + lane;
              for (int i = 0; i < in; ++i) rz += w[i] * rap[i * kTileStride];
            }
            const int at = (A.row[l + 1] + j) * kTileStride + lane;
            if (hidden) {
              s.rz[at] = rz;
              s.ra[at] = dl[j * kTileStride] * rz;
            } else {
              s.ra[at] = rz;  // R{z_L} = R{a_L}
            }
          }
        }
      }
    }
    // ---- loss at the output: g_L = dl/dz / N (and R{g_L} = H_l R{z_L} / N) ----
    {
      const int out = A.width[L];
      const int r0 = A.row[L] * kTileStride + lane;
      if (!live) {
        for (int j = 0; j < out; ++j) {
          s.d[r0 + j * kTileStride] = T(0);
          if constexpr (HVP) s.d2[r0 + j * kTileStride] = T(0);
        }
      } else if (loss::is_elementwise(A.loss)) {
        for (int j = 0; j < out; ++j) {
          const T z = s.a[r0 + j * kTileStride];
          const T t = Y[static_cast<std::size_t>(j) * N + n];
          T g;
          loss_part += loss::elem_value_grad(A.loss, z, t, g);
          s.d[r0 + j * kTileStride] = g * inv_n;
          if constexpr (HVP) s.d2[r0 + j * kTileStride] = loss::elem_hess(A.loss, z, t) * s.ra[r0 + j * kTileStride] * inv_n;
        }
      } else {
        T zz[kMaxOutCE], tt[kMaxOutCE], gg[kMaxOutCE];
        for (int j = 0; j < out; ++j) {
          zz[j] = s.a[r0 + j * kTileStride];
          tt[j] = Y[static_cast<std::size_t>(j) * N + n];
        }
        loss_part += loss::value_grad(A.loss, zz, tt, gg, out);
        for (int j = 0; j < out; ++j) s.d[r0 + j * kTileStride] = gg[j] * inv_n;
        if constexpr (HVP) {
          T rr[kMaxOutCE];
          for (int j = 0; j < out; ++j) rr[j] = s.ra[r0 + j * kTileStride];
          loss::hess_vec(A.loss, zz, tt, rr, gg, out);
          for (int j = 0; j < out; ++j) s.d2[r0 + j * kTileStride] = gg[j] * inv_n;
        }
      }
    }
    // ---- backward, lane = data point: g_l = f'(z_l) W_{l+1}^T g_{l+1} (in place of f') ----
    for (int l = L - 1; l >= 1; --l) {
      if constexpr (Tiled) {
        if (A.tiled[l]) {
          __syncwarp();
          tiled_backward(A, l, s);
          __syncwarp();
          continue;
        }
      }
      const int in = A.width[l], out = A.width[l + 1];
      const T* W = s.theta + A.w_off[l];
      const T* g = s.d + A.row[l + 1] * kTileStride + lane;
      const T* rg = HVP ? s.d2 + A.row[l + 1] * kTileStride + lane : nullptr;
      // kRowBlock inputs at a time (independent chains; clamped columns past the end are dropped).
      for (int i0 = 0; i0 < in; i0 += kRowBlock<T>) {
        int ic[kRowBlock<T>];
#pragma unroll
        for (int r = 0; r < kRowBlock<T>; ++r) ic[r] = i0 + r < in ? i0 + r : in - 1;
        T dab[kRowBlock<T>] = {};
        for (int j = 0; j < out; ++j) {
          const T gv = g[j * kTileStride];
          const T* w = W + j * in;
#pragma unroll
          for (int r = 0; r < kRowBlock<T>; ++r) dab[r] += w[ic[r]] * gv;
        }
        const int ni = in - i0 < kRowBlock<T> ? in - i0 : kRowBlock<T>;
        for (int r = 0; r < ni; ++r) {
          const int i = i0 + r;
          const T da = dab[r];
          const int at = (A.row[l] + i) * kTileStride + lane;
          const T d1 = s.d[at];
          if constexpr (HVP) {
            const T* V = s.v + A.w_off[l];
            T rda = T(0);
            for (int j = 0; j < out; ++j) rda += V[j * in + i] * g[j * kTileStride] + W[j * in + i] * rg[j * kTileStride];
            s.d2[at] = s.d2[at] * s.rz[at] * da + d1 * rda;
          }
          s.d[at] = d1 * da;
        }
      }
    }
    __syncwarp();
    // ---- parameters, lane = parameter: sums over the tile's 32 points in lane order ----
    for (int l = 0; l < L; ++l) {
      const int in = A.width[l], out = A.width[l + 1];
      const T* g = s.d + A.row[l + 1] * kTileStride;
      const T* ap = s.a + A.row[l] * kTileStride;
      const bool tiled = Tiled && A.tiled[l];
      if (tiled) tiled_weight_grad(A, l, s);
      for (int p = tiled ? out * in : lane; p < out * in; p += kWarp) {  // the lanes path
        const int j = p / in, i = p - j * in;
        const T* gj = g + j * kTileStride;
        const T* ai = ap + i * kTileStride;
        T a4[4] = {T(0), T(0), T(0), T(0)};  // four chains over the 32 points, summed in a fixed order
#pragma unroll
        for (int m = 0; m < kWarp; m += 4) {
#pragma unroll
          for (int r = 0; r < 4; ++r) a4[r] += gj[m + r] * ai[m + r];
        }
        s.grad[A.w_off[l] + p] += (a4[0] + a4[1]) + (a4[2] + a4[3]);
        if constexpr (HVP) {
          const T* rgj = s.d2 + (A.row[l + 1] + j) * kTileStride;
          T racc = T(0);
          for (int m = 0; m < kWarp; ++m) racc += rgj[m] * ai[m];
          if (l > 0) {
            const T* rai = s.ra + (A.row[l] + i) * kTileStride;
            for (int m = 0; m < kWarp; ++m) racc += gj[m] * rai[m];
          }
          s.hv[A.w_off[l] + p] += racc;
        }
      }
      for (int j = lane; j < out; j += kWarp) {
        const T* gj = g + j * kTileStride;
        T acc = T(0);
        for (int m = 0; m < kWarp; ++m) acc += gj[m];
        s.grad[A.b_off[l] + j] += acc;
        if constexpr (HVP) {
          const T* rgj = s.d2 + (A.row[l + 1] + j) * kTileStride;
          T racc = T(0);
          for (int m = 0; m < kWarp; ++m) racc += rgj[m];
          s.hv[A.b_off[l] + j] += racc;
        }
      }
    }
    __syncwarp();
  }
  T loss = warp_sum(loss_part) * inv_n;
  if (A.wd != 0) {
    const T wd = T(A.wd);
    T sq = T(0);
    for (int i = lane; i < A.P; i += kWarp) {
      const T th = s.theta[i];
      sq += th * th;
      s.grad[i] += wd * th;
      if constexpr (HVP) s.hv[i] += wd * s.v[i];
    }
    loss += T(0.5) * wd * warp_sum(sq);
  }
  __syncwarp();
  return loss;
}

// ---- helpers of the per-flow kernels (mlp.cu, rk45.cu, train.cu) --------------------------------

// How a kernel evaluates the network: warp_eval inlined (lanes path, or with the tiled layers),
// or called (`called`: the kernels whose WarpSmem lies in global memory, Arch::global_ws). Those
// kernels are for networks too large for shared memory, where a call per evaluation is nothing;
// with warp_eval inlined at each of their evaluation sites they doubled ptxas's time for rkc.cu.
enum class EvalMode : int { lanes, tiled, called };

template <class T, bool HVP>
__device__ SADFAST_NOINLINE T warp_eval_called(const Arch& A, const T* __restrict__ X, const T* __restrict__ Y,
                                               const WarpSmem<T>& s) {
  return warp_eval<T, HVP, false>(A, X, Y, s);
}

template <class T, bool HVP, EvalMode M>
__device__ __forceinline__ T evaluate(const Arch& A, const T* __restrict__ X, const T* __restrict__ Y,
                                      const WarpSmem<T>& s) {
  if constexpr (M == EvalMode::called) {
    return warp_eval_called<T, HVP>(A, X, Y, s);
  } else {
    return warp_eval<T, HVP, M == EvalMode::tiled>(A, X, Y, s);
  }
}

// The evaluation mode of a kernel instantiation.
template <bool Tiled, bool Global>
inline constexpr EvalMode kEvalMode = Global ? EvalMode::called : Tiled ? EvalMode::tiled : EvalMode::lanes;

// This warp's slice of the block's dynamic shared memory, or (Global) of Arch::global_ws. A
// template parameter, not a runtime test: with a pointer that may be either, nvcc emits generic
// loads and stores for every WarpSmem access (in mlp.cu's PTX: 0 ld.shared instead of 1,634).
template <class T, bool Global = false>
__device__ __forceinline__ WarpSmem<T> this_warp_smem(const Arch& A, bool hvp) {
  const int warp = static_cast<int>(threadIdx.x / kWarp);
  if constexpr (Global) {
    const std::size_t gwarp = static_cast<std::size_t>(blockIdx.x) * (blockDim.x / kWarp) + warp;
    return WarpSmem<T>::carve(static_cast<T*>(A.global_ws) + gwarp * WarpSmem<T>::elems(A, hvp), A, hvp);
  } else {
#ifdef SADFAST_CUDA_EMULATION
    unsigned char* smem_raw = ::sadfast_emu::dynamic_smem();  // cuda/emulation/cuda_runtime.h
#else
    extern __shared__ unsigned char smem_raw[];
#endif
    return WarpSmem<T>::carve(reinterpret_cast<T*>(smem_raw) + warp * WarpSmem<T>::elems(A, hvp), A, hvp);
  }
}

// The next flow of a work queue over flows (a global counter): the same index on every lane.
__device__ __forceinline__ unsigned long long next_flow(unsigned long long* counter) {
  unsigned long long next = 0;
  if (lane_id() == 0) next = atomicAdd(counter, 1ull);
  return __shfl_sync(0xffffffffu, next, 0);
}

// Sum of x[i]^2 over a (P) vector spread over the lanes (entries lane, lane + 32, ...).
template <class T>
__device__ double warp_sumsq(const T* x, int P) {
  T acc = T(0);
  for (int i = static_cast<int>(lane_id()); i < P; i += kWarp) acc += x[i] * x[i];
  return static_cast<double>(warp_sum(acc));
}

}  // namespace sadfast::gpu
