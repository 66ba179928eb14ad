"""Train the toy prior: ``python -m a3d_mesh.toy.train --out runs/toy-prior``.

Renders the toy training set (``toy.data``: objects in canonical pose, 4-view groups with their
cameras; cached in the output folder), then trains the pixel-space multi-view UNet and its text
encoder together with the plain v objective
``||v - v_theta(sqrt(a_t) x0 + sqrt(1 - a_t) eps, t, tau(caption), camera)||^2``,
``v = sqrt(a_t) eps - sqrt(1 - a_t) x0`` (``--prediction epsilon`` trains the epsilon one), on groups of 4
views (one t uniform per group, as MVDream trains and as ``MVDreamSDS`` draws it),
AdamW at a constant learning rate after a short warm-up (optionally falling linearly at the end), and an exponential moving average of
the weights, which is what gets saved (EMA weights sample far better after a short run).
Captions are dropped to ``""`` at the data level (``DataConfig.p_empty``) so the model also
learns the unconditional score that classifier-free guidance needs; ``--near-misses`` adds filled
objects under ``""`` from step ``--near-miss-start`` on (``toy.data.make_near_misses``: the hard
negatives that give guidance a reason to carve a chair out of a column), and ``--seatless`` objects
without their seat or top (``toy.data.make_seatless``: the reason to keep the seat).

Everything is seeded and the state (weights, EMA, optimiser, generator, step) is checkpointed
atomically every ``--checkpoint-every`` steps; ``--resume`` continues exactly. ``--steps`` can be
raised on resume: with a constant learning rate a longer run is the same run continued, and a
``--decay-start`` at the old end then anneals it exactly as one run made with the final arguments;
likewise a run continued past its decay with ``--decay-end`` at the old end (the rate then stays
at ``--lr-final``) and near misses from the old end on.
At the end the EMA model is written in diffusers layout to ``OUT/prior`` with
``a3d_toy.json`` (settings, time, final loss) and a sample grid ``OUT/samples.png``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F

from a3d_mesh.toy.data import (DATA_VERSION, TOY_FRAMES, DataConfig, ToyImages, caption, make_dataset,
                               make_near_misses, make_seatless)
from a3d_mesh.guidance.embeddings import tokenize
from a3d_mesh.toy.prior import (build_modules, camera_labels, new_scheduler, new_tokenizer, sample, save_prior,
                                special_ids)
from a3d_mesh.toy.shapes import COLOURS, FAMILIES
from a3d_mesh.checkpoint import atomic_torch_save
from a3d_mesh.images import row, save_png


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m a3d_mesh.toy.train", description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("runs/toy-prior"))
    p.add_argument("--objects", type=int, default=4000, help="procedural objects (x4 views each)")
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--batch", type=int, default=32, help="images per step (a multiple of 4: groups of 4 views)")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--decay-start", type=int, default=0,
                   help="from this step on (0 = never) the lr falls linearly to --lr-final at --decay-end")
    p.add_argument("--decay-end", type=int, default=0, help="where the fall ends (0 = --steps); constant after")
    p.add_argument("--lr-final", type=float, default=1e-4)
    p.add_argument("--near-misses", type=int, default=0, help="filled objects (x4 views) under the empty caption")
    p.add_argument("--seatless", type=int, default=0,
                   help="objects without their seat or top (x4 views) under the empty caption, drawn with the near misses")
    p.add_argument("--near-miss-start", type=int, default=0, help="the step from which near misses are drawn")
    p.add_argument("--prediction", choices=("v_prediction", "epsilon"), default="v_prediction",
                   help="what the UNet predicts (toy.prior explains why v)")
    p.add_argument("--ema", type=float, default=0.995)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    p.add_argument("--checkpoint-every", type=int, default=100)
    p.add_argument("--sample-steps", type=int, default=50, help="DDIM steps of the final sample grid")
    p.add_argument("--resume", action="store_true")
    return p.parse_args(argv)


def load_or_make_dataset(out: Path, n_objects: int, seed: int, name: str = "dataset.pt",
                         make: Callable[[int, int], Any] = make_dataset) -> Any:
    """``make(n_objects, seed)``, cached in ``out / name`` (rendering is the slow part); a cache of
    other objects, a seed or an older ``DATA_VERSION`` is rendered anew."""
    path = out / name
    key = {"objects": n_objects, "seed": seed, "version": DATA_VERSION}
    if path.is_file():
        data = torch.load(path)
        if all(data.get(k) == v for k, v in key.items()):
            found = data["data"]
            # Training sets are stored as their plain fields (tensors and strings: torch.load's
            # weights-only unpickler builds no classes) and rebuilt here.
            return ToyImages(**found) if isinstance(found, dict) else found
    t0 = time.time()
    made = make(n_objects, seed)
    atomic_torch_save({**key, "data": vars(made) if isinstance(made, ToyImages) else made}, path)
    print(f"[toy] rendered {name} ({n_objects} objects) in {time.time() - t0:.0f} s", flush=True)
    return made


def learning_rate(a: argparse.Namespace, step: int) -> float:
    """Warm-up, constant, then (with ``--decay-start``) a linear fall to ``--lr-final`` at ``--steps``.

    A function of the step alone, so a run resumed with a larger ``--steps`` and a decay that
    starts after the old end is the same run as one made in one go with those arguments."""
    lr = a.lr * min(1.0, (step + 1) / max(a.warmup, 1))
    if a.decay_start and step >= a.decay_start:
        f = (step - a.decay_start) / max((a.decay_end or a.steps) - a.decay_start, 1)
        lr = a.lr + (a.lr_final - a.lr) * min(f, 1.0)
    return lr


def sample_prompts() -> list[str]:
    """One prompt per family x colour (the grid's rows are families), plus each bare family."""
    return [caption(f, c) for f in FAMILIES for c in list(COLOURS)[:4]] + [caption(f, None) for f in FAMILIES]


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    if a.batch % TOY_FRAMES:
        raise SystemExit(f"--batch must be a multiple of {TOY_FRAMES} (groups of {TOY_FRAMES} views), got {a.batch}")
    if a.threads:
        torch.set_num_threads(a.threads)
    a.out.mkdir(parents=True, exist_ok=True)
    ckpt_path = a.out / "train_state.pt"
    data: ToyImages = load_or_make_dataset(a.out, a.objects, a.seed)
    n = len(data) // TOY_FRAMES  # the groups drawn from before --near-miss-start
    # Hard negatives, all under the empty caption; each kind has its own seed offset and cache file.
    for count, offset, name, make in ((a.near_misses, 7, "near_misses.pt", make_near_misses),
                                      (a.seatless, 11, "seatless.pt", make_seatless)):
        if count:
            data = ToyImages.cat([data, load_or_make_dataset(a.out, count, a.seed + offset, name, make)])
    images, captions = data.images, data.captions
    cameras = camera_labels(data.angles)  # [N, 16]
    # The camera of a mirrored view (x -> -x) of an object that is its own mirror image (every
    # family is symmetric in x) is the camera at the negated azimuth.
    cameras_mirrored = camera_labels(data.angles * torch.tensor([1.0, -1.0]))
    tokenizer, vocab = new_tokenizer(a.out / "tokenizer")
    uniq = sorted(set(captions))
    ids_table = tokenize(tokenizer, uniq)
    slot = {c: i for i, c in enumerate(uniq)}
    cap_index = torch.tensor([slot[c] for c in captions])

    torch.manual_seed(a.seed)
    nets = build_modules(len(vocab), *special_ids(vocab))
    unet, text = nets["unet"], nets["text_encoder"]
    params = list(unet.parameters()) + list(text.parameters())
    ema = [p.detach().clone() for p in params]
    opt = torch.optim.AdamW(params, lr=a.lr, weight_decay=0.0)
    sched = new_scheduler(a.prediction)
    alphas = torch.as_tensor(sched.alphas_cumprod, dtype=torch.float32)  # type: ignore[attr-defined]
    g = torch.Generator().manual_seed(a.seed + 1)
    step, losses, elapsed = 0, [], 0.0
    if a.resume and ckpt_path.is_file():
        st = torch.load(ckpt_path)
        unet.load_state_dict(st["unet"])
        text.load_state_dict(st["text"])
        opt.load_state_dict(st["opt"])
        for e, s in zip(ema, st["ema"]):
            e.copy_(s)
        g.set_state(st["generator"])
        step, losses, elapsed = st["step"], st["losses"], st["elapsed"]
        print(f"[toy] resumed at step {step}", flush=True)

    def checkpoint() -> None:
        atomic_torch_save({"unet": unet.state_dict(), "text": text.state_dict(), "opt": opt.state_dict(), "ema": ema,
                      "generator": g.get_state(), "step": step, "losses": losses, "elapsed": elapsed}, ckpt_path)

    unet.train(), text.train()
    t_start = time.time() - elapsed
    while step < a.steps:
        pool = len(captions) // TOY_FRAMES if step >= a.near_miss_start else n
        groups = a.batch // TOY_FRAMES
        group = torch.randint(0, pool, (groups,), generator=g)
        idx = (group.view(-1, 1) * TOY_FRAMES + torch.arange(TOY_FRAMES)).view(-1)  # whole groups, in order
        x0 = images[idx].float().div(255).permute(0, 3, 1, 2) * 2 - 1
        # A group mirrored as a whole is the same object seen from the mirrored cameras.
        flip = (torch.rand(groups, generator=g) < 0.5).repeat_interleave(TOY_FRAMES)
        x0 = torch.where(flip.view(-1, 1, 1, 1), x0.flip(-1), x0)
        cams = torch.where(flip.view(-1, 1), cameras_mirrored[idx], cameras[idx])
        t = torch.randint(0, alphas.shape[0], (groups,), generator=g).repeat_interleave(TOY_FRAMES)
        eps = torch.randn(x0.shape, generator=g)
        ab = alphas[t].view(-1, 1, 1, 1)
        xt = ab.sqrt() * x0 + (1 - ab).sqrt() * eps
        ctx = text(ids_table[cap_index[idx]])[0]
        pred = unet(xt, t, encoder_hidden_states=ctx, class_labels=cams, return_dict=False)[0]
        target = ab.sqrt() * eps - (1 - ab).sqrt() * x0 if a.prediction == "v_prediction" else eps
        loss = F.mse_loss(pred, target)
        for group in opt.param_groups:
            group["lr"] = learning_rate(a, step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        with torch.no_grad():
            decay = min(a.ema, (1 + step) / (10 + step))  # short warm-up of the average itself
            for e, p in zip(ema, params):
                e.lerp_(p.detach(), 1 - decay)
        step += 1
        losses.append(loss.item())
        elapsed = time.time() - t_start
        if step % 20 == 0 or step == a.steps:
            recent = sum(losses[-100:]) / len(losses[-100:])
            rate = step / max(elapsed, 1e-6)
            print(f"[toy] step {step}/{a.steps} loss {recent:.4f} {rate:.2f} it/s "
                  f"ETA {(a.steps - step) / max(rate, 1e-9) / 60:.1f} min", flush=True)
        if step % a.checkpoint_every == 0 or step == a.steps:
            checkpoint()

    # The EMA weights are the model.
    with torch.no_grad():
        for e, p in zip(ema, params):
            p.copy_(e)
    unet.eval(), text.eval()
    final = sum(losses[-200:]) / max(len(losses[-200:]), 1)
    # Format 2: the multi-view, camera-conditioned prior (format 1 was single-view, any yaw).
    info = {"format": 2, "resolution": int(images.shape[1]), "train": {k: str(v) if isinstance(v, Path) else v
                                                                        for k, v in vars(a).items() if k not in ("resume", "out")},
            "data": asdict(DataConfig()), "images": int(images.shape[0]), "views_per_group": TOY_FRAMES, "steps": step, "train_seconds": round(elapsed, 1),
            "final_loss_last200": round(final, 5), "torch": torch.__version__}
    save_prior(a.out / "prior", unet, text, a.out / "tokenizer", sched, info)
    prompts = sample_prompts()
    with torch.no_grad():
        h = text(tokenize(tokenizer, prompts + [""]))[0]
        cond = h[:-1].repeat_interleave(TOY_FRAMES, 0)
        uncond = h[-1:].expand(cond.shape[0], -1, -1)
        # Two seeds, each a group of 4 views (front, right, back, left at 15 deg): one row a prompt.
        seeds = [sample(unet, cond, uncond, torch.Generator().manual_seed(100 + r), sched, steps=a.sample_steps)
                 for r in range(2)]
    per_prompt = torch.cat([s.view(len(prompts), TOY_FRAMES, *s.shape[1:]) for s in seeds], 1)  # [P, 8, R, R, 3]
    save_png(a.out / "samples.png", torch.cat([row(imgs) for imgs in per_prompt], 0))
    (a.out / "samples.json").write_text(json.dumps(
        {"rows": prompts, "cols": "2 seeds (100, 101) x views at azimuth 0, 90, 180, 270 (front first), 15 deg up"},
        indent=2))
    print(f"[toy] done: {step} steps in {elapsed / 60:.1f} min, final loss {final:.4f}; prior in {a.out / 'prior'}",
          flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
