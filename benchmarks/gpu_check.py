"""One command that checks and measures the whole GPU path; exit code 1 on any disagreement.

    python benchmarks/gpu_check.py [--device cuda|cpu] [--out DIR] [--model-dir DIR] [--skip-run]
        [--sections agreement,step,run]

Sections (all in one process, except the end-to-end run, which is a child process):

(a) agreement of each CUDA backend (nvdiffrast, tinycudann, the Triton hash grid, kaolin) and of
    the torch paths run on the GPU with the CPU reference, on the same inputs
    (``gpu_check_agreement.py``, with the thresholds), and the Triton hash grid's fwd+bwd points/s
    against the torch path's on the same GPU (an info row; target >= 10x). A library that is not
    installed is a row that says so, not a failure.
(b) the refine-step benchmark of ``benchmarks/step.py`` (512 px, tet grid 128, 4 views, 2 objects,
    SD 2.1 base sizes with random weights): ms a step, its split, the share outside the diffusion
    model, peak memory.
(c) ``a3d-mesh run`` end to end in a child process (``python -m a3d_mesh_cli.main``): a short
    ``fast`` run guided by an SD-2.1-shaped random-weight pipeline that this script builds and saves
    with ``save_pretrained`` (``--model-dir``, default ``OUT/model``, reused; the project's small
    tokenizer; nothing is downloaded): wall time, it/s and seconds per stage, peak memory (its RSS,
    and the GPU memory it adds, sampled at each log line), and that the manifest lists every asset.
(d) one markdown table, printed and written to ``OUT/gpu_check.md`` with ``OUT/gpu_check.json``.

``--device cpu`` runs a reduced form of the same code in under a minute on 2 cores (CI runs it,
``tests/test_gpu_check.py``): the agreement section compares the CPU path with independent
reference math (see ``gpu_check_agreement.py``); the step benchmark runs with a narrow
SD-2.1-shaped pipeline at 64 px (2 steps); the run uses ``--preset tiny`` with that pipeline.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import gc
import importlib.metadata
import importlib.util
import json
import math
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import step as step_bench  # noqa: E402  (benchmarks/step.py)
from gpu_check_agreement import Row, agreement_rows, guarded  # noqa: E402,F401  (section (a))

PROMPTS = ("dog: a dog", "cat: a cat")
RUN_TIMEOUT_S = 300  # the run alone; on an H200 it should take 1-2 min
MODEL_FORMAT = 1


def peak_text(device: torch.device) -> str:
    """Peak memory as step.py measures it: CUDA max allocated, or the process's peak RSS."""
    _, gib = step_bench.peak_memory_gib(device)
    return f"{gib:.2f} GiB {'GPU' if device.type == 'cuda' else 'RSS'}"


# ---------------------------------------------------------------------------------------------
# The SD-2.1-shaped random-weight pipeline (saved with save_pretrained, loaded by a3d-mesh itself)

# SD 2.1 base's text encoder: OpenCLIP ViT-H/14 text tower, penultimate layer (23 of 24 layers).
SD21_TEXT: dict[str, Any] = dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=23,
                                 num_attention_heads=16, projection_dim=1024, hidden_act="gelu")
# The CPU form: every block type and level of SD 2.1 kept, channels and depth narrowed.
SMALL = dict(unet=dict(block_out_channels=(32, 64, 64, 64), layers_per_block=1, attention_head_dim=(2, 4, 4, 4),
                       cross_attention_dim=64),
             vae=dict(block_out_channels=(8, 16, 16, 16), layers_per_block=1, norm_num_groups=8),
             text=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                       projection_dim=64))


