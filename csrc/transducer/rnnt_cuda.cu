// CUDA kernels of the full RNN-T loss lattice: the recursions of rnnt_cpu.cpp, line for line.
//
// alpha and beta: one block per utterance (and per direction: blockIdx.y 0 is alpha, 1 is beta),
// walking the anti-diagonals t + u = n of the (t, u) lattice. Every node of a diagonal depends
// only on the diagonal before (after, for beta), so the block's threads share a diagonal's nodes
// and meet at __syncthreads() before the next; the diagonal is at most U_b + 1 nodes long.
// Occupancies and arc posteriors: one thread per lattice node. Each node owns its logits row
// (rows of different nodes never coincide), so the gradient needs no atomics and the two
// subtractions of a row happen in the CPU's order.
#include "transducer/rnnt_cuda.h"

namespace asr {
namespace cuda {
namespace {

// alpha[b, t, u] for t < T_b, u <= U_b in the semiring S (rnnt_alpha in rnnt_cpu.cpp).
// Called by all threads of the block; returns after a __syncthreads(), alpha complete.
template <typename S, typename scalar_t>
__device__ void rnnt_alpha(const RnntLattice<scalar_t>& L, int64_t b, double* a) {
  const int64_t T = L.T[b], U = L.U[b];
  for (int64_t n = 0; n < T + U; ++n) {  // the nodes with t + u = n, t < T, u <= U
    const int64_t u_lo = n - (T - 1) > 0 ? n - (T - 1) : 0, u_hi = n < U ? n : U;
    for (int64_t u = u_lo + threadIdx.x; u <= u_hi; u += blockDim.x) {
      const int64_t t = n - u;
      double v;
      if (t == 0 && u == 0) {
        v = 0;
      } else {
        v = neg_inf<double>();
        if (t > 0) v = a[L.node(b, t - 1, u)] + L.lp_blank(b, t - 1, u);
        if (u > 0) v = S::plus(v, a[L.node(b, t, u - 1)] + L.lp_emit(b, t, u - 1));
      }
      a[L.node(b, t, u)] = v;
    }
    __syncthreads();
  }
}

// beta[b, t, u]: log-prob of finishing from (t, u), the final blank from (T-1, U) included.
template <typename scalar_t>
__device__ void rnnt_beta(const RnntLattice<scalar_t>& L, int64_t b, double* be) {
  const int64_t T = L.T[b], U = L.U[b];
  for (int64_t n = T - 1 + U; n >= 0; --n) {
    const int64_t u_lo = n - (T - 1) > 0 ? n - (T - 1) : 0, u_hi = n < U ? n : U;
    for (int64_t u = u_lo + threadIdx.x; u <= u_hi; u += blockDim.x) {
      const int64_t t = n - u;
      double v;
      if (t == T - 1 && u == U) {
        v = L.lp_blank(b, t, u);  // the final blank ends the sequence
      } else {
        v = neg_inf<double>();
        if (t < T - 1) v = be[L.node(b, t + 1, u)] + L.lp_blank(b, t, u);
        if (u < U) v = log_add(v, be[L.node(b, t, u + 1)] + L.lp_emit(b, t, u));
      }
      be[L.node(b, t, u)] = v;
    }
    __syncthreads();
  }
}

// grid (B, 2): blockIdx.y 0 computes alpha, 1 beta and the loss.
template <typename scalar_t>
__global__ void __launch_bounds__(kMaxBlockThreads) rnnt_forward_kernel(RnntLattice<scalar_t> L, double* alpha, double* beta, scalar_t* loss) {
  const int64_t b = blockIdx.x;
  if (L.T[b] == 0) {  // no alignment: loss +inf, alpha and beta stay -inf
    if (blockIdx.y == 1 && threadIdx.x == 0) loss[b] = pos_inf<scalar_t>();
    return;
  }
  if (blockIdx.y == 0) {
    rnnt_alpha<LogSemiring>(L, b, alpha);
  } else {
    rnnt_beta(L, b, beta);
    if (threadIdx.x == 0) loss[b] = static_cast<scalar_t>(-beta[L.node(b, 0, 0)]);
  }
}

// The node (b, t, u) of flat index i over [B, max_t, max_u+1]; false outside utterance b's lattice.
template <typename scalar_t>
__device__ bool lattice_node(const RnntLattice<scalar_t>& L, int64_t i, int64_t& b, int64_t& t, int64_t& u) {
  const int64_t w = L.max_u + 1;
  b = i / (L.max_t * w);
  t = (i / w) % L.max_t;
  u = i % w;
  return t < L.T[b] && u <= L.U[b];
}

template <typename scalar_t>
__global__ void __launch_bounds__(kElementwiseThreads) rnnt_log_occupancy_kernel(RnntLattice<scalar_t> L, const double* a, const double* be,
                                          const scalar_t* l, const double* s, scalar_t* o) {
  const int64_t n = L.B * L.max_t * (L.max_u + 1);
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    int64_t b, t, u;
    if (!lattice_node(L, i, b, t, u)) continue;
    if (!isfinite(l[b]) || s[b] <= 0) continue;
    // occupancy = exp(alpha + beta - log P), log P = beta[b, 0, 0] in float64 (not the rounded loss)
    const double shift = log(s[b]) - be[L.node(b, 0, 0)];
    o[L.row(b, t, u)] = static_cast<scalar_t>(a[L.node(b, t, u)] + be[L.node(b, t, u)] + shift);
  }
}

template <typename scalar_t>
__global__ void __launch_bounds__(kElementwiseThreads) rnnt_subtract_arc_posteriors_kernel(RnntLattice<scalar_t> L, const double* a, const double* be,
                                                    const scalar_t* l, const double* s, scalar_t* g) {
  const int64_t n = L.B * L.max_t * (L.max_u + 1);
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    int64_t b, t, u;
    if (!lattice_node(L, i, b, t, u)) continue;
    if (!isfinite(l[b]) || s[b] == 0) continue;
    const int64_t T = L.T[b], U = L.U[b], r = L.row(b, t, u), V = L.V;
    const scalar_t* xr = L.x + r * V;
    const double log_p = be[L.node(b, 0, 0)];  // float64, not the rounded loss
    // arc posterior = exp(alpha(t, u) + lp(arc) + beta(dst) - log P)
    const double head = a[L.node(b, t, u)] - double(L.den[r]) - log_p;
    const double beta_next_blank = t + 1 < T ? be[L.node(b, t + 1, u)] : (u == U ? 0.0 : neg_inf<double>());
    g[r * V + L.blank] -= static_cast<scalar_t>(s[b] * exp(head + double(xr[L.blank]) + beta_next_blank));
    if (u < U) {
      const int64_t y = L.label(b, u);
      g[r * V + y] -= static_cast<scalar_t>(s[b] * exp(head + double(xr[y]) + be[L.node(b, t, u + 1)]));
    }
  }
}

// One block per utterance: the max-semiring alpha, then thread 0 backtracks (rnnt_viterbi_cpu).
template <typename scalar_t>
__global__ void __launch_bounds__(kMaxBlockThreads) rnnt_viterbi_kernel(RnntLattice<scalar_t> L, double* a, double* sc, int64_t* out) {
  const int64_t b = blockIdx.x, T = L.T[b], U = L.U[b];
  if (T == 0) return;  // no path: score -inf, no arcs
  rnnt_alpha<MaxSemiring>(L, b, a);
  if (threadIdx.x != 0) return;
  sc[b] = a[L.node(b, T - 1, U)] + L.lp_blank(b, T - 1, U);
  // Backtrack from the final blank; arc k of the T + U arcs goes to out[b, k]. Both incoming
  // arcs' scores are recomputed exactly as the recursion did; a tie goes to the blank.
  int64_t k = T + U - 1, t = T - 1, u = U;
  auto put = [&](int64_t tt, int64_t uu, int64_t token) {
    int64_t* o = out + (b * (L.max_t + L.max_u) + k--) * 3;
    o[0] = tt, o[1] = uu, o[2] = token;
  };
  put(t, u, L.blank);
  while (t > 0 || u > 0) {
    const double via_blank = t > 0 ? a[L.node(b, t - 1, u)] + L.lp_blank(b, t - 1, u) : neg_inf<double>();
    const double via_label = u > 0 ? a[L.node(b, t, u - 1)] + L.lp_emit(b, t, u - 1) : neg_inf<double>();
    if (t > 0 && (u == 0 || via_blank >= via_label)) {
      --t;
      put(t, u, L.blank);
    } else {
      --u;
      put(t, u, L.label(b, u));
    }
  }
}

}  // namespace

