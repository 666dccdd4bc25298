#!/usr/bin/env python
"""A/B of two builds of the compiled lattice kernels (asr._C) in one process.

    python scripts/bench/bench_lattice_ab.py A_C.so B_C.so [--B 32 --T 500 --U 100 --V 500] [--threads 2]

Loads both extension files (say a copy of asr/_C*.so built before a change, and the current
one) and alternates them round by round on the same inputs, so that load on a shared machine
hits both alike. Times only the compiled lattice work, not the dense per-row work around it
(normalizers, softmax), which the kernels do not touch:
  rnnt  rnnt_forward + rnnt_log_occupancy + rnnt_subtract_arc_posteriors, float32 rows of [B, T, U+1, V]
  tdt   tdt_forward + tdt_subtract_arc_posteriors, rows of [B, T, U+1, V+5], durations 0-4
  mi    mutual_information_forward + backward, px [B, U, T+1], py [B, U+1, T] (simple and pruned losses)
Lengths are random in 70-100% of the maxima (seed 0). Prints median seconds and B / A.
"""

from __future__ import annotations

import argparse
import importlib.util
import time

import torch
from common import add_size_args, random_lengths  # scripts/bench/common.py


def load(path: str, name: str):
    """The extension module in `path`, imported under its own package name (both builds are `_C`)."""
    spec = importlib.util.spec_from_file_location(f"{name}._C", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def median(xs: list[float]) -> float:
    return sorted(xs)[len(xs) // 2]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("a", help="first asr/_C*.so")
    p.add_argument("b", help="second asr/_C*.so")
    add_size_args(p)
    p.add_argument("--rounds", type=int, default=7)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    builds = {"A": load(args.a, "build_a"), "B": load(args.b, "build_b")}
    g = torch.Generator().manual_seed(0)
    B, T, U, V = args.B, args.T, args.U, args.V
    tl, ul = random_lengths(B, T, U, g)
    targets = torch.randint(1, V, (B, U), generator=g)
    off = torch.arange(B) * (T * (U + 1))
    st = torch.full((B,), U + 1)
    one = torch.ones(B)
    durations = torch.tensor([0, 1, 2, 3, 4])

    def rnnt_case():
        rows = torch.randn(B * T * (U + 1), V, generator=g)
        den = torch.logsumexp(rows, -1)
        grad = torch.zeros_like(rows)

        def run(m):
            loss, a, b = m.rnnt_forward(rows, den, targets, tl, ul, off, st, max_t=T, max_u=U, blank=0)
            m.rnnt_log_occupancy(a, b, loss, one, tl, ul, off, st, num_rows=rows.shape[0])
            m.rnnt_subtract_arc_posteriors(grad, rows, den, targets, tl, ul, off, st, a, b, loss, one, blank=0)

        return run

    def tdt_case():
        rows = torch.randn(B * T * (U + 1), V + 5, generator=g)
        den_tok, den_dur = torch.logsumexp(rows[:, :V], -1), torch.logsumexp(rows[:, V:], -1)
        grad = torch.zeros_like(rows)
        kw = dict(num_tokens=V, blank=0, sigma=0.0)

        def run(m):
            loss, a, b = m.tdt_forward(
                rows, den_tok, den_dur, targets, tl, ul, off, st, durations, max_t=T, max_u=U, **kw
            )
            m.tdt_subtract_arc_posteriors(
                grad, rows, den_tok, den_dur, targets, tl, ul, off, st, durations, a, b, loss, one, **kw
            )

        return run

    def mi_case():
        px = torch.randn(B, U, T + 1, generator=g).log_softmax(1)
        py = torch.randn(B, U + 1, T, generator=g).log_softmax(1)
        bd = torch.stack([torch.zeros_like(tl), torch.zeros_like(tl), ul, tl], 1)

        def run(m):
            ans, pp = m.mutual_information_forward(px, py, bd, modified=False)
            m.mutual_information_backward(px, py, bd, pp, ans, one, modified=False)

        return run

    print(f"B={B} T={T} U={U} V={V} float32, {args.threads} threads, {args.rounds} rounds alternating A and B")
    print("| kernels | A median | B median | B / A |")
    print("| --- | --- | --- | --- |")
    for name, case in (("rnnt", rnnt_case), ("tdt", tdt_case), ("mi", mi_case)):
        run = case()  # one case's inputs at a time (the rows are 3 GiB at the default sizes)
        times = {k: [] for k in builds}
        for m in builds.values():
            run(m)  # warm-up
        for _ in range(args.rounds):
            for k, m in builds.items():
                t0 = time.perf_counter()
                run(m)
                times[k].append(time.perf_counter() - t0)
        a, b = median(times["A"]), median(times["B"])
        print(f"| {name} | {a:.3f} s | {b:.3f} s | {b / a:.2f} |")
        del run


if __name__ == "__main__":
    main()
