"""Benchmark: one refine step (``RefineStage.step``) and where its time goes, with an SD-2.1-sized prior.

The diffusion prior is Stable Diffusion 2.1 base *built from its configuration with random
weights* (UNet 865M parameters, VAE 84M): a step's cost does not depend on the weight values, and
nothing is downloaded. Everything else is the project's own code path: a ``RefineStage`` with an
``PriorGuide`` around ``SDSGuidance``, the shared ``DMTetField``, the coarse ``NeRFField`` as colour
field and the learned ``Background``. The DMTet field is first fitted to the NeRF's initial density
blob (``RefineStage.initialise`` at a fixed density level) so that every step has a real surface.

Split of a step (each part is timed where ``RefineStage.step`` calls it; on CUDA every boundary
synchronises, so the instrumented step is a little slower than a plain one, which is also timed):

- geometry fwd: ``DMTetField.sdf_and_verts`` + ``marching_tets``;
- render fwd / bwd: ``render_mesh`` (raster, interpolate, colour field, shading, antialias) and its
  backward, from the gradient reaching the image to the gradient reaching the mesh vertices;
- VAE encode fwd / bwd: ``vae.encode`` inside ``SDSGuidance.encode_images`` and its backward;
- UNet: the classifier-free-guided UNet pass (batch 2B, no grad);
- optimizer: ``Adam.step``;
- rest: the step minus the parts above (geometry backward, regularisers, the resize to the VAE
  input and its backward, SDS arithmetic, camera and code sampling, background, zero_grad).

The hooks are module hooks, optimizer step hooks, identity autograd nodes that stamp the time in
backward, and timing wrappers put in place of ``render_mesh`` / ``marching_tets`` in
``a3d_mesh.train.refine``'s namespace for this process only (restored afterwards).

Goal (issue 6, CUDA at 512 px, tet grid 128): everything except the diffusion model's own cost
(UNet + VAE encode forward and backward) under 20% of the step. Run:

    python benchmarks/step.py --device cuda
    OMP_NUM_THREADS=2 python benchmarks/step.py          # CPU, small sizes, a few minutes
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import os
import platform
import resource
import statistics
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch

import a3d_mesh.train.refine as refine_module
from a3d_mesh.config import RunConfig
from a3d_mesh.fields import NeRFField
from a3d_mesh.guidance import PromptEmbeddings, SDComponents, SDSGuidance
from a3d_mesh.render.shading import Background
from a3d_mesh.simplex import corner
from a3d_mesh.train.guide import PriorGuide
from a3d_mesh.train.refine import RefineStage

# Stable Diffusion 2.1 base, unet/config.json and vae/config.json (only what differs from the
# diffusers defaults, plus the sizes the brief pins down).
SD21_UNET: dict[str, Any] = dict(
    sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
    block_out_channels=(320, 640, 1280, 1280),
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=1024, attention_head_dim=(5, 10, 20, 20), use_linear_projection=True,
    flip_sin_to_cos=True, freq_shift=0, norm_num_groups=32, norm_eps=1e-5, act_fn="silu",
)
SD21_VAE: dict[str, Any] = dict(
    in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, sample_size=512,
    block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4, act_fn="silu", norm_num_groups=32, scaling_factor=0.18215,
)
SD21_SCHEDULER: dict[str, Any] = dict(
    num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
    prediction_type="epsilon", clip_sample=False,
)
CONTEXT_LENGTH, CONTEXT_WIDTH = 77, 1024  # SD 2.1's OpenCLIP-H text context
GOAL_SHARE = 0.20


def random_sd21(device: torch.device, seed: int) -> SDComponents:
    """SD 2.1 base UNet + VAE with random weights and SD's DDPM schedule, as ``load_components``
    would hand them over: eval mode, frozen, float16 on CUDA / float32 on CPU, no text encoder
    (``encode_prompts`` frees it before training anyway)."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel

    dtype = torch.float16 if device.type == "cuda" else torch.float32
    torch.manual_seed(seed)
    with torch.device(device):  # initialise in place: 3.5 GB of fp32 weights built on the GPU
        unet = UNet2DConditionModel(**SD21_UNET)
        vae = AutoencoderKL(**SD21_VAE)
    nets = []
    for net in (unet, vae):
        # .half() rather than .to(dtype=...): the latter makes diffusers warn about fp32 modules
        # that SD 2.1 does not have.
        net = (net.half() if dtype == torch.float16 else net).eval()
        net.requires_grad_(False)
        nets.append(net)
    return SDComponents(tokenizer=None, text_encoder=None, unet=nets[0], vae=nets[1],
                        scheduler=DDPMScheduler(**SD21_SCHEDULER), model_id="random-sd21-base",
                        dtype=dtype, device=device)


