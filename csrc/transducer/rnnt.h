// Full RNN-T loss (Graves 2012): the lattice part of a fused-log-softmax loss.
//
// Logits are addressed as rows of V values: utterance b, frame t, label position u is
// row `row_offsets[b] + t * t_strides[b] + u`. Padded logits [B, T, U+1, V] use
// row_offsets[b] = b*T*(U+1) and t_strides[b] = U+1; packed logits (no padding) use
// t_strides[b] = U_b + 1 and cumulative offsets. One kernel serves both.
//
// The dense per-element work (log-softmax normalizers, the softmax term of the
// gradient) is done by the caller with vectorized tensor ops on chunks of rows; these
// kernels do the (t, u) lattice: alpha, beta, node occupancies and arc posteriors.
#pragma once
#include <torch/extension.h>

#include <vector>

namespace asr {

// Precision: alpha and beta are float64 whatever the logits' dtype, and the kernels below take
// log P(y_b | x_b) as beta[b, 0, 0] in float64 (never the rounded loss). With losses of
// thousands of nats the lattice log-values reach thousands, where float32 keeps only ~1e-4
// absolute, and the arc posteriors exp(alpha + arc + beta - log P) came out 1e-3 off; in float64
// the float32 gradient is within ~1e-6 of float64's (tests/test_loss_precision.py).

// denom[N]: log-softmax normalizer of each row (zeros when the rows are log-probs).
// Returns {loss[B] (logits' dtype), alpha[B, Tmax, Umax+1], beta[B, Tmax, Umax+1] (float64)};
// loss[b] = -log P(y_b | x_b), +inf when no alignment exists (T_b == 0).
std::vector<torch::Tensor> rnnt_forward_cpu(const torch::Tensor& logits, const torch::Tensor& denom,
                                            const torch::Tensor& targets, const torch::Tensor& logit_lengths,
                                            const torch::Tensor& target_lengths, const torch::Tensor& row_offsets,
                                            const torch::Tensor& t_strides, int64_t max_t, int64_t max_u,
                                            int64_t blank);

// log(occupancy * scale[b]) of every row, in the loss's dtype: -inf on rows outside the lattices
// (padding) and for utterances with infinite loss or zero scale. scale must be > 0 where used.
// alpha, beta: float64 [B, *, *] (from rnnt_forward, or tdt_forward: any lattice whose node
// (b, t, u) is alpha[b, t, u] and whose beta[b, 0, 0] is log P).
torch::Tensor rnnt_log_occupancy_cpu(const torch::Tensor& alpha, const torch::Tensor& beta, const torch::Tensor& loss,
                                     const torch::Tensor& scale, const torch::Tensor& logit_lengths,
                                     const torch::Tensor& target_lengths, const torch::Tensor& row_offsets,
                                     const torch::Tensor& t_strides, int64_t num_rows);

// In place: grad[row, blank] and grad[row, y_{u+1}] -= scale[b] * arc posterior, for every
// lattice node. Skips utterances with infinite loss.
void rnnt_subtract_arc_posteriors_cpu(torch::Tensor& grad, const torch::Tensor& logits, const torch::Tensor& denom,
                                      const torch::Tensor& targets, const torch::Tensor& logit_lengths,
                                      const torch::Tensor& target_lengths, const torch::Tensor& row_offsets,
                                      const torch::Tensor& t_strides, const torch::Tensor& alpha,
                                      const torch::Tensor& beta, const torch::Tensor& loss, const torch::Tensor& scale,
                                      int64_t blank);

// Viterbi: the best path of each utterance (the max semiring on the same lattice and recursion as
// rnnt_forward's alpha). Returns {score [B] float64: the best path's log-prob, -inf without a path
// (T_b == 0); arcs [B, max_t + max_u, 3] int64: the path's T_b + U_b arcs in order, each
// (t, u, token) = its source node and the token it emits (blank, or y_{u+1}), -1 past the path}.
// Ties between the two arcs into a node go to the blank while backtracking from the end: among
// equally good paths, the last label is emitted as early as possible, then the one before it, etc.
std::vector<torch::Tensor> rnnt_viterbi_cpu(const torch::Tensor& logits, const torch::Tensor& denom,
                                            const torch::Tensor& targets, const torch::Tensor& logit_lengths,
                                            const torch::Tensor& target_lengths, const torch::Tensor& row_offsets,
                                            const torch::Tensor& t_strides, int64_t max_t, int64_t max_u,
                                            int64_t blank);

#ifdef ASR_WITH_CUDA
// CUDA kernels (rnnt_cuda.cu) with the same contracts, for tensors on one GPU.
std::vector<torch::Tensor> rnnt_forward_cuda(const torch::Tensor& logits, const torch::Tensor& denom,
                                             const torch::Tensor& targets, const torch::Tensor& logit_lengths,
                                             const torch::Tensor& target_lengths, const torch::Tensor& row_offsets,
                                             const torch::Tensor& t_strides, int64_t max_t, int64_t max_u,
                                             int64_t blank);
torch::Tensor rnnt_log_occupancy_cuda(const torch::Tensor& alpha, const torch::Tensor& beta,
                                      const torch::Tensor& loss, const torch::Tensor& scale,
                                      const torch::Tensor& logit_lengths, const torch::Tensor& target_lengths,
                                      const torch::Tensor& row_offsets, const torch::Tensor& t_strides,
                                      int64_t num_rows);
void rnnt_subtract_arc_posteriors_cuda(torch::Tensor& grad, const torch::Tensor& logits, const torch::Tensor& denom,
                                       const torch::Tensor& targets, const torch::Tensor& logit_lengths,
                                       const torch::Tensor& target_lengths, const torch::Tensor& row_offsets,
                                       const torch::Tensor& t_strides, const torch::Tensor& alpha,
                                       const torch::Tensor& beta, const torch::Tensor& loss,
                                       const torch::Tensor& scale, int64_t blank);
std::vector<torch::Tensor> rnnt_viterbi_cuda(const torch::Tensor& logits, const torch::Tensor& denom,
                                             const torch::Tensor& targets, const torch::Tensor& logit_lengths,
                                             const torch::Tensor& target_lengths, const torch::Tensor& row_offsets,
                                             const torch::Tensor& t_strides, int64_t max_t, int64_t max_u,
                                             int64_t blank);
#endif

}  // namespace asr
