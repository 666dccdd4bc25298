// CPU mutual-information recursion, forward (alpha) and backward (beta + arc posteriors).
#include "transducer/mutual_information.h"

#include <ATen/Parallel.h>

#include "transducer/checks.h"
#include "transducer/logmath.h"

namespace asr {
namespace {

using acc_t = double;  // the recursion accumulates in float64 whatever the dtype of px, py

}  // namespace

std::vector<torch::Tensor> mutual_information_forward_cpu(const torch::Tensor& px, const torch::Tensor& py,
                                                          const torch::Tensor& boundary, bool modified) {
  check_mutual_information(px, py, boundary, modified);
  const int64_t B = px.size(0), S = px.size(1), T = py.size(2), pxT = px.size(2);
  auto p = torch::full({B, S + 1, T + 1}, -std::numeric_limits<double>::infinity(),
                       px.options().dtype(torch::kFloat64));
  auto ans = torch::empty({B}, px.options());
  const int64_t* bd = boundary.data_ptr<int64_t>();
  AT_DISPATCH_FLOATING_TYPES(px.scalar_type(), "mutual_information_forward_cpu", [&] {
    const scalar_t* X = px.data_ptr<scalar_t>();
    const scalar_t* Y = py.data_ptr<scalar_t>();
    acc_t* P = p.data_ptr<acc_t>();
    scalar_t* A = ans.data_ptr<scalar_t>();
    at::parallel_for(0, B, 1, [&](int64_t begin, int64_t end) {
      for (int64_t b = begin; b < end; ++b) {
        const int64_t s0 = bd[4 * b], t0 = bd[4 * b + 1], s1 = bd[4 * b + 2], t1 = bd[4 * b + 3];
        TORCH_CHECK(0 <= s0 && s0 <= s1 && s1 <= S && 0 <= t0 && t0 <= t1 && t1 <= T, "boundary out of range");
        const scalar_t* x = X + b * S * pxT;
        const scalar_t* y = Y + b * (S + 1) * T;
        acc_t* pb = P + b * (S + 1) * (T + 1);
        auto at = [&](int64_t s, int64_t t) -> acc_t& { return pb[s * (T + 1) + t]; };
        for (int64_t s = s0; s <= s1; ++s) {
          for (int64_t t = t0; t <= t1; ++t) {
            if (s == s0 && t == t0) {
              at(s, t) = 0;
              continue;
            }
            acc_t v = neg_inf<acc_t>();
            if (t > t0) v = at(s, t - 1) + acc_t(y[s * T + t - 1]);
            if (s > s0) {
              if (!modified) {
                // no symbol after the last frame
                if (t < t1) v = log_add(v, at(s - 1, t) + acc_t(x[(s - 1) * pxT + t]));
              } else if (t > t0) {
                v = log_add(v, at(s - 1, t - 1) + acc_t(x[(s - 1) * pxT + t - 1]));
              }
            }
            at(s, t) = v;
          }
        }
        A[b] = static_cast<scalar_t>(at(s1, t1));
      }
    });
  });
  return {ans, p};
}

std::vector<torch::Tensor> mutual_information_backward_cpu(const torch::Tensor& px, const torch::Tensor& py,
                                                           const torch::Tensor& boundary, const torch::Tensor& p,
                                                           const torch::Tensor& ans, const torch::Tensor& ans_grad,
                                                           bool modified) {
  check_mutual_information(px, py, boundary, modified);
  const int64_t B = px.size(0), S = px.size(1), T = py.size(2), pxT = px.size(2);
  auto px_grad = torch::zeros_like(px);
  auto py_grad = torch::zeros_like(py);
  check_mutual_information_p(p, B, S, T);
  check_mutual_information_ans(px, ans, ans_grad);
  check_mutual_information_boundary(boundary, S, T);
  auto g = ans_grad.contiguous().to(torch::kFloat64);
  const int64_t* bd = boundary.data_ptr<int64_t>();
  AT_DISPATCH_FLOATING_TYPES(px.scalar_type(), "mutual_information_backward_cpu", [&] {
    const scalar_t* X = px.data_ptr<scalar_t>();
    const scalar_t* Y = py.data_ptr<scalar_t>();
    const acc_t* P = p.data_ptr<acc_t>();
    const scalar_t* A = ans.data_ptr<scalar_t>();
    const acc_t* G = g.data_ptr<acc_t>();
    scalar_t* GX = px_grad.data_ptr<scalar_t>();
    scalar_t* GY = py_grad.data_ptr<scalar_t>();
    at::parallel_for(0, B, 1, [&](int64_t begin, int64_t end) {
      std::vector<acc_t> beta;
      for (int64_t b = begin; b < end; ++b) {
        if (!std::isfinite(A[b]) || G[b] == 0) continue;
        const int64_t s0 = bd[4 * b], t0 = bd[4 * b + 1], s1 = bd[4 * b + 2], t1 = bd[4 * b + 3];
        const scalar_t* x = X + b * S * pxT;
        const scalar_t* y = Y + b * (S + 1) * T;
        const acc_t* pb = P + b * (S + 1) * (T + 1);
        scalar_t* gx = GX + b * S * pxT;
        scalar_t* gy = GY + b * (S + 1) * T;
        beta.assign((S + 1) * (T + 1), neg_inf<acc_t>());
        auto bt = [&](int64_t s, int64_t t) -> acc_t& { return beta[s * (T + 1) + t]; };
        for (int64_t s = s1; s >= s0; --s) {
          for (int64_t t = t1; t >= t0; --t) {
            if (s == s1 && t == t1) {
              bt(s, t) = 0;
              continue;
            }
            acc_t v = neg_inf<acc_t>();
            if (t < t1) v = bt(s, t + 1) + acc_t(y[s * T + t]);
            if (s < s1 && t < t1) {
              if (!modified)
                v = log_add(v, bt(s + 1, t) + acc_t(x[s * pxT + t]));
              else
                v = log_add(v, bt(s + 1, t + 1) + acc_t(x[s * pxT + t]));
            }
            bt(s, t) = v;
          }
        }
        // arc posterior = exp(alpha(src) + arc + beta(dst) - total), total in float64 (not the rounded ans)
        const acc_t tot = pb[s1 * (T + 1) + t1];
        for (int64_t s = s0; s <= s1; ++s) {
          for (int64_t t = t0; t <= t1; ++t) {
            const acc_t head = pb[s * (T + 1) + t] - tot;
            if (head == neg_inf<acc_t>()) continue;
            if (t < t1)
              gy[s * T + t] = static_cast<scalar_t>(G[b] * std::exp(head + acc_t(y[s * T + t]) + bt(s, t + 1)));
            if (s < s1 && t < t1) {
              const acc_t dst = modified ? bt(s + 1, t + 1) : bt(s + 1, t);
              gx[s * pxT + t] = static_cast<scalar_t>(G[b] * std::exp(head + acc_t(x[s * pxT + t]) + dst));
            }
          }
        }
      }
    });
  });
  return {px_grad, py_grad};
}

}  // namespace asr