template <typename scalar_t>
cudaError_t rnnt_forward_launch(const RnntLattice<scalar_t>& L, double* alpha, double* beta, scalar_t* loss,
                                cudaStream_t stream) {
  if (L.B == 0) return cudaSuccess;
  rnnt_forward_kernel<<<dim3(L.B, 2), block_threads(L.max_u + 1), 0, stream>>>(L, alpha, beta, loss);
  return cudaGetLastError();
}

template <typename scalar_t>
cudaError_t rnnt_log_occupancy_launch(const RnntLattice<scalar_t>& L, const double* alpha, const double* beta,
                                      const scalar_t* loss, const double* scale, scalar_t* out,
                                      cudaStream_t stream) {
  const int64_t n = L.B * L.max_t * (L.max_u + 1);
  if (n == 0) return cudaSuccess;
  rnnt_log_occupancy_kernel<<<grid_blocks(n, kElementwiseThreads), kElementwiseThreads, 0, stream>>>(
      L, alpha, beta, loss, scale, out);
  return cudaGetLastError();
}

template <typename scalar_t>
cudaError_t rnnt_subtract_arc_posteriors_launch(const RnntLattice<scalar_t>& L, const double* alpha,
                                                const double* beta, const scalar_t* loss, const double* scale,
                                                scalar_t* grad, cudaStream_t stream) {
  const int64_t n = L.B * L.max_t * (L.max_u + 1);
  if (n == 0) return cudaSuccess;
  rnnt_subtract_arc_posteriors_kernel<<<grid_blocks(n, kElementwiseThreads), kElementwiseThreads, 0, stream>>>(
      L, alpha, beta, loss, scale, grad);
  return cudaGetLastError();
}

