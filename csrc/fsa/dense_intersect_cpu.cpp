// Dense intersection of epsilon-free graphs with per-frame log-probs, on the CPU:
// forward (log or tropical semiring) and the backward pass to the log-probs.
// at::parallel_for (OpenMP) runs over utterances; each utterance walks its frames.
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "fsa/fsa.h"

namespace asr {
namespace {

struct Graphs {
  const int32_t* arcs;
  const float* scores;
  const int64_t* off;
  const int64_t* ns;
  const int64_t* gi;
  int64_t num_graphs;
};

struct Dense {
  const int64_t* len;
  int64_t B, T, V;
  const float* arc_extra;    // [A] or null
  const void* frame_extra;   // [B, T] of the log-probs' dtype, or null
};

Graphs check_graphs(const torch::Tensor& arcs, const torch::Tensor& scores, const torch::Tensor& arc_offsets,
                    const torch::Tensor& num_states, const torch::Tensor& graph_index, int64_t B) {
  TORCH_CHECK(arcs.dim() == 2 && arcs.size(1) == 4 && arcs.scalar_type() == torch::kInt32 && arcs.is_contiguous(),
              "arcs must be contiguous int32 [A, 4]");
  TORCH_CHECK(scores.scalar_type() == torch::kFloat32 && scores.is_contiguous() && scores.size(0) == arcs.size(0),
              "scores must be contiguous float32 [A]");
  TORCH_CHECK(arc_offsets.scalar_type() == torch::kInt64 && arc_offsets.is_contiguous(),
              "arc_offsets must be contiguous int64");
  TORCH_CHECK(num_states.scalar_type() == torch::kInt64 && num_states.is_contiguous() &&
                  num_states.size(0) + 1 == arc_offsets.size(0),
              "num_states must be contiguous int64 [N]");
  TORCH_CHECK(graph_index.scalar_type() == torch::kInt64 && graph_index.is_contiguous() && graph_index.size(0) == B,
              "graph_index must be contiguous int64 [B]");
  const int64_t* gi = graph_index.data_ptr<int64_t>();
  for (int64_t b = 0; b < B; ++b)
    TORCH_CHECK(gi[b] >= 0 && gi[b] < num_states.size(0), "graph_index[", b, "] = ", gi[b], " has no graph");
  return Graphs{arcs.data_ptr<int32_t>(), scores.data_ptr<float>(), arc_offsets.data_ptr<int64_t>(),
                num_states.data_ptr<int64_t>(), gi, num_states.size(0)};
}

Dense check_dense(const torch::Tensor& log_probs, const torch::Tensor& lengths, const torch::Tensor& arc_extra,
                  const torch::Tensor& frame_extra, int64_t num_arcs) {
  TORCH_CHECK(log_probs.dim() == 3 && log_probs.is_contiguous(), "log_probs must be contiguous [B, T, V]");
  TORCH_CHECK(lengths.scalar_type() == torch::kInt64 && lengths.is_contiguous() && lengths.size(0) == log_probs.size(0),
              "lengths must be contiguous int64 [B]");
  const int64_t B = log_probs.size(0), T = log_probs.size(1);
  const int64_t* len = lengths.data_ptr<int64_t>();
  for (int64_t b = 0; b < B; ++b) TORCH_CHECK(len[b] >= 0 && len[b] <= T, "lengths[", b, "] outside [0, ", T, "]");
  const bool extra = arc_extra.numel() > 0;
  if (extra) {
    TORCH_CHECK(arc_extra.scalar_type() == torch::kFloat32 && arc_extra.is_contiguous() &&
                    arc_extra.size(0) == num_arcs,
                "arc_extra must be contiguous float32 [A]");
    TORCH_CHECK(frame_extra.scalar_type() == log_probs.scalar_type() && frame_extra.is_contiguous() &&
                    frame_extra.dim() == 2 && frame_extra.size(0) == B && frame_extra.size(1) == T,
                "frame_extra must be contiguous [B, T] of the log-probs' dtype");
  }
  return Dense{len, B, T, log_probs.size(2), extra ? arc_extra.data_ptr<float>() : nullptr,
               extra ? frame_extra.data_ptr() : nullptr};
}

// Validate graph g's arcs once (labels within the vocabulary, states in range).
void check_graph_arcs(const Graphs& G, int64_t g, int64_t V) {
  const int64_t S = G.ns[g];
  for (int64_t a = G.off[g]; a < G.off[g + 1]; ++a) {
    const int32_t* arc = G.arcs + 4 * a;
    TORCH_CHECK(arc[0] >= 0 && arc[0] < S && arc[1] >= 0 && arc[1] < S, "graph ", g, " arc ", a - G.off[g],
                " has a state outside [0, ", S, ")");
    TORCH_CHECK(arc[2] < V && arc[2] >= -1, "graph ", g, " arc ", a - G.off[g], " has label ", arc[2],
                " outside the ", V, " log-prob columns");
    TORCH_CHECK((arc[2] == -1) == (arc[1] == S - 1), "graph ", g, " arc ", a - G.off[g],
                ": only arcs into the final state may (and must) carry label -1");
    TORCH_CHECK(a == G.off[g] || arc[0] >= arc[-4], "graph ", g, ": arcs must be sorted by source state");
  }
}

template <typename scalar_t>
inline scalar_t arc_weight(const Graphs& G, const Dense& D, const scalar_t* lp_t, const scalar_t* fx_t, int64_t a) {
  scalar_t w = static_cast<scalar_t>(G.scores[a]) + lp_t[G.arcs[4 * a + 2]];
  if (D.arc_extra != nullptr) w += static_cast<scalar_t>(D.arc_extra[a]) * *fx_t;
  return w;
}

}  // namespace

void check_dense_intersect_args(const torch::Tensor& arcs, const torch::Tensor& scores,
                                const torch::Tensor& arc_offsets, const torch::Tensor& num_states,
                                const torch::Tensor& graph_index, const torch::Tensor& log_probs,
                                const torch::Tensor& lengths, const torch::Tensor& arc_extra,
                                const torch::Tensor& frame_extra, bool check_arcs) {
  const Graphs G = check_graphs(arcs, scores, arc_offsets, num_states, graph_index, log_probs.size(0));
  const Dense D = check_dense(log_probs, lengths, arc_extra, frame_extra, arcs.size(0));
  if (check_arcs)
    for (int64_t g = 0; g < G.num_graphs; ++g) check_graph_arcs(G, g, D.V);
}

std::vector<torch::Tensor> dense_intersect_forward_cpu(const torch::Tensor& arcs, const torch::Tensor& scores,
                                                       const torch::Tensor& arc_offsets,
                                                       const torch::Tensor& num_states,
                                                       const torch::Tensor& graph_index,
                                                       const torch::Tensor& log_probs, const torch::Tensor& lengths,
                                                       const torch::Tensor& arc_extra,
                                                       const torch::Tensor& frame_extra, bool viterbi) {
  const int64_t B = log_probs.size(0);
  const Graphs G = check_graphs(arcs, scores, arc_offsets, num_states, graph_index, B);
  const Dense D = check_dense(log_probs, lengths, arc_extra, frame_extra, arcs.size(0));
  for (int64_t g = 0; g < G.num_graphs; ++g) check_graph_arcs(G, g, D.V);
  auto alpha_offsets = torch::empty({B + 1}, torch::kInt64);
  int64_t* aoff = alpha_offsets.data_ptr<int64_t>();
  aoff[0] = 0;
  for (int64_t b = 0; b < B; ++b) aoff[b + 1] = aoff[b] + (D.len[b] + 1) * G.ns[G.gi[b]];
  auto opts = log_probs.options();
  auto total = torch::empty({B}, opts);
  auto alpha = torch::empty({aoff[B]}, opts);
  auto best = viterbi ? torch::full({B, D.T}, -1, torch::kInt64) : torch::empty({0}, torch::kInt64);

  AT_DISPATCH_FLOATING_TYPES(log_probs.scalar_type(), "dense_intersect_forward_cpu", [&] {
    const scalar_t NEG = -std::numeric_limits<scalar_t>::infinity();
    const scalar_t* lp = log_probs.data_ptr<scalar_t>();
    const scalar_t* fx = static_cast<const scalar_t*>(D.frame_extra);
    scalar_t* al = alpha.data_ptr<scalar_t>();
    scalar_t* tot = total.data_ptr<scalar_t>();
    int64_t* bp_out = viterbi ? best.data_ptr<int64_t>() : nullptr;
    at::parallel_for(0, B, 1, [&](int64_t begin, int64_t end) {
      std::vector<int64_t> in_first, in_arcs;
      std::vector<scalar_t> w;
      std::vector<int32_t> back;  // viterbi: best incoming arc of (t, state)
      for (int64_t b = begin; b < end; ++b) {
        const int64_t g = G.gi[b], S = G.ns[g], a0 = G.off[g], a1 = G.off[g + 1], Tb = D.len[b];
        scalar_t* A = al + aoff[b];  // [Tb+1, S]
        // incoming arcs of each state (frame-consuming arcs only), grouped by destination
        in_first.assign(S + 1, 0);
        for (int64_t a = a0; a < a1; ++a)
          if (G.arcs[4 * a + 2] >= 0) ++in_first[G.arcs[4 * a + 1] + 1];
        for (int64_t s = 0; s < S; ++s) in_first[s + 1] += in_first[s];
        in_arcs.resize(in_first[S]);
        {
          std::vector<int64_t> fill(in_first.begin(), in_first.end() - 1);
          for (int64_t a = a0; a < a1; ++a)
            if (G.arcs[4 * a + 2] >= 0) in_arcs[fill[G.arcs[4 * a + 1]]++] = a;
        }
        w.resize(in_arcs.size());
        if (viterbi) back.assign((Tb + 1) * S, -1);
        std::fill(A, A + S, NEG);
        A[0] = 0;
        for (int64_t t = 0; t < Tb; ++t) {
          const scalar_t* lp_t = lp + (b * D.T + t) * D.V;
          const scalar_t* fx_t = fx != nullptr ? fx + b * D.T + t : nullptr;
          const scalar_t* prev = A + t * S;
          scalar_t* cur = A + (t + 1) * S;
          for (int64_t s = 0; s < S; ++s) {
            scalar_t m = NEG;
            int64_t arg = -1;
            for (int64_t k = in_first[s]; k < in_first[s + 1]; ++k) {
              const int64_t a = in_arcs[k];
              const scalar_t x = prev[G.arcs[4 * a]] + arc_weight(G, D, lp_t, fx_t, a);
              w[k] = x;
              if (x > m) {
                m = x;
                arg = a;
              }
            }
            if (viterbi || m == NEG) {
              cur[s] = m;
              if (viterbi) back[(t + 1) * S + s] = static_cast<int32_t>(arg);
              continue;
            }
            scalar_t sum = 0;
            for (int64_t k = in_first[s]; k < in_first[s + 1]; ++k) sum += std::exp(w[k] - m);
            cur[s] = m + std::log(sum);
          }
        }
        // arcs into the final state, after the last frame
        const scalar_t* last = A + Tb * S;
        scalar_t m = NEG;
        int64_t arg = -1;
        for (int64_t a = a0; a < a1; ++a)
          if (G.arcs[4 * a + 2] == -1) {
            const scalar_t x = last[G.arcs[4 * a]] + static_cast<scalar_t>(G.scores[a]);
            if (x > m) {
              m = x;
              arg = a;
            }
          }
        if (viterbi || m == NEG) {
          tot[b] = m;
        } else {
          scalar_t sum = 0;
          for (int64_t a = a0; a < a1; ++a)
            if (G.arcs[4 * a + 2] == -1)
              sum += std::exp(last[G.arcs[4 * a]] + static_cast<scalar_t>(G.scores[a]) - m);
          tot[b] = m + std::log(sum);
        }
        if (viterbi && m != NEG) {  // backtrack from the best final arc
          int64_t s = G.arcs[4 * arg];
          for (int64_t t = Tb; t >= 1; --t) {
            const int32_t a = back[t * S + s];
            bp_out[b * D.T + t - 1] = a;
            s = G.arcs[4 * a];
          }
        }
      }
    });
  });
  if (viterbi) return {total, alpha, alpha_offsets, best};
  return {total, alpha, alpha_offsets};
}

torch::Tensor dense_intersect_backward_cpu(const torch::Tensor& arcs, const torch::Tensor& scores,
                                           const torch::Tensor& arc_offsets, const torch::Tensor& num_states,
                                           const torch::Tensor& graph_index, const torch::Tensor& log_probs,
                                           const torch::Tensor& lengths, const torch::Tensor& arc_extra,
                                           const torch::Tensor& frame_extra, const torch::Tensor& total,
                                           const torch::Tensor& alpha, const torch::Tensor& alpha_offsets,
                                           const torch::Tensor& grad_total) {
  const int64_t B = log_probs.size(0);
  const Graphs G = check_graphs(arcs, scores, arc_offsets, num_states, graph_index, B);
  const Dense D = check_dense(log_probs, lengths, arc_extra, frame_extra, arcs.size(0));
  // the arcs index beta and the gradient: checked here too (the backward may get other graphs)
  for (int64_t g = 0; g < G.num_graphs; ++g) check_graph_arcs(G, g, D.V);
  TORCH_CHECK(grad_total.is_contiguous() && grad_total.size(0) == B && grad_total.scalar_type() == log_probs.scalar_type(),
              "grad_total must be contiguous [B] of the log-probs' dtype");
  auto grad = torch::zeros_like(log_probs);
  const int64_t* aoff = alpha_offsets.data_ptr<int64_t>();

  AT_DISPATCH_FLOATING_TYPES(log_probs.scalar_type(), "dense_intersect_backward_cpu", [&] {
    const scalar_t NEG = -std::numeric_limits<scalar_t>::infinity();
    const scalar_t* lp = log_probs.data_ptr<scalar_t>();
    const scalar_t* fx = static_cast<const scalar_t*>(D.frame_extra);
    const scalar_t* al = alpha.data_ptr<scalar_t>();
    const scalar_t* tot = total.data_ptr<scalar_t>();
    const scalar_t* gt = grad_total.data_ptr<scalar_t>();
    scalar_t* gr = grad.data_ptr<scalar_t>();
    at::parallel_for(0, B, 1, [&](int64_t begin, int64_t end) {
      std::vector<scalar_t> beta, next;
      for (int64_t b = begin; b < end; ++b) {
        if (!std::isfinite(tot[b]) || gt[b] == 0) continue;
        const int64_t g = G.gi[b], S = G.ns[g], a0 = G.off[g], a1 = G.off[g + 1], Tb = D.len[b];
        const scalar_t* A = al + aoff[b];
        // beta after the last frame: the final arcs
        next.assign(S, NEG);
        for (int64_t a = a0; a < a1; ++a)
          if (G.arcs[4 * a + 2] == -1) {
            const int64_t s = G.arcs[4 * a];
            const scalar_t x = static_cast<scalar_t>(G.scores[a]);
            next[s] = next[s] == NEG ? x : std::max(next[s], x) + std::log1p(std::exp(-std::abs(next[s] - x)));
          }
        beta.resize(S);
        const scalar_t Z = tot[b], scale = gt[b];
        for (int64_t t = Tb - 1; t >= 0; --t) {
          const scalar_t* lp_t = lp + (b * D.T + t) * D.V;
          const scalar_t* fx_t = fx != nullptr ? fx + b * D.T + t : nullptr;
          const scalar_t* A_t = A + t * S;
          scalar_t* g_t = gr + (b * D.T + t) * D.V;
          // arcs are sorted by source: one pass gives beta[t] and the arc posteriors at t
          int64_t a = a0;
          for (int64_t s = 0; s < S; ++s) {
            const int64_t first = a;
            scalar_t m = NEG;
            for (; a < a1 && G.arcs[4 * a] == s; ++a) {
              if (G.arcs[4 * a + 2] < 0) continue;
              const scalar_t x = arc_weight(G, D, lp_t, fx_t, a) + next[G.arcs[4 * a + 1]];
              if (x > m) m = x;
            }
            if (m == NEG) {
              beta[s] = NEG;
              continue;
            }
            scalar_t sum = 0;
            const scalar_t from = A_t[s] - Z;
            for (int64_t k = first; k < a; ++k) {
              if (G.arcs[4 * k + 2] < 0) continue;
              const scalar_t x = arc_weight(G, D, lp_t, fx_t, k) + next[G.arcs[4 * k + 1]];
              sum += std::exp(x - m);
              if (A_t[s] != NEG) g_t[G.arcs[4 * k + 2]] += scale * std::exp(from + x);
            }
            beta[s] = m + std::log(sum);
          }
          std::swap(beta, next);
        }
      }
    });
  });
  return grad;
}

}  // namespace asr
