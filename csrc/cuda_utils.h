// What the CUDA kernels (csrc/**/*_cuda.cu) and their host wrappers (*_cuda_host.cpp) share,
// without torch headers: the kernels compile with nvcc alone (fast, and checkable without a GPU
// by scripts/check_cuda_compile.sh), and the wrappers, compiled by the host compiler against
// torch, pass them raw pointers and a cudaStream_t.
//
// Launchers return the cudaError_t of their launch (cudaGetLastError), which the wrappers check
// with C10_CUDA_CHECK: a failed launch is a Python RuntimeError, never a silent wrong result.
#pragma once
#include <cuda_runtime_api.h>

#include <cstdint>

// Functions the host wrappers and the kernels both call (index arithmetic of the lattices).
#ifdef __CUDACC__
#define ASR_HD __host__ __device__ __forceinline__
#else
#define ASR_HD inline
#endif

namespace asr {
namespace cuda {

// The most threads of a block walking a lattice (the kernels are compiled for it with
// __launch_bounds__, so the launch never asks for more registers than an SM has), and the
// threads of the blocks of the one-thread-per-node kernels.
constexpr unsigned kMaxBlockThreads = 1024;
constexpr unsigned kElementwiseThreads = 256;

// Threads of a block whose threads share the nodes of one anti-diagonal (or the states of one
// frame): a multiple of the warp size covering `width` items in one pass, at most kMaxBlockThreads.
inline unsigned block_threads(int64_t width) {
  const int64_t w = width < 1 ? 1 : width;
  const int64_t rounded = (w + 31) / 32 * 32;
  return static_cast<unsigned>(rounded > kMaxBlockThreads ? kMaxBlockThreads : rounded);
}

// Blocks of `threads` threads for a grid-stride loop over n items; capped, since each thread
// loops over the items beyond the grid.
inline unsigned grid_blocks(int64_t n, unsigned threads) {
  const int64_t b = (n + threads - 1) / threads;
  return static_cast<unsigned>(b < 1 ? 1 : (b > 65535 ? 65535 : b));
}

#ifdef __CUDACC__
template <typename T>
__device__ __forceinline__ T neg_inf() {
  return -static_cast<T>(INFINITY);
}

template <typename T>
__device__ __forceinline__ T pos_inf() {
  return static_cast<T>(INFINITY);
}

// log(exp(a) + exp(b)), exact at -inf: the formula of the CPU kernels (transducer/logmath.h).
template <typename T>
__device__ __forceinline__ T log_add(T a, T b) {
  if (a < b) {
    const T tmp = a;
    a = b;
    b = tmp;
  }
  if (b == neg_inf<T>()) return a;
  return a + log1p(exp(b - a));
}

// The semirings of the lattice recursions, as on the CPU (transducer/logmath.h): the log-sum
// over paths (the loss) or the max (Viterbi).
struct LogSemiring {
  template <typename T>
  __device__ static T plus(T a, T b) {
    return log_add(a, b);
  }
};
struct MaxSemiring {
  template <typename T>
  __device__ static T plus(T a, T b) {
    return a < b ? b : a;
  }
};

// a * b rounded once, never fused into a following addition: the CPU kernels (x86-64 without
// FMA) round the product before adding, and Viterbi's tie-breaking compares such sums exactly.
__device__ __forceinline__ float mul_rn(float a, float b) { return __fmul_rn(a, b); }
__device__ __forceinline__ double mul_rn(double a, double b) { return __dmul_rn(a, b); }
#endif

}  // namespace cuda
}  // namespace asr