def save_random_pipeline(folder: Path, size: str, device: torch.device) -> Path:
    """Build SD 2.1 base (``size="sd21"``) or its narrow variant (``"small"``) with random weights and
    save it in diffusers layout at ``folder`` (float16 on CUDA); reused when already there.

    Tokenizer, ``model_index.json`` and marker come from :mod:`a3d_mesh.guidance.tiny`."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from a3d_mesh.guidance.tiny import (BOS_TOKEN, EOS_TOKEN, TINY_MAX_LENGTH, model_index, tiny_vocab_and_merges,
                                        write_tiny_tokenizer)

    marker = folder / "gpu_check_model.json"
    want = {"format": MODEL_FORMAT, "size": size, "dtype": "float16" if device.type == "cuda" else "float32"}
    if marker.is_file() and json.loads(marker.read_text()) == want:
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    vocab_size = write_tiny_tokenizer(folder / "tokenizer")
    vocab, _ = tiny_vocab_and_merges()
    small = SMALL if size == "small" else {"unet": {}, "vae": {}, "text": {}}
    text_cfg = CLIPTextConfig(**{**SD21_TEXT, **small["text"]}, vocab_size=vocab_size,
                              max_position_embeddings=TINY_MAX_LENGTH, bos_token_id=vocab[BOS_TOKEN],
                              eos_token_id=vocab[EOS_TOKEN], pad_token_id=vocab[EOS_TOKEN])
    torch.manual_seed(0)
    with torch.device(device):  # initialised in place: 866M UNet parameters are built on the GPU in a second
        modules = {"unet": UNet2DConditionModel(**{**step_bench.SD21_UNET, **small["unet"]}),
                   "vae": AutoencoderKL(**{**step_bench.SD21_VAE, **small["vae"]}),
                   "text_encoder": CLIPTextModel(text_cfg)}
    for name, module in modules.items():
        (module.half() if device.type == "cuda" else module).save_pretrained(folder / name)
    del modules, module  # `module` still holds the last network
    DDPMScheduler(**step_bench.SD21_SCHEDULER).save_pretrained(folder / "scheduler")
    (folder / "model_index.json").write_text(json.dumps(model_index(), indent=2))
    marker.write_text(json.dumps(want))  # last: a crashed build is rebuilt next time
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return folder


def model_rows(device: torch.device, folder: Path) -> list[Row]:
    """Build (or reuse) the pipeline the step (CPU) and the run use; one row with its size and time."""
    size = "sd21" if device.type == "cuda" else "small"
    t0 = time.perf_counter()
    save_random_pipeline(folder, size, device)
    gib = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) / 2**30
    what = "SD 2.1 base shapes" if size == "sd21" else "SD 2.1 block layout, narrow"
    return [Row("model", f"random-weight pipeline ({what}) saved", "PASS",
                f"{gib:.2f} GiB in {time.perf_counter() - t0:.1f} s", data={"folder": str(folder), "size": size})]


# ---------------------------------------------------------------------------------------------
# (b) the refine step


def step_rows(device: torch.device, model: Path) -> list[Row]:
    """``benchmarks/step.py`` at the GPU sizes (its random SD 2.1), or tiny sizes with ``model`` on CPU."""
    from a3d_mesh.guidance import encode_prompts, load_components

    if device.type == "cuda":
        args = step_bench.parse_args(["--device", "cuda", "--steps", "6", "--warmup", "2"])
        comps = emb = None
    else:
        args = step_bench.parse_args(["--device", "cpu", "--resolution", "64", "--sd-resolution", "64",
                                      "--tet-resolution", "32", "--steps", "2", "--warmup", "1", "--init-steps", "25",
                                      "--views", "2"])
        comps = load_components(str(model), device)
        emb = encode_prompts(comps, [p.split(": ", 1)[1] for p in PROMPTS])
    what = (f"{args.resolution} px, VAE {args.sd_resolution} px, tet grid {args.tet_resolution}, {args.views} views, "
            f"{args.objects} objects")
    try:
        stage = step_bench.build_stage(step_bench.bench_config(args), args.objects, device, comps, emb)
    except SystemExit as e:  # build_stage's "empty surface" verdict
        return [Row("step", f"refine step ({what})", "FAIL", str(e))]
    rows, plain = step_bench.measure(stage, args.warmup, args.steps, device)
    step_bench.report(rows, plain, device)
    peak = peak_text(device)
    del stage
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    # The diffusion model's own cost, as step.report defines it: UNet + VAE encode forward and backward.
    step_s = statistics.median(r["step"] for r in rows)
    diffusion = statistics.median(r["UNet"] + r["VAE encode fwd"] + r["VAE encode bwd"] for r in rows)
    plain_s = statistics.median(plain)
    faces = min(r["faces"] for r in rows)
    data = {"step_ms": 1e3 * step_s, "plain_ms": 1e3 * plain_s, "diffusion_ms": 1e3 * diffusion, "faces": faces,
            "parts_ms": {k: 1e3 * statistics.median(r[k] for r in rows) for k in step_bench.PARTS + ("rest",)}}
    share = (step_s - diffusion) / step_s
    return [Row("step", f"refine step ({what})", "PASS" if faces > 0 else "FAIL",
                f"{1e3 * plain_s:.1f} ms/step ({1 / plain_s:.2f} it/s), instrumented {1e3 * step_s:.1f} ms",
                "mesh not empty", peak, data),
            Row("step", "outside the diffusion model (UNet + VAE)", "info",
                f"{100 * share:.1f} % of the step; {(step_s - diffusion) / max(diffusion, 1e-12):.2f}x the "
                f"diffusion model's {1e3 * diffusion:.1f} ms",
                f"goal < {100 * step_bench.GOAL_SHARE:.0f} % (CUDA, 512 px)",
                data={"share": share})]


# ---------------------------------------------------------------------------------------------
# (c) a3d-mesh run end to end

PROGRESS = re.compile(r"^\[(?P<stage>[\w-]+)\] (?P<step>\d+)/(?P<total>\d+) .*\| (?P<rate>[0-9.]+) it/s")
TAG = re.compile(r"^\[(?P<tag>[\w-]+)\]")


def run_command(device: torch.device, model: Path, prompts: Path, run_dir: Path) -> list[str]:
    """The ``a3d-mesh run`` command line: a short ``fast`` run on CUDA, ``tiny`` sizes on CPU.

    ``python -m a3d_mesh_cli.main`` when the package is installed, else ``python cli/main.py`` from
    this checkout (a device machine may only have the tree on ``PYTHONPATH``)."""
    entry = ["-m", "a3d_mesh_cli.main"] if importlib.util.find_spec("a3d_mesh_cli") else [str(ROOT / "cli" / "main.py")]
    base = [sys.executable, *entry, "run", str(prompts), "--out", str(run_dir), "--seed", "0"]
    if device.type == "cuda":
        return base + ["--preset", "fast", f"guidance.model={model}", "device=cuda", "coarse.steps=20",
                       "refine.steps=10", "refine.init_steps=200", "export.formats=glb"]
    return base + ["--preset", "tiny", f"guidance.model={model}", "device=cpu", "coarse.steps=6", "refine.steps=4",
                   "refine.init_steps=40", "export.formats=glb", "preview.views=2", "preview.sweep_frames=2"]


def vm_hwm_gib(pid: int) -> float:
    """Peak RSS so far of live process ``pid`` (``VmHWM``; NaN when unreadable)."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return math.nan
    m = re.search(r"^VmHWM:\s+(\d+) kB", text, re.M)
    return int(m[1]) / 2**20 if m else math.nan


