"""Training throughput of the fusion model in the paper's configuration, and where the time goes.

Paper configuration: d_model 512, 4 bidirectional S4 layers, N 8, 250 samples (2.5 s at 100 Hz).
One step = forward + backward + AdamW step of the whole FusionModel with the masked loss
(dropout 0.2, training mode). Compares the ways of applying the kernel (``fft``, the default:
FFT over 504 points, transpose + cast + zero padding in one copy, dropout mask on that copy,
in-place kernel gradient, hand-written backward; ``fft_autograd``: the same with autograd's
backward, as the S4D reference code writes it; ``fft_plain``: the plain FFT convolution over 2L with separate
transposes, pads and dropout pass, the reference; ``toeplitz``: a batched matrix product),
same layer otherwise (real-arithmetic kernel generation, D in the kernel, dropout rescaling
in the projection weight), and the dense projections alone (the floor: 4 x Linear
512->1024 + GLU, fwd + bwd + AdamW). The variants run interleaved, one step each per round,
so that load on a shared CPU hits all alike; medians over rounds. The profile lines give the
self-time fraction in the Linear products ("matmul fraction"; the dense floor's own is the
ceiling). Last, per batch, one rfft + irfft pair over 500, 504 and 512 points, the sizes
``labecg.s4.fft_length`` chooses between.

    .venv/bin/python bench/model.py                    # CPU, batch 32 and 256
    .venv/bin/python bench/model.py --device cuda --precision bf16 fp32 --batch 256 1024
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

from labecg.model import FusionModel, ModelConfig
from labecg.train import masked_loss

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from reference.s4_convolutions import METHODS, layer_forward  # noqa: E402  (the other convolutions)

DEFAULT_METHOD = "fft"  # labecg.s4's own

N_TAB, N_TARGETS, L = 27, 100, 250


def make_step(method: str, batch: int, device: str, precision: str, dense_only: bool = False):
    torch.manual_seed(0)
    if dense_only:  # Linear 512 -> 1024 + GLU in four layers: the floor of any S4 block
        model = torch.nn.ModuleList(torch.nn.Linear(512, 1024) for _ in range(4)).to(device)
    else:
        model = FusionModel(ModelConfig(N_TARGETS, N_TAB, d_model=512, d_state=8, n_layers=4)).to(device)
        if method != DEFAULT_METHOD:  # a reference convolution in place of the layer's own
            for layer in model.ecg_encoder.layers:
                layer.forward = functools.partial(layer_forward, layer, method=method)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-3)
    ecg = torch.randn(batch, L, 12, device=device)
    tab = torch.randn(batch, N_TAB, device=device)
    y = (torch.rand(batch, N_TARGETS, device=device) > 0.5).float()
    mask = (torch.rand(batch, N_TARGETS, device=device) > 0.3).float()
    x512 = torch.randn(batch, L, 512, device=device)
    amp = torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=precision == "bf16")

    def step():
        opt.zero_grad(set_to_none=True)
        with amp:
            if dense_only:
                h = x512
                for lin in model:
                    h = F.glu(lin(h), dim=-1)
                loss = h.float().mean()
            else:
                loss = masked_loss(model(ecg, tab), y, mask)
        loss.backward()
        opt.step()
        if device == "cuda":
            torch.cuda.synchronize()  # CPU-GPU sync point: time the work, not the launch

    return step


def time_interleaved(steps_by_name: dict, warmup: int, rounds: int) -> dict[str, float]:
    """Median seconds per step of each variant, one step of each per round."""
    for step in steps_by_name.values():
        for _ in range(warmup):
            step()
    times: dict[str, list[float]] = {k: [] for k in steps_by_name}
    for _ in range(rounds):
        for name, step in steps_by_name.items():
            t0 = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def time_steps(step, warmup: int, steps: int) -> float:
    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


CATEGORIES = {
    "matmul (Linear mm/addmm)": ("aten::mm", "aten::addmm", "aten::addmm_", "aten::linear"),
    "toeplitz bmm": ("aten::bmm", "aten::baddbmm"),
    "fft": ("aten::_fft_r2c", "aten::_fft_c2r", "aten::_fft_c2c"),
}
MATMUL = "matmul (Linear mm/addmm)"
COPIES = ("aten::copy_", "aten::fill_", "aten::sum", "aten::flip", "aten::constant_pad_nd", "aten::zero_",
          "aten::as_strided")


def profile_step(step, device: str) -> dict[str, float]:
    """Fractions of self time per category over two steps."""
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    with profile(activities=acts) as prof:
        step()
        step()
    attr = "self_device_time_total" if device == "cuda" else "self_cpu_time_total"
    totals: dict[str, float] = defaultdict(float)
    for ev in prof.key_averages():
        t = getattr(ev, attr, 0.0)
        if t <= 0:
            continue
        cat = next((c for c, names in CATEGORIES.items() if ev.key in names), None)
        if cat is None and ev.key in COPIES:
            cat = "copies/pads/sums (incl. Toeplitz build, diagonal sums)"
        if cat is None:
            cat = "rest (GELU, LayerNorm, kernel generation, AdamW, ...)"
        totals[cat] += t
    whole = sum(totals.values())
    return {k: v / whole for k, v in sorted(totals.items(), key=lambda kv: -kv[1])}


def kernel_generation_share(batch: int, device: str, warmup: int, steps: int) -> float:
    """Seconds per step spent generating the four layers' kernels (forward + backward)."""
    model = FusionModel(ModelConfig(N_TARGETS, N_TAB, d_model=512, d_state=8, n_layers=4)).to(device)

    def gen():
        sum(layer.kernel(L).sum() for layer in model.ecg_encoder.layers).backward()
        if device == "cuda":
            torch.cuda.synchronize()

    return time_steps(gen, warmup, steps)


