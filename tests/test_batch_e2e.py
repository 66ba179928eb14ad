"""``a3d-mesh batch`` end to end on the CPU with the tiny preset: a set killed mid-run is retried
from its checkpoint and ends bit for bit like an uninterrupted run of the same set; a set that
fails for good is reported while the others finish (exit 1); Ctrl-C then ``--resume``; the Ray
path with a Ray worker killed mid-run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
# Tiny enough for CPU tests, large enough that refine finds a surface; a checkpoint every 2 steps.
SMALL = ["coarse.steps=4", "refine.steps=2", "refine.init_steps=60", "checkpoint_every=2", "preview.views=1",
         "preview.resolution=32", "preview.sweep_frames=2", "export.texture_size=64"]


def batch_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "a3d_mesh_cli.main", "batch", *args]


def env(**extra: str) -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", **extra}


def summary(out: Path) -> dict:
    data = json.loads((out / "batch.json").read_text())
    return {**data, "by_name": {s["name"]: s for s in data["sets"]}}


def same_checkpoints(a: Path, b: Path) -> None:
    for name in ("coarse.pt", "refine.pt"):
        sa = torch.load(a / "checkpoints" / name, weights_only=True)
        sb = torch.load(b / "checkpoints" / name, weights_only=True)
        assert sa["step"] == sb["step"]
        for part, tensors in sa["stage"].items():
            if isinstance(tensors, dict):
                for key, val in tensors.items():
                    if isinstance(val, torch.Tensor):
                        assert torch.equal(val, sb["stage"][part][key]), f"{name}: {part}.{key} differs"


def wait_for_checkpoint(run_dir: Path, proc: subprocess.Popen, timeout: float = 400) -> None:
    t0 = time.monotonic()
    while not any(p.suffix == ".pt" and not p.name.startswith(".") for p in (run_dir / "checkpoints").glob("*.pt")):
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else proc.returncode
        assert time.monotonic() - t0 < timeout, "no checkpoint appeared"
        time.sleep(0.2)


@pytest.mark.slow
def test_killed_set_is_retried_from_its_checkpoint_and_matches_an_uninterrupted_run(tmp_path: Path) -> None:
    jobs = tmp_path / "jobs.yaml"
    jobs.write_text(
        "- {name: killed, prompts: ['dog: a dog']}\n"
        "- {name: plain, prompts: ['dog: a dog']}\n"  # the same set, never interrupted
        # fails for good, quickly (no such model), and with exit 2 it is not retried
        "- {name: broken, prompts: ['cat: a cat'], overrides: [guidance.model=/nonexistent/model]}\n")
    out = tmp_path / "out"
    res = subprocess.run(batch_cmd(str(jobs), "--out", str(out), "--preset", "tiny", "--workers", "2", *SMALL),
                         capture_output=True, text=True, cwd=ROOT, timeout=900,
                         env=env(A3D_BATCH_TEST_KILL="killed:after_checkpoint"))
    assert res.returncode == 1, res.stderr  # one set failed; the others finished
    assert "Traceback" not in res.stderr
    assert res.stdout.strip() == str(out / "batch.json")
    s = summary(out)
    killed, plain, broken = (s["by_name"][n] for n in ("killed", "plain", "broken"))
    assert s["state"] == "failed" and s["counts"]["done"] == 2 and s["counts"]["failed"] == 1
    assert killed["status"] == "done" and killed["attempts"] == 2 and "coarse.pt" in killed["resumed_from"]
    assert plain["status"] == "done" and plain["attempts"] == 1 and plain["assets"] == ["dog"]
    assert broken["status"] == "failed" and broken["attempts"] == 1 and "/nonexistent/model" in broken["error"]
    assert "\n" not in broken["error"]
    assert "killed: attempt 1 failed (worker died: killed by SIGKILL" in res.stderr
    assert "[batch] killed: attempt 2 on cpu, continuing from coarse.pt" in res.stderr
    # Each set is an ordinary run folder, and the retried one is exactly the uninterrupted one.
    same_checkpoints(out / "killed", out / "plain")
    assert (out / "killed" / "export" / "dog.glb").read_bytes() == (out / "plain" / "export" / "dog.glb").read_bytes()
    # --resume skips the finished sets (the broken one fails again at once).
    again = subprocess.run(batch_cmd(str(jobs), "--out", str(out), "--preset", "tiny", "--resume", *SMALL),
                           capture_output=True, text=True, cwd=ROOT, timeout=300, env=env())
    assert again.returncode == 1, again.stderr
    assert "killed: already finished (1 assets); skipped" in again.stderr
    s2 = summary(out)["by_name"]
    assert s2["killed"]["attempts"] == 2 and s2["broken"]["attempts"] == 2 and s2["broken"]["status"] == "failed"


@pytest.mark.slow
def test_ctrl_c_stops_the_batch_and_resume_finishes_it(tmp_path: Path) -> None:
    jobs = tmp_path / "jobs"
    jobs.mkdir()
    (jobs / "first.txt").write_text("dog: a dog\n")
    (jobs / "second.txt").write_text("chair: a chair\n")
    out = tmp_path / "out"
    args = [str(jobs), "--out", str(out), "--preset", "tiny", *SMALL]
    # Started with SIGINT ignored, as a script's background job is (`a3d-mesh batch ... &`): the
    # batch still stops on SIGINT, because it installs its own handler.
    proc = subprocess.Popen(batch_cmd(*args), cwd=ROOT, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    try:
        wait_for_checkpoint(out / "first", proc)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "batch interrupted" in err and "--resume" in err and "Traceback" not in err
    s = summary(out)
    assert s["state"] == "interrupted"
    assert s["by_name"]["first"]["status"] == "interrupted" and s["by_name"]["second"]["status"] == "pending"
    assert any((out / "first" / "checkpoints").glob("*.pt"))  # the child checkpointed before it ended
    res = subprocess.run(batch_cmd(*args, "--resume"), capture_output=True, text=True, cwd=ROOT, timeout=900, env=env())
    assert res.returncode == 0, res.stderr
    s = summary(out)
    assert s["state"] == "done" and s["counts"]["done"] == 2
    assert s["by_name"]["first"]["attempts"] == 2 and s["by_name"]["first"]["resumed_from"]
    assert json.loads((out / "second" / "manifest.json").read_text())["assets"][0]["name"] == "chair"
    # The batch's page shows both sets and links to each set's own page.
    page = (out / "index.html").read_text()
    assert 'href="first/index.html"' in page and 'href="second/index.html"' in page
    assert (out / "first" / "index.html").is_file() and (out / "second" / "index.html").is_file()


@pytest.mark.slow
def test_ray_retries_a_set_whose_worker_died(tmp_path: Path) -> None:
    import ray  # noqa: F401 - the dev extra installs it; a missing Ray fails here, it is not skipped
    jobs = tmp_path / "jobs"
    jobs.mkdir()
    (jobs / "pets.txt").write_text("dog: a dog\n")
    out = tmp_path / "out"
    res = subprocess.run(batch_cmd(str(jobs), "--out", str(out), "--preset", "tiny", "--ray", "--workers", "2",
                                   *SMALL), capture_output=True, text=True, cwd=ROOT, timeout=900,
                         env=env(A3D_BATCH_TEST_KILL="pets:worker_after_checkpoint", RAY_USAGE_STATS_ENABLED="0"))
    assert res.returncode == 0, res.stderr
    assert "Ray (local, 2 CPUs)" in res.stderr and "worker lost" in res.stderr
    pets = summary(out)["by_name"]["pets"]
    assert pets["status"] == "done" and pets["attempts"] == 2 and "coarse.pt" in pets["resumed_from"]
    assert pets["device"].endswith("cpu") and pets["assets"] == ["dog"]
    assert (out / "pets" / "export" / "dog.glb").is_file()
