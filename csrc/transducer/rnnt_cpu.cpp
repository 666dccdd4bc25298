// CPU kernels of the full RNN-T loss lattice; at::parallel_for (OpenMP) over utterances/frames.
#include "transducer/rnnt.h"

#include <ATen/Parallel.h>

#include <vector>

#include "transducer/checks.h"
#include "transducer/logmath.h"

namespace asr {
namespace {

using acc_t = double;  // lattice accumulation type, whatever the logits' dtype

struct Layout {
  const int64_t* T;    // logit_lengths
  const int64_t* U;    // target_lengths
  const int64_t* off;  // row_offsets
  const int64_t* st;   // t_strides
  const int64_t* y;    // targets [B, max_u_targets]
  int64_t max_t, max_u, max_u_targets;
  int64_t row(int64_t b, int64_t t, int64_t u) const { return off[b] + t * st[b] + u; }
  int64_t node(int64_t b, int64_t t, int64_t u) const { return (b * max_t + t) * (max_u + 1) + u; }
  int64_t label(int64_t b, int64_t u) const { return y[b * max_u_targets + u]; }
};

Layout make_layout(const torch::Tensor& targets, const torch::Tensor& logit_lengths,
                   const torch::Tensor& target_lengths, const torch::Tensor& row_offsets,
                   const torch::Tensor& t_strides, int64_t max_t, int64_t max_u) {
  check_rnnt_layout(targets, logit_lengths, target_lengths, row_offsets, t_strides);
  return Layout{logit_lengths.data_ptr<int64_t>(), target_lengths.data_ptr<int64_t>(),
                row_offsets.data_ptr<int64_t>(),   t_strides.data_ptr<int64_t>(),
                targets.data_ptr<int64_t>(),       max_t,
                max_u,                             targets.size(1)};
}

// The log-probs of the two arcs leaving node (t, u) of utterance b, in float64: blank (to
// (t + 1, u), or the end from (T - 1, U)) and y_{u+1} (to (t, u + 1)).
template <typename scalar_t>
struct RnntArcs {
  Layout L;
  const scalar_t* x;
  const scalar_t* den;
  int64_t V, blank;
  acc_t lp_blank(int64_t b, int64_t t, int64_t u) const {
    const int64_t r = L.row(b, t, u);
    return acc_t(x[r * V + blank]) - acc_t(den[r]);
  }
  acc_t lp_emit(int64_t b, int64_t t, int64_t u) const {
    const int64_t r = L.row(b, t, u);
    return acc_t(x[r * V + L.label(b, u)]) - acc_t(den[r]);
  }
};

// The same arcs of one utterance b, gathered once into float64 arrays [T_b, U_b + 1] by node: the
// recursions read each arc twice (alpha and beta), and straight from the logits each read is a
// cache miss (one row of V values per node), so the gathered copy halves those misses.
struct GatheredArcs {
  Layout L;
  std::vector<acc_t> blank_lp, emit_lp;  // emit_lp at u = U_b unused
  template <typename scalar_t>
  void gather(const RnntArcs<scalar_t>& A, int64_t b) {
    const int64_t T = L.T[b], U1 = L.U[b] + 1;
    blank_lp.resize(T * U1);
    emit_lp.resize(T * U1);
    for (int64_t t = 0; t < T; ++t) {
      for (int64_t u = 0; u < U1; ++u) {
        blank_lp[t * U1 + u] = A.lp_blank(b, t, u);
        emit_lp[t * U1 + u] = u + 1 < U1 ? A.lp_emit(b, t, u) : neg_inf<acc_t>();
      }
    }
  }
  acc_t lp_blank(int64_t b, int64_t t, int64_t u) const { return blank_lp[t * (L.U[b] + 1) + u]; }
  acc_t lp_emit(int64_t b, int64_t t, int64_t u) const { return emit_lp[t * (L.U[b] + 1) + u]; }
};

// alpha[b, t, u] for t < T_b, u <= U_b in the semiring S: the log-sum (LogSemiring: the loss) or
// the max (MaxSemiring: Viterbi) over the paths from (0, 0) to (t, u). Arcs: RnntArcs or GatheredArcs.
template <typename S, typename Arcs>
void rnnt_alpha(const Arcs& A, int64_t b, acc_t* a) {
  const Layout& L = A.L;
  for (int64_t t = 0; t < L.T[b]; ++t) {
    for (int64_t u = 0; u <= L.U[b]; ++u) {
      acc_t v;
      if (t == 0 && u == 0) {
        v = 0;
      } else {
        v = neg_inf<acc_t>();
        if (t > 0) v = a[L.node(b, t - 1, u)] + A.lp_blank(b, t - 1, u);
        if (u > 0) v = S::plus(v, a[L.node(b, t, u - 1)] + A.lp_emit(b, t, u - 1));
      }
      a[L.node(b, t, u)] = v;
    }
  }
}

}  // namespace

std::vector<torch::Tensor> rnnt_forward_cpu(const torch::Tensor& logits, const torch::Tensor& denom,
                                            const torch::Tensor& targets, const torch::Tensor& logit_lengths,
                                            const torch::Tensor& target_lengths, const torch::Tensor& row_offsets,
                                            const torch::Tensor& t_strides, int64_t max_t, int64_t max_u,
                                            int64_t blank) {
  check_rows(logits, denom);
  const Layout L = make_layout(targets, logit_lengths, target_lengths, row_offsets, t_strides, max_t, max_u);
  const int64_t B = logit_lengths.size(0), V = logits.size(1);
  auto loss = torch::empty({B}, logits.options());
  // alpha and beta accumulate in float64 whatever the logits' dtype (see rnnt.h)
  auto acc_opts = logits.options().dtype(torch::kFloat64);
  auto alpha = torch::full({B, max_t, max_u + 1}, -std::numeric_limits<double>::infinity(), acc_opts);
  auto beta = torch::full({B, max_t, max_u + 1}, -std::numeric_limits<double>::infinity(), acc_opts);

  AT_DISPATCH_FLOATING_TYPES(logits.scalar_type(), "rnnt_forward_cpu", [&] {
    const RnntArcs<scalar_t> A{L, logits.data_ptr<scalar_t>(), denom.data_ptr<scalar_t>(), V, blank};
    acc_t* a = alpha.data_ptr<acc_t>();
    acc_t* be = beta.data_ptr<acc_t>();
    scalar_t* l = loss.data_ptr<scalar_t>();
    at::parallel_for(0, B, 1, [&](int64_t begin, int64_t end) {
      GatheredArcs G{L, {}, {}};
      for (int64_t b = begin; b < end; ++b) {
        const int64_t T = L.T[b], U = L.U[b];
        if (T == 0) {
          l[b] = std::numeric_limits<scalar_t>::infinity();
          continue;
        }
        G.gather(A, b);
        auto lp_blank = [&](int64_t t, int64_t u) { return G.lp_blank(b, t, u); };
        auto lp_emit = [&](int64_t t, int64_t u) { return G.lp_emit(b, t, u); };
        rnnt_alpha<LogSemiring>(G, b, a);
        for (int64_t t = T - 1; t >= 0; --t) {
          for (int64_t u = U; u >= 0; --u) {
            acc_t v;
            if (t == T - 1 && u == U) {
              v = lp_blank(t, u);  // the final blank ends the sequence
            } else {
              v = neg_inf<acc_t>();
              if (t < T - 1) v = be[L.node(b, t + 1, u)] + lp_blank(t, u);
              if (u < U) v = log_add(v, be[L.node(b, t, u + 1)] + lp_emit(t, u));
            }
            be[L.node(b, t, u)] = v;
          }
        }
        l[b] = static_cast<scalar_t>(-be[L.node(b, 0, 0)]);
      }
    });
  });
  return {loss, alpha, beta};
}

torch::Tensor rnnt_log_occupancy_cpu(const torch::Tensor& alpha, const torch::Tensor& beta, const torch::Tensor& loss,
                                     const torch::Tensor& scale, const torch::Tensor& logit_lengths,
                                     const torch::Tensor& target_lengths, const torch::Tensor& row_offsets,
                                     const torch::Tensor& t_strides, int64_t num_rows) {
  const int64_t B = logit_lengths.size(0), max_t = alpha.size(1), max_u = alpha.size(2) - 1;
  auto dummy_targets = torch::zeros({B, 1}, logit_lengths.options());
  const Layout L = make_layout(dummy_targets, logit_lengths, target_lengths, row_offsets, t_strides, max_t, max_u);
  check_acc(alpha, beta);
  auto out = torch::full({num_rows}, -std::numeric_limits<double>::infinity(), loss.options());
  auto sc = scale.contiguous().to(torch::kFloat64);
  AT_DISPATCH_FLOATING_TYPES(loss.scalar_type(), "rnnt_log_occupancy_cpu", [&] {
    const acc_t* a = alpha.data_ptr<acc_t>();
    const acc_t* be = beta.data_ptr<acc_t>();
    const scalar_t* l = loss.data_ptr<scalar_t>();
    const acc_t* s = sc.data_ptr<acc_t>();
    scalar_t* o = out.data_ptr<scalar_t>();
    at::parallel_for(0, B, 1, [&](int64_t begin, int64_t end) {
      for (int64_t b = begin; b < end; ++b) {
        if (!std::isfinite(l[b]) || s[b] <= 0) continue;
        // occupancy = exp(alpha + beta - log P), log P = beta[b, 0, 0] in float64 (not the rounded loss)
        const acc_t shift = std::log(s[b]) - be[L.node(b, 0, 0)];
        for (int64_t t = 0; t < L.T[b]; ++t)
          for (int64_t u = 0; u <= L.U[b]; ++u)
            o[L.row(b, t, u)] = static_cast<scalar_t>(a[L.node(b, t, u)] + be[L.node(b, t, u)] + shift);
      }
    });
  });
  return out;
}

void rnnt_subtract_arc_posteriors_cpu(torch::Tensor& grad, const torch::Tensor& logits, const torch::Tensor& denom,
                                      const torch::Tensor& targets, const torch::Tensor& logit_lengths,
                                      const torch::Tensor& target_lengths, const torch::Tensor& row_offsets,
                                      const torch::Tensor& t_strides, const torch::Tensor& alpha,
                                      const torch::Tensor& beta, const torch::Tensor& loss, const torch::Tensor& scale,
                                      int64_t blank) {
  TORCH_CHECK(grad.is_contiguous() && grad.sizes() == logits.sizes(), "grad must be contiguous like logits");
  const int64_t B = logit_lengths.size(0), max_t = alpha.size(1), max_u = alpha.size(2) - 1, V = logits.size(1);
  const Layout L = make_layout(targets, logit_lengths, target_lengths, row_offsets, t_strides, max_t, max_u);
  check_acc(alpha, beta);
  auto sc = scale.contiguous().to(torch::kFloat64);
  AT_DISPATCH_FLOATING_TYPES(logits.scalar_type(), "rnnt_subtract_arc_posteriors_cpu", [&] {
    const scalar_t* x = logits.data_ptr<scalar_t>();
    const scalar_t* den = denom.data_ptr<scalar_t>();
    const acc_t* a = alpha.data_ptr<acc_t>();
    const acc_t* be = beta.data_ptr<acc_t>();
    const scalar_t* l = loss.data_ptr<scalar_t>();
    const acc_t* s = sc.data_ptr<acc_t>();
    scalar_t* g = grad.data_ptr<scalar_t>();
    at::parallel_for(0, B, 1, [&](int64_t begin, int64_t end) {
      for (int64_t b = begin; b < end; ++b) {
        const int64_t T = L.T[b], U = L.U[b];
        if (!std::isfinite(l[b]) || s[b] == 0) continue;
        const acc_t log_p = be[L.node(b, 0, 0)];  // float64, not the rounded loss
        for (int64_t t = 0; t < T; ++t) {
          for (int64_t u = 0; u <= U; ++u) {
            const int64_t r = L.row(b, t, u);
            const scalar_t* xr = x + r * V;
            // arc posterior = exp(alpha(t, u) + lp(arc) + beta(dst) - log P), summed in float64
            const acc_t head = a[L.node(b, t, u)] - acc_t(den[r]) - log_p;
            const acc_t beta_next_blank =
                t + 1 < T ? be[L.node(b, t + 1, u)] : (u == U ? acc_t(0) : neg_inf<acc_t>());
            g[r * V + blank] -= static_cast<scalar_t>(s[b] * std::exp(head + acc_t(xr[blank]) + beta_next_blank));
            if (u < U) {
              const int64_t y = L.label(b, u);
              g[r * V + y] -= static_cast<scalar_t>(s[b] * std::exp(head + acc_t(xr[y]) + be[L.node(b, t, u + 1)]));
            }
          }
        }
      }
    });
  });
}

std::vector<torch::Tensor> rnnt_viterbi_cpu(const torch::Tensor& logits, const torch::Tensor& denom,
                                            const torch::Tensor& targets, const torch::Tensor& logit_lengths,
                                            const torch::Tensor& target_lengths, const torch::Tensor& row_offsets,
                                            const torch::Tensor& t_strides, int64_t max_t, int64_t max_u,
                                            int64_t blank) {
  check_rows(logits, denom);
  const Layout L = make_layout(targets, logit_lengths, target_lengths, row_offsets, t_strides, max_t, max_u);
  const int64_t B = logit_lengths.size(0), V = logits.size(1);
  auto acc_opts = logits.options().dtype(torch::kFloat64);
  auto score = torch::full({B}, -std::numeric_limits<double>::infinity(), acc_opts);
  auto arcs = torch::full({B, max_t + max_u, 3}, -1, logits.options().dtype(torch::kInt64));
  // the same recursion as the loss's alpha, in the max semiring: best score of a path to each node
  auto alpha = torch::full({B, max_t, max_u + 1}, -std::numeric_limits<double>::infinity(), acc_opts);
  AT_DISPATCH_FLOATING_TYPES(logits.scalar_type(), "rnnt_viterbi_cpu", [&] {
    const RnntArcs<scalar_t> A{L, logits.data_ptr<scalar_t>(), denom.data_ptr<scalar_t>(), V, blank};
    acc_t* a = alpha.data_ptr<acc_t>();
    acc_t* sc = score.data_ptr<acc_t>();
    int64_t* out = arcs.data_ptr<int64_t>();
    at::parallel_for(0, B, 1, [&](int64_t begin, int64_t end) {
      for (int64_t b = begin; b < end; ++b) {
        const int64_t T = L.T[b], U = L.U[b];
        if (T == 0) continue;  // no path: score -inf, no arcs
        rnnt_alpha<MaxSemiring>(A, b, a);
        sc[b] = a[L.node(b, T - 1, U)] + A.lp_blank(b, T - 1, U);
        // Backtrack from the final blank. The path has T blanks and U labels; arc k goes to
        // out[b, k]. Each step recomputes both incoming arcs' scores exactly as the recursion did
        // and follows the better one; a tie goes to the blank (see rnnt.h).
        int64_t k = T + U - 1, t = T - 1, u = U;
        auto put = [&](int64_t tt, int64_t uu, int64_t token) {
          int64_t* o = out + (b * (max_t + max_u) + k--) * 3;
          o[0] = tt, o[1] = uu, o[2] = token;
        };
        put(t, u, blank);
        while (t > 0 || u > 0) {
          const acc_t via_blank = t > 0 ? a[L.node(b, t - 1, u)] + A.lp_blank(b, t - 1, u) : neg_inf<acc_t>();
          const acc_t via_label = u > 0 ? a[L.node(b, t, u - 1)] + A.lp_emit(b, t, u - 1) : neg_inf<acc_t>();
          if (t > 0 && (u == 0 || via_blank >= via_label)) {
            put(--t, u, blank);
          } else {
            --u;
            put(t, u, L.label(b, u));
          }
        }
      }
    });
  });
  return {score, arcs};
}

}  // namespace asr