def gpu_used_gib(device: torch.device) -> float:
    """Memory in use on the whole GPU (every process), GiB."""
    free, total = torch.cuda.mem_get_info(device)
    return (total - free) / 2**30


def stream(cmd: list[str], timeout_s: float, gpu: torch.device | None
           ) -> tuple[int | None, list[tuple[float, str]], float, float]:
    """Run ``cmd``, echoing its output: (exit code or None on timeout, [(seconds since start, line)],
    its peak RSS and the GPU memory it added, GiB, both sampled at each output line)."""
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    child_env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", "PYTHONPATH": path}
    t0, peak, gpu_peak = time.monotonic(), 0.0, 0.0
    base = gpu_used_gib(gpu) if gpu is not None else 0.0  # this process's own context and cache
    lines: list[tuple[float, str]] = []
    timed_out: list[bool] = []

    def kill(proc: subprocess.Popen) -> None:
        """The whole process group: the run's own children (the xatlas worker) hold the pipe too."""
        timed_out.append(True)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)

    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=child_env,
                          cwd=ROOT, start_new_session=True) as proc:
        assert proc.stdout is not None
        watchdog = threading.Timer(timeout_s, kill, (proc,))  # fires even when the child is silent
        watchdog.start()
        try:
            for line in proc.stdout:
                lines.append((time.monotonic() - t0, line.rstrip("\n")))
                peak = max(peak, vm_hwm_gib(proc.pid))  # max() keeps `peak` when the read gives NaN
                gpu_peak = max(gpu_peak, gpu_used_gib(gpu) - base) if gpu is not None else 0.0
                print(f"    | {line}", end="", flush=True)
        finally:
            watchdog.cancel()
        rc = proc.wait()
    return (None if timed_out else rc), lines, peak, gpu_peak


