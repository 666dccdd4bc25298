// CPU lattice kernels of the TDT loss; at::parallel_for over utterances.
#include "transducer/tdt.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <array>
#include <vector>

#include "transducer/checks.h"
#include "transducer/logmath.h"

namespace asr {
namespace {

using acc_t = double;  // alpha, beta and arc weights in float64 whatever the logits' dtype

template <typename scalar_t>
struct TdtLattice {
  const scalar_t* x;
  const scalar_t* den_tok;
  const scalar_t* den_dur;
  const int64_t *T, *U, *off, *st, *y, *dur;
  int64_t W, V, D, max_t, max_u, y_stride, blank;
  acc_t sigma;
  int64_t row(int64_t b, int64_t t, int64_t u) const { return off[b] + t * st[b] + u; }
  int64_t node(int64_t b, int64_t t, int64_t u) const { return (b * (max_t + 1) + t) * (max_u + 1) + u; }
  acc_t lp_tok(int64_t r, int64_t k) const { return acc_t(x[r * W + k]) - acc_t(den_tok[r]) - sigma; }
  acc_t lp_dur(int64_t r, int64_t i) const { return acc_t(x[r * W + V + i]) - acc_t(den_dur[r]); }
  int64_t label(int64_t b, int64_t u) const { return y[b * y_stride + u]; }
  // Calls f(token, duration index, t', u') for every arc leaving (t, u) of utterance b.
  template <typename F>
  void arcs(int64_t b, int64_t t, int64_t u, F f) const {
    for (int64_t i = 0; i < D; ++i) {
      const int64_t d = dur[i];
      if (d > 0 && t + d <= T[b]) f(blank, i, t + d, u);
      if (u < U[b] && t + d <= T[b] - 1) f(label(b, u), i, t + d, u + 1);
    }
  }
  // Calls f(token, duration index, t', u') for every arc entering (t, u) from (t', u'): the arcs of
  // `arcs` in reverse. Blank arcs first, then label arcs, each in the order of the durations: the
  // order in which Viterbi's backtracking breaks ties (the first best arc wins).
  template <typename F>
  void arcs_into(int64_t b, int64_t t, int64_t u, F f) const {
    for (int64_t i = 0; i < D; ++i) {
      const int64_t d = dur[i];
      if (d > 0 && t - d >= 0 && t <= T[b]) f(blank, i, t - d, u);
    }
    for (int64_t i = 0; i < D; ++i) {
      const int64_t d = dur[i];
      if (u > 0 && t - d >= 0 && t <= T[b] - 1) f(label(b, u - 1), i, t - d, u - 1);
    }
  }
};

// alpha[b, t, u] over utterance b's lattice in the semiring S: the log-sum (LogSemiring: the loss)
// or the max (MaxSemiring: Viterbi) over the paths from (0, 0) to (t, u). alpha must hold -inf.
template <typename S, typename scalar_t>
void tdt_alpha(const TdtLattice<scalar_t>& L, int64_t b, acc_t* a) {
  // push forward along every arc (nodes in increasing t, then u)
  a[L.node(b, 0, 0)] = 0;
  for (int64_t t = 0; t < L.T[b]; ++t) {
    for (int64_t u = 0; u <= L.U[b]; ++u) {
      const acc_t src = a[L.node(b, t, u)];
      if (src == neg_inf<acc_t>()) continue;
      const int64_t r = L.row(b, t, u);
      L.arcs(b, t, u, [&](int64_t k, int64_t i, int64_t t2, int64_t u2) {
        acc_t& dst = a[L.node(b, t2, u2)];
        dst = S::plus(dst, src + L.lp_tok(r, k) + L.lp_dur(r, i));
      });
    }
  }
}

template <typename scalar_t>
TdtLattice<scalar_t> make(const torch::Tensor& logits, const torch::Tensor& den_tok, const torch::Tensor& den_dur,
                          const torch::Tensor& targets, const torch::Tensor& logit_lengths,
                          const torch::Tensor& target_lengths, const torch::Tensor& row_offsets,
                          const torch::Tensor& t_strides, const torch::Tensor& durations, int64_t num_tokens,
                          int64_t max_t, int64_t max_u, int64_t blank, double sigma) {
  check_tdt(logits, targets, logit_lengths, target_lengths, row_offsets, t_strides, durations, num_tokens);
  return TdtLattice<scalar_t>{logits.data_ptr<scalar_t>(),     den_tok.data_ptr<scalar_t>(),
                              den_dur.data_ptr<scalar_t>(),    logit_lengths.data_ptr<int64_t>(),
                              target_lengths.data_ptr<int64_t>(), row_offsets.data_ptr<int64_t>(),
                              t_strides.data_ptr<int64_t>(),   targets.data_ptr<int64_t>(),
                              durations.data_ptr<int64_t>(),   logits.size(1),
                              num_tokens,                      durations.size(0),
                              max_t,                           max_u,
                              targets.size(1),                 blank,
                              sigma};
}

}  // namespace

std::vector<torch::Tensor> tdt_forward_cpu(const torch::Tensor& logits, const torch::Tensor& den_tok,
                                           const torch::Tensor& den_dur, const torch::Tensor& targets,
                                           const torch::Tensor& logit_lengths, const torch::Tensor& target_lengths,
                                           const torch::Tensor& row_offsets, const torch::Tensor& t_strides,
                                           const torch::Tensor& durations, int64_t num_tokens, int64_t max_t,
                                           int64_t max_u, int64_t blank, double sigma) {
  const int64_t B = logit_lengths.size(0);
  auto loss = torch::empty({B}, logits.options());
  auto acc_opts = logits.options().dtype(torch::kFloat64);  // see tdt.h
  auto alpha = torch::full({B, max_t + 1, max_u + 1}, -std::numeric_limits<double>::infinity(), acc_opts);
  auto beta = torch::full({B, max_t + 1, max_u + 1}, -std::numeric_limits<double>::infinity(), acc_opts);
  AT_DISPATCH_FLOATING_TYPES(logits.scalar_type(), "tdt_forward_cpu", [&] {
    const auto L = make<scalar_t>(logits, den_tok, den_dur, targets, logit_lengths, target_lengths, row_offsets,
                                  t_strides, durations, num_tokens, max_t, max_u, blank, sigma);
    acc_t* a = alpha.data_ptr<acc_t>();
    acc_t* be = beta.data_ptr<acc_t>();
    scalar_t* l = loss.data_ptr<scalar_t>();
    at::parallel_for(0, B, 1, [&](int64_t begin, int64_t end) {
      for (int64_t b = begin; b < end; ++b) {
        const int64_t T = L.T[b], U = L.U[b];
        tdt_alpha<LogSemiring>(L, b, a);
        // beta: pull from successors (nodes in decreasing t)
        be[L.node(b, T, U)] = 0;
        for (int64_t t = T - 1; t >= 0; --t) {
          for (int64_t u = U; u >= 0; --u) {
            const int64_t r = L.row(b, t, u);
            acc_t v = neg_inf<acc_t>();
            L.arcs(b, t, u, [&](int64_t k, int64_t i, int64_t t2, int64_t u2) {
              v = log_add(v, be[L.node(b, t2, u2)] + L.lp_tok(r, k) + L.lp_dur(r, i));
            });
            be[L.node(b, t, u)] = v;
          }
        }
        l[b] = T > 0 ? static_cast<scalar_t>(-a[L.node(b, T, U)]) : std::numeric_limits<scalar_t>::infinity();
      }
    });
  });
  return {loss, alpha, beta};
}

void tdt_subtract_arc_posteriors_cpu(torch::Tensor& grad, const torch::Tensor& logits, const torch::Tensor& den_tok,
                                     const torch::Tensor& den_dur, const torch::Tensor& targets,
                                     const torch::Tensor& logit_lengths, const torch::Tensor& target_lengths,
                                     const torch::Tensor& row_offsets, const torch::Tensor& t_strides,
                                     const torch::Tensor& durations, const torch::Tensor& alpha,
                                     const torch::Tensor& beta, const torch::Tensor& loss, const torch::Tensor& scale,
                                     int64_t num_tokens, int64_t blank, double sigma) {
  TORCH_CHECK(grad.is_contiguous() && grad.sizes() == logits.sizes(), "grad must be contiguous like logits");
  const int64_t B = logit_lengths.size(0), max_t = alpha.size(1) - 1, max_u = alpha.size(2) - 1;
  check_tdt_acc(alpha, beta);
  auto sc = scale.contiguous().to(torch::kFloat64);
  AT_DISPATCH_FLOATING_TYPES(logits.scalar_type(), "tdt_subtract_arc_posteriors_cpu", [&] {
    const auto L = make<scalar_t>(logits, den_tok, den_dur, targets, logit_lengths, target_lengths, row_offsets,
                                  t_strides, durations, num_tokens, max_t, max_u, blank, sigma);
    const acc_t* a = alpha.data_ptr<acc_t>();
    const acc_t* be = beta.data_ptr<acc_t>();
    const scalar_t* l = loss.data_ptr<scalar_t>();
    const acc_t* s = sc.data_ptr<acc_t>();
    scalar_t* g = grad.data_ptr<scalar_t>();
    at::parallel_for(0, B, 1, [&](int64_t begin, int64_t end) {
      for (int64_t b = begin; b < end; ++b) {
        if (!std::isfinite(l[b]) || s[b] == 0) continue;
        // log P in float64 from beta (the log_occupancy kernel uses the same), not the rounded loss
        const acc_t log_p = be[L.node(b, 0, 0)];
        for (int64_t t = 0; t < L.T[b]; ++t) {
          for (int64_t u = 0; u <= L.U[b]; ++u) {
            const acc_t head = a[L.node(b, t, u)] - log_p;
            if (head == neg_inf<acc_t>()) continue;
            const int64_t r = L.row(b, t, u);
            L.arcs(b, t, u, [&](int64_t k, int64_t i, int64_t t2, int64_t u2) {
              const scalar_t post = static_cast<scalar_t>(
                  s[b] * std::exp(head + L.lp_tok(r, k) + L.lp_dur(r, i) + be[L.node(b, t2, u2)]));
              g[r * L.W + k] -= post;
              g[r * L.W + L.V + i] -= post;
            });
          }
        }
      }
    });
  });
}

std::vector<torch::Tensor> tdt_viterbi_cpu(const torch::Tensor& logits, const torch::Tensor& den_tok,
                                           const torch::Tensor& den_dur, const torch::Tensor& targets,
                                           const torch::Tensor& logit_lengths, const torch::Tensor& target_lengths,
                                           const torch::Tensor& row_offsets, const torch::Tensor& t_strides,
                                           const torch::Tensor& durations, int64_t num_tokens, int64_t max_t,
                                           int64_t max_u, int64_t blank, double sigma) {
  const int64_t B = logit_lengths.size(0);
  auto acc_opts = logits.options().dtype(torch::kFloat64);
  auto score = torch::full({B}, -std::numeric_limits<double>::infinity(), acc_opts);
  auto arcs = torch::full({B, max_t + max_u, 4}, -1, logits.options().dtype(torch::kInt64));
  // the loss's alpha recursion in the max semiring: the best score of a path to each node
  auto alpha = torch::full({B, max_t + 1, max_u + 1}, -std::numeric_limits<double>::infinity(), acc_opts);
  AT_DISPATCH_FLOATING_TYPES(logits.scalar_type(), "tdt_viterbi_cpu", [&] {
    const auto L = make<scalar_t>(logits, den_tok, den_dur, targets, logit_lengths, target_lengths, row_offsets,
                                  t_strides, durations, num_tokens, max_t, max_u, blank, sigma);
    acc_t* a = alpha.data_ptr<acc_t>();
    acc_t* sc = score.data_ptr<acc_t>();
    int64_t* out = arcs.data_ptr<int64_t>();
    at::parallel_for(0, B, 1, [&](int64_t begin, int64_t end) {
      std::vector<std::array<int64_t, 4>> path;
      for (int64_t b = begin; b < end; ++b) {
        const int64_t T = L.T[b], U = L.U[b];
        if (T == 0) continue;  // no path: score -inf, no arcs
        tdt_alpha<MaxSemiring>(L, b, a);
        sc[b] = a[L.node(b, T, U)];
        if (sc[b] == neg_inf<acc_t>()) continue;  // too few frames for the labels
        // Backtrack from (T, U): each step recomputes the score of every arc into the node exactly
        // as the recursion did and follows the best one; ties go to the first in arcs_into's order.
        // Every arc advances t or u, so a path has at most T + U arcs.
        path.clear();
        int64_t t = T, u = U;
        while (t > 0 || u > 0) {
          acc_t best = neg_inf<acc_t>();
          std::array<int64_t, 4> arc{-1, -1, -1, -1};
          L.arcs_into(b, t, u, [&](int64_t k, int64_t i, int64_t t1, int64_t u1) {
            const acc_t src = a[L.node(b, t1, u1)];
            if (src == neg_inf<acc_t>()) return;
            const int64_t r = L.row(b, t1, u1);
            const acc_t v = src + L.lp_tok(r, k) + L.lp_dur(r, i);
            if (arc[0] < 0 || v > best) best = v, arc = {t1, u1, k, i};
          });
          if (arc[0] < 0) break;  // unreachable while alpha(t, u) is finite; never loop forever
          path.push_back(arc);
          t = arc[0], u = arc[1];
        }
        int64_t* o = out + b * (max_t + max_u) * 4;
        for (auto it = path.rbegin(); it != path.rend(); ++it, o += 4) std::copy(it->begin(), it->end(), o);
      }
    });
  });
  return {score, arcs};
}

}  // namespace asr
