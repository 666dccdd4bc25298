// Graph builders on the CPU: CTC topologies, linear transcripts, composition + trimming.
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <deque>
#include <unordered_map>

#include "fsa/fsa.h"

namespace asr {
namespace {

struct Arc {
  int32_t src, dst, label, aux;
  float score;
};

// Pack per-FSA arc lists (already sorted by src) into {arcs, scores, arc_offsets, num_states}.
std::vector<torch::Tensor> pack(const std::vector<std::vector<Arc>>& fsas, const std::vector<int64_t>& states) {
  const int64_t n = static_cast<int64_t>(fsas.size());
  auto offsets = torch::empty({n + 1}, torch::kInt64);
  auto* off = offsets.data_ptr<int64_t>();
  off[0] = 0;
  for (int64_t i = 0; i < n; ++i) off[i + 1] = off[i] + static_cast<int64_t>(fsas[i].size());
  auto arcs = torch::empty({off[n], 4}, torch::kInt32);
  auto scores = torch::empty({off[n]}, torch::kFloat32);
  auto* a = arcs.data_ptr<int32_t>();
  auto* s = scores.data_ptr<float>();
  at::parallel_for(0, n, 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      int64_t k = off[i];
      for (const Arc& arc : fsas[i]) {
        a[4 * k] = arc.src;
        a[4 * k + 1] = arc.dst;
        a[4 * k + 2] = arc.label;
        a[4 * k + 3] = arc.aux;
        s[k++] = arc.score;
      }
    }
  });
  auto num_states = torch::tensor(states, torch::kInt64);
  return {arcs, scores, offsets, num_states};
}

void check_fsa_vec(const torch::Tensor& arcs, const torch::Tensor& scores, const torch::Tensor& arc_offsets,
                   const torch::Tensor& num_states) {
  TORCH_CHECK(arcs.dim() == 2 && arcs.size(1) == 4 && arcs.scalar_type() == torch::kInt32 && arcs.is_contiguous(),
              "arcs must be contiguous int32 [A, 4]");
  TORCH_CHECK(scores.dim() == 1 && scores.size(0) == arcs.size(0) && scores.scalar_type() == torch::kFloat32 &&
                  scores.is_contiguous(),
              "scores must be contiguous float32 [A]");
  TORCH_CHECK(arc_offsets.scalar_type() == torch::kInt64 && arc_offsets.is_contiguous() && arc_offsets.dim() == 1,
              "arc_offsets must be contiguous int64 [N+1]");
  TORCH_CHECK(num_states.scalar_type() == torch::kInt64 && num_states.is_contiguous() &&
                  num_states.size(0) + 1 == arc_offsets.size(0),
              "num_states must be contiguous int64 [N]");
}

}  // namespace

std::vector<torch::Tensor> fsa_ctc_topo_cpu(int64_t vocab_size, bool modified) {
  TORCH_CHECK(vocab_size >= 2, "the CTC topology needs blank and at least one token");
  const int32_t V = static_cast<int32_t>(vocab_size);
  std::vector<Arc> arcs;
  arcs.reserve(static_cast<size_t>(V) * (V + 2));
  for (int32_t i = 0; i < V; ++i) {
    for (int32_t j = 0; j < V; ++j) {
      // blank and repeats of the same token emit nothing; a different token is emitted
      const int32_t aux = (j == 0 || j == i) ? 0 : j;
      arcs.push_back({i, j, j, aux, 0.f});
      if (modified && i > 0 && j == i) arcs.push_back({i, i, i, i, 0.f});  // the same token again, no blank
    }
    arcs.push_back({i, V, -1, -1, 0.f});
  }
  return pack({arcs}, {vocab_size + 1});
}

std::vector<torch::Tensor> fsa_linear_cpu(const torch::Tensor& targets, const torch::Tensor& target_lengths) {
  TORCH_CHECK(targets.dim() == 2 && targets.scalar_type() == torch::kInt64, "targets must be int64 [N, U]");
  TORCH_CHECK(target_lengths.dim() == 1 && target_lengths.size(0) == targets.size(0) &&
                  target_lengths.scalar_type() == torch::kInt64,
              "target_lengths must be int64 [N]");
  auto y = targets.contiguous();
  auto len = target_lengths.contiguous();
  const int64_t n = y.size(0), umax = y.size(1);
  const int64_t* yp = y.data_ptr<int64_t>();
  const int64_t* lp = len.data_ptr<int64_t>();
  std::vector<std::vector<Arc>> fsas(n);
  std::vector<int64_t> states(n);
  for (int64_t i = 0; i < n; ++i) {
    const int64_t u_len = lp[i];
    TORCH_CHECK(u_len >= 0 && u_len <= umax, "target_lengths[", i, "] = ", u_len, " is outside [0, ", umax, "]");
    for (int64_t u = 0; u < u_len; ++u) {
      const int64_t label = yp[i * umax + u];
      TORCH_CHECK(label > 0 && label <= INT32_MAX, "targets[", i, ", ", u, "] = ", label,
                  ": transcript labels must be > 0 (0 is blank/epsilon)");
      fsas[i].push_back({static_cast<int32_t>(u), static_cast<int32_t>(u + 1), static_cast<int32_t>(label),
                         static_cast<int32_t>(label), 0.f});
    }
    fsas[i].push_back({static_cast<int32_t>(u_len), static_cast<int32_t>(u_len + 1), -1, -1, 0.f});
    states[i] = u_len + 2;
  }
  return pack(fsas, states);
}

