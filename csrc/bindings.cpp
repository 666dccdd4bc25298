// Python bindings of the compiled ops (module asr._C). Thin: argument checks and dispatch by device.
#include <torch/extension.h>

#include "fsa/fsa.h"
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

std::vector<torch::Tensor> dense_intersect_forward(const torch::Tensor& arcs, const torch::Tensor& scores,
                                                   const torch::Tensor& arc_offsets, const torch::Tensor& num_states,
                                                   const torch::Tensor& graph_index, const torch::Tensor& log_probs,
                                                   const torch::Tensor& lengths, const torch::Tensor& arc_extra,
                                                   const torch::Tensor& frame_extra, bool viterbi) {
  require_cpu(log_probs, "dense_intersect_forward");
  return asr::dense_intersect_forward_cpu(arcs, scores, arc_offsets, num_states, graph_index, log_probs, lengths,
                                          arc_extra, frame_extra, viterbi);
}

torch::Tensor dense_intersect_backward(const torch::Tensor& arcs, const torch::Tensor& scores,
                                       const torch::Tensor& arc_offsets, const torch::Tensor& num_states,
                                       const torch::Tensor& graph_index, const torch::Tensor& log_probs,
                                       const torch::Tensor& lengths, const torch::Tensor& arc_extra,
                                       const torch::Tensor& frame_extra, const torch::Tensor& total,
                                       const torch::Tensor& alpha, const torch::Tensor& alpha_offsets,
                                       const torch::Tensor& grad_total) {
  require_cpu(log_probs, "dense_intersect_backward");
  return asr::dense_intersect_backward_cpu(arcs, scores, arc_offsets, num_states, graph_index, log_probs, lengths,
                                           arc_extra, frame_extra, total, alpha, alpha_offsets, grad_total);
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
  m.def("fsa_ctc_topo", &asr::fsa_ctc_topo_cpu, "CTC topology (standard or modified) as one transducer FSA");
  m.def("fsa_linear", &asr::fsa_linear_cpu, "linear acceptors of padded targets");
  m.def("fsa_compose", &asr::fsa_compose_cpu, "topology o acceptors, trimmed (training graphs)");
  m.def("dense_intersect_forward", &dense_intersect_forward,
        "graphs x dense log-probs: {total, alpha, alpha_offsets[, best_arcs]}");
  m.def("dense_intersect_backward", &dense_intersect_backward, "d(sum grad_total * total) / d log_probs");
#ifdef ASR_WITH_CUDA
  m.attr("with_cuda") = true;
#else
  m.attr("with_cuda") = false;
#endif
}
