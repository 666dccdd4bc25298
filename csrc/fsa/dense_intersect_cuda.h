// Launchers of the dense-intersection kernels (dense_intersect_cuda.cu), without torch headers.
// The torch-facing ops are in dense_intersect_cuda_host.cpp; the contracts are those of fsa.h and
// dense_intersect_cpu.cpp.
#pragma once
#include "cuda_utils.h"

namespace asr {
namespace cuda {

// The graphs on the device with the indexes the kernels walk, built on the host per call
// (dense_intersect_cuda_host.cpp). States of graph g are numbered globally from state_off[g].
struct FsaGraphs {
  const int32_t* arcs;       // [A, 4]: src, dst, label, aux_label (states local to the graph)
  const float* scores;       // [A]
  const int64_t* arc_off;    // [N+1]
  const int64_t* num_states; // [N]
  const int64_t* state_off;  // [N+1]
  // forward: the frame-consuming arcs into global state k are in_arcs[in_first[k] .. in_first[k+1]),
  // in increasing arc order (the order of the CPU's in_arcs)
  const int64_t* in_first;
  const int64_t* in_arcs;
  // backward: the arcs leaving global state k are out_first[k] .. out_first[k+1] (arcs are sorted
  // by source); the frame-consuming arcs of graph g grouped by label: groups grp_off[g] ..
  // grp_off[g+1], group j reads label grp_label[j] and holds grp_arcs[grp_first[j] .. grp_first[j+1]),
  // in increasing arc order (the order in which the CPU adds their posteriors)
  const int64_t* out_first;
  const int64_t* grp_off;
  const int64_t* grp_label;
  const int64_t* grp_first;
  const int64_t* grp_arcs;
};

// The dense side: log_probs [B, T, V], frames per utterance, and the optional extra scores.
template <typename scalar_t>
struct DenseFrames {
  const scalar_t* lp;
  const int64_t* gi;          // graph_index [B]
  const int64_t* len;         // lengths [B]
  const int64_t* aoff;        // alpha_offsets [B+1]: alpha of b is [len[b] + 1, S_b] from aoff[b]
  const float* arc_extra;     // [A] or null
  const scalar_t* frame_extra;  // [B, T] or null
  int64_t B, T, V;
};

// alpha [aoff[B]], total [B]. With viterbi: back [aoff[B]] int32 scratch holding -1 and best
// [B, T] int64 holding -1. As dense_intersect_forward_cpu; `threads` covers the largest S_b.
template <typename scalar_t>
cudaError_t dense_intersect_forward_launch(const FsaGraphs& G, const DenseFrames<scalar_t>& D, bool viterbi,
                                           scalar_t* alpha, scalar_t* total, int32_t* back, int64_t* best,
                                           unsigned threads, cudaStream_t stream);

// grad [B, T, V] holding zeros; beta scratch [2 * sum_b S_b] from boff[b]; post scratch
// [sum_b A_b] from poff[b] (A_b: the arcs of b's graph). As dense_intersect_backward_cpu.
template <typename scalar_t>
cudaError_t dense_intersect_backward_launch(const FsaGraphs& G, const DenseFrames<scalar_t>& D,
                                            const scalar_t* alpha, const scalar_t* total,
                                            const scalar_t* grad_total, const int64_t* boff, const int64_t* poff,
                                            scalar_t* beta, scalar_t* post, scalar_t* grad, unsigned threads,
                                            cudaStream_t stream);

}  // namespace cuda
}  // namespace asr
