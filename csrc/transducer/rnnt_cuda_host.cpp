// The torch-facing CUDA ops of the full RNN-T loss (rnnt.h): the checks and outputs of
// rnnt_cpu.cpp, on the tensors' GPU and its current stream, calling the kernels of rnnt_cuda.cu.
// Compiled only in builds with CUDA kernels (ASR_WITH_CUDA); an empty unit otherwise.
#ifdef ASR_WITH_CUDA
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <limits>

#include "transducer/checks.h"
#include "transducer/rnnt.h"
#include "transducer/rnnt_cuda.h"

namespace asr {
namespace {

constexpr double kNegInf = -std::numeric_limits<double>::infinity();

// The device view of the lattices (targets may be a dummy when only the layout is read).
template <typename scalar_t>
cuda::RnntLattice<scalar_t> lattice(const torch::Tensor& logits, const torch::Tensor& denom,
                                    const torch::Tensor& targets, const torch::Tensor& logit_lengths,
                                    const torch::Tensor& target_lengths, const torch::Tensor& row_offsets,
                                    const torch::Tensor& t_strides, int64_t max_t, int64_t max_u, int64_t blank) {
  check_rnnt_layout(targets, logit_lengths, target_lengths, row_offsets, t_strides);
  return cuda::RnntLattice<scalar_t>{logits.defined() ? logits.data_ptr<scalar_t>() : nullptr,
                                     denom.defined() ? denom.data_ptr<scalar_t>() : nullptr,
                                     logit_lengths.data_ptr<int64_t>(),
                                     target_lengths.data_ptr<int64_t>(),
                                     row_offsets.data_ptr<int64_t>(),
                                     t_strides.data_ptr<int64_t>(),
                                     targets.data_ptr<int64_t>(),
                                     logit_lengths.size(0),
                                     logits.defined() ? logits.size(1) : 0,
                                     blank,
                                     max_t,
                                     max_u,
                                     targets.size(1)};
}

}  // namespace

std::vector<torch::Tensor> rnnt_forward_cuda(const torch::Tensor& logits, const torch::Tensor& denom,
                                             const torch::Tensor& targets, const torch::Tensor& logit_lengths,
                                             const torch::Tensor& target_lengths, const torch::Tensor& row_offsets,
                                             const torch::Tensor& t_strides, int64_t max_t, int64_t max_u,
                                             int64_t blank) {
  check_rows(logits, denom);
  const c10::cuda::CUDAGuard guard(logits.device());
  const int64_t B = logit_lengths.size(0);
  auto loss = torch::empty({B}, logits.options());
  // alpha and beta accumulate in float64 whatever the logits' dtype (see rnnt.h)
  auto acc_opts = logits.options().dtype(torch::kFloat64);
  auto alpha = torch::full({B, max_t, max_u + 1}, kNegInf, acc_opts);
  auto beta = torch::full({B, max_t, max_u + 1}, kNegInf, acc_opts);
  AT_DISPATCH_FLOATING_TYPES(logits.scalar_type(), "rnnt_forward_cuda", [&] {
    const auto L = lattice<scalar_t>(logits, denom, targets, logit_lengths, target_lengths, row_offsets, t_strides,
                                     max_t, max_u, blank);
    C10_CUDA_CHECK(cuda::rnnt_forward_launch(L, alpha.data_ptr<double>(), beta.data_ptr<double>(),
                                             loss.data_ptr<scalar_t>(), c10::cuda::getCurrentCUDAStream()));
  });
  return {loss, alpha, beta};
}

torch::Tensor rnnt_log_occupancy_cuda(const torch::Tensor& alpha, const torch::Tensor& beta,
                                      const torch::Tensor& loss, const torch::Tensor& scale,
                                      const torch::Tensor& logit_lengths, const torch::Tensor& target_lengths,
                                      const torch::Tensor& row_offsets, const torch::Tensor& t_strides,
                                      int64_t num_rows) {
  const c10::cuda::CUDAGuard guard(alpha.device());
  const int64_t B = logit_lengths.size(0), max_t = alpha.size(1), max_u = alpha.size(2) - 1;
  auto dummy_targets = torch::zeros({B, 1}, logit_lengths.options());
  check_acc(alpha, beta);
  auto out = torch::full({num_rows}, kNegInf, loss.options());
  auto sc = scale.contiguous().to(torch::kFloat64);
  AT_DISPATCH_FLOATING_TYPES(loss.scalar_type(), "rnnt_log_occupancy_cuda", [&] {
    const auto L = lattice<scalar_t>(torch::Tensor(), torch::Tensor(), dummy_targets, logit_lengths, target_lengths,
                                     row_offsets, t_strides, max_t, max_u, 0);
    C10_CUDA_CHECK(cuda::rnnt_log_occupancy_launch(L, alpha.data_ptr<double>(), beta.data_ptr<double>(),
                                                   loss.data_ptr<scalar_t>(), sc.data_ptr<double>(),
                                                   out.data_ptr<scalar_t>(), c10::cuda::getCurrentCUDAStream()));
  });
  return out;
}

void rnnt_subtract_arc_posteriors_cuda(torch::Tensor& grad, const torch::Tensor& logits, const torch::Tensor& denom,
                                       const torch::Tensor& targets, const torch::Tensor& logit_lengths,
                                       const torch::Tensor& target_lengths, const torch::Tensor& row_offsets,
                                       const torch::Tensor& t_strides, const torch::Tensor& alpha,
                                       const torch::Tensor& beta, const torch::Tensor& loss,
                                       const torch::Tensor& scale, int64_t blank) {
  TORCH_CHECK(grad.is_contiguous() && grad.sizes() == logits.sizes(), "grad must be contiguous like logits");
  TORCH_CHECK(grad.scalar_type() == logits.scalar_type() && loss.scalar_type() == logits.scalar_type(),
              "grad and loss must have the logits' dtype");
  check_acc(alpha, beta);
  const c10::cuda::CUDAGuard guard(logits.device());
  const int64_t max_t = alpha.size(1), max_u = alpha.size(2) - 1;
  auto sc = scale.contiguous().to(torch::kFloat64);
  AT_DISPATCH_FLOATING_TYPES(logits.scalar_type(), "rnnt_subtract_arc_posteriors_cuda", [&] {
    const auto L = lattice<scalar_t>(logits, denom, targets, logit_lengths, target_lengths, row_offsets, t_strides,
                                     max_t, max_u, blank);
    C10_CUDA_CHECK(cuda::rnnt_subtract_arc_posteriors_launch(
        L, alpha.data_ptr<double>(), beta.data_ptr<double>(), loss.data_ptr<scalar_t>(), sc.data_ptr<double>(),
        grad.data_ptr<scalar_t>(), c10::cuda::getCurrentCUDAStream()));
  });
}

std::vector<torch::Tensor> rnnt_viterbi_cuda(const torch::Tensor& logits, const torch::Tensor& denom,
                                             const torch::Tensor& targets, const torch::Tensor& logit_lengths,
                                             const torch::Tensor& target_lengths, const torch::Tensor& row_offsets,
                                             const torch::Tensor& t_strides, int64_t max_t, int64_t max_u,
                                             int64_t blank) {
  check_rows(logits, denom);
  const c10::cuda::CUDAGuard guard(logits.device());
  const int64_t B = logit_lengths.size(0);
  auto acc_opts = logits.options().dtype(torch::kFloat64);
  auto score = torch::full({B}, kNegInf, acc_opts);
  auto arcs = torch::full({B, max_t + max_u, 3}, -1, logits.options().dtype(torch::kInt64));
  // the same recursion as the loss's alpha, in the max semiring: best score of a path to each node
  auto alpha = torch::full({B, max_t, max_u + 1}, kNegInf, acc_opts);
  AT_DISPATCH_FLOATING_TYPES(logits.scalar_type(), "rnnt_viterbi_cuda", [&] {
    const auto L = lattice<scalar_t>(logits, denom, targets, logit_lengths, target_lengths, row_offsets, t_strides,
                                     max_t, max_u, blank);
    C10_CUDA_CHECK(cuda::rnnt_viterbi_launch(L, alpha.data_ptr<double>(), score.data_ptr<double>(),
                                             arcs.data_ptr<int64_t>(), c10::cuda::getCurrentCUDAStream()));
  });
  return {score, arcs};
}

}  // namespace asr
#endif  // ASR_WITH_CUDA