template <typename scalar_t>
cudaError_t rnnt_viterbi_launch(const RnntLattice<scalar_t>& L, double* alpha, double* score, int64_t* arcs,
                                cudaStream_t stream) {
  if (L.B == 0) return cudaSuccess;
  rnnt_viterbi_kernel<<<L.B, block_threads(L.max_u + 1), 0, stream>>>(L, alpha, score, arcs);
  return cudaGetLastError();
}

#define ASR_INSTANTIATE(scalar_t)                                                                                  \
  template cudaError_t rnnt_forward_launch<scalar_t>(const RnntLattice<scalar_t>&, double*, double*, scalar_t*,   \
                                                     cudaStream_t);                                               \
  template cudaError_t rnnt_log_occupancy_launch<scalar_t>(const RnntLattice<scalar_t>&, const double*,          \
                                                           const double*, const scalar_t*, const double*,         \
                                                           scalar_t*, cudaStream_t);                              \
  template cudaError_t rnnt_subtract_arc_posteriors_launch<scalar_t>(const RnntLattice<scalar_t>&, const double*, \
                                                                     const double*, const scalar_t*,              \
                                                                     const double*, scalar_t*, cudaStream_t);     \
  template cudaError_t rnnt_viterbi_launch<scalar_t>(const RnntLattice<scalar_t>&, double*, double*, int64_t*,    \
                                                     cudaStream_t);
ASR_INSTANTIATE(float)
ASR_INSTANTIATE(double)
#undef ASR_INSTANTIATE

}  // namespace cuda
}  // namespace asr
