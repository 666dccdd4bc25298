// The torch-facing CUDA ops of dense intersection (fsa.h): the checks and outputs of
// dense_intersect_cpu.cpp, on the tensors' GPU and its current stream, calling the kernels of
// dense_intersect_cuda.cu. Compiled only in builds with CUDA kernels (ASR_WITH_CUDA).
//
// The graphs are small next to the log-probs (a CTC training graph has about 3 U arcs), and they
// are built on the CPU: the wrapper copies them and the lengths to the host, checks them there with
// the CPU op's own checks (the same messages), and builds the indexes the kernels walk (incoming
// arcs by state, label groups), which go to the GPU in one copy. The log-probs never leave it.
#ifdef ASR_WITH_CUDA
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <algorithm>
#include <utility>
#include <vector>

#include "fsa/dense_intersect_cuda.h"
#include "fsa/fsa.h"

namespace asr {
namespace {

// Host copies of the index tensors, checked as the CPU op checks them.
struct HostArgs {
  torch::Tensor arcs, arc_offsets, num_states, graph_index, lengths;
};

HostArgs host_args(const torch::Tensor& arcs, const torch::Tensor& scores, const torch::Tensor& arc_offsets,
                   const torch::Tensor& num_states, const torch::Tensor& graph_index,
                   const torch::Tensor& log_probs, const torch::Tensor& lengths, const torch::Tensor& arc_extra,
                   const torch::Tensor& frame_extra, bool check_arcs) {
  // the kernels read these in place: a copy to the host could hide a non-contiguous layout
  const std::pair<const torch::Tensor*, const char*> in_place[] = {
      {&arcs, "arcs"}, {&arc_offsets, "arc_offsets"}, {&num_states, "num_states"}, {&graph_index, "graph_index"},
      {&lengths, "lengths"}};
  for (const auto& [t, name] : in_place) TORCH_CHECK(t->is_contiguous(), name, " must be contiguous");
  HostArgs h{arcs.cpu(), arc_offsets.cpu(), num_states.cpu(), graph_index.cpu(), lengths.cpu()};
  check_dense_intersect_args(h.arcs, scores, h.arc_offsets, h.num_states, h.graph_index, log_probs, h.lengths,
                             arc_extra, frame_extra, check_arcs);
  return h;
}

// The kernels' indexes (dense_intersect_cuda.h), built on the host into one int64 buffer: its
// sections are named by their offsets, and it goes to the GPU in one copy.
struct Index {
  std::vector<int64_t> buf;
  int64_t state_off, in_first, in_arcs, out_first, grp_off, grp_label, grp_first, grp_arcs, aoff, boff, poff;
  int64_t max_states = 0;  // over the graphs the batch uses
  int64_t beta_size = 0, post_size = 0;
};

Index build_index(const HostArgs& h) {
  const int64_t N = h.num_states.size(0), B = h.graph_index.size(0);
  const int32_t* arc = h.arcs.data_ptr<int32_t>();
  const int64_t* off = h.arc_offsets.data_ptr<int64_t>();
  const int64_t* ns = h.num_states.data_ptr<int64_t>();
  const int64_t* gi = h.graph_index.data_ptr<int64_t>();
  const int64_t* len = h.lengths.data_ptr<int64_t>();
  Index x;
  std::vector<int64_t>& buf = x.buf;
  auto section = [&](int64_t n) {
    const int64_t at = static_cast<int64_t>(buf.size());
    buf.resize(buf.size() + n, 0);
    return at;
  };
  x.state_off = section(N + 1);
  for (int64_t g = 0; g < N; ++g) buf[x.state_off + g + 1] = buf[x.state_off + g] + ns[g];
  const int64_t TS = buf[x.state_off + N];
  auto so = [&](int64_t g) { return buf[x.state_off + g]; };
  // incoming frame-consuming arcs by global destination state, in arc order
  x.in_first = section(TS + 1);
  int64_t consuming = 0;
  for (int64_t g = 0; g < N; ++g)
    for (int64_t a = off[g]; a < off[g + 1]; ++a)
      if (arc[4 * a + 2] >= 0) ++buf[x.in_first + so(g) + arc[4 * a + 1] + 1], ++consuming;
  for (int64_t k = 0; k < TS; ++k) buf[x.in_first + k + 1] += buf[x.in_first + k];
  x.in_arcs = section(consuming);
  {
    std::vector<int64_t> fill(buf.begin() + x.in_first, buf.begin() + x.in_first + TS);
    for (int64_t g = 0; g < N; ++g)
      for (int64_t a = off[g]; a < off[g + 1]; ++a)
        if (arc[4 * a + 2] >= 0) buf[x.in_arcs + fill[so(g) + arc[4 * a + 1]]++] = a;
  }
  // outgoing arcs by global source state: arcs are sorted by source, so ranges of arc indexes
  x.out_first = section(TS + 1);
  for (int64_t g = 0; g < N; ++g) {
    std::vector<int64_t> count(ns[g], 0);
    for (int64_t a = off[g]; a < off[g + 1]; ++a) ++count[arc[4 * a]];
    buf[x.out_first + so(g)] = off[g];
    for (int64_t s = 0; s < ns[g]; ++s) buf[x.out_first + so(g) + s + 1] = buf[x.out_first + so(g) + s] + count[s];
  }
  // frame-consuming arcs grouped by (graph, label), in arc order within a group
  std::vector<std::pair<int64_t, int64_t>> by_label;  // (label, arc) of one graph
  std::vector<int64_t> grp_off{0}, grp_label, grp_first{0}, grp_arcs;
  for (int64_t g = 0; g < N; ++g) {
    by_label.clear();
    for (int64_t a = off[g]; a < off[g + 1]; ++a)
      if (arc[4 * a + 2] >= 0) by_label.emplace_back(arc[4 * a + 2], a);
    std::stable_sort(by_label.begin(), by_label.end(),
                     [](const auto& p, const auto& q) { return p.first < q.first; });
    for (size_t i = 0; i < by_label.size(); ++i) {
      if (i == 0 || by_label[i].first != by_label[i - 1].first) {
        if (i > 0) grp_first.push_back(static_cast<int64_t>(grp_arcs.size()));
        grp_label.push_back(by_label[i].first);
      }
      grp_arcs.push_back(by_label[i].second);
    }
    if (!by_label.empty()) grp_first.push_back(static_cast<int64_t>(grp_arcs.size()));
    grp_off.push_back(static_cast<int64_t>(grp_label.size()));
  }
  auto put = [&](const std::vector<int64_t>& v) {
    const int64_t at = section(static_cast<int64_t>(v.size()));
    std::copy(v.begin(), v.end(), buf.begin() + at);
    return at;
  };
  x.grp_off = put(grp_off);
  x.grp_label = put(grp_label);
  x.grp_first = put(grp_first);
  x.grp_arcs = put(grp_arcs);
  // per utterance: alpha [len + 1, S], beta scratch [2, S], posterior scratch [A_g]
  x.aoff = section(B + 1);
  x.boff = section(B + 1);
  x.poff = section(B + 1);
  for (int64_t b = 0; b < B; ++b) {
    const int64_t g = gi[b];
    buf[x.aoff + b + 1] = buf[x.aoff + b] + (len[b] + 1) * ns[g];
    buf[x.boff + b + 1] = buf[x.boff + b] + 2 * ns[g];
    buf[x.poff + b + 1] = buf[x.poff + b] + (off[g + 1] - off[g]);
    x.max_states = std::max(x.max_states, ns[g]);
  }
  x.beta_size = buf[x.boff + B];
  x.post_size = buf[x.poff + B];
  return x;
}

cuda::FsaGraphs device_graphs(const torch::Tensor& arcs, const torch::Tensor& scores,
                              const torch::Tensor& arc_offsets, const torch::Tensor& num_states, const Index& x,
                              const int64_t* d) {
  return cuda::FsaGraphs{arcs.data_ptr<int32_t>(), scores.data_ptr<float>(),  arc_offsets.data_ptr<int64_t>(),
                         num_states.data_ptr<int64_t>(), d + x.state_off,     d + x.in_first,
                         d + x.in_arcs,                 d + x.out_first,     d + x.grp_off,
                         d + x.grp_label,               d + x.grp_first,     d + x.grp_arcs};
}

template <typename scalar_t>
cuda::DenseFrames<scalar_t> device_frames(const torch::Tensor& log_probs, const torch::Tensor& graph_index,
                                          const torch::Tensor& lengths, const int64_t* aoff,
                                          const torch::Tensor& arc_extra, const torch::Tensor& frame_extra) {
  const bool extra = arc_extra.numel() > 0;
  return cuda::DenseFrames<scalar_t>{log_probs.data_ptr<scalar_t>(),
                                     graph_index.data_ptr<int64_t>(),
                                     lengths.data_ptr<int64_t>(),
                                     aoff,
                                     extra ? arc_extra.data_ptr<float>() : nullptr,
                                     extra ? frame_extra.data_ptr<scalar_t>() : nullptr,
                                     log_probs.size(0),
                                     log_probs.size(1),
                                     log_probs.size(2)};
}

torch::Tensor to_device(std::vector<int64_t>& buf, const c10::Device& device) {
  // from pageable host memory: the copy is complete when .to() returns, before buf can change
  return torch::from_blob(buf.data(), {static_cast<int64_t>(buf.size())}, torch::kInt64).to(device);
}

}  // namespace

std::vector<torch::Tensor> dense_intersect_forward_cuda(const torch::Tensor& arcs, const torch::Tensor& scores,
                                                        const torch::Tensor& arc_offsets,
                                                        const torch::Tensor& num_states,
                                                        const torch::Tensor& graph_index,
                                                        const torch::Tensor& log_probs, const torch::Tensor& lengths,
                                                        const torch::Tensor& arc_extra,
                                                        const torch::Tensor& frame_extra, bool viterbi) {
  const c10::cuda::CUDAGuard guard(log_probs.device());
  const HostArgs h = host_args(arcs, scores, arc_offsets, num_states, graph_index, log_probs, lengths, arc_extra,
                               frame_extra, /*check_arcs=*/true);
  Index x = build_index(h);
  const int64_t B = log_probs.size(0), T = log_probs.size(1);
  const int64_t alpha_size = x.buf[x.aoff + B];
  auto idx = to_device(x.buf, log_probs.device());
  const int64_t* d = idx.data_ptr<int64_t>();
  auto alpha_offsets = idx.slice(0, x.aoff, x.aoff + B + 1).clone();
  auto opts = log_probs.options();
  auto total = torch::empty({B}, opts);
  auto alpha = torch::empty({alpha_size}, opts);
  auto best = viterbi ? torch::full({B, T}, -1, opts.dtype(torch::kInt64)) : torch::empty({0}, torch::kInt64);
  auto back = viterbi ? torch::full({alpha_size}, -1, opts.dtype(torch::kInt32)) : torch::Tensor();
  AT_DISPATCH_FLOATING_TYPES(log_probs.scalar_type(), "dense_intersect_forward_cuda", [&] {
    C10_CUDA_CHECK(cuda::dense_intersect_forward_launch(
        device_graphs(arcs, scores, arc_offsets, num_states, x, d),
        device_frames<scalar_t>(log_probs, graph_index, lengths, d + x.aoff, arc_extra, frame_extra), viterbi,
        alpha.data_ptr<scalar_t>(), total.data_ptr<scalar_t>(), viterbi ? back.data_ptr<int32_t>() : nullptr,
        viterbi ? best.data_ptr<int64_t>() : nullptr, cuda::block_threads(x.max_states),
        c10::cuda::getCurrentCUDAStream()));
  });
  if (viterbi) return {total, alpha, alpha_offsets, best};
  return {total, alpha, alpha_offsets};
}

torch::Tensor dense_intersect_backward_cuda(const torch::Tensor& arcs, const torch::Tensor& scores,
                                            const torch::Tensor& arc_offsets, const torch::Tensor& num_states,
                                            const torch::Tensor& graph_index, const torch::Tensor& log_probs,
                                            const torch::Tensor& lengths, const torch::Tensor& arc_extra,
                                            const torch::Tensor& frame_extra, const torch::Tensor& total,
                                            const torch::Tensor& alpha, const torch::Tensor& alpha_offsets,
                                            const torch::Tensor& grad_total) {
  const c10::cuda::CUDAGuard guard(log_probs.device());
  // check_arcs: build_index below indexes host arrays by the arcs' states (and the kernel indexes
  // beta and the posteriors by them), so a backward given other graphs than its forward's must
  // not reach it unchecked; the check is one pass over the arcs, as build_index is
  const HostArgs h = host_args(arcs, scores, arc_offsets, num_states, graph_index, log_probs, lengths, arc_extra,
                               frame_extra, /*check_arcs=*/true);
  const int64_t B = log_probs.size(0);
  TORCH_CHECK(grad_total.is_contiguous() && grad_total.size(0) == B && grad_total.scalar_type() == log_probs.scalar_type(),
              "grad_total must be contiguous [B] of the log-probs' dtype");
  TORCH_CHECK(total.is_contiguous() && total.numel() == B && total.scalar_type() == log_probs.scalar_type() &&
                  alpha.is_contiguous() && alpha.scalar_type() == log_probs.scalar_type() &&
                  alpha_offsets.scalar_type() == torch::kInt64 && alpha_offsets.is_contiguous() &&
                  alpha_offsets.numel() == B + 1,
              "total, alpha and alpha_offsets must be dense_intersect_forward's");
  Index x = build_index(h);
  TORCH_CHECK(alpha.numel() == x.buf[x.aoff + B], "alpha must be dense_intersect_forward's for these lengths");
  auto idx = to_device(x.buf, log_probs.device());
  const int64_t* d = idx.data_ptr<int64_t>();
  auto grad = torch::zeros_like(log_probs);
  auto beta = torch::empty({x.beta_size}, log_probs.options());
  auto post = torch::empty({x.post_size}, log_probs.options());
  AT_DISPATCH_FLOATING_TYPES(log_probs.scalar_type(), "dense_intersect_backward_cuda", [&] {
    C10_CUDA_CHECK(cuda::dense_intersect_backward_launch(
        device_graphs(arcs, scores, arc_offsets, num_states, x, d),
        // alpha's offsets as computed here from the checked lengths and graphs (alpha's size was
        // checked against them), not the alpha_offsets argument, whose values are not checked
        device_frames<scalar_t>(log_probs, graph_index, lengths, d + x.aoff, arc_extra, frame_extra),
        alpha.data_ptr<scalar_t>(), total.data_ptr<scalar_t>(), grad_total.data_ptr<scalar_t>(), d + x.boff,
        d + x.poff, beta.data_ptr<scalar_t>(), post.data_ptr<scalar_t>(), grad.data_ptr<scalar_t>(),
        cuda::block_threads(x.max_states), c10::cuda::getCurrentCUDAStream()));
  });
  return grad;
}

}  // namespace asr
#endif  // ASR_WITH_CUDA
