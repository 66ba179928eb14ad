"""Hash-grid / NeRF-field throughput: forward+backward points per second.

Usage, from the repo root (PYTHONPATH only needed when the package is not installed):
    PYTHONPATH=. python benchmarks/fields.py [--points 262144] [--repeats 3] [--device cpu|cuda|all]

Rows: the pure-torch HashGrid on CPU; on a CUDA machine also the torch path on CUDA, the Triton
kernels (when triton imports) and tinycudann (when importable), each with its speed-up over the
torch path on the same device measured in the same run ("x torch", fwd+bwd wall time), and the max
|accelerator - torch| difference of features and parameter gradients on identical parameters; plus
the full NeRFField (grid + two heads) for context. Triton needs CUDA: on CPU only the torch rows are
printed (its interpreter is a correctness tool, not a speed one). Reference grid config: 16 levels
x 2 features, 2^19 table, base 16, scale 1.4473. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch

from a3d_mesh.fields import HashGrid, HashGridConfig, NeRFField, import_tcnn
from a3d_mesh.fields.hashgrid import import_triton, triton_import_error


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(fn: Callable[[], None], device: torch.device, repeats: int) -> tuple[float, float]:
    """Median wall time and median process CPU time (s) of ``fn`` over ``repeats`` runs, after a warm-up.

    CPU time (all threads) is reported too because wall time on a shared machine mostly measures
    the other tenants.
    """
    fn()
    _sync(device)
    walls, cpus = [], []
    for _ in range(repeats):
        start, cpu_start = time.perf_counter(), time.process_time()
        fn()
        _sync(device)
        walls.append(time.perf_counter() - start)
        cpus.append(time.process_time() - cpu_start)
    return sorted(walls)[len(walls) // 2], sorted(cpus)[len(cpus) // 2]


def bench_grid(grid: HashGrid, x: torch.Tensor, repeats: int) -> tuple[tuple[float, float], tuple[float, float]]:
    """((wall, cpu) forward s, (wall, cpu) forward+backward s) of ``grid`` on points ``x``."""
    upstream = torch.randn(x.shape[0], grid.n_output_dims, device=x.device)

    def forward() -> None:
        with torch.no_grad():
            grid(x)

    def forward_backward() -> None:
        grid.params.grad = None
        (grid(x) * upstream).sum().backward()

    return time_call(forward, x.device, repeats), time_call(forward_backward, x.device, repeats)


def bench_nerf(nerf: NeRFField, x: torch.Tensor, repeats: int) -> tuple[tuple[float, float], tuple[float, float]]:
    """((wall, cpu) forward s, (wall, cpu) forward+backward s) of a NeRFField at a batch code."""
    u = torch.tensor([0.5, 0.5], device=x.device)

    def forward() -> None:
        with torch.no_grad():
            nerf(x, u)

    def forward_backward() -> None:
        nerf.zero_grad(set_to_none=True)
        sigma, albedo = nerf(x, u)
        (sigma.sum() + albedo.sum()).backward()

    return time_call(forward, x.device, repeats), time_call(forward_backward, x.device, repeats)


def agreement(cfg: HashGridConfig, x: torch.Tensor, backend: str = "tcnn") -> tuple[float, float]:
    """Max |backend - torch| of features and of parameter gradients on identical parameters (CUDA)."""
    fast = HashGrid(cfg, backend=backend, seed=0).to(x.device)
    ref = HashGrid(cfg, backend="torch", seed=0).to(x.device)
    with torch.no_grad():
        fast.params.uniform_(-1, 1)
    ref.load_state_dict(fast.state_dict())
    upstream = torch.randn(x.shape[0], cfg.n_output_dims, device=x.device)
    out_fast, out_ref = fast(x), ref(x)
    (out_fast * upstream).sum().backward()
    (out_ref * upstream).sum().backward()
    feat_err = (out_fast - out_ref).abs().max().item()
    grad_err = (fast.params.grad - ref.params.grad).abs().max().item()
    return feat_err, grad_err


def row(
    module: str, backend: str, device: torch.device, points: int, fwd: tuple[float, float], total: tuple[float, float],
    torch_total: float | None = None,
) -> str:
    """One markdown table row: wall ms, CPU ms (process, all threads), wall throughput and the
    speed-up over the torch path's fwd+bwd wall time ``torch_total`` (s) on the same device."""
    rate = points / total[0] / 1e6
    ratio = f"{torch_total / total[0]:.1f}" if torch_total else "-"
    return (
        f"| {module} | {backend} | {device.type} | {fwd[0] * 1e3:.1f} | {total[0] * 1e3:.1f} "
        f"| {fwd[1] * 1e3:.0f} | {total[1] * 1e3:.0f} | {rate:.3f} | {ratio} |"
    )


def grid_backends(device: torch.device) -> tuple[list[str], list[str]]:
    """(backends to measure on ``device``, notes on the ones that are not), torch first."""
    if device.type != "cuda":
        return ["torch"], ["triton and tinycudann need CUDA: not measured on cpu"]
    backends, notes = ["torch"], []
    if import_triton() is not None:
        backends.append("triton")
    else:
        notes.append(f"triton not importable: {triton_import_error()}")
    if import_tcnn() is not None:
        backends.append("tcnn")
    else:
        notes.append("tinycudann not importable")
    return backends, notes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=2**18)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", choices=("cpu", "cuda", "all"), default="all")
    args = parser.parse_args()
    cfg = HashGridConfig()
    devices = []
    if args.device in ("cpu", "all"):
        devices.append(torch.device("cpu"))
    if args.device in ("cuda", "all") and torch.cuda.is_available():
        devices.append(torch.device("cuda"))
    elif args.device == "cuda":
        parser.error("--device cuda: torch sees no CUDA device (the Triton and tinycudann rows need one)")
    print(f"points={args.points}, grid={cfg}, torch={torch.__version__}, threads={torch.get_num_threads()}")
    print("| module | backend | device | fwd ms | fwd+bwd ms | fwd cpu-ms | fwd+bwd cpu-ms | fwd+bwd Mpts/s "
          "| x torch |")
    print("|---|---|---|---|---|---|---|---|---|")
    notes = []
    for device in devices:
        x = torch.rand(args.points, 3, device=device)
        backends, why_not = grid_backends(device)
        notes += [f"{device.type}: {n}" for n in why_not]
        base: dict[str, float] = {}
        for backend in backends:
            grid = HashGrid(cfg, backend=backend, seed=0).to(device)
            fwd, total = bench_grid(grid, x, args.repeats)
            base.setdefault("HashGrid", total[0])
            print(row("HashGrid", backend, device, args.points, fwd, total, base["HashGrid"]))
            nerf = NeRFField(2, cfg, backend=backend, seed=0).to(device)
            fwd, total = bench_nerf(nerf, x * 2 - 1, args.repeats)
            base.setdefault("NeRFField", total[0])
            print(row("NeRFField", backend, device, args.points, fwd, total, base["NeRFField"]))
        for backend in backends[1:]:
            feat_err, grad_err = agreement(cfg, x[:65536], backend)
            notes.append(f"{backend} vs torch on {device.type}, identical params: max |feature diff| "
                         f"{feat_err:.2e}, |grad diff| {grad_err:.2e}")
    if notes:
        print()
        print("\n".join(notes))


if __name__ == "__main__":
    main()