def fft_pair_seconds(batch: int, n: int, device: str, warmup: int, steps: int) -> float:
    """Seconds of one rfft + irfft pair over n points of a (batch, 512, n) float32 input."""
    x = torch.randn(batch, 512, n, device=device)

    def pair():
        torch.fft.irfft(torch.fft.rfft(x, n=n), n=n)
        if device == "cuda":
            torch.cuda.synchronize()

    return time_steps(pair, warmup, steps)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--precision", nargs="+", default=["fp32"], choices=["fp32", "bf16"])
    p.add_argument("--batch", nargs="+", type=int, default=[32, 256])
    p.add_argument("--steps", type=int, default=7, help="rounds (one step of every variant each)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--no-profile", action="store_true")
    args = p.parse_args()
    dev = torch.cuda.get_device_name(0) if args.device == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"device: {dev}; torch {torch.__version__}; d_model 512, 4 layers, N 8, L {L}; "
          f"median of {args.steps} steps after {args.warmup} warm-up")
    methods = [DEFAULT_METHOD] + [m for m in METHODS if m != DEFAULT_METHOD]
    for precision in args.precision:
        for batch in args.batch:
            steps = {m: make_step(m, batch, args.device, precision) for m in methods}
            steps["dense"] = make_step(DEFAULT_METHOD, batch, args.device, precision, dense_only=True)
            t = time_interleaved(steps, args.warmup, args.steps)
            t_dense = t.pop("dense")
            t_gen = kernel_generation_share(batch, args.device, args.warmup, args.steps)
            print(f"\n[{precision}, batch {batch}] train step (fwd + bwd + AdamW), interleaved medians")
            print(f"  {'method':10s} {'s/step':>8s} {'samples/s':>10s} {'/ dense floor':>14s} {'/ fft_plain':>12s}")
            for m in methods:
                print(f"  {m:10s} {t[m]:8.3f} {batch / t[m]:10.1f} {t[m] / t_dense:14.2f} "
                      f"{t[m] / t['fft_plain']:12.2f}")
            print(f"  {'dense':10s} {t_dense:8.3f} {batch / t_dense:10.1f} {1.0:14.2f} {t_dense / t['fft_plain']:12.2f}"
                  f"   (4 x Linear 512->1024 + GLU alone)")
            print(f"  hand-written backward (fft) vs autograd's (fft_autograd, same forward): "
                  f"{t['fft_autograd'] / t[DEFAULT_METHOD]:.2f}x the samples/s")
            print(f"  default ({DEFAULT_METHOD}) {t['fft_plain'] / t[DEFAULT_METHOD]:.2f}x the plain FFT's samples/s; "
                  f"kernel generation, 4 layers fwd+bwd: {t_gen * 1e3:.1f} ms/step "
                  f"({t_gen / t[DEFAULT_METHOD]:.1%} of the default step)")
            sizes = {n: fft_pair_seconds(batch, n, args.device, args.warmup, args.steps) for n in (500, 504, 512)}
            print("  rfft + irfft pair, (batch, 512, n), fp32: "
                  + ", ".join(f"n {n} {s * 1e3:.1f} ms" for n, s in sizes.items())
                  + " (n 504: labecg.s4.fft_length(250))")
            if not args.no_profile:
                for m in methods + ["dense"]:
                    frac = profile_step(steps[m], args.device)
                    print(f"  profile ({m}): matmul fraction {frac.get(MATMUL, 0.0):.0%}; "
                          + "; ".join(f"{k} {v:.0%}" for k, v in frac.items() if k != MATMUL))


if __name__ == "__main__":
    main()
