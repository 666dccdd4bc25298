// Launchers of the mutual-information recursion kernels (mutual_information_cuda.cu), without
// torch headers. The torch-facing ops are in mutual_information_cuda_host.cpp; the contracts
// are those of mutual_information.h and mutual_information_cpu.cpp.
#pragma once
#include "cuda_utils.h"

namespace asr {
namespace cuda {

// px [B, S, pxT] (pxT = T+1 regular, T modified), py [B, S+1, T], boundary [B, 4] int64
// (s_begin, t_begin, s_end, t_end), already checked to lie in the lattice.
template <typename scalar_t>
struct MiLattice {
  const scalar_t* px;
  const scalar_t* py;
  const int64_t* boundary;
  int64_t B, S, T, pxT;
  bool modified;
};

// p [B, S+1, T+1] float64 holding -inf; writes p and ans[b] = p[b, s_end, t_end].
template <typename scalar_t>
cudaError_t mutual_information_forward_launch(const MiLattice<scalar_t>& L, double* p, scalar_t* ans,
                                              cudaStream_t stream);

// beta: scratch like p, holding -inf; px_grad, py_grad hold zeros. ans_grad [B] float64.
template <typename scalar_t>
cudaError_t mutual_information_backward_launch(const MiLattice<scalar_t>& L, const double* p, const scalar_t* ans,
                                               const double* ans_grad, double* beta, scalar_t* px_grad,
                                               scalar_t* py_grad, cudaStream_t stream);

}  // namespace cuda
}  // namespace asr