def stage_times(lines: list[tuple[float, str]]) -> dict[str, float]:
    """Seconds per log tag (``[coarse]``, ``[previews]``, ...), in order of appearance.

    A tag logged on several lines spans its first to its last line (a stage that says it starts);
    a tag logged once (``[previews] 7 files``) spans the previous tag's last line to that line."""
    spans: dict[str, list[float]] = {}
    for t, line in lines:
        if m := TAG.match(line):
            spans.setdefault(m["tag"], []).append(t)
    out, prev_end = {}, 0.0
    for tag, times in spans.items():
        out[tag] = times[-1] - (times[0] if len(times) > 1 else prev_end)
        prev_end = times[-1]
    return out


def missing_requirements() -> list[str] | None:
    """The distributions a3d-mesh requires (its installed metadata: pyproject's dependencies) that
    are not installed; None when a3d-mesh itself is not installed as a distribution."""
    try:
        reqs = importlib.metadata.requires("a3d-mesh") or []
    except importlib.metadata.PackageNotFoundError:
        return None
    missing = []
    for req in reqs:
        name = re.split(r"[<>=!~;\[ ]", req, maxsplit=1)[0]
        if "extra ==" in req:
            continue
        try:
            importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            missing.append(name)
    return missing


def manifest_problems(run_dir: Path) -> tuple[list[str], int]:
    """What is wrong with ``run_dir/manifest.json`` (every prompt an asset, every listed file non-empty)."""
    path = run_dir / "manifest.json"
    if not path.is_file():
        return ["no manifest.json"], 0
    assets = json.loads(path.read_text(encoding="utf-8")).get("assets", [])
    names = {a.get("name") for a in assets}
    problems = [f"asset {n} missing" for n in (p.split(":")[0] for p in PROMPTS) if n not in names]
    for a in assets:
        if not a.get("files"):
            problems.append(f"{a.get('name')}: no files")
        for rel in (a.get("files") or {}).values():
            f = run_dir / "export" / rel
            if not (f.is_file() and f.stat().st_size > 0):
                problems.append(f"{a.get('name')}: {rel} missing or empty")
    return problems, len(assets)


def run_rows(device: torch.device, model: Path, out: Path) -> list[Row]:
    """Run ``a3d-mesh run`` in a child process; rows for the run, its manifest and each stage."""
    missing = missing_requirements()
    rows = [] if missing == [] else [Row(  # said first: an export without pymeshlab fails the run below
        "run", "a3d-mesh requirements installed", "FAIL" if missing else "info",
        f"missing: {', '.join(missing)}" if missing else "a3d-mesh is not installed; requirements not checked")]
    prompts, run_dir = out / "prompts.txt", out / "run"
    prompts.write_text("\n".join(PROMPTS) + "\n", encoding="utf-8")
    shutil.rmtree(run_dir, ignore_errors=True)
    cmd = run_command(device, model, prompts, run_dir)
    print("  $ " + " ".join(cmd[1:]), flush=True)
    t0 = time.monotonic()
    rc, lines, rss, gpu_gib = stream(cmd, RUN_TIMEOUT_S, device if device.type == "cuda" else None)
    wall = time.monotonic() - t0
    preset = cmd[cmd.index("--preset") + 1]
    peak = ", ".join(([f"{gpu_gib:.2f} GiB GPU (sampled)"] if gpu_gib > 0 else [])
                     + ([f"{rss:.2f} GiB RSS"] if rss > 0 else []))
    ok = rc == 0
    last = next((ln for _, ln in reversed(lines) if "error" in ln.lower()), lines[-1][1] if lines else "")
    rows += [Row("run", f"a3d-mesh run --preset {preset} ({len(PROMPTS)} prompts)", "PASS" if ok else "FAIL",
                f"{wall:.1f} s" + ("" if ok else f"; {'timed out' if rc is None else f'exit {rc}'}: {last[:120]}"),
                "exit 0", peak, {"wall_s": wall, "exit": rc, "command": cmd[1:]})]
    problems, n_assets = manifest_problems(run_dir)
    rows.append(Row("run", "manifest lists every asset", "FAIL" if problems else "PASS",
                    "; ".join(problems[:3]) if problems else f"{n_assets} assets, files present",
                    f"{len(PROMPTS)} assets", data={"problems": problems}))
    rates = {m["stage"]: float(m["rate"]) for _, ln in lines if (m := PROGRESS.match(ln))}
    spans = {tag: sec for tag, sec in stage_times(lines).items() if tag in rates or tag in ("previews", "export")}
    for tag, sec in spans.items():
        rate = f"{rates[tag]:.2f} it/s over its steps, " if tag in rates else ""  # the CLI's own figure
        rows.append(Row("run", f"stage {tag}", "info", f"{rate}{sec:.1f} s in all",
                        data={"seconds": sec, "it_s": rates.get(tag)}))
    rest = wall - sum(spans.values())
    rows.append(Row("run", "rest (start-up, model load, prompt encoding)", "info", f"{rest:.1f} s"))
    return rows


