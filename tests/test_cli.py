"""The a3d-mesh command line: every bad input gives one line and exit code 2; the tiny preset runs
end to end; Ctrl-C leaves a checkpoint from which --resume finishes exactly like an uninterrupted run."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from a3d_mesh_cli.main import app

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    e = {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "a3d_mesh_cli.main", *args], capture_output=True, text=True,
                          env=e, cwd=ROOT, timeout=600)


def one_line_error(res, code: int, text: str) -> None:
    assert res.exit_code == code, res.output
    lines = [ln for ln in res.output.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("a3d-mesh: error:"), res.output
    assert text in lines[0], lines[0]
    assert "Traceback" not in res.output


@pytest.fixture()
def prompt_file(tmp_path: Path) -> Path:
    p = tmp_path / "pets.txt"
    p.write_text("dog: a dog\ncat: a cat\n")
    return p


@pytest.mark.parametrize("content, text", [
    (b"", "has no prompts"),
    (b"# nothing\n", "has no prompts"),
    (b"a dog\na dog\n", "duplicate asset name"),
    (b"a dog\n\xff cat\n", "not UTF-8"),
    (b"".join(b"thing %d\n" % i for i in range(17)), "at most 16"),
])
def test_bad_prompt_files(tmp_path: Path, content: bytes, text: str) -> None:
    p = tmp_path / "p.txt"
    p.write_bytes(content)
    one_line_error(runner.invoke(app, ["run", str(p), "--preset", "tiny", "--out", str(tmp_path / "r")]), 2, text)
    assert not (tmp_path / "r").exists()  # nothing written for bad input


def test_missing_prompt_file(tmp_path: Path) -> None:
    one_line_error(runner.invoke(app, ["run", str(tmp_path / "none.txt"), "--preset", "tiny"]), 2, "not found")


@pytest.mark.parametrize("args, text", [
    (["--preset", "huge"], "unknown preset 'huge'"),
    (["--preset", "tiny", "refine.stepz=3"], "unknown config key 'refine.stepz'"),
    (["--preset", "tiny", "refine.steps=lots"], "config key 'refine.steps'"),
    (["--preset", "tiny", "notakeyvalue"], "not of the form key.path=value"),
    (["--preset", "toy", "refine.init_opacity=1"], "refine.init_opacity must be in (0, 1)"),
    (["--preset", "toy", "refine.min_opacity=1.5"], "refine.min_opacity must be in [0, 1)"),
])
def test_bad_presets_and_overrides(prompt_file: Path, tmp_path: Path, args: list[str], text: str) -> None:
    one_line_error(runner.invoke(app, ["run", str(prompt_file), "--out", str(tmp_path / "r"), *args]), 2, text)


def test_malformed_seed_flag(prompt_file: Path) -> None:
    res = runner.invoke(app, ["run", str(prompt_file), "--seed", "abc"])
    assert res.exit_code == 2 and "Traceback" not in res.output


def test_default_preset_offline_says_how_to_get_the_model(prompt_file: Path, tmp_path: Path) -> None:
    res = cli("run", str(prompt_file), "--preset", "default", "--out", str(tmp_path / "r"),
              env={"HF_HOME": str(tmp_path / "hf")})
    assert res.returncode == 1, res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("a3d-mesh: error:")]
    assert len(lines) == 1 and "stable-diffusion-2-1-base" in lines[0] and "download" in lines[0]
    assert "Traceback" not in res.stderr


def test_resume_without_a_run_and_export_of_a_non_run(prompt_file: Path, tmp_path: Path) -> None:
    one_line_error(runner.invoke(app, ["run", str(prompt_file), "--out", str(tmp_path / "empty"), "--resume"]), 2,
                   "nothing to resume")
    one_line_error(runner.invoke(app, ["export", str(tmp_path)]), 2, "is not a trained run")


def test_help_reads_like_a_tool() -> None:
    res = runner.invoke(app, ["--help"])
    assert res.exit_code == 0
    for cmd in ("run", "export", "info"):
        assert cmd in res.output
    assert "--resume" in runner.invoke(app, ["run", "--help"]).output


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tiny") / "run"
    t0 = time.monotonic()
    res = cli("run", "examples/animals.txt", "--preset", "tiny", "--out", str(out))
    assert res.returncode == 0, res.stderr[-3000:]
    (out / "seconds.txt").write_text(f"{time.monotonic() - t0:.1f}\n")
    (out / "stderr.txt").write_text(res.stderr)
    return out


@pytest.mark.slow
def test_tiny_run_end_to_end(tiny_run: Path) -> None:
    out = tiny_run
    for rel in ("config.yaml", "prompts.txt", "checkpoints/coarse.pt", "checkpoints/refine.pt", "previews/set.png",
                "previews/dog.png", "previews/transition_dog_cat.gif", "models/dmtet/config.json",
                "models/dmtet/model.safetensors", "models/color/config.json", "models/color/model.safetensors"):
        assert (out / rel).is_file(), rel
    man = json.loads((out / "manifest.json").read_text())
    assert [a["name"] for a in man["assets"]] == ["dog", "cat", "fox"]
    for k, a in enumerate(man["assets"]):
        assert a["code"] == [1.0 if i == k else 0.0 for i in range(3)]
        assert a["prompt"].endswith("animal") and a["n_faces"] > 0 and a["n_vertices"] > 0
        glb = out / "export" / a["files"]["glb"]
        assert glb.is_file() and a["sha256"][a["files"]["glb"]] == _sha(glb)
    log = (out / "stderr.txt").read_text()
    assert "[coarse]" in log and "[refine]" in log and "ETA" in log and "density level" in log
    assert not list(out.rglob("*.tmp*"))  # atomic writes leave no temporaries


@pytest.mark.slow
def test_ctrl_c_then_resume_matches_an_uninterrupted_run(tiny_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "a3d_mesh_cli.main", "run", "examples/animals.txt", "--preset",
                             "tiny", "--out", str(out)], cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    for line in proc.stderr:  # interrupt once the coarse stage has finished a step
        # (a step count, not a sleep: on a loaded machine a second may not reach step 1)
        if line.startswith("[coarse] 1/"):
            proc.send_signal(signal.SIGINT)
            break
    rest = proc.stderr.read()
    assert proc.wait(timeout=300) == 130, rest
    assert "checkpoint saved" in rest and "--resume" in rest
    saved = torch.load(out / "checkpoints" / "coarse.pt", weights_only=False)
    assert 0 < saved["step"] < 30
    res = cli("run", "examples/animals.txt", "--out", str(out), "--resume")
    assert res.returncode == 0, res.stderr[-3000:]
    assert f"resuming at step {saved['step']}" in res.stderr
    for name in ("coarse.pt", "refine.pt"):
        a = torch.load(out / "checkpoints" / name, weights_only=False)["stage"]
        b = torch.load(tiny_run / "checkpoints" / name, weights_only=False)["stage"]
        modules = [k for k, v in a.items() if isinstance(v, dict) and k != "opt"]
        assert modules, name
        for part in modules:
            for key, val in a[part].items():
                if torch.is_tensor(val):
                    assert torch.equal(val, b[part][key]), f"{name}: {part}.{key} differs after resume"
        assert torch.equal(a["generator"], b["generator"])
