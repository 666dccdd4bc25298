// Launchers of the full RNN-T lattice kernels (rnnt_cuda.cu), without torch headers: raw device
// pointers and a stream. The torch-facing functions (rnnt_forward_cuda, ... in rnnt.h) are in
// rnnt_cuda_host.cpp. Contracts and addressing are those of rnnt.h and rnnt_cpu.cpp.
#pragma once
#include "cuda_utils.h"

namespace asr {
namespace cuda {

// One batch of RNN-T lattices on the device: the CPU kernels' Layout + RnntArcs.
// Row of (b, t, u): off[b] + t * st[b] + u; node (b, t, u) of alpha/beta [B, max_t, max_u+1]:
// (b * max_t + t) * (max_u + 1) + u.
template <typename scalar_t>
struct RnntLattice {
  const scalar_t* x;    // logits rows [N, V]
  const scalar_t* den;  // row normalizers [N]
  const int64_t* T;     // logit_lengths [B]
  const int64_t* U;     // target_lengths [B]
  const int64_t* off;   // row_offsets [B]
  const int64_t* st;    // t_strides [B]
  const int64_t* y;     // targets [B, max_u_targets]
  int64_t B, V, blank, max_t, max_u, max_u_targets;

  ASR_HD int64_t row(int64_t b, int64_t t, int64_t u) const { return off[b] + t * st[b] + u; }
  ASR_HD int64_t node(int64_t b, int64_t t, int64_t u) const { return (b * max_t + t) * (max_u + 1) + u; }
  ASR_HD int64_t label(int64_t b, int64_t u) const { return y[b * max_u_targets + u]; }
  // log-probs (float64) of the blank arc and of the y_{u+1} arc leaving (t, u)
  ASR_HD double lp_blank(int64_t b, int64_t t, int64_t u) const {
    const int64_t r = row(b, t, u);
    return double(x[r * V + blank]) - double(den[r]);
  }
  ASR_HD double lp_emit(int64_t b, int64_t t, int64_t u) const {
    const int64_t r = row(b, t, u);
    return double(x[r * V + label(b, u)]) - double(den[r]);
  }
};

// alpha, beta [B, max_t, max_u+1] float64 hold -inf; loss [B]. Writes alpha, beta and
// loss = -beta[b, 0, 0] (+inf where T_b = 0), as rnnt_forward_cpu.
template <typename scalar_t>
cudaError_t rnnt_forward_launch(const RnntLattice<scalar_t>& L, double* alpha, double* beta, scalar_t* loss,
                                cudaStream_t stream);

// out [num_rows] holds -inf; writes log(occupancy * scale[b]) of every lattice row, as
// rnnt_log_occupancy_cpu. Only L.T, U, off, st, B, max_t, max_u are read (alpha's shape).
template <typename scalar_t>
cudaError_t rnnt_log_occupancy_launch(const RnntLattice<scalar_t>& L, const double* alpha, const double* beta,
                                      const scalar_t* loss, const double* scale, scalar_t* out,
                                      cudaStream_t stream);

// In place: grad[row, blank] and grad[row, y_{u+1}] -= scale[b] * arc posterior.
template <typename scalar_t>
cudaError_t rnnt_subtract_arc_posteriors_launch(const RnntLattice<scalar_t>& L, const double* alpha,
                                                const double* beta, const scalar_t* loss, const double* scale,
                                                scalar_t* grad, cudaStream_t stream);

// alpha [B, max_t, max_u+1] float64 scratch holding -inf; score [B] float64 holding -inf;
// arcs [B, max_t+max_u, 3] int64 holding -1. As rnnt_viterbi_cpu.
template <typename scalar_t>
cudaError_t rnnt_viterbi_launch(const RnntLattice<scalar_t>& L, double* alpha, double* score, int64_t* arcs,
                                cudaStream_t stream);

}  // namespace cuda
}  // namespace asr
