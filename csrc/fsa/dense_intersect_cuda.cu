// CUDA dense intersection (dense_intersect_cpu.cpp, line for line): one block per utterance walks
// its frames; within a frame the block's threads share the graph's states, and meet at
// __syncthreads() before the next frame (every frame-consuming arc goes from frame t to t + 1, so
// the states of one frame are independent).
// Forward: each state pulls over its incoming arcs (in_arcs, the CPU's order): the max, then the
// log-sum (or, for Viterbi, the first best arc as back-pointer). Backward: each state computes its
// beta and the posteriors of its outgoing arcs into a scratch row; then each label group (the
// arcs reading one label) sums its posteriors in arc order into the gradient: one writer per
// gradient entry, no atomics, and the CPU's order of summation.
#include "fsa/dense_intersect_cuda.h"

namespace asr {
namespace cuda {
namespace {

// scores[a] + log_probs[b, t, label] (+ arc_extra[a] * frame_extra[b, t]), as arc_weight on the CPU
template <typename scalar_t>
__device__ __forceinline__ scalar_t arc_weight(const FsaGraphs& G, const DenseFrames<scalar_t>& D,
                                               const scalar_t* lp_t, const scalar_t* fx_t, int64_t a) {
  scalar_t w = static_cast<scalar_t>(G.scores[a]) + lp_t[G.arcs[4 * a + 2]];
  if (D.arc_extra != nullptr) w += mul_rn(static_cast<scalar_t>(D.arc_extra[a]), *fx_t);
  return w;
}

template <typename scalar_t>
__global__ void __launch_bounds__(kMaxBlockThreads) dense_intersect_forward_kernel(FsaGraphs G, DenseFrames<scalar_t> D, bool viterbi, scalar_t* al,
                                               scalar_t* tot, int32_t* back_all, int64_t* bp_out) {
  const scalar_t NEG = neg_inf<scalar_t>();
  const int64_t b = blockIdx.x, g = D.gi[b], S = G.num_states[g], so = G.state_off[g];
  const int64_t a0 = G.arc_off[g], a1 = G.arc_off[g + 1], Tb = D.len[b];
  scalar_t* A = al + D.aoff[b];  // [Tb+1, S]
  int32_t* back = viterbi ? back_all + D.aoff[b] : nullptr;
  for (int64_t s = threadIdx.x; s < S; s += blockDim.x) A[s] = s == 0 ? scalar_t(0) : NEG;
  __syncthreads();
  for (int64_t t = 0; t < Tb; ++t) {
    const scalar_t* lp_t = D.lp + (b * D.T + t) * D.V;
    const scalar_t* fx_t = D.frame_extra != nullptr ? D.frame_extra + b * D.T + t : nullptr;
    const scalar_t* prev = A + t * S;
    scalar_t* cur = A + (t + 1) * S;
    for (int64_t s = threadIdx.x; s < S; s += blockDim.x) {
      const int64_t k0 = G.in_first[so + s], k1 = G.in_first[so + s + 1];
      scalar_t m = NEG;
      int64_t arg = -1;
      for (int64_t k = k0; k < k1; ++k) {
        const int64_t a = G.in_arcs[k];
        const scalar_t x = prev[G.arcs[4 * a]] + arc_weight(G, D, lp_t, fx_t, a);
        if (x > m) {
          m = x;
          arg = a;
        }
      }
      if (viterbi || m == NEG) {
        cur[s] = m;
        if (viterbi) back[(t + 1) * S + s] = static_cast<int32_t>(arg);
        continue;
      }
      scalar_t sum = 0;
      for (int64_t k = k0; k < k1; ++k) {
        const int64_t a = G.in_arcs[k];
        sum += exp(prev[G.arcs[4 * a]] + arc_weight(G, D, lp_t, fx_t, a) - m);
      }
      cur[s] = m + log(sum);
    }
    __syncthreads();
  }
  if (threadIdx.x != 0) return;
  // arcs into the final state, after the last frame
  const scalar_t* last = A + Tb * S;
  scalar_t m = NEG;
  int64_t arg = -1;
  for (int64_t a = a0; a < a1; ++a)
    if (G.arcs[4 * a + 2] == -1) {
      const scalar_t x = last[G.arcs[4 * a]] + static_cast<scalar_t>(G.scores[a]);
      if (x > m) {
        m = x;
        arg = a;
      }
    }
  if (viterbi || m == NEG) {
    tot[b] = m;
  } else {
    scalar_t sum = 0;
    for (int64_t a = a0; a < a1; ++a)
      if (G.arcs[4 * a + 2] == -1) sum += exp(last[G.arcs[4 * a]] + static_cast<scalar_t>(G.scores[a]) - m);
    tot[b] = m + log(sum);
  }
  if (viterbi && m != NEG) {  // backtrack from the best final arc
    int64_t s = G.arcs[4 * arg];
    for (int64_t t = Tb; t >= 1; --t) {
      const int32_t a = back[t * S + s];
      bp_out[b * D.T + t - 1] = a;
      s = G.arcs[4 * a];
    }
  }
}

template <typename scalar_t>
__global__ void __launch_bounds__(kMaxBlockThreads) dense_intersect_backward_kernel(FsaGraphs G, DenseFrames<scalar_t> D, const scalar_t* al,
                                                const scalar_t* tot, const scalar_t* gt, const int64_t* boff,
                                                const int64_t* poff, scalar_t* beta_all, scalar_t* post_all,
                                                scalar_t* gr) {
  const scalar_t NEG = neg_inf<scalar_t>();
  const int64_t b = blockIdx.x;
  if (!isfinite(tot[b]) || gt[b] == 0) return;  // the whole block: no gradient
  const int64_t g = D.gi[b], S = G.num_states[g], so = G.state_off[g], a0 = G.arc_off[g], Tb = D.len[b];
  const scalar_t* A = al + D.aoff[b];
  scalar_t* next = beta_all + boff[b];  // beta of frame t + 1 ...
  scalar_t* cur = next + S;             // ... and of frame t
  scalar_t* post = post_all + poff[b];  // posterior of arc a at the current frame: post[a - a0]
  // beta after the last frame: the final arcs
  for (int64_t s = threadIdx.x; s < S; s += blockDim.x) {
    scalar_t v = NEG;
    for (int64_t a = G.out_first[so + s]; a < G.out_first[so + s + 1]; ++a)
      if (G.arcs[4 * a + 2] == -1) {
        const scalar_t x = static_cast<scalar_t>(G.scores[a]);
        v = v == NEG ? x : max(v, x) + log1p(exp(-abs(v - x)));
      }
    next[s] = v;
  }
  __syncthreads();
  const scalar_t Z = tot[b], scale = gt[b];
  for (int64_t t = Tb - 1; t >= 0; --t) {
    const scalar_t* lp_t = D.lp + (b * D.T + t) * D.V;
    const scalar_t* fx_t = D.frame_extra != nullptr ? D.frame_extra + b * D.T + t : nullptr;
    const scalar_t* A_t = A + t * S;
    scalar_t* g_t = gr + (b * D.T + t) * D.V;
    for (int64_t s = threadIdx.x; s < S; s += blockDim.x) {
      const int64_t o0 = G.out_first[so + s], o1 = G.out_first[so + s + 1];
      scalar_t m = NEG;
      for (int64_t a = o0; a < o1; ++a) {
        if (G.arcs[4 * a + 2] < 0) continue;
        const scalar_t x = arc_weight(G, D, lp_t, fx_t, a) + next[G.arcs[4 * a + 1]];
        if (x > m) m = x;
      }
      if (m == NEG) {  // no way on from s: its arcs have no posterior mass
        cur[s] = NEG;
        for (int64_t a = o0; a < o1; ++a) post[a - a0] = 0;
        continue;
      }
      scalar_t sum = 0;
      const scalar_t from = A_t[s] - Z;
      for (int64_t a = o0; a < o1; ++a) {
        if (G.arcs[4 * a + 2] < 0) continue;
        const scalar_t x = arc_weight(G, D, lp_t, fx_t, a) + next[G.arcs[4 * a + 1]];
        sum += exp(x - m);
        post[a - a0] = A_t[s] != NEG ? scale * exp(from + x) : scalar_t(0);
      }
      cur[s] = m + log(sum);
    }
    __syncthreads();  // all posteriors of frame t written
    for (int64_t j = G.grp_off[g] + threadIdx.x; j < G.grp_off[g + 1]; j += blockDim.x) {
      scalar_t acc = 0;
      for (int64_t k = G.grp_first[j]; k < G.grp_first[j + 1]; ++k) acc += post[G.grp_arcs[k] - a0];
      g_t[G.grp_label[j]] = acc;
    }
    __syncthreads();  // posteriors read and beta of frame t complete before they are overwritten
    scalar_t* tmp = next;
    next = cur;
    cur = tmp;
  }
}

}  // namespace

template <typename scalar_t>
cudaError_t dense_intersect_forward_launch(const FsaGraphs& G, const DenseFrames<scalar_t>& D, bool viterbi,
                                           scalar_t* alpha, scalar_t* total, int32_t* back, int64_t* best,
                                           unsigned threads, cudaStream_t stream) {
  if (D.B == 0) return cudaSuccess;
  dense_intersect_forward_kernel<<<D.B, threads, 0, stream>>>(G, D, viterbi, alpha, total, back, best);
  return cudaGetLastError();
}

template <typename scalar_t>
cudaError_t dense_intersect_backward_launch(const FsaGraphs& G, const DenseFrames<scalar_t>& D,
                                            const scalar_t* alpha, const scalar_t* total,
                                            const scalar_t* grad_total, const int64_t* boff, const int64_t* poff,
                                            scalar_t* beta, scalar_t* post, scalar_t* grad, unsigned threads,
                                            cudaStream_t stream) {
  if (D.B == 0) return cudaSuccess;
  dense_intersect_backward_kernel<<<D.B, threads, 0, stream>>>(G, D, alpha, total, grad_total, boff, poff, beta,
                                                               post, grad);
  return cudaGetLastError();
}

#define ASR_INSTANTIATE(scalar_t)                                                                                 \
  template cudaError_t dense_intersect_forward_launch<scalar_t>(const FsaGraphs&, const DenseFrames<scalar_t>&,  \
                                                                bool, scalar_t*, scalar_t*, int32_t*, int64_t*,  \
                                                                unsigned, cudaStream_t);                         \
  template cudaError_t dense_intersect_backward_launch<scalar_t>(                                                \
      const FsaGraphs&, const DenseFrames<scalar_t>&, const scalar_t*, const scalar_t*, const scalar_t*,        \
      const int64_t*, const int64_t*, scalar_t*, scalar_t*, scalar_t*, unsigned, cudaStream_t);
ASR_INSTANTIATE(float)
ASR_INSTANTIATE(double)
#undef ASR_INSTANTIATE

}  // namespace cuda
}  // namespace asr
