// Log-semiring helpers and the semirings of the lattice recursions, shared by the CPU kernels.
#pragma once
#include <cmath>
#include <limits>

namespace asr {

template <typename T>
inline T neg_inf() {
  return -std::numeric_limits<T>::infinity();
}

// log(exp(a) + exp(b)), exact at -inf.
template <typename T>
inline T log_add(T a, T b) {
  if (a < b) std::swap(a, b);
  if (b == neg_inf<T>()) return a;
  return a + std::log1p(std::exp(b - a));
}

// log(sum(exp(x[0..n)))).
template <typename T>
inline T log_sum_exp(const T* x, int64_t n) {
  T m = neg_inf<T>();
  for (int64_t i = 0; i < n; ++i) m = x[i] > m ? x[i] : m;
  if (m == neg_inf<T>()) return m;
  T s = 0;
  for (int64_t i = 0; i < n; ++i) s += std::exp(x[i] - m);
  return m + std::log(s);
}

// The "plus" of a lattice recursion: the forward recursions are templated on it, so that one
// recursion gives both the loss (log semiring: log-sum over all paths) and the best path's
// score (tropical semiring: max over paths, for Viterbi training and alignment).
struct LogSemiring {
  template <typename T>
  static T plus(T a, T b) {
    return log_add(a, b);
  }
};
struct MaxSemiring {
  template <typename T>
  static T plus(T a, T b) {
    return a < b ? b : a;
  }
};

}  // namespace asr
