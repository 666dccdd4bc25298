// Token-and-Duration Transducer loss (Xu et al. 2023): lattice kernels.
//
// Rows (same addressing as rnnt.h) hold V token logits then D duration logits.
// From node (t, u), t < T:
//   blank, duration d > 0:   -> (t + d, u),     t + d <= T
//   symbol y_{u+1}, any d:   -> (t + d, u + 1), t + d <= T - 1 (lands on a real frame)
// weighted lp_tok(t,u,k) - sigma + lp_dur(t,u,i). A path ends at (T, U): the last arc is a
// blank landing exactly on T. alpha/beta are [B, Tmax+1, Umax+1].
#pragma once
#include <torch/extension.h>

#include <vector>

namespace asr {

// den_tok[N], den_dur[N]: normalizers of the token and duration parts of each row.
// Returns {loss[B], alpha, beta}; loss is +inf where no path exists. alpha and beta are float64
// whatever the logits' dtype, and the backward takes log P as beta[b, 0, 0] (see rnnt.h).
std::vector<torch::Tensor> tdt_forward_cpu(const torch::Tensor& logits, const torch::Tensor& den_tok,
                                           const torch::Tensor& den_dur, const torch::Tensor& targets,
                                           const torch::Tensor& logit_lengths, const torch::Tensor& target_lengths,
                                           const torch::Tensor& row_offsets, const torch::Tensor& t_strides,
                                           const torch::Tensor& durations, int64_t num_tokens, int64_t max_t,
                                           int64_t max_u, int64_t blank, double sigma);

// In place: for every arc, grad[row, token] and grad[row, V + i] -= scale[b] * arc posterior.
void tdt_subtract_arc_posteriors_cpu(torch::Tensor& grad, const torch::Tensor& logits, const torch::Tensor& den_tok,
                                     const torch::Tensor& den_dur, const torch::Tensor& targets,
                                     const torch::Tensor& logit_lengths, const torch::Tensor& target_lengths,
                                     const torch::Tensor& row_offsets, const torch::Tensor& t_strides,
                                     const torch::Tensor& durations, const torch::Tensor& alpha,
                                     const torch::Tensor& beta, const torch::Tensor& loss, const torch::Tensor& scale,
                                     int64_t num_tokens, int64_t blank, double sigma);

// Viterbi: the best path of each utterance (the loss's alpha recursion in the max semiring).
// Returns {score [B] float64: the best path's log-prob (with sigma), -inf where no path exists;
// arcs [B, max_t + max_u, 4] int64: the path's arcs in order, each (t, u, token, duration index)
// = its source node, the token it emits (blank or y_{u+1}) and the index of its duration in
// `durations`, -1 past the path (at most T_b + U_b arcs)}. Ties: backtracking from (T, U), the
// first best arc into a node wins, blank arcs before label arcs, each in the order of `durations`.
std::vector<torch::Tensor> tdt_viterbi_cpu(const torch::Tensor& logits, const torch::Tensor& den_tok,
                                           const torch::Tensor& den_dur, const torch::Tensor& targets,
                                           const torch::Tensor& logit_lengths, const torch::Tensor& target_lengths,
                                           const torch::Tensor& row_offsets, const torch::Tensor& t_strides,
                                           const torch::Tensor& durations, int64_t num_tokens, int64_t max_t,
                                           int64_t max_u, int64_t blank, double sigma);

#ifdef ASR_WITH_CUDA
// CUDA kernels (tdt_cuda.cu) with the same contracts, for tensors on one GPU.
std::vector<torch::Tensor> tdt_forward_cuda(const torch::Tensor& logits, const torch::Tensor& den_tok,
                                            const torch::Tensor& den_dur, const torch::Tensor& targets,
                                            const torch::Tensor& logit_lengths, const torch::Tensor& target_lengths,
                                            const torch::Tensor& row_offsets, const torch::Tensor& t_strides,
                                            const torch::Tensor& durations, int64_t num_tokens, int64_t max_t,
                                            int64_t max_u, int64_t blank, double sigma);
void tdt_subtract_arc_posteriors_cuda(torch::Tensor& grad, const torch::Tensor& logits, const torch::Tensor& den_tok,
                                      const torch::Tensor& den_dur, const torch::Tensor& targets,
                                      const torch::Tensor& logit_lengths, const torch::Tensor& target_lengths,
                                      const torch::Tensor& row_offsets, const torch::Tensor& t_strides,
                                      const torch::Tensor& durations, const torch::Tensor& alpha,
                                      const torch::Tensor& beta, const torch::Tensor& loss, const torch::Tensor& scale,
                                      int64_t num_tokens, int64_t blank, double sigma);
std::vector<torch::Tensor> tdt_viterbi_cuda(const torch::Tensor& logits, const torch::Tensor& den_tok,
                                            const torch::Tensor& den_dur, const torch::Tensor& targets,
                                            const torch::Tensor& logit_lengths, const torch::Tensor& target_lengths,
                                            const torch::Tensor& row_offsets, const torch::Tensor& t_strides,
                                            const torch::Tensor& durations, int64_t num_tokens, int64_t max_t,
                                            int64_t max_u, int64_t blank, double sigma);
#endif

}  // namespace asr
