// Python bindings of the compiled ops (module asr._C): one dispatch by device for every op.
//
// Every op is bound by `def_op` with the names of its arguments (Python keywords) and a
// docstring. A call checks that its tensor arguments share one device, then runs the CPU
// kernel (`asr::*_cpu`) for CPU tensors and the CUDA kernel (`asr::*_cuda`, declared in the
// op headers under ASR_WITH_CUDA) for CUDA tensors; any other device, or CUDA tensors in a
// build without CUDA kernels, is an error that names the op and what is missing.
#include <torch/extension.h>

#include <array>
#include <cstddef>
#include <type_traits>
#include <utility>
#include <vector>

#include "fsa/fsa.h"
#include "transducer/mutual_information.h"
#include "transducer/rnnt.h"
#include "transducer/tdt.h"

namespace py = pybind11;

namespace asr {
namespace {

#ifdef ASR_WITH_CUDA
constexpr bool kWithCuda = true;
#define ASR_CUDA_KERNEL(fn) (&asr::fn)
#else
constexpr bool kWithCuda = false;
#define ASR_CUDA_KERNEL(fn) nullptr
#endif

// The tensor arguments of one call, with their Python names (for error messages).
using TensorArgs = std::vector<std::pair<const char*, const torch::Tensor*>>;

// The device all tensor arguments of `op` are on (the CPU when it has none); an error naming
// the op and two of the arguments when they are on different devices.
c10::Device common_device(const char* op, const TensorArgs& tensors) {
  if (tensors.empty()) return c10::Device(c10::kCPU);
  const auto& [first_name, first] = tensors.front();
  for (const auto& [name, t] : tensors) {
    TORCH_CHECK(t->device() == first->device(), "asr._C.", op,
                ": all tensor arguments must be on one device, but ", first_name, " is on ", first->device(),
                " and ", name, " on ", t->device());
  }
  return first->device();
}

// The error for a call of `op` on `device`, where it has no kernel (`has_cuda`: `op` has a CUDA
// kernel in this build). Says what is missing and what to do.
[[noreturn]] void no_kernel(const char* op, const c10::Device& device, bool has_cuda) {
  TORCH_CHECK(!device.is_cuda() || kWithCuda, "asr._C.", op,
              ": got CUDA tensors, but this build of asr has no CUDA kernels (it was built without a CUDA toolkit "
              "or against a torch without CUDA). Rebuild where both are present (`pip install "
              "--no-build-isolation -e .`; ASR_FORCE_CUDA=1 forces the CUDA build), or move the inputs to the CPU "
              "(.cpu()) to use the CPU kernels.");
  TORCH_CHECK(!device.is_cuda(), "asr._C.", op, ": got CUDA tensors, but ", op,
              " runs on the CPU only (there is no asr::", op, "_cuda). Move the inputs to the CPU (.cpu()).");
  TORCH_CHECK(false, "asr._C.", op, ": got tensors on device '", device, "', but this build of asr has ", op,
              " kernels only for ", has_cuda ? "the CPU and CUDA" : "the CPU",
              kWithCuda ? "" : " (built without its CUDA kernels)",
              ". Move the inputs to the CPU (.cpu()) to use the CPU kernels.");
}

// Adds a tensor argument to `out`; other arguments (sizes, flags) have no device.
void collect(TensorArgs& out, const char* name, const torch::Tensor& t) { out.emplace_back(name, &t); }
template <typename T>
void collect(TensorArgs&, const char*, const T&) {}

template <typename T>
struct NonDeduced {
  using type = T;
};

// Binds `op` to the one dispatch function of its kernels: checks that the tensor arguments
// share a device, then calls `cpu` or `cuda` (nullptr: no CUDA kernel) with the arguments.
template <typename R, typename... A, std::size_t... I>
void def_op(py::module_& m, const char* op, R (*cpu)(A...), typename NonDeduced<R (*)(A...)>::type cuda,
            const std::array<const char*, sizeof...(A)>& names, const char* doc, std::index_sequence<I...>) {
  for (const char* name : names) TORCH_CHECK(name != nullptr, "asr._C.", op, ": an argument has no name");
  auto dispatch = [op, cpu, cuda, names](std::decay_t<A>... args) -> R {
    TensorArgs tensors;
    (collect(tensors, names[I], args), ...);
    const c10::Device device = common_device(op, tensors);
    if (device.is_cpu()) return cpu(args...);
    if (device.is_cuda() && cuda != nullptr) return cuda(args...);
    no_kernel(op, device, cuda != nullptr);
  };
  m.def(op, dispatch, doc, py::arg(names[I])...);
}

template <typename R, typename... A>
void def_op(py::module_& m, const char* op, R (*cpu)(A...), typename NonDeduced<R (*)(A...)>::type cuda,
            const std::array<const char*, sizeof...(A)>& names, const char* doc) {
  def_op(m, op, cpu, cuda, names, doc, std::index_sequence_for<A...>{});
}

}  // namespace
}  // namespace asr

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  using asr::def_op;
  m.doc() = "asr compiled ops (csrc/): one dispatch by device per op; CPU kernels, CUDA kernels when built";

  // Full RNN-T lattice (csrc/transducer/rnnt.h). Rows of logits: row_offsets[b] + t * t_strides[b] + u.
  def_op(m, "rnnt_forward", &asr::rnnt_forward_cpu, ASR_CUDA_KERNEL(rnnt_forward_cuda),
         {"logits", "denom", "targets", "logit_lengths", "target_lengths", "row_offsets", "t_strides", "max_t",
          "max_u", "blank"},
         "RNN-T lattice forward.\n\n"
         "logits [N, V] rows, denom [N] row log-softmax normalizers (zeros for log-probs), targets [B, U] int64,\n"
         "logit_lengths, target_lengths, row_offsets, t_strides [B] int64.\n"
         "Returns [loss [B] (+inf without alignment), alpha [B, max_t, max_u+1], beta [B, max_t, max_u+1]];\n"
         "alpha and beta are float64 whatever the logits' dtype.");
  def_op(m, "rnnt_log_occupancy", &asr::rnnt_log_occupancy_cpu, ASR_CUDA_KERNEL(rnnt_log_occupancy_cuda),
         {"alpha", "beta", "loss", "scale", "logit_lengths", "target_lengths", "row_offsets", "t_strides",
          "num_rows"},
         "log(node occupancy * scale[b]) of every logits row: [num_rows] in the loss's dtype, -inf on padding\n"
         "rows and on utterances with infinite loss. alpha, beta (float64) from rnnt_forward; loss, scale [B].");
  def_op(m, "rnnt_subtract_arc_posteriors", &asr::rnnt_subtract_arc_posteriors_cpu,
         ASR_CUDA_KERNEL(rnnt_subtract_arc_posteriors_cuda),
         {"grad", "logits", "denom", "targets", "logit_lengths", "target_lengths", "row_offsets", "t_strides",
          "alpha", "beta", "loss", "scale", "blank"},
         "In place: grad[row, blank] and grad[row, y_{u+1}] -= scale[b] * arc posterior (grad [N, V], like\n"
         "logits). Utterances with infinite loss are skipped.");

  def_op(m, "rnnt_viterbi", &asr::rnnt_viterbi_cpu, ASR_CUDA_KERNEL(rnnt_viterbi_cuda),
         {"logits", "denom", "targets", "logit_lengths", "target_lengths", "row_offsets", "t_strides", "max_t",
          "max_u", "blank"},
         "RNN-T best path (max semiring on the rnnt_forward lattice), arguments as rnnt_forward.\n"
         "Returns [score [B] float64 (the best path's log-prob, -inf without a path),\n"
         "arcs [B, max_t+max_u, 3] int64: the path's arcs in order as (t, u, token), -1 past its T_b+U_b arcs].\n"
         "Ties go to the blank while backtracking (the last label as early as possible, then the one before).");

  // Mutual-information recursion (csrc/transducer/mutual_information.h).
  def_op(m, "mutual_information_forward", &asr::mutual_information_forward_cpu,
         ASR_CUDA_KERNEL(mutual_information_forward_cuda), {"px", "py", "boundary", "modified"},
         "Mutual-information recursion forward. px [B, S, T+1] (regular) or [B, S, T] (modified),\n"
         "py [B, S+1, T], boundary [B, 4] int64 (s_begin, t_begin, s_end, t_end).\n"
         "Returns [ans [B] (-inf without a path), p [B, S+1, T+1] (float64 whatever the dtype of px, py)].");
  def_op(m, "mutual_information_backward", &asr::mutual_information_backward_cpu,
         ASR_CUDA_KERNEL(mutual_information_backward_cuda),
         {"px", "py", "boundary", "p", "ans", "ans_grad", "modified"},
         "Mutual-information recursion backward: [px_grad, py_grad] = d ans / d (px, py) * ans_grad[b]\n"
         "(arc posteriors), shaped like px and py. p and ans from mutual_information_forward.");

  // Token-and-Duration Transducer lattice (csrc/transducer/tdt.h).
  def_op(m, "tdt_forward", &asr::tdt_forward_cpu, ASR_CUDA_KERNEL(tdt_forward_cuda),
         {"logits", "den_tok", "den_dur", "targets", "logit_lengths", "target_lengths", "row_offsets",
          "t_strides", "durations", "num_tokens", "max_t", "max_u", "blank", "sigma"},
         "TDT lattice forward. logits [N, V+D] rows (V = num_tokens token logits, then D duration logits),\n"
         "den_tok, den_dur [N] normalizers of the two parts, targets [B, U], durations [D] int64.\n"
         "Returns [loss [B] (+inf without a path), alpha [B, max_t+1, max_u+1], beta [B, max_t+1, max_u+1]];\n"
         "alpha and beta are float64 whatever the logits' dtype.");
  def_op(m, "tdt_subtract_arc_posteriors", &asr::tdt_subtract_arc_posteriors_cpu,
         ASR_CUDA_KERNEL(tdt_subtract_arc_posteriors_cuda),
         {"grad", "logits", "den_tok", "den_dur", "targets", "logit_lengths", "target_lengths", "row_offsets",
          "t_strides", "durations", "alpha", "beta", "loss", "scale", "num_tokens", "blank", "sigma"},
         "In place, for every TDT arc: grad[row, token] and grad[row, V + i] -= scale[b] * arc posterior\n"
         "(grad [N, V+D], like logits).");

  def_op(m, "tdt_viterbi", &asr::tdt_viterbi_cpu, ASR_CUDA_KERNEL(tdt_viterbi_cuda),
         {"logits", "den_tok", "den_dur", "targets", "logit_lengths", "target_lengths", "row_offsets",
          "t_strides", "durations", "num_tokens", "max_t", "max_u", "blank", "sigma"},
         "TDT best path (max semiring on the tdt_forward lattice), arguments as tdt_forward.\n"
         "Returns [score [B] float64 (-inf without a path), arcs [B, max_t+max_u, 4] int64: the path's arcs\n"
         "in order as (t, u, token, duration index), -1 past the path]. Ties: backtracking, the first best arc\n"
         "into a node wins, blank arcs before label arcs, each in the order of durations.");

  // FSA core (csrc/fsa/fsa.h). Graph construction runs on the CPU only (graphs are small and built per
  // batch; asr.fsa moves them to the log-probs' device for the intersection, which has CUDA kernels).
  def_op(m, "fsa_ctc_topo", &asr::fsa_ctc_topo_cpu, nullptr, {"vocab_size", "modified"},
         "The CTC topology (standard, or modified: repeats need no blank) over tokens 0..vocab_size-1 as one\n"
         "transducer FSA: [arcs [A, 4] int32, scores [A] float32, arc_offsets [2] int64, num_states [1] int64].");
  def_op(m, "fsa_linear", &asr::fsa_linear_cpu, nullptr, {"targets", "target_lengths"},
         "Linear acceptors of padded targets [N, U] int64 (labels > 0) with target_lengths [N]:\n"
         "[arcs, scores, arc_offsets [N+1], num_states [N]].");
  def_op(m, "fsa_compose", &asr::fsa_compose_cpu, nullptr,
         {"topo_arcs", "topo_scores", "topo_num_states", "arcs", "scores", "arc_offsets", "num_states"},
         "topo (one transducer, matched on aux_label) o each of N acceptors, trimmed (training graphs):\n"
         "[arcs, scores, arc_offsets [N+1], num_states [N]].");
  def_op(m, "dense_intersect_forward", &asr::dense_intersect_forward_cpu,
         ASR_CUDA_KERNEL(dense_intersect_forward_cuda),
         {"arcs", "scores", "arc_offsets", "num_states", "graph_index", "log_probs", "lengths", "arc_extra",
          "frame_extra", "viterbi"},
         "Graph graph_index[b] x log_probs[b, :lengths[b]] (log_probs [B, T, V]), log or tropical (viterbi)\n"
         "semiring; arc_extra [A] and frame_extra [B, T] may be empty (no extra scores).\n"
         "Returns [total [B], alpha, alpha_offsets [B+1]] and with viterbi also best_arcs [B, T].");
  def_op(m, "dense_intersect_backward", &asr::dense_intersect_backward_cpu,
         ASR_CUDA_KERNEL(dense_intersect_backward_cuda),
         {"arcs", "scores", "arc_offsets", "num_states", "graph_index", "log_probs", "lengths", "arc_extra",
          "frame_extra", "total", "alpha", "alpha_offsets", "grad_total"},
         "d(sum_b grad_total[b] * total[b]) / d log_probs: [B, T, V] (log semiring; zero where total is not\n"
         "finite). total, alpha, alpha_offsets from dense_intersect_forward.");

  m.attr("with_cuda") = asr::kWithCuda;
}
