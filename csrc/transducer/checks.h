// Argument checks of the transducer ops, shared by the CPU kernels (*_cpu.cpp) and the CUDA
// wrappers (*_cuda_host.cpp). They read dtypes and shapes only, never the data, so they hold for
// tensors on any device, and both back-ends refuse bad arguments with the same messages.
#pragma once
#include <torch/extension.h>

namespace asr {

inline void check_index(const torch::Tensor& t, const char* name) {
  TORCH_CHECK(t.scalar_type() == torch::kInt64 && t.is_contiguous(), name, " must be contiguous int64");
}

// The index tensors of the RNN-T row layout (rnnt.h).
inline void check_rnnt_layout(const torch::Tensor& targets, const torch::Tensor& logit_lengths,
                              const torch::Tensor& target_lengths, const torch::Tensor& row_offsets,
                              const torch::Tensor& t_strides) {
  check_index(targets, "targets");
  check_index(logit_lengths, "logit_lengths");
  check_index(target_lengths, "target_lengths");
  check_index(row_offsets, "row_offsets");
  check_index(t_strides, "t_strides");
  TORCH_CHECK(targets.dim() == 2, "targets must be [B, U]");
}

inline void check_rows(const torch::Tensor& logits, const torch::Tensor& denom) {
  TORCH_CHECK(logits.dim() == 2 && logits.is_contiguous(), "logits must be contiguous rows [N, V]");
  TORCH_CHECK(denom.dim() == 1 && denom.size(0) == logits.size(0) && denom.is_contiguous() &&
                  denom.scalar_type() == logits.scalar_type(),
              "denom must be [N] of the logits' dtype");
}

inline void check_acc(const torch::Tensor& alpha, const torch::Tensor& beta) {
  TORCH_CHECK(alpha.scalar_type() == torch::kFloat64 && beta.scalar_type() == torch::kFloat64 &&
                  alpha.is_contiguous() && beta.is_contiguous(),
              "alpha and beta must be contiguous float64 (from rnnt_forward)");
}

// px, py and boundary of the mutual-information recursion (mutual_information.h).
inline void check_mutual_information(const torch::Tensor& px, const torch::Tensor& py, const torch::Tensor& boundary,
                                     bool modified) {
  TORCH_CHECK(px.dim() == 3 && py.dim() == 3, "px and py must be 3-D");
  TORCH_CHECK(px.is_contiguous() && py.is_contiguous(), "px and py must be contiguous");
  TORCH_CHECK(px.scalar_type() == py.scalar_type(), "px and py must have one dtype");
  const int64_t B = px.size(0), S = px.size(1), T = py.size(2);
  TORCH_CHECK(py.size(0) == B && py.size(1) == S + 1, "py must be [B, S+1, T]");
  TORCH_CHECK(px.size(2) == (modified ? T : T + 1), modified ? "px must be [B, S, T] (modified)"
                                                             : "px must be [B, S, T+1] (regular)");
  TORCH_CHECK(boundary.scalar_type() == torch::kInt64 && boundary.is_contiguous() && boundary.dim() == 2 &&
                  boundary.size(0) == B && boundary.size(1) == 4,
              "boundary must be contiguous int64 [B, 4]");
}

// The values of boundary [B, 4] (a CPU tensor: callers on a GPU pass a host copy): for every b,
// 0 <= s_begin <= s_end <= S and 0 <= t_begin <= t_end <= T. The kernels index px, py and p with
// them unchecked, so the forward and the backward both check (a backward may be called with
// another boundary than its forward's).
inline void check_mutual_information_boundary(const torch::Tensor& boundary, int64_t S, int64_t T) {
  TORCH_CHECK(boundary.device().is_cpu(), "check_mutual_information_boundary: boundary must be a host copy");
  const int64_t* bd = boundary.data_ptr<int64_t>();
  for (int64_t b = 0; b < boundary.size(0); ++b) {
    const int64_t s0 = bd[4 * b], t0 = bd[4 * b + 1], s1 = bd[4 * b + 2], t1 = bd[4 * b + 3];
    TORCH_CHECK(0 <= s0 && s0 <= s1 && s1 <= S && 0 <= t0 && t0 <= t1 && t1 <= T, "boundary out of range");
  }
}

// ans and ans_grad of mutual_information_backward: [B] each (the kernels read ans[b], ans_grad[b]).
inline void check_mutual_information_ans(const torch::Tensor& px, const torch::Tensor& ans,
                                         const torch::Tensor& ans_grad) {
  const int64_t B = px.size(0);
  TORCH_CHECK(ans.scalar_type() == px.scalar_type() && ans.is_contiguous() && ans.numel() == B,
              "ans must be contiguous [B] of px's dtype");
  TORCH_CHECK(ans_grad.numel() == B, "ans_grad must be [B]");
}

// p of mutual_information_forward, as the backward takes it.
inline void check_mutual_information_p(const torch::Tensor& p, int64_t B, int64_t S, int64_t T) {
  TORCH_CHECK(p.scalar_type() == torch::kFloat64 && p.is_contiguous() && p.dim() == 3 && p.size(0) == B &&
                  p.size(1) == S + 1 && p.size(2) == T + 1,
              "p must be contiguous float64 [B, S+1, T+1] (from mutual_information_forward)");
}

// The TDT rows and index tensors (tdt.h).
inline void check_tdt(const torch::Tensor& logits, const torch::Tensor& targets, const torch::Tensor& logit_lengths,
                      const torch::Tensor& target_lengths, const torch::Tensor& row_offsets,
                      const torch::Tensor& t_strides, const torch::Tensor& durations, int64_t num_tokens) {
  for (const auto* t : {&targets, &logit_lengths, &target_lengths, &row_offsets, &t_strides, &durations})
    TORCH_CHECK(t->scalar_type() == torch::kInt64 && t->is_contiguous(), "index tensors must be contiguous int64");
  TORCH_CHECK(logits.dim() == 2 && logits.is_contiguous(), "logits must be contiguous rows [N, V + D]");
  TORCH_CHECK(logits.size(1) == num_tokens + durations.size(0), "rows must hold V token + D duration logits");
}

inline void check_tdt_acc(const torch::Tensor& alpha, const torch::Tensor& beta) {
  TORCH_CHECK(alpha.scalar_type() == torch::kFloat64 && beta.scalar_type() == torch::kFloat64 &&
                  alpha.is_contiguous() && beta.is_contiguous(),
              "alpha and beta must be contiguous float64 (from tdt_forward)");
}

}  // namespace asr
