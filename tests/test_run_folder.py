"""The run folder is safe to receive, share and reuse (issue 28): a checkpoint cannot run code, a
damaged one is named with what to do, two processes never mix in one folder, a user's own folder
or file is never written over, a full disk and reserved names are one line, and each of these
exits with the code the README promises, having written or lost nothing."""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from a3d_mesh.atomic import atomic_path
from a3d_mesh.config import dump_config, load_config
from a3d_mesh.geometry import DMTetField
from a3d_mesh.runlock import LOCK_FILE, run_lock
from a3d_mesh import checkpoint
from a3d_mesh.run import color_field
from a3d_mesh.checkpoint import atomic_torch_save
from a3d_mesh_cli.main import app

ROOT = Path(__file__).resolve().parents[1]
PROMPTS = "dog: a dog\ncat: a cat\n"
runner = CliRunner()


def one_line_error(res, code: int, text: str) -> str:  # noqa: ANN001
    assert res.exit_code == code, res.output
    lines = [ln for ln in res.output.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("a3d-mesh: error:"), res.output
    assert text in lines[0], lines[0]
    return lines[0]


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` but the lock file (relative path -> sha256): equal snapshots mean
    nothing was written or lost. The lock file is a run's own; tests that care look at it directly."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != LOCK_FILE}


def model_state(hidden_delta: int = 0, empty: bool = False) -> dict:
    """A refine-stage state of the tiny preset's architecture (untrained: enough to load and parse)."""
    cfg = load_config("tiny")
    torch.manual_seed(0)
    dmtet = DMTetField(2, cfg.refine.tet_resolution, cfg.refine.grid, hidden=cfg.refine.hidden + hidden_delta,
                       bound=cfg.bound)
    state = {"dmtet": dmtet.state_dict(), "color": color_field(cfg, 2).state_dict()}
    if empty:  # SDF > 0 everywhere: a collapsed training, no surface at any code
        state["dmtet"]["field.heads.sdf.rest.1.weight"].zero_()
        state["dmtet"]["field.heads.sdf.rest.1.bias"].fill_(5.0)
    return state


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run folder as training leaves it (config, prompts, both checkpoints, a preview, a manifest)."""
    run = tmp_path_factory.mktemp("template") / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text(dump_config(load_config("tiny")))
    (run / "prompts.txt").write_text(PROMPTS)
    atomic_torch_save({"step": 30, "stage": {"note": torch.zeros(1)}}, run / "checkpoints" / "coarse.pt")
    atomic_torch_save({"step": 20, "stage": model_state()}, run / "checkpoints" / "refine.pt")
    (run / "previews").mkdir()
    (run / "previews" / "set.png").write_bytes(b"the set overview")
    (run / "manifest.json").write_text(json.dumps({"assets": [{"name": "dog"}, {"name": "cat"}],
                                                   "previews": ["previews/set.png"]}))
    return run


@pytest.fixture()
def run_dir(template: Path, tmp_path: Path) -> Path:
    out = tmp_path / "run"
    shutil.copytree(template, out)
    return out


class Payload:
    """Unpickling this creates a file: what a crafted checkpoint would do with a real payload."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # noqa: ANN204
        return (open, (str(self.marker), "w"))


# -- 1. a checkpoint cannot run code -------------------------------------------------------------

@pytest.mark.parametrize("command", ["export", "hybrid"])
def test_crafted_checkpoint_is_refused_without_running_it(run_dir: Path, tmp_path: Path, command: str) -> None:
    marker = tmp_path / "PWNED"
    ckpt = run_dir / "checkpoints" / "refine.pt"
    torch.save({"step": 20, "stage": {"dmtet": Payload(marker)}}, ckpt)  # what weights_only=False would execute
    before = snapshot(run_dir)
    args = [command, str(run_dir)] + (["--hybrid", "mix=dog@x>0,cat"] if command == "hybrid" else [])
    one_line_error(runner.invoke(app, args), 2, f"checkpoint {ckpt} holds objects other than tensors")
    assert not marker.exists()
    assert snapshot(run_dir) == before


def test_crafted_checkpoint_on_resume(run_dir: Path, tmp_path: Path) -> None:
    marker = tmp_path / "PWNED"
    ckpt = run_dir / "checkpoints" / "coarse.pt"
    torch.save({"step": 3, "stage": Payload(marker)}, ckpt)
    (tmp_path / "p.txt").write_text(PROMPTS)
    res = runner.invoke(app, ["run", str(tmp_path / "p.txt"), "--out", str(run_dir), "--resume", "-q"])
    one_line_error(res, 2, "holds objects other than tensors")
    assert not marker.exists()


def test_checkpoints_hold_only_plain_data(tmp_path: Path) -> None:
    import numpy as np

    atomic_torch_save({"step": 1, "stage": {"levels": [np.float32(0.5)], "grid": np.ones(3)}}, tmp_path / "c.pt")
    state = checkpoint.load_checkpoint(tmp_path / "c.pt")  # weights_only=True
    assert state["stage"]["levels"] == [0.5] and torch.equal(state["stage"]["grid"], torch.ones(3, dtype=torch.float64))
    with pytest.raises(TypeError, match="Payload"):  # never written, rather than refused at resume
        atomic_torch_save({"step": 1, "stage": {"x": Payload(tmp_path / "m")}}, tmp_path / "d.pt")
    assert not (tmp_path / "d.pt").exists()


# -- 4. damaged checkpoints ----------------------------------------------------------------------

@pytest.mark.parametrize("damage, what", [
    (lambda b: b[: len(b) // 2], "is damaged"),
    (lambda b: b"", "is empty"),
    (lambda b: b"not a checkpoint at all\n" * 20, "is damaged"),
])
def test_damaged_refine_checkpoint_says_what_to_do(run_dir: Path, damage, what: str) -> None:  # noqa: ANN001
    ckpt = run_dir / "checkpoints" / "refine.pt"
    ckpt.write_bytes(damage(ckpt.read_bytes()))
    line = one_line_error(runner.invoke(app, ["export", str(run_dir)]), 2, f"checkpoint {ckpt} {what}")
    assert "delete it and --resume the run to redo the refine stage from coarse.pt" in line
    assert not (run_dir / "export").exists()


def test_checkpoint_of_another_architecture(run_dir: Path) -> None:
    ckpt = run_dir / "checkpoints" / "refine.pt"
    atomic_torch_save({"step": 20, "stage": model_state(hidden_delta=8)}, ckpt)
    line = one_line_error(runner.invoke(app, ["export", str(run_dir)]), 2, "does not fit the run's config.yaml")
    assert str(ckpt) in line


def test_damaged_coarse_checkpoint_on_resume(run_dir: Path, tmp_path: Path) -> None:
    ckpt = run_dir / "checkpoints" / "coarse.pt"
    ckpt.write_bytes(ckpt.read_bytes()[:100])
    (tmp_path / "p.txt").write_text(PROMPTS)
    before = snapshot(run_dir / "checkpoints")
    res = runner.invoke(app, ["run", str(tmp_path / "p.txt"), "--out", str(run_dir), "--resume", "-q"])
    line = one_line_error(res, 2, f"checkpoint {ckpt} is damaged")
    assert "delete it and refine.pt" in line
    assert snapshot(run_dir / "checkpoints") == before


# -- 2. one process per run folder ---------------------------------------------------------------

HOLD = ("import sys, time; from pathlib import Path; from a3d_mesh.runlock import run_lock\n"
        "with run_lock(Path(sys.argv[1]), new=sys.argv[2] == 'new'):\n"
        "    print('locked', flush=True); time.sleep(120)\n")


def hold_lock(folder: Path, new: bool = False) -> subprocess.Popen:
    """Another a3d-mesh process holding ``folder``'s lock (returns once it holds it)."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(folder), "new" if new else "run"], cwd=ROOT,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
    return proc


def test_second_process_on_a_run_folder_is_refused(run_dir: Path, tmp_path: Path) -> None:
    holder = hold_lock(run_dir)
    try:
        before = snapshot(run_dir)
        line = one_line_error(runner.invoke(app, ["export", str(run_dir)]), 2,
                              f"{run_dir} is in use by another a3d-mesh process (pid {holder.pid} on ")
        assert " since " in line
        prompts = tmp_path / "p.txt"
        prompts.write_text(PROMPTS)
        one_line_error(runner.invoke(app, ["run", str(prompts), "--out", str(run_dir), "--resume"]), 2, "is in use")
        one_line_error(runner.invoke(app, ["hybrid", str(run_dir), "--hybrid", "m=dog@x>0,cat"]), 2, "is in use")
        assert snapshot(run_dir) == before
    finally:
        holder.kill()
        holder.wait()


def test_second_new_run_on_a_starting_run_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "r6"
    holder = hold_lock(out, new=True)  # run A has just created the folder, before any checkpoint
    try:
        prompts = tmp_path / "p.txt"
        prompts.write_text(PROMPTS)
        res = runner.invoke(app, ["run", str(prompts), "--preset", "tiny", "--out", str(out)])
        one_line_error(res, 2, f"{out} is in use by another a3d-mesh process (pid {holder.pid}")
        assert sorted(p.name for p in out.iterdir()) == [LOCK_FILE]  # B wrote no config, prompts or checkpoint
    finally:
        holder.kill()
        holder.wait()


def test_lock_of_a_killed_process_is_taken_over(run_dir: Path) -> None:
    holder = hold_lock(run_dir)
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert str(holder.pid) in (run_dir / LOCK_FILE).read_text()  # the stale file is still there
    # The next command gets past the lock (and on to its own check of the hybrid's name).
    one_line_error(runner.invoke(app, ["hybrid", str(run_dir), "--hybrid", "set=dog@x>0,cat"]), 2, "reserved")
    with run_lock(run_dir):
        assert json.loads((run_dir / LOCK_FILE).read_text())["pid"] == os.getpid()
        with run_lock(run_dir):  # re-entrant within one process (edit prepares, then resumes)
            pass


def test_read_only_run_is_read_without_a_lock(run_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import a3d_mesh.runlock as runlock

    def read_only(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(runlock.os, "open", read_only)
    with run_lock(run_dir):  # e.g. `export --out elsewhere` of a run on a read-only share
        pass
    assert not (run_dir / LOCK_FILE).exists()


# -- 3. never write into a user's folder or over a file ------------------------------------------

def test_out_at_a_folder_that_is_not_a_run_is_refused(tmp_path: Path) -> None:
    mine = tmp_path / "mine"
    for rel in ("config.yaml", "manifest.json", "prompts.txt", "export/dog.glb", "previews/dog.png"):
        (mine / rel).parent.mkdir(parents=True, exist_ok=True)
        (mine / rel).write_text(f"the user's own {rel}\n")
    before = snapshot(mine)
    prompts = tmp_path / "p.txt"
    prompts.write_text(PROMPTS)
    res = runner.invoke(app, ["run", str(prompts), "--preset", "tiny", "--out", str(mine)])
    one_line_error(res, 2, f"--out {mine} is a folder that is not empty and not an a3d-mesh run")
    assert snapshot(mine) == before and not (mine / LOCK_FILE).exists()


def test_out_at_a_file_is_bad_input(tmp_path: Path) -> None:
    target = tmp_path / "notes.txt"
    target.write_text("keep me\n")
    prompts = tmp_path / "p.txt"
    prompts.write_text(PROMPTS)
    one_line_error(runner.invoke(app, ["run", str(prompts), "--preset", "tiny", "--out", str(target)]), 2, "is a file")
    assert target.read_text() == "keep me\n"


def test_export_of_a_non_run_writes_no_lock(tmp_path: Path) -> None:
    (tmp_path / "x").mkdir()
    one_line_error(runner.invoke(app, ["export", str(tmp_path / "x")]), 2, "is not a trained run")
    assert not list((tmp_path / "x").iterdir())


# -- 5. a full disk ------------------------------------------------------------------------------

class FullAfter(io.RawIOBase):
    """A file that takes ``room`` bytes, then fails like a full disk (ENOSPC)."""

    def __init__(self, fh: io.BufferedWriter, room: int) -> None:
        self.fh, self.room = fh, room

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:  # noqa: ANN001
        if len(b) > self.room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= len(b)
        return self.fh.write(b)


def disk_fills_on_save(monkeypatch: pytest.MonkeyPatch, after_saves: int) -> None:
    """Saves after the first ``after_saves`` hit a full disk inside torch's own writer, which
    reports it as RuntimeError('... unexpected pos ...') as on a real full disk."""
    real, calls = torch.save, [0]

    def save(obj, f):  # noqa: ANN001, ANN202
        calls[0] += 1
        return real(obj, f if calls[0] <= after_saves else FullAfter(f, 200))

    monkeypatch.setattr(checkpoint.torch, "save", save)


def test_full_disk_keeps_the_previous_checkpoint(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    ckpt = tmp_path / "refine.pt"
    atomic_torch_save({"step": 1, "stage": {"w": torch.ones(4)}}, ckpt)
    before = ckpt.read_bytes()
    disk_fills_on_save(monkeypatch, after_saves=0)
    with pytest.raises(OSError) as info:
        atomic_torch_save({"step": 2, "stage": {"w": torch.zeros(10000)}}, ckpt)
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(ckpt)
    assert ckpt.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["refine.pt"]


def test_full_disk_from_any_writer(tmp_path: Path) -> None:
    dest = tmp_path / "set.png"
    dest.write_bytes(b"old")
    with pytest.raises(OSError) as info, atomic_path(dest) as tmp:
        try:
            tmp.write_bytes(b"partial")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        except OSError as e:  # a library that wraps it (as torch and some image writers do)
            raise RuntimeError("encoder error -2 when writing image file") from e
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(dest)
    assert dest.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["set.png"]


def test_full_disk_during_a_run_is_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    prompts = tmp_path / "p.txt"
    prompts.write_text(PROMPTS)
    out = tmp_path / "run"
    disk_fills_on_save(monkeypatch, after_saves=1)  # the step-1 checkpoint is written, the step-2 one is not
    res = runner.invoke(app, ["run", str(prompts), "--preset", "tiny", "--out", str(out), "-q", "checkpoint_every=1"])
    one_line_error(res, 1, f"no space left on device writing {out / 'checkpoints' / 'coarse.pt'}")
    assert checkpoint.load_checkpoint(out / "checkpoints" / "coarse.pt")["step"] == 1
    assert not list(out.rglob("*.tmp*"))


# -- 6. reserved names ---------------------------------------------------------------------------

@pytest.mark.parametrize("text, message", [
    ("set: a chess set\ncat: a cat\n", "asset name 'set' is reserved"),
    ("set\ncat: a cat\n", "asset name 'set' is reserved"),  # a prompt whose slug is 'set'
    ("a: x\nb_c: y\na_b: z\nc: w\n", "would share the preview file transition_a_b_c.gif"),
])
def test_reserved_asset_names(tmp_path: Path, text: str, message: str) -> None:
    prompts = tmp_path / "p.txt"
    prompts.write_text(text)
    one_line_error(runner.invoke(app, ["run", str(prompts), "--preset", "tiny", "--out", str(tmp_path / "r")]), 2, message)
    assert not (tmp_path / "r").exists()


def test_reserved_hybrid_names(run_dir: Path, tmp_path: Path) -> None:
    before = snapshot(run_dir)
    one_line_error(runner.invoke(app, ["hybrid", str(run_dir), "--hybrid", "set=dog@x>0,cat"]), 2,
                   "hybrid name 'set' is reserved")
    anchors = tmp_path / "set.yaml"
    anchors.write_text("- {point: [0, 0, 0], source: dog}\n- {point: [0.5, 0, 0], source: cat}\n")
    one_line_error(runner.invoke(app, ["hybrid", str(run_dir), "--hybrid-anchors", str(anchors)]), 2, "is reserved")
    assert snapshot(run_dir) == before


# -- exit codes ----------------------------------------------------------------------------------

def test_training_collapse_is_a_failure_not_bad_input(run_dir: Path) -> None:
    atomic_torch_save({"step": 20, "stage": model_state(empty=True)}, run_dir / "checkpoints" / "refine.pt")
    one_line_error(runner.invoke(app, ["export", str(run_dir)]), 1, "has an empty surface")
