#!/usr/bin/env bash
# The GPU runbook: build asr._C with its CUDA kernels, run the CUDA test cases, compute-sanitizer
# on a small case, and the GPU benchmarks; logs and results go under $OUT.
#
#   OUT=/some/dir scripts/gpu_session.sh [all | build | test | sanitize | bench] ...
#
# For a machine with a GPU, nvcc and a CUDA torch (e.g. torch 2.11+cu130) with torchaudio, and no
# internet: the build uses no build isolation and installs no dependencies (--no-deps), and the
# CUDA tests import nothing beyond torch, numpy and tqdm. Each phase builds first if asr._C has no
# CUDA kernels yet, so phases can run in separate calls on a fresh machine. Estimated (not yet
# measured) on an H100: build ~2 min, tests ~2, sanitizers ~2, benchmarks ~2. Each step has its
# own time limit (build 360 s, tests 300 s, each sanitizer 150 s, bench 240 s), cut further so
# that the whole invocation ends within ASR_GPU_BUDGET_S seconds (default 570: one command of a
# 10-minute limit, with a margin); a step with under 30 s left is SKIPPED (and fails the run), so
# summary.txt always comes back complete. Where one command may run at most 10 minutes, run
# `build test` and then `sanitize bench` (DEVELOPERS.md).
# The repo root goes first on PYTHONPATH: the scripts run from scripts/ import asr from it even
# where the editable install failed and the build fell back to `setup.py build_ext --inplace`.
# Files written under $OUT (eight at most, for tools that copy back only a few):
#   env.txt build.log tests.log tests.xml memcheck.log synccheck.log bench_cuda.md summary.txt
# Exit status: non-zero when a phase failed (summary.txt says which); later phases still run.
set -uo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here"
OUT="${OUT:-$here/build/gpu-session}"
mkdir -p "$OUT"
PY="${PYTHON:-python3}"
export PYTHONUNBUFFERED=1
export PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}"
BUDGET="${ASR_GPU_BUDGET_S:-570}"
deadline=$((SECONDS + BUDGET))
phases=("$@")
[[ ${#phases[@]} -eq 0 || " ${phases[*]} " == *" all "* ]] && phases=(build test sanitize bench)
status=0
summary() { echo "$*" | tee -a "$OUT/summary.txt"; }

# The time limit of a step: its own cap ($1 s) or what is left of the budget less 10 s for the
# summary, whichever is less; 0 when under 30 s would be left for it.
limit() {
  local left=$((deadline - SECONDS - 10))
  if ((left < 30)); then echo 0; elif ((left < $1)); then echo "$left"; else echo "$1"; fi
}

# limited LIMIT CMD...: CMD under `timeout LIMIT` (which kills its process group); LIMIT 0 (no
# time left) runs nothing and returns 124, as a timeout does (`timeout 0` would mean no limit).
limited() {
  local lim=$1
  shift
  ((lim > 0)) || return 124
  timeout "$lim" "$@"
}

# why RC: a failed step's exit status in words
why() {
  if (($1 == 124 || $1 == 137)); then echo "timed out, or under 30 s of the ${BUDGET} s budget was left"; else echo "exit $1"; fi
}

has_cuda_build() {
  "$PY" -c 'import sys; from asr._ext import ops; sys.exit(0 if ops().with_cuda else 1)' 2>/dev/null
}

build() {
  {
    echo "== $(date -u +%FT%TZ)"
    nvidia-smi || true
    command -v nvcc && nvcc --version
    "$PY" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.get_device_name())'
    "$PY" -c 'import torchaudio; print("torchaudio", torchaudio.__version__)' || true
    command -v compute-sanitizer || echo "no compute-sanitizer on PATH"
  } >"$OUT/env.txt" 2>&1
  # the GPU's own architecture only (faster than torch's default list); ASR_FORCE_CUDA in case
  # torch cannot see the GPU at build time
  local arch
  arch="$("$PY" -c 'import torch; print("%d.%d" % torch.cuda.get_device_capability())' 2>/dev/null || echo 9.0)"
  local t0=$SECONDS
  export TORCH_CUDA_ARCH_LIST="$arch" MAX_JOBS="$(nproc)" ASR_FORCE_CUDA=1
  # pip's editable install; if pip itself refuses (offline checks), the same extension in place
  if { limited "$(limit 360)" "$PY" -m pip install -v --no-build-isolation --no-deps -e . >"$OUT/build.log" 2>&1 ||
    limited "$(limit 360)" "$PY" setup.py build_ext --inplace >>"$OUT/build.log" 2>&1; } && has_cuda_build; then
    summary "build: OK in $((SECONDS - t0)) s (sm ${arch}; asr._C.with_cuda = True)"
  else
    local rc=$?
    summary "build: FAILED after $((SECONDS - t0)) s ($(why $rc); see build.log)"
    status=1
    return 1
  fi
}

ensure_build() { has_cuda_build || build; }

run_tests() {
  ensure_build || return 1
  # the CUDA cases: tests/test_cuda.py (CUDA = CPU on the same inputs, half precision) and the
  # cuda-parametrized reference cases of every loss and of the FSA intersection
  local files=(tests/test_cuda.py tests/test_rnnt_loss.py tests/test_tdt_loss.py tests/test_pruned_rnnt.py
    tests/test_pruned_tdt.py tests/test_fsa.py tests/test_viterbi.py tests/test_bindings.py)
  local t0=$SECONDS
  if limited "$(limit 300)" "$PY" -m pytest -q -rs -p no:cacheprovider -k cuda --junitxml="$OUT/tests.xml" \
    "${files[@]}" >"$OUT/tests.log" 2>&1; then
    summary "tests: OK in $((SECONDS - t0)) s: $(tail -n 1 "$OUT/tests.log")"
  else
    local rc=$?
    summary "tests: FAILED after $((SECONDS - t0)) s ($(why $rc)): $(tail -n 1 "$OUT/tests.log" 2>/dev/null) (see tests.log)"
    status=1
  fi
}

sanitize() {
  ensure_build || return 1
  if ! command -v compute-sanitizer >/dev/null; then
    summary "sanitize: SKIPPED (no compute-sanitizer on PATH)"
    return 0
  fi
  local tool
  # memcheck: out-of-bounds and misaligned accesses; synccheck: a __syncthreads() reached by only
  # part of a block (the lattice kernels sync between anti-diagonals). Not racecheck: it checks
  # shared memory only, and these kernels use none (their diagonals live in global memory).
  for tool in memcheck synccheck; do
    local t0=$SECONDS
    # without torch's caching allocator every tensor is its own allocation, so memcheck sees an
    # access past a tensor's end; --error-exitcode makes a finding fail the phase
    if limited "$(limit 150)" env PYTORCH_NO_CUDA_MEMORY_CACHING=1 compute-sanitizer --tool "$tool" \
      --error-exitcode 3 "$PY" scripts/cuda_smoke.py >"$OUT/$tool.log" 2>&1; then
      summary "sanitize $tool: OK in $((SECONDS - t0)) s: $(grep -m1 'ERROR SUMMARY' "$OUT/$tool.log" || true)"
    else
      local rc=$?
      summary "sanitize $tool: FAILED after $((SECONDS - t0)) s ($(why $rc); see $tool.log)"
      status=1
    fi
  done
}

bench() {
  ensure_build || return 1
  local t0=$SECONDS
  if limited "$(limit 240)" "$PY" scripts/bench/bench_cuda_losses.py --out "$OUT/bench_cuda.md" \
    >>"$OUT/summary.txt" 2>&1; then
    summary "bench: OK in $((SECONDS - t0)) s (bench_cuda.md)"
  else
    local rc=$?
    summary "bench: FAILED after $((SECONDS - t0)) s ($(why $rc); its output is above in summary.txt)"
    status=1
  fi
}

for phase in "${phases[@]}"; do
  case "$phase" in
    build) build ;;
    test) run_tests ;;
    sanitize) sanitize ;;
    bench) bench ;;
    *) summary "unknown phase '$phase' (build|test|sanitize|bench|all)"; status=2 ;;
  esac
done
exit $status
