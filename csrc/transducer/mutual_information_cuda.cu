// CUDA mutual-information recursion (mutual_information_cpu.cpp, line for line): one block per
// utterance walks the anti-diagonals (s - s_begin) + (t - t_begin) = n of its lattice. Every
// dependency of p(s, t) (p(s, t-1), p(s-1, t), and p(s-1, t-1) for the modified topology) lies on
// an earlier diagonal, so a diagonal's nodes are independent; the block meets at __syncthreads()
// between diagonals. The backward runs beta the same way from the end, then writes each arc's
// posterior from its own source node (one writer per gradient entry: no atomics).
#include "transducer/mutual_information_cuda.h"

namespace asr {
namespace cuda {
namespace {

// The s of the nodes on diagonal n of a lattice of ns x nt nodes (ns = s1 - s0 + 1, nt likewise),
// as offsets from s0: [lo, hi].
__device__ __forceinline__ void diagonal(int64_t n, int64_t ns, int64_t nt, int64_t& lo, int64_t& hi) {
  lo = n - (nt - 1) > 0 ? n - (nt - 1) : 0;
  hi = n < ns - 1 ? n : ns - 1;
}

template <typename scalar_t>
__global__ void __launch_bounds__(kMaxBlockThreads) mutual_information_forward_kernel(MiLattice<scalar_t> L, double* P, scalar_t* A) {
  const int64_t b = blockIdx.x, S = L.S, T = L.T, pxT = L.pxT;
  const int64_t* bd = L.boundary + 4 * b;
  const int64_t s0 = bd[0], t0 = bd[1], s1 = bd[2], t1 = bd[3];
  const scalar_t* x = L.px + b * S * pxT;
  const scalar_t* y = L.py + b * (S + 1) * T;
  double* pb = P + b * (S + 1) * (T + 1);
  const int64_t ns = s1 - s0 + 1, nt = t1 - t0 + 1;
  for (int64_t n = 0; n < ns + nt - 1; ++n) {
    int64_t lo, hi;
    diagonal(n, ns, nt, lo, hi);
    for (int64_t ds = lo + threadIdx.x; ds <= hi; ds += blockDim.x) {
      const int64_t s = s0 + ds, t = t0 + n - ds;
      double v;
      if (s == s0 && t == t0) {
        v = 0;
      } else {
        v = neg_inf<double>();
        if (t > t0) v = pb[s * (T + 1) + t - 1] + double(y[s * T + t - 1]);
        if (s > s0) {
          if (!L.modified) {
            // no symbol after the last frame
            if (t < t1) v = log_add(v, pb[(s - 1) * (T + 1) + t] + double(x[(s - 1) * pxT + t]));
          } else if (t > t0) {
            v = log_add(v, pb[(s - 1) * (T + 1) + t - 1] + double(x[(s - 1) * pxT + t - 1]));
          }
        }
      }
      pb[s * (T + 1) + t] = v;
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) A[b] = static_cast<scalar_t>(pb[s1 * (T + 1) + t1]);
}

template <typename scalar_t>
__global__ void __launch_bounds__(kMaxBlockThreads) mutual_information_backward_kernel(MiLattice<scalar_t> L, const double* P, const scalar_t* A,
                                                   const double* G, double* beta, scalar_t* GX, scalar_t* GY) {
  const int64_t b = blockIdx.x, S = L.S, T = L.T, pxT = L.pxT;
  if (!isfinite(A[b]) || G[b] == 0) return;  // the whole block: no gradient
  const int64_t* bd = L.boundary + 4 * b;
  const int64_t s0 = bd[0], t0 = bd[1], s1 = bd[2], t1 = bd[3];
  const scalar_t* x = L.px + b * S * pxT;
  const scalar_t* y = L.py + b * (S + 1) * T;
  const double* pb = P + b * (S + 1) * (T + 1);
  double* bt = beta + b * (S + 1) * (T + 1);
  scalar_t* gx = GX + b * S * pxT;
  scalar_t* gy = GY + b * (S + 1) * T;
  const int64_t ns = s1 - s0 + 1, nt = t1 - t0 + 1;
  for (int64_t n = ns + nt - 2; n >= 0; --n) {
    int64_t lo, hi;
    diagonal(n, ns, nt, lo, hi);
    for (int64_t ds = lo + threadIdx.x; ds <= hi; ds += blockDim.x) {
      const int64_t s = s0 + ds, t = t0 + n - ds;
      double v;
      if (s == s1 && t == t1) {
        v = 0;
      } else {
        v = neg_inf<double>();
        if (t < t1) v = bt[s * (T + 1) + t + 1] + double(y[s * T + t]);
        if (s < s1 && t < t1) {
          const double dst = L.modified ? bt[(s + 1) * (T + 1) + t + 1] : bt[(s + 1) * (T + 1) + t];
          v = log_add(v, dst + double(x[s * pxT + t]));
        }
      }
      bt[s * (T + 1) + t] = v;
    }
    __syncthreads();
  }
  // arc posterior = exp(alpha(src) + arc + beta(dst) - total), total in float64 (not the rounded ans)
  const double tot = pb[s1 * (T + 1) + t1];
  for (int64_t i = threadIdx.x; i < ns * nt; i += blockDim.x) {
    const int64_t s = s0 + i / nt, t = t0 + i % nt;
    const double head = pb[s * (T + 1) + t] - tot;
    if (head == neg_inf<double>()) continue;
    if (t < t1) gy[s * T + t] = static_cast<scalar_t>(G[b] * exp(head + double(y[s * T + t]) + bt[s * (T + 1) + t + 1]));
    if (s < s1 && t < t1) {
      const double dst = L.modified ? bt[(s + 1) * (T + 1) + t + 1] : bt[(s + 1) * (T + 1) + t];
      gx[s * pxT + t] = static_cast<scalar_t>(G[b] * exp(head + double(x[s * pxT + t]) + dst));
    }
  }
}

}  // namespace

// Threads: a diagonal has at most S + 1 nodes (one per symbol position).
template <typename scalar_t>
cudaError_t mutual_information_forward_launch(const MiLattice<scalar_t>& L, double* p, scalar_t* ans,
                                              cudaStream_t stream) {
  if (L.B == 0) return cudaSuccess;
  mutual_information_forward_kernel<<<L.B, block_threads(L.S + 1), 0, stream>>>(L, p, ans);
  return cudaGetLastError();
}

template <typename scalar_t>
cudaError_t mutual_information_backward_launch(const MiLattice<scalar_t>& L, const double* p, const scalar_t* ans,
                                               const double* ans_grad, double* beta, scalar_t* px_grad,
                                               scalar_t* py_grad, cudaStream_t stream) {
  if (L.B == 0) return cudaSuccess;
  mutual_information_backward_kernel<<<L.B, block_threads(L.S + 1), 0, stream>>>(L, p, ans, ans_grad, beta,
                                                                                px_grad, py_grad);
  return cudaGetLastError();
}

#define ASR_INSTANTIATE(scalar_t)                                                                                 \
  template cudaError_t mutual_information_forward_launch<scalar_t>(const MiLattice<scalar_t>&, double*, scalar_t*, \
                                                                   cudaStream_t);                                \
  template cudaError_t mutual_information_backward_launch<scalar_t>(const MiLattice<scalar_t>&, const double*,    \
                                                                    const scalar_t*, const double*, double*,      \
                                                                    scalar_t*, scalar_t*, cudaStream_t);
ASR_INSTANTIATE(float)
ASR_INSTANTIATE(double)
#undef ASR_INSTANTIATE

}  // namespace cuda
}  // namespace asr