# ---------------------------------------------------------------------------------------------
# (d) the table, and the command


def table(rows: list[Row]) -> str:
    """The markdown table of every row."""
    out = ["| section | check | status | measured | limit | peak memory |", "|---|---|---|---|---|---|"]
    for r in rows:  # a "|" inside a cell (a quoted log line) is escaped so that it stays one cell
        cells = (r.section, r.check, r.status, r.measured, r.limit, r.peak)
        out.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(out)


def machine(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)}, CUDA {torch.version.cuda}"
    return step_bench.machine(device)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "gpu_check",
                   help="folder for gpu_check.md/.json, the saved model and the run")
    p.add_argument("--model-dir", type=Path, help="where the random-weight pipeline is saved and reused "
                   "(default OUT/model; about 2.5 GB on cuda: keep it out of a folder that is copied back)")
    p.add_argument("--skip-run", action="store_true", help="skip section (c), the a3d-mesh run")
    p.add_argument("--sections", default="agreement,step,run",
                   help="comma-separated subset of agreement,step,run (default: all)")
    args = p.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda asked for, but this torch has no CUDA device")
    args.sections = [s for s in args.sections.split(",") if s and not (args.skip_run and s == "run")]
    if unknown := set(args.sections) - {"agreement", "step", "run"}:
        p.error(f"unknown section(s): {', '.join(sorted(unknown))}")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the sections, print and write the table; 0 when every judged row passed, else 1."""
    args = parse_args(argv)
    device, out = torch.device(args.device), args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    started, t0 = datetime.datetime.now(datetime.timezone.utc), time.perf_counter()
    header = (f"{started.isoformat(timespec='seconds')}, {machine(device)}, torch {torch.__version__}, "
              f"device {device.type}{'' if device.type == 'cuda' else ' (reduced CPU form)'}")
    print(header, flush=True)
    rows: list[Row] = []
    if "agreement" in args.sections:
        print("(a) agreement", flush=True)
        rows += agreement_rows(device)
    model, model_ok = (args.model_dir or out / "model").resolve(), True
    if "run" in args.sections or ("step" in args.sections and device.type == "cpu"):
        print("building the random-weight pipeline", flush=True)
        rows += guarded("model", "random-weight pipeline", lambda: model_rows(device, model))
        model_ok = rows[-1].status != "FAIL"
    if "step" in args.sections and (model_ok or device.type == "cuda"):
        print("(b) refine step", flush=True)
        rows += guarded("step", "refine step", lambda: step_rows(device, model))
    if "run" in args.sections and model_ok:
        print("(c) a3d-mesh run", flush=True)
        rows += guarded("run", "a3d-mesh run", lambda: run_rows(device, model, out))
    total = time.perf_counter() - t0
    failed = [r for r in rows if r.status == "FAIL"]
    verdict = f"{len(failed)} check(s) FAILED: {'; '.join(r.check for r in failed)}" if failed else "all checks passed"
    text = f"{header}\n\n{table(rows)}\n\nTotal {total:.0f} s. {verdict}\n"
    print("\n" + text, flush=True)
    (out / "gpu_check.md").write_text(text, encoding="utf-8")
    (out / "gpu_check.json").write_text(json.dumps(
        {"started": started.isoformat(timespec="seconds"), "machine": machine(device), "torch": torch.__version__,
         "device": device.type, "total_s": total, "passed": not failed,
         "rows": [dataclasses.asdict(r) for r in rows]}, indent=2, default=str), encoding="utf-8")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