def random_embeddings(n_objects: int, seed: int) -> PromptEmbeddings:
    """Prompt and negative embeddings ``[K, 77, 1024]`` float32 of unit-scale noise (CPU)."""
    g = torch.Generator().manual_seed(seed)
    shape = (n_objects, CONTEXT_LENGTH, CONTEXT_WIDTH)
    names = tuple(f"object {k}" for k in range(n_objects))
    return PromptEmbeddings(torch.randn(shape, generator=g), torch.randn(shape, generator=g), names, ("",) * n_objects)


def bench_config(args: argparse.Namespace) -> RunConfig:
    """The default run configuration with the benchmark's sizes (render, VAE input, tet grid, views)."""
    cfg = RunConfig(seed=args.seed, device=args.device)
    sds = dataclasses.replace(cfg.refine.sds, resolution=args.sd_resolution)
    refine = dataclasses.replace(cfg.refine, resolution=args.resolution, tet_resolution=args.tet_resolution,
                                 init_threshold=str(args.density_level), init_steps=args.init_steps, sds=sds)
    camera = dataclasses.replace(cfg.camera, views_per_step=args.views)
    return dataclasses.replace(cfg, refine=refine, camera=camera)


def build_stage(cfg: RunConfig, n_objects: int, device: torch.device, components: SDComponents | None = None,
                embeddings: PromptEmbeddings | None = None) -> RefineStage:
    """A ``RefineStage`` wired as ``train.pipeline.train`` wires it, its grid fitted to the NeRF blob.

    ``components`` / ``embeddings`` default to :func:`random_sd21` / :func:`random_embeddings`;
    ``benchmarks/gpu_check.py`` passes a small loaded pipeline and its encoded prompts on CPU.
    """
    comps = components if components is not None else random_sd21(device, cfg.seed)
    emb = embeddings if embeddings is not None else random_embeddings(n_objects, cfg.seed)
    guide = PriorGuide(SDSGuidance(comps, emb, cfg.refine.sds, seed=cfg.seed + 1))
    torch.manual_seed(cfg.seed)
    c = cfg.coarse
    color = NeRFField(n_objects, c.grid, hidden=c.hidden, bound=cfg.bound, blob_density=c.blob_density,
                      blob_radius=c.blob_radius).to(device)
    stage = RefineStage(cfg, n_objects, guide, color, Background().to(device), device)
    stage.initialise(lambda msg: print(msg, flush=True))
    with torch.no_grad():
        faces = [stage.dmtet.extract(corner(k, n_objects, device))[1].shape[0] for k in range(n_objects)]
    if min(faces) == 0:
        raise SystemExit(f"the fitted grid has an empty surface at some corner (faces {faces}); "
                         "raise --init-steps or lower --density-level")
    print(f"initial surface: {faces} faces at the corners", flush=True)
    return stage


class Timeline:
    """Per-step forward span durations and backward time stamps (seconds, ``perf_counter``)."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.spans: dict[str, float] = {}
        self.stamps: dict[str, float] = {}

    def now(self) -> float:
        """Wall time after every queued kernel has finished (CUDA) or now (CPU)."""
        if self.cuda:
            torch.cuda.synchronize()
        return time.perf_counter()

    def reset(self) -> None:
        self.spans, self.stamps = {}, {}

    @contextlib.contextmanager
    def span(self, name: str) -> Iterator[None]:
        t0 = self.now()
        try:
            yield
        finally:
            self.spans[name] = self.spans.get(name, 0.0) + self.now() - t0

    def stamp(self, name: str) -> None:
        """Record the first time ``name`` happens in this step (several stamps may share a name)."""
        self.stamps.setdefault(name, self.now())

    def between(self, start: str, end: str) -> float:
        """Seconds from stamp ``start`` to stamp ``end``; 0 when either did not fire (empty mesh)."""
        if start not in self.stamps or end not in self.stamps:
            return 0.0
        return self.stamps[end] - self.stamps[start]


class _StampOnBackward(torch.autograd.Function):
    """Identity whose backward calls ``callback`` once the full gradient of its output is known."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, callback: Callable[[], None]) -> torch.Tensor:  # type: ignore[override]
        ctx.callback = callback
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        ctx.callback()
        return grad, None


def stamped(x: torch.Tensor, timeline: Timeline, name: str) -> torch.Tensor:
    """``x`` unchanged, with the time its gradient is complete recorded as stamp ``name``."""
    return _StampOnBackward.apply(x, lambda: timeline.stamp(name)) if x.requires_grad else x


