// Python bindings of the compiled ops (module asr._C). Thin: argument checks and dispatch by device.
#include <torch/extension.h>

#include "transducer/mutual_information.h"
#include "transducer/rnnt.h"
#include "transducer/tdt.h"

namespace {

void require_cpu(const torch::Tensor& x, const char* op) {
  TORCH_CHECK(!x.is_cuda(), op,
              ": CUDA tensors need the CUDA build of asr._C (rebuild with a CUDA toolkit: `make setup`)");
}

std::vector<torch::Tensor> rnnt_forward(const torch::Tensor& logits, const torch::Tensor& denom,
                                        const torch::Tensor& targets, const torch::Tensor& logit_lengths,
                                        const torch::Tensor& target_lengths, const torch::Tensor& row_offsets,
                                        const torch::Tensor& t_strides, int64_t max_t, int64_t max_u, int64_t blank) {
  require_cpu(logits, "rnnt_forward");
  return asr::rnnt_forward_cpu(logits, denom, targets, logit_lengths, target_lengths, row_offsets, t_strides, max_t,
                               max_u, blank);
}

torch::Tensor rnnt_log_occupancy(const torch::Tensor& alpha, const torch::Tensor& beta, const torch::Tensor& loss,
                                 const torch::Tensor& scale, const torch::Tensor& logit_lengths,
                                 const torch::Tensor& target_lengths, const torch::Tensor& row_offsets,
                                 const torch::Tensor& t_strides, int64_t num_rows) {
  require_cpu(alpha, "rnnt_log_occupancy");
  return asr::rnnt_log_occupancy_cpu(alpha, beta, loss, scale, logit_lengths, target_lengths, row_offsets, t_strides,
                                     num_rows);
}

void rnnt_subtract_arc_posteriors(torch::Tensor grad, const torch::Tensor& logits, const torch::Tensor& denom,
                                  const torch::Tensor& targets, const torch::Tensor& logit_lengths,
                                  const torch::Tensor& target_lengths, const torch::Tensor& row_offsets,
                                  const torch::Tensor& t_strides, const torch::Tensor& alpha, const torch::Tensor& beta,
                                  const torch::Tensor& loss, const torch::Tensor& scale, int64_t blank) {
  require_cpu(grad, "rnnt_subtract_arc_posteriors");
  asr::rnnt_subtract_arc_posteriors_cpu(grad, logits, denom, targets, logit_lengths, target_lengths, row_offsets,
                                        t_strides, alpha, beta, loss, scale, blank);
}

std::vector<torch::Tensor> mutual_information_forward(const torch::Tensor& px, const torch::Tensor& py,
                                                      const torch::Tensor& boundary, bool modified) {
  require_cpu(px, "mutual_information_forward");
  return asr::mutual_information_forward_cpu(px, py, boundary, modified);
}

std::vector<torch::Tensor> mutual_information_backward(const torch::Tensor& px, const torch::Tensor& py,
                                                       const torch::Tensor& boundary, const torch::Tensor& p,
                                                       const torch::Tensor& ans, const torch::Tensor& ans_grad,
                                                       bool modified) {
  require_cpu(px, "mutual_information_backward");
  return asr::mutual_information_backward_cpu(px, py, boundary, p, ans, ans_grad, modified);
}

std::vector<torch::Tensor> tdt_forward(const torch::Tensor& logits, const torch::Tensor& den_tok,
                                       const torch::Tensor& den_dur, const torch::Tensor& targets,
                                       const torch::Tensor& logit_lengths, const torch::Tensor& target_lengths,
                                       const torch::Tensor& row_offsets, const torch::Tensor& t_strides,
                                       const torch::Tensor& durations, int64_t num_tokens, int64_t max_t,
                                       int64_t max_u, int64_t blank, double sigma) {
  require_cpu(logits, "tdt_forward");
  return asr::tdt_forward_cpu(logits, den_tok, den_dur, targets, logit_lengths, target_lengths, row_offsets,
                              t_strides, durations, num_tokens, max_t, max_u, blank, sigma);
}

void tdt_subtract_arc_posteriors(torch::Tensor grad, const torch::Tensor& logits, const torch::Tensor& den_tok,
                                 const torch::Tensor& den_dur, const torch::Tensor& targets,
                                 const torch::Tensor& logit_lengths, const torch::Tensor& target_lengths,
                                 const torch::Tensor& row_offsets, const torch::Tensor& t_strides,
                                 const torch::Tensor& durations, const torch::Tensor& alpha, const torch::Tensor& beta,
                                 const torch::Tensor& loss, const torch::Tensor& scale, int64_t num_tokens,
                                 int64_t blank, double sigma) {
  require_cpu(grad, "tdt_subtract_arc_posteriors");
  asr::tdt_subtract_arc_posteriors_cpu(grad, logits, den_tok, den_dur, targets, logit_lengths, target_lengths,
                                       row_offsets, t_strides, durations, alpha, beta, loss, scale, num_tokens, blank,
                                       sigma);
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "asr compiled ops (csrc/)";
  m.def("rnnt_forward", &rnnt_forward, "RNN-T lattice forward: {loss, alpha, beta}");
  m.def("rnnt_log_occupancy", &rnnt_log_occupancy, "log(node occupancy * scale) per logits row");
  m.def("rnnt_subtract_arc_posteriors", &rnnt_subtract_arc_posteriors, "grad[row, arc] -= scale * arc posterior");
  m.def("mutual_information_forward", &mutual_information_forward, "MI recursion forward: {ans, p}");
  m.def("mutual_information_backward", &mutual_information_backward, "MI recursion backward: {px_grad, py_grad}");
  m.def("tdt_forward", &tdt_forward, "TDT lattice forward: {loss, alpha, beta}");
  m.def("tdt_subtract_arc_posteriors", &tdt_subtract_arc_posteriors, "TDT: grad[row, arc] -= scale * posterior");
#ifdef ASR_WITH_CUDA
  m.attr("with_cuda") = true;
#else
  m.attr("with_cuda") = false;
#endif
}
