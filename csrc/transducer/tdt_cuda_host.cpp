// The torch-facing CUDA ops of the TDT lattice (tdt.h): the checks and outputs of tdt_cpu.cpp, on
// the tensors' GPU and its current stream, calling the kernels of tdt_cuda.cu.
// Compiled only in builds with CUDA kernels (ASR_WITH_CUDA); an empty unit otherwise.
#ifdef ASR_WITH_CUDA
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <limits>

#include "transducer/checks.h"
#include "transducer/tdt.h"
#include "transducer/tdt_cuda.h"

namespace asr {
namespace {

constexpr double kNegInf = -std::numeric_limits<double>::infinity();

template <typename scalar_t>
cuda::TdtLattice<scalar_t> lattice(const torch::Tensor& logits, const torch::Tensor& den_tok,
                                   const torch::Tensor& den_dur, const torch::Tensor& targets,
                                   const torch::Tensor& logit_lengths, const torch::Tensor& target_lengths,
                                   const torch::Tensor& row_offsets, const torch::Tensor& t_strides,
                                   const torch::Tensor& durations, int64_t num_tokens, int64_t max_t, int64_t max_u,
                                   int64_t blank, double sigma) {
  check_tdt(logits, targets, logit_lengths, target_lengths, row_offsets, t_strides, durations, num_tokens);
  return cuda::TdtLattice<scalar_t>{logits.data_ptr<scalar_t>(),
                                    den_tok.data_ptr<scalar_t>(),
                                    den_dur.data_ptr<scalar_t>(),
                                    logit_lengths.data_ptr<int64_t>(),
                                    target_lengths.data_ptr<int64_t>(),
                                    row_offsets.data_ptr<int64_t>(),
                                    t_strides.data_ptr<int64_t>(),
                                    targets.data_ptr<int64_t>(),
                                    durations.data_ptr<int64_t>(),
                                    logit_lengths.size(0),
                                    logits.size(1),
                                    num_tokens,
                                    durations.size(0),
                                    max_t,
                                    max_u,
                                    targets.size(1),
                                    blank,
                                    sigma};
}

}  // namespace

std::vector<torch::Tensor> tdt_forward_cuda(const torch::Tensor& logits, const torch::Tensor& den_tok,
                                            const torch::Tensor& den_dur, const torch::Tensor& targets,
                                            const torch::Tensor& logit_lengths, const torch::Tensor& target_lengths,
                                            const torch::Tensor& row_offsets, const torch::Tensor& t_strides,
                                            const torch::Tensor& durations, int64_t num_tokens, int64_t max_t,
                                            int64_t max_u, int64_t blank, double sigma) {
  const c10::cuda::CUDAGuard guard(logits.device());
  const int64_t B = logit_lengths.size(0);
  auto loss = torch::empty({B}, logits.options());
  auto acc_opts = logits.options().dtype(torch::kFloat64);  // see tdt.h
  auto alpha = torch::full({B, max_t + 1, max_u + 1}, kNegInf, acc_opts);
  auto beta = torch::full({B, max_t + 1, max_u + 1}, kNegInf, acc_opts);
  AT_DISPATCH_FLOATING_TYPES(logits.scalar_type(), "tdt_forward_cuda", [&] {
    const auto L = lattice<scalar_t>(logits, den_tok, den_dur, targets, logit_lengths, target_lengths, row_offsets,
                                     t_strides, durations, num_tokens, max_t, max_u, blank, sigma);
    C10_CUDA_CHECK(cuda::tdt_forward_launch(L, alpha.data_ptr<double>(), beta.data_ptr<double>(),
                                            loss.data_ptr<scalar_t>(), c10::cuda::getCurrentCUDAStream()));
  });
  return {loss, alpha, beta};
}

void tdt_subtract_arc_posteriors_cuda(torch::Tensor& grad, const torch::Tensor& logits, const torch::Tensor& den_tok,
                                      const torch::Tensor& den_dur, const torch::Tensor& targets,
                                      const torch::Tensor& logit_lengths, const torch::Tensor& target_lengths,
                                      const torch::Tensor& row_offsets, const torch::Tensor& t_strides,
                                      const torch::Tensor& durations, const torch::Tensor& alpha,
                                      const torch::Tensor& beta, const torch::Tensor& loss, const torch::Tensor& scale,
                                      int64_t num_tokens, int64_t blank, double sigma) {
  TORCH_CHECK(grad.is_contiguous() && grad.sizes() == logits.sizes(), "grad must be contiguous like logits");
  TORCH_CHECK(grad.scalar_type() == logits.scalar_type() && loss.scalar_type() == logits.scalar_type(),
              "grad and loss must have the logits' dtype");
  check_tdt_acc(alpha, beta);
  const c10::cuda::CUDAGuard guard(logits.device());
  const int64_t max_t = alpha.size(1) - 1, max_u = alpha.size(2) - 1;
  auto sc = scale.contiguous().to(torch::kFloat64);
  AT_DISPATCH_FLOATING_TYPES(logits.scalar_type(), "tdt_subtract_arc_posteriors_cuda", [&] {
    const auto L = lattice<scalar_t>(logits, den_tok, den_dur, targets, logit_lengths, target_lengths, row_offsets,
                                     t_strides, durations, num_tokens, max_t, max_u, blank, sigma);
    C10_CUDA_CHECK(cuda::tdt_subtract_arc_posteriors_launch(
        L, alpha.data_ptr<double>(), beta.data_ptr<double>(), loss.data_ptr<scalar_t>(), sc.data_ptr<double>(),
        grad.data_ptr<scalar_t>(), c10::cuda::getCurrentCUDAStream()));
  });
}

std::vector<torch::Tensor> tdt_viterbi_cuda(const torch::Tensor& logits, const torch::Tensor& den_tok,
                                            const torch::Tensor& den_dur, const torch::Tensor& targets,
                                            const torch::Tensor& logit_lengths, const torch::Tensor& target_lengths,
                                            const torch::Tensor& row_offsets, const torch::Tensor& t_strides,
                                            const torch::Tensor& durations, int64_t num_tokens, int64_t max_t,
                                            int64_t max_u, int64_t blank, double sigma) {
  const c10::cuda::CUDAGuard guard(logits.device());
  const int64_t B = logit_lengths.size(0);
  auto acc_opts = logits.options().dtype(torch::kFloat64);
  auto score = torch::full({B}, kNegInf, acc_opts);
  auto arcs = torch::full({B, max_t + max_u, 4}, -1, logits.options().dtype(torch::kInt64));
  // the loss's alpha recursion in the max semiring: the best score of a path to each node
  auto alpha = torch::full({B, max_t + 1, max_u + 1}, kNegInf, acc_opts);
  AT_DISPATCH_FLOATING_TYPES(logits.scalar_type(), "tdt_viterbi_cuda", [&] {
    const auto L = lattice<scalar_t>(logits, den_tok, den_dur, targets, logit_lengths, target_lengths, row_offsets,
                                     t_strides, durations, num_tokens, max_t, max_u, blank, sigma);
    C10_CUDA_CHECK(cuda::tdt_viterbi_launch(L, alpha.data_ptr<double>(), score.data_ptr<double>(),
                                            arcs.data_ptr<int64_t>(), c10::cuda::getCurrentCUDAStream()));
  });
  return {score, arcs};
}

}  // namespace asr
#endif  // ASR_WITH_CUDA