def instrument(stage: RefineStage, timeline: Timeline) -> Callable[[], None]:
    """Put the timing hooks on ``stage`` (see the module docstring); returns the function that removes them."""
    sds: SDSGuidance = stage.guide.sds  # type: ignore[attr-defined]
    vae, unet = sds.components.vae, sds.components.unet
    orig_render, orig_march = refine_module.render_mesh, refine_module.marching_tets
    orig_field, orig_encode = stage.dmtet.sdf_and_verts, vae.encode

    def render_mesh(verts: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        with timeline.span("render fwd"):
            out = orig_render(stamped(verts, timeline, "render bwd end"), *args, **kwargs)
        out.rgb = stamped(out.rgb, timeline, "render bwd start")
        return out

    def marching_tets(*args: Any, **kwargs: Any) -> Any:
        with timeline.span("geometry fwd"):
            return orig_march(*args, **kwargs)

    def sdf_and_verts(*args: Any, **kwargs: Any) -> Any:
        with timeline.span("geometry fwd"):
            return orig_field(*args, **kwargs)

    def encode(x: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        with timeline.span("VAE encode fwd"):
            out = orig_encode(stamped(x, timeline, "vae bwd end"), *args, **kwargs)
        dist = out.latent_dist  # encode_images reads mean and std: the first of the two starts the backward
        dist.mean = stamped(dist.mean, timeline, "vae bwd start")
        dist.std = stamped(dist.std, timeline, "vae bwd start")
        return out

    started: dict[str, float] = {}

    def opener(name: str) -> Callable[..., None]:
        def hook(*_: Any) -> None:  # returns None: the hooked call's arguments stay as they are
            started[name] = timeline.now()
        return hook

    def closer(name: str) -> Callable[..., None]:
        def hook(*_: Any) -> None:  # returns None: the hooked call's output stays as it is
            timeline.spans[name] = timeline.spans.get(name, 0.0) + timeline.now() - started.pop(name)
        return hook

    handles = [unet.register_forward_pre_hook(opener("UNet")), unet.register_forward_hook(closer("UNet")),
               stage.opt.register_step_pre_hook(opener("optimizer")),
               stage.opt.register_step_post_hook(closer("optimizer"))]
    refine_module.render_mesh, refine_module.marching_tets = render_mesh, marching_tets
    stage.dmtet.sdf_and_verts = sdf_and_verts  # instance attribute: shadows the method
    vae.encode = encode

    def remove() -> None:
        for h in handles:
            h.remove()
        refine_module.render_mesh, refine_module.marching_tets = orig_render, orig_march
        del stage.dmtet.sdf_and_verts
        del vae.encode
        assert stage.dmtet.sdf_and_verts == orig_field and vae.encode == orig_encode

    return remove


PARTS = ("geometry fwd", "render fwd", "render bwd", "VAE encode fwd", "VAE encode bwd", "UNet", "optimizer")


def timed_step(stage: RefineStage, i: int, timeline: Timeline) -> dict[str, float]:
    """Run step ``i`` once; seconds per part (``PARTS``, ``"rest"``, ``"step"``) and its face count."""
    timeline.reset()
    t0 = timeline.now()
    logs = stage.step(i)
    total = timeline.now() - t0
    parts = dict(timeline.spans)
    parts["render bwd"] = timeline.between("render bwd start", "render bwd end")
    parts["VAE encode bwd"] = timeline.between("vae bwd start", "vae bwd end")
    row = {p: parts.get(p, 0.0) for p in PARTS}
    row["rest"] = total - sum(row.values())
    row["step"] = total
    row["faces"] = logs.get("faces", 0.0)
    return row


def plain_step(stage: RefineStage, i: int, timeline: Timeline) -> float:
    """Seconds of step ``i`` without hooks (synchronised only at its ends)."""
    t0 = timeline.now()
    stage.step(i)
    return timeline.now() - t0


def peak_memory_gib(device: torch.device) -> tuple[str, float]:
    """(what was measured, GiB): CUDA max allocated since the last reset, or the process's peak RSS."""
    if device.type == "cuda":
        return "torch.cuda.max_memory_allocated", torch.cuda.max_memory_allocated(device) / 2**30
    return "peak RSS of the process (ru_maxrss)", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def machine(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.machine()} CPU, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}"


def report(rows: list[dict[str, float]], plain: list[float], device: torch.device) -> None:
    """Print the table (median ms and share of the instrumented step), the goal check and memory."""
    med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
    step = med["step"]
    diffusion = statistics.median(r["UNet"] + r["VAE encode fwd"] + r["VAE encode bwd"] for r in rows)
    lines = [(p, med[p]) for p in PARTS + ("rest",)]
    groups = [("render (fwd + bwd)", statistics.median(r["render fwd"] + r["render bwd"] for r in rows)),
              ("VAE encode (fwd + bwd)", statistics.median(r["VAE encode fwd"] + r["VAE encode bwd"] for r in rows)),
              ("diffusion model (UNet + VAE)", diffusion), ("everything else", step - diffusion)]
    print(f"\n{'part':<30} {'median ms':>10} {'share':>7}")
    for name, sec in lines + [("-" * 30, float("nan"))] + groups:
        if name.startswith("-"):
            print("-" * 49)
            continue
        print(f"{name:<30} {1e3 * sec:>10.1f} {100 * sec / step:>6.1f}%")
    print(f"{'step (instrumented)':<30} {1e3 * step:>10.1f} {100.0:>6.1f}%")
    print(f"{'step (no hooks)':<30} {1e3 * statistics.median(plain):>10.1f}")
    print(f"faces per step (median): {med['faces']:.0f}; {len(rows)} instrumented + {len(plain)} plain steps")
    share = (step - diffusion) / step
    verdict = "met" if share < GOAL_SHARE else "NOT met"
    scope = "" if device.type == "cuda" else " (the goal is for CUDA at 512 px; this CPU figure is only indicative)"
    print(f"goal: everything but UNet + VAE < {100 * GOAL_SHARE:.0f}% of the step: "
          f"{100 * share:.1f}% -> {verdict}{scope}")
    what, gib = peak_memory_gib(device)
    print(f"peak memory: {gib:.2f} GiB ({what})")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--resolution", type=int, help="render side in px (default 512 on cuda, 64 on cpu)")
    p.add_argument("--sd-resolution", type=int, help="VAE input side in px (default 512 on cuda, 64 on cpu)")
    p.add_argument("--tet-resolution", type=int, help="DMTet grid resolution (default 128 on cuda, 32 on cpu)")
    p.add_argument("--steps", type=int,
                   help="timed steps, each of the plain and instrumented runs (default 20 on cuda, 3 on cpu)")
    p.add_argument("--warmup", type=int, help="untimed steps first (default 3 on cuda, 1 on cpu)")
    p.add_argument("--views", type=int, default=4, help="views per step (the SDS batch B)")
    p.add_argument("--objects", type=int, default=2, help="number of prompts K")
    p.add_argument("--init-steps", type=int,
                   help="steps of the SDF fit to the NeRF blob (default 200 on cuda, 25 on cpu)")
    p.add_argument("--density-level", type=float, default=1.0,
                   help="NeRF density level of the initial surface (1.0: a bumpy ball of radius ~0.47)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    cuda = args.device == "cuda"
    for name, on_cuda, on_cpu in (("resolution", 512, 64), ("sd_resolution", 512, 64), ("tet_resolution", 128, 32),
                                  ("steps", 20, 3), ("warmup", 3, 1), ("init_steps", 200, 25)):
        if getattr(args, name) is None:
            setattr(args, name, on_cuda if cuda else on_cpu)
    if cuda and not torch.cuda.is_available():
        p.error("--device cuda asked for, but this torch has no CUDA device")
    if args.steps < 1 or args.sd_resolution % 8:
        p.error("--steps must be >= 1 and --sd-resolution a multiple of 8")
    return args


def measure(stage: RefineStage, warmup: int, steps: int, device: torch.device
            ) -> tuple[list[dict[str, float]], list[float]]:
    """``warmup`` untimed steps, then ``steps`` plain and ``steps`` instrumented ones, alternating.

    Returns the instrumented rows (``timed_step``) and the plain step times (s). On CUDA the peak
    memory statistics are reset after the warm-up (``peak_memory_gib`` then covers the timed steps).
    """
    timeline = Timeline(device)
    i = 0
    for _ in range(warmup):
        stage.step(i)
        i += 1
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    plain: list[float] = []
    rows: list[dict[str, float]] = []
    for _ in range(steps):
        # Plain and instrumented steps alternate, so a change in machine load hits both alike.
        plain.append(plain_step(stage, i, timeline))
        remove = instrument(stage, timeline)
        try:
            rows.append(timed_step(stage, i + 1, timeline))
        finally:
            remove()
        i += 2
    return rows, plain


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    device = torch.device(args.device)
    print(f"{datetime.datetime.now().isoformat(timespec='seconds')}  {machine(device)}  torch {torch.__version__}")
    print(f"render {args.resolution} px, VAE input {args.sd_resolution} px, tet grid {args.tet_resolution}, "
          f"{args.views} views, {args.objects} objects, SD 2.1 base sizes with random weights", flush=True)
    t0 = time.perf_counter()
    stage = build_stage(bench_config(args), args.objects, device)
    print(f"setup (random SD 2.1 + grid fit) {time.perf_counter() - t0:.1f} s", flush=True)
    rows, plain = measure(stage, args.warmup, args.steps, device)
    report(rows, plain, device)
    if min(r["faces"] for r in rows) == 0:
        raise SystemExit("some timed steps had an empty mesh (no render, no SDS): the split above is not "
                         "representative; raise --init-steps")


if __name__ == "__main__":
    main()
