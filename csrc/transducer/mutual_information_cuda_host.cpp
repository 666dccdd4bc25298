// The torch-facing CUDA ops of the mutual-information recursion (mutual_information.h): the checks
// and outputs of mutual_information_cpu.cpp, on the tensors' GPU and its current stream.
// Compiled only in builds with CUDA kernels (ASR_WITH_CUDA); an empty unit otherwise.
#ifdef ASR_WITH_CUDA
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <limits>

#include "transducer/checks.h"
#include "transducer/mutual_information.h"
#include "transducer/mutual_information_cuda.h"

namespace asr {
namespace {

template <typename scalar_t>
cuda::MiLattice<scalar_t> lattice(const torch::Tensor& px, const torch::Tensor& py, const torch::Tensor& boundary,
                                  bool modified) {
  return cuda::MiLattice<scalar_t>{px.data_ptr<scalar_t>(), py.data_ptr<scalar_t>(), boundary.data_ptr<int64_t>(),
                                   px.size(0),
                                   px.size(1),
                                   py.size(2),
                                   px.size(2),
                                   modified};
}

}  // namespace

std::vector<torch::Tensor> mutual_information_forward_cuda(const torch::Tensor& px, const torch::Tensor& py,
                                                           const torch::Tensor& boundary, bool modified) {
  check_mutual_information(px, py, boundary, modified);
  const c10::cuda::CUDAGuard guard(px.device());
  const int64_t B = px.size(0), S = px.size(1), T = py.size(2);
  // The kernel trusts the boundary: check it here, on a host copy ([B, 4], one small transfer).
  check_mutual_information_boundary(boundary.cpu(), S, T);
  auto p = torch::full({B, S + 1, T + 1}, -std::numeric_limits<double>::infinity(),
                       px.options().dtype(torch::kFloat64));
  auto ans = torch::empty({B}, px.options());
  AT_DISPATCH_FLOATING_TYPES(px.scalar_type(), "mutual_information_forward_cuda", [&] {
    C10_CUDA_CHECK(cuda::mutual_information_forward_launch(lattice<scalar_t>(px, py, boundary, modified),
                                                           p.data_ptr<double>(), ans.data_ptr<scalar_t>(),
                                                           c10::cuda::getCurrentCUDAStream()));
  });
  return {ans, p};
}

std::vector<torch::Tensor> mutual_information_backward_cuda(const torch::Tensor& px, const torch::Tensor& py,
                                                            const torch::Tensor& boundary, const torch::Tensor& p,
                                                            const torch::Tensor& ans, const torch::Tensor& ans_grad,
                                                            bool modified) {
  check_mutual_information(px, py, boundary, modified);
  const c10::cuda::CUDAGuard guard(px.device());
  const int64_t B = px.size(0), S = px.size(1), T = py.size(2);
  check_mutual_information_p(p, B, S, T);
  check_mutual_information_ans(px, ans, ans_grad);
  // The kernel trusts the boundary as the forward's does (the backward may be given another one)
  check_mutual_information_boundary(boundary.cpu(), S, T);
  auto px_grad = torch::zeros_like(px);
  auto py_grad = torch::zeros_like(py);
  auto g = ans_grad.contiguous().to(torch::kFloat64);
  auto beta = torch::full_like(p, -std::numeric_limits<double>::infinity());  // per-utterance scratch
  AT_DISPATCH_FLOATING_TYPES(px.scalar_type(), "mutual_information_backward_cuda", [&] {
    C10_CUDA_CHECK(cuda::mutual_information_backward_launch(
        lattice<scalar_t>(px, py, boundary, modified), p.data_ptr<double>(), ans.data_ptr<scalar_t>(),
        g.data_ptr<double>(), beta.data_ptr<double>(), px_grad.data_ptr<scalar_t>(), py_grad.data_ptr<scalar_t>(),
        c10::cuda::getCurrentCUDAStream()));
  });
  return {px_grad, py_grad};
}

}  // namespace asr
#endif  // ASR_WITH_CUDA
