// Launchers of the TDT lattice kernels (tdt_cuda.cu), without torch headers. The torch-facing
// ops are in tdt_cuda_host.cpp; the contracts are those of tdt.h and tdt_cpu.cpp.
#pragma once
#include "cuda_utils.h"

namespace asr {
namespace cuda {

// One batch of TDT lattices on the device (TdtLattice of tdt_cpu.cpp). Rows of W = V + D values;
// node (b, t, u) of alpha/beta [B, max_t+1, max_u+1]: (b * (max_t + 1) + t) * (max_u + 1) + u.
template <typename scalar_t>
struct TdtLattice {
  const scalar_t* x;
  const scalar_t* den_tok;
  const scalar_t* den_dur;
  const int64_t *T, *U, *off, *st, *y, *dur;
  int64_t B, W, V, D, max_t, max_u, y_stride, blank;
  double sigma;

  ASR_HD int64_t row(int64_t b, int64_t t, int64_t u) const { return off[b] + t * st[b] + u; }
  ASR_HD int64_t node(int64_t b, int64_t t, int64_t u) const { return (b * (max_t + 1) + t) * (max_u + 1) + u; }
  ASR_HD double lp_tok(int64_t r, int64_t k) const { return double(x[r * W + k]) - double(den_tok[r]) - sigma; }
  ASR_HD double lp_dur(int64_t r, int64_t i) const { return double(x[r * W + V + i]) - double(den_dur[r]); }
  ASR_HD int64_t label(int64_t b, int64_t u) const { return y[b * y_stride + u]; }
};

// alpha, beta [B, max_t+1, max_u+1] float64 holding -inf; writes them and loss[b] = -alpha[b, T, U]
// (+inf where T_b = 0 or no path), as tdt_forward_cpu.
template <typename scalar_t>
cudaError_t tdt_forward_launch(const TdtLattice<scalar_t>& L, double* alpha, double* beta, scalar_t* loss,
                               cudaStream_t stream);

// In place: for every arc, grad[row, token] and grad[row, V + i] -= scale[b] * arc posterior.
template <typename scalar_t>
cudaError_t tdt_subtract_arc_posteriors_launch(const TdtLattice<scalar_t>& L, const double* alpha,
                                               const double* beta, const scalar_t* loss, const double* scale,
                                               scalar_t* grad, cudaStream_t stream);

// alpha: float64 scratch like the forward's, holding -inf; score [B] float64 holding -inf;
// arcs [B, max_t+max_u, 4] int64 holding -1. As tdt_viterbi_cpu.
template <typename scalar_t>
cudaError_t tdt_viterbi_launch(const TdtLattice<scalar_t>& L, double* alpha, double* score, int64_t* arcs,
                               cudaStream_t stream);

}  // namespace cuda
}  // namespace asr
