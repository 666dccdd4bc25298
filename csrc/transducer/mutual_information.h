// Mutual-information recursion: the lattice of the simple and pruned RNN-T losses.
//
// For utterance b with S = boundary[b][2] symbols and T = boundary[b][3] frames
// (begins boundary[b][0..1], normally 0):
//   regular  (px [B, S, T+1]):  p[s,t] = logaddexp(p[s-1,t] + px[s-1,t],   p[s,t-1] + py[s,t-1])
//   modified (px [B, S, T]):    p[s,t] = logaddexp(p[s-1,t-1] + px[s-1,t-1], p[s,t-1] + py[s,t-1])
// with py [B, S+1, T] and p[s_begin, t_begin] = 0. The result is p[s_end, t_end].
// Regular: column t_end means "after the last frame", so no symbol arc is taken there
// (px[:, t_end] is never read; utterances shorter than the batch need no fix-up).
// px is a symbol's log-prob (regular: stay on the frame; modified: consume it), py blank's.
#pragma once
#include <torch/extension.h>

#include <vector>

namespace asr {

// Returns {ans[B], p[B, S+1, T+1]}; ans is -inf where no path exists. p is float64 whatever the
// dtype of px and py (the recursion and the backward's beta accumulate in float64, and the
// backward takes the total from p, not from the rounded ans: see rnnt.h on precision).
std::vector<torch::Tensor> mutual_information_forward_cpu(const torch::Tensor& px, const torch::Tensor& py,
                                                          const torch::Tensor& boundary, bool modified);

// Returns {px_grad, py_grad}: d ans[b] / d px, py times ans_grad[b] (arc posteriors).
std::vector<torch::Tensor> mutual_information_backward_cpu(const torch::Tensor& px, const torch::Tensor& py,
                                                           const torch::Tensor& boundary, const torch::Tensor& p,
                                                           const torch::Tensor& ans, const torch::Tensor& ans_grad,
                                                           bool modified);

#ifdef ASR_WITH_CUDA
// CUDA kernels (mutual_information_cuda.cu) with the same contracts, for tensors on one GPU.
std::vector<torch::Tensor> mutual_information_forward_cuda(const torch::Tensor& px, const torch::Tensor& py,
                                                           const torch::Tensor& boundary, bool modified);
std::vector<torch::Tensor> mutual_information_backward_cuda(const torch::Tensor& px, const torch::Tensor& py,
                                                            const torch::Tensor& boundary, const torch::Tensor& p,
                                                            const torch::Tensor& ans, const torch::Tensor& ans_grad,
                                                            bool modified);
#endif

}  // namespace asr
