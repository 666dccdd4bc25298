// CUDA kernels of the TDT lattice (tdt_cpu.cpp, line for line).
//
// Every arc advances t + u by at least one (a label with duration 0 moves u only), so the
// anti-diagonals t + u = n order the lattice: one block per utterance (and per direction for the
// forward: blockIdx.y 0 is alpha, 1 is beta) walks them, its threads sharing a diagonal's nodes.
// The CPU pushes alpha forward along the arcs; here each node pulls over the arcs that enter it
// (the same arcs: see arcs_into of tdt_cpu.cpp), which needs no atomics. Beta pulls from its
// successors on both. The arc posteriors: one thread per node, which owns its logits row.
#include "transducer/tdt_cuda.h"

namespace asr {
namespace cuda {
namespace {

// alpha[b, t, u] in the semiring S over the paths from (0, 0); alpha holds -inf. All threads of the
// block call it; it returns after a __syncthreads(), alpha complete.
template <typename S, typename scalar_t>
__device__ void tdt_alpha(const TdtLattice<scalar_t>& L, int64_t b, double* a) {
  const int64_t T = L.T[b], U = L.U[b];
  if (threadIdx.x == 0) a[L.node(b, 0, 0)] = 0;
  __syncthreads();
  for (int64_t n = 1; n <= T + U; ++n) {  // nodes t + u = n, t <= T, u <= U
    const int64_t u_lo = n - T > 0 ? n - T : 0, u_hi = n < U ? n : U;
    for (int64_t u = u_lo + threadIdx.x; u <= u_hi; u += blockDim.x) {
      const int64_t t = n - u;
      double v = neg_inf<double>();
      // the arcs into (t, u), as the CPU pushes them: blank (t-d, u) -> (t, u) with d > 0 and
      // t <= T; label y_u (t-d, u-1) -> (t, u) with t <= T-1. Sources have t - d < T.
      for (int64_t i = 0; i < L.D; ++i) {
        const int64_t d = L.dur[i];
        if (d > 0 && t - d >= 0 && t <= T) {
          const double src = a[L.node(b, t - d, u)];
          if (src != neg_inf<double>()) {
            const int64_t r = L.row(b, t - d, u);
            v = S::plus(v, src + L.lp_tok(r, L.blank) + L.lp_dur(r, i));
          }
        }
        if (u > 0 && t - d >= 0 && t <= T - 1) {
          const double src = a[L.node(b, t - d, u - 1)];
          if (src != neg_inf<double>()) {
            const int64_t r = L.row(b, t - d, u - 1);
            v = S::plus(v, src + L.lp_tok(r, L.label(b, u - 1)) + L.lp_dur(r, i));
          }
        }
      }
      a[L.node(b, t, u)] = v;
    }
    __syncthreads();
  }
}

// beta[b, t, u]: log-sum over the paths from (t, u) to (T, U), pulled from the successors in the
// order of the CPU's arcs() (so the sums round alike). beta holds -inf.
template <typename scalar_t>
__device__ void tdt_beta(const TdtLattice<scalar_t>& L, int64_t b, double* be) {
  const int64_t T = L.T[b], U = L.U[b];
  if (threadIdx.x == 0) be[L.node(b, T, U)] = 0;
  __syncthreads();
  for (int64_t n = T - 1 + U; n >= 0; --n) {  // nodes t + u = n, t < T, u <= U
    const int64_t u_lo = n - (T - 1) > 0 ? n - (T - 1) : 0, u_hi = n < U ? n : U;
    for (int64_t u = u_lo + threadIdx.x; u <= u_hi; u += blockDim.x) {
      const int64_t t = n - u, r = L.row(b, t, u);
      double v = neg_inf<double>();
      for (int64_t i = 0; i < L.D; ++i) {
        const int64_t d = L.dur[i];
        if (d > 0 && t + d <= T) v = log_add(v, be[L.node(b, t + d, u)] + L.lp_tok(r, L.blank) + L.lp_dur(r, i));
        if (u < U && t + d <= T - 1)
          v = log_add(v, be[L.node(b, t + d, u + 1)] + L.lp_tok(r, L.label(b, u)) + L.lp_dur(r, i));
      }
      be[L.node(b, t, u)] = v;
    }
    __syncthreads();
  }
}

template <typename scalar_t>
__global__ void __launch_bounds__(kMaxBlockThreads) tdt_forward_kernel(TdtLattice<scalar_t> L, double* alpha, double* beta, scalar_t* loss) {
  const int64_t b = blockIdx.x, T = L.T[b], U = L.U[b];
  if (blockIdx.y == 0) {
    tdt_alpha<LogSemiring>(L, b, alpha);
    if (threadIdx.x == 0)
      loss[b] = T > 0 ? static_cast<scalar_t>(-alpha[L.node(b, T, U)]) : pos_inf<scalar_t>();
  } else {
    tdt_beta(L, b, beta);
  }
}

template <typename scalar_t>
__global__ void __launch_bounds__(kElementwiseThreads) tdt_subtract_arc_posteriors_kernel(TdtLattice<scalar_t> L, const double* a, const double* be,
                                                   const scalar_t* l, const double* s, scalar_t* g) {
  const int64_t w = L.max_u + 1, n = L.B * L.max_t * w;
  for (int64_t idx = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; idx < n;
       idx += int64_t(gridDim.x) * blockDim.x) {
    const int64_t b = idx / (L.max_t * w), t = (idx / w) % L.max_t, u = idx % w;
    const int64_t T = L.T[b], U = L.U[b];
    if (t >= T || u > U) continue;
    if (!isfinite(l[b]) || s[b] == 0) continue;
    // log P in float64 from beta (the log_occupancy kernel uses the same), not the rounded loss
    const double head = a[L.node(b, t, u)] - be[L.node(b, 0, 0)];
    if (head == neg_inf<double>()) continue;
    const int64_t r = L.row(b, t, u);
    for (int64_t i = 0; i < L.D; ++i) {  // the arcs of (t, u) in the CPU's order
      const int64_t d = L.dur[i];
      if (d > 0 && t + d <= T) {
        const scalar_t post = static_cast<scalar_t>(
            s[b] * exp(head + L.lp_tok(r, L.blank) + L.lp_dur(r, i) + be[L.node(b, t + d, u)]));
        g[r * L.W + L.blank] -= post;
        g[r * L.W + L.V + i] -= post;
      }
      if (u < U && t + d <= T - 1) {
        const int64_t k = L.label(b, u);
        const scalar_t post =
            static_cast<scalar_t>(s[b] * exp(head + L.lp_tok(r, k) + L.lp_dur(r, i) + be[L.node(b, t + d, u + 1)]));
        g[r * L.W + k] -= post;
        g[r * L.W + L.V + i] -= post;
      }
    }
  }
}

// One block per utterance: the max-semiring alpha, then thread 0 backtracks (tdt_viterbi_cpu).
template <typename scalar_t>
__global__ void __launch_bounds__(kMaxBlockThreads) tdt_viterbi_kernel(TdtLattice<scalar_t> L, double* a, double* sc, int64_t* out) {
  const int64_t b = blockIdx.x, T = L.T[b], U = L.U[b];
  if (T == 0) return;  // no path: score -inf, no arcs
  tdt_alpha<MaxSemiring>(L, b, a);
  if (threadIdx.x != 0) return;
  sc[b] = a[L.node(b, T, U)];
  if (sc[b] == neg_inf<double>()) return;  // too few frames for the labels
  // Backtrack from (T, U): each step recomputes the score of every arc into the node exactly as
  // the recursion did and follows the best one; ties go to the first in arcs_into's order (blank
  // arcs, then label arcs, each in the order of the durations). The path is written backwards
  // from out[b, 0] and then reversed in place; it has at most T + U arcs.
  int64_t* o = out + b * (L.max_t + L.max_u) * 4;
  int64_t n = 0, t = T, u = U;
  while (t > 0 || u > 0) {
    double best = neg_inf<double>();
    int64_t arc[4] = {-1, -1, -1, -1};
    auto consider = [&](int64_t k, int64_t i, int64_t t1, int64_t u1) {
      const double src = a[L.node(b, t1, u1)];
      if (src == neg_inf<double>()) return;
      const int64_t r = L.row(b, t1, u1);
      const double v = src + L.lp_tok(r, k) + L.lp_dur(r, i);
      if (arc[0] < 0 || v > best) best = v, arc[0] = t1, arc[1] = u1, arc[2] = k, arc[3] = i;
    };
    for (int64_t i = 0; i < L.D; ++i) {
      const int64_t d = L.dur[i];
      if (d > 0 && t - d >= 0 && t <= T) consider(L.blank, i, t - d, u);
    }
    for (int64_t i = 0; i < L.D; ++i) {
      const int64_t d = L.dur[i];
      if (u > 0 && t - d >= 0 && t <= T - 1) consider(L.label(b, u - 1), i, t - d, u - 1);
    }
    if (arc[0] < 0) break;  // unreachable while alpha(t, u) is finite; never loop forever
    for (int j = 0; j < 4; ++j) o[4 * n + j] = arc[j];
    ++n;
    t = arc[0], u = arc[1];
  }
  for (int64_t i = 0, j = n - 1; i < j; ++i, --j)
    for (int k = 0; k < 4; ++k) {
      const int64_t tmp = o[4 * i + k];
      o[4 * i + k] = o[4 * j + k];
      o[4 * j + k] = tmp;
    }
}

}  // namespace

template <typename scalar_t>
cudaError_t tdt_forward_launch(const TdtLattice<scalar_t>& L, double* alpha, double* beta, scalar_t* loss,
                               cudaStream_t stream) {
  if (L.B == 0) return cudaSuccess;
  tdt_forward_kernel<<<dim3(L.B, 2), block_threads(L.max_u + 1), 0, stream>>>(L, alpha, beta, loss);
  return cudaGetLastError();
}

template <typename scalar_t>
cudaError_t tdt_subtract_arc_posteriors_launch(const TdtLattice<scalar_t>& L, const double* alpha,
                                               const double* beta, const scalar_t* loss, const double* scale,
                                               scalar_t* grad, cudaStream_t stream) {
  const int64_t n = L.B * L.max_t * (L.max_u + 1);
  if (n == 0) return cudaSuccess;
  tdt_subtract_arc_posteriors_kernel<<<grid_blocks(n, kElementwiseThreads), kElementwiseThreads, 0, stream>>>(
      L, alpha, beta, loss, scale, grad);
  return cudaGetLastError();
}

template <typename scalar_t>
cudaError_t tdt_viterbi_launch(const TdtLattice<scalar_t>& L, double* alpha, double* score, int64_t* arcs,
                               cudaStream_t stream) {
  if (L.B == 0) return cudaSuccess;
  tdt_viterbi_kernel<<<L.B, block_threads(L.max_u + 1), 0, stream>>>(L, alpha, score, arcs);
  return cudaGetLastError();
}

#define ASR_INSTANTIATE(scalar_t)                                                                                  \
  template cudaError_t tdt_forward_launch<scalar_t>(const TdtLattice<scalar_t>&, double*, double*, scalar_t*,     \
                                                    cudaStream_t);                                                \
  template cudaError_t tdt_subtract_arc_posteriors_launch<scalar_t>(const TdtLattice<scalar_t>&, const double*,   \
                                                                    const double*, const scalar_t*,               \
                                                                    const double*, scalar_t*, cudaStream_t);      \
  template cudaError_t tdt_viterbi_launch<scalar_t>(const TdtLattice<scalar_t>&, double*, double*, int64_t*,      \
                                                    cudaStream_t);
ASR_INSTANTIATE(float)
ASR_INSTANTIATE(double)
#undef ASR_INSTANTIATE

}  // namespace cuda
}  // namespace asr