std::vector<torch::Tensor> fsa_compose_cpu(const torch::Tensor& topo_arcs, const torch::Tensor& topo_scores,
                                           int64_t topo_num_states, const torch::Tensor& arcs,
                                           const torch::Tensor& scores, const torch::Tensor& arc_offsets,
                                           const torch::Tensor& num_states) {
  auto topo_off = torch::tensor({int64_t{0}, topo_arcs.size(0)}, torch::kInt64);
  check_fsa_vec(topo_arcs, topo_scores, topo_off, torch::tensor({topo_num_states}, torch::kInt64));
  check_fsa_vec(arcs, scores, arc_offsets, num_states);
  const int64_t n = num_states.size(0), Q = topo_num_states;
  const int32_t* ta = topo_arcs.data_ptr<int32_t>();
  const float* ts = topo_scores.data_ptr<float>();
  // CSR of the topology's arcs by source state
  std::vector<int64_t> t_first(Q + 1, 0);
  for (int64_t k = 0; k < topo_arcs.size(0); ++k) {
    TORCH_CHECK(ta[4 * k] >= 0 && ta[4 * k] < Q && ta[4 * k + 1] >= 0 && ta[4 * k + 1] < Q,
                "topology arc ", k, " has a state outside [0, ", Q, ")");
    ++t_first[ta[4 * k] + 1];
  }
  for (int64_t q = 0; q < Q; ++q) t_first[q + 1] += t_first[q];
  for (int64_t k = 1; k < topo_arcs.size(0); ++k)
    TORCH_CHECK(ta[4 * k] >= ta[4 * (k - 1)], "topology arcs must be sorted by source state");
  const int32_t* aa = arcs.data_ptr<int32_t>();
  const float* as = scores.data_ptr<float>();
  const int64_t* aoff = arc_offsets.data_ptr<int64_t>();
  const int64_t* ns = num_states.data_ptr<int64_t>();

  std::vector<std::vector<Arc>> out(n);
  std::vector<int64_t> out_states(n);
  at::parallel_for(0, n, 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const int64_t S = ns[i], a0 = aoff[i], a1 = aoff[i + 1];
      // CSR of acceptor i's arcs by source state (they are sorted by src)
      std::vector<int64_t> first(S + 1, a1);
      for (int64_t k = a1 - 1; k >= a0; --k) first[aa[4 * k]] = k;
      for (int64_t s = S - 1; s >= 0; --s) first[s] = std::min(first[s], first[s + 1]);
      // breadth-first over reachable (topology state, acceptor state) pairs; the final
      // state gets its id at the end, so it is the last one
      std::unordered_map<int64_t, int32_t> id;
      std::vector<std::pair<int64_t, int64_t>> pairs;
      std::vector<Arc> raw;
      auto state_of = [&](int64_t q, int64_t s) -> int32_t {
        const int64_t key = q * S + s;
        auto it = id.find(key);
        if (it != id.end()) return it->second;
        const int32_t k = static_cast<int32_t>(pairs.size());
        id.emplace(key, k);
        pairs.emplace_back(q, s);
        return k;
      };
      const int32_t FINAL = -2;  // placeholder until the number of states is known
      state_of(0, 0);
      for (size_t p = 0; p < pairs.size(); ++p) {
        const auto [q, s] = pairs[p];
        const int32_t src = static_cast<int32_t>(p);
        for (int64_t k = t_first[q]; k < t_first[q + 1]; ++k) {
          const int32_t label = ta[4 * k + 2], out_label = ta[4 * k + 3];
          const int64_t qd = ta[4 * k + 1];
          if (label == -1) {  // both final
            for (int64_t j = first[s]; j < first[s + 1]; ++j)
              if (aa[4 * j + 2] == -1) raw.push_back({src, FINAL, -1, -1, ts[k] + as[j]});
          } else if (out_label == 0) {  // the topology moves, the transcript waits
            raw.push_back({src, state_of(qd, s), label, 0, ts[k]});
          } else {
            for (int64_t j = first[s]; j < first[s + 1]; ++j)
              if (aa[4 * j + 2] == out_label)
                raw.push_back({src, state_of(qd, aa[4 * j + 1]), label, out_label, ts[k] + as[j]});
          }
        }
      }
      // trim: keep the states from which the final state can be reached
      const int32_t P = static_cast<int32_t>(pairs.size());
      std::vector<std::vector<int32_t>> preds(P);
      std::vector<char> keep(P, 0);
      std::deque<int32_t> todo;
      for (const Arc& a : raw) {
        if (a.dst == FINAL) {
          if (!keep[a.src]) todo.push_back(a.src);
          keep[a.src] = 1;
        } else {
          preds[a.dst].push_back(a.src);
        }
      }
      while (!todo.empty()) {
        const int32_t v = todo.front();
        todo.pop_front();
        for (int32_t u : preds[v])
          if (!keep[u]) {
            keep[u] = 1;
            todo.push_back(u);
          }
      }
      std::vector<int32_t> new_id(P, -1);
      int32_t count = 0;
      for (int32_t p = 0; p < P; ++p)
        if (keep[p]) new_id[p] = count++;
      if (!keep[0]) {  // no path at all: the empty FSA of two states and no arcs
        out_states[i] = 2;
        continue;
      }
      auto& fsa = out[i];
      for (const Arc& a : raw) {  // raw is sorted by src: states were expanded in order
        if (!keep[a.src] || (a.dst != FINAL && !keep[a.dst])) continue;
        fsa.push_back({new_id[a.src], a.dst == FINAL ? count : new_id[a.dst], a.label, a.aux, a.score});
      }
      out_states[i] = count + 1;
    }
  });
  return pack(out, out_states);
}

}  // namespace asr
