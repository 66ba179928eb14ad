"""benchmarks/gpu_check.py (+ gpu_check_agreement.py): the reduced CPU form passes end to end, and a
disagreement or a crash fails it by name."""

from __future__ import annotations

import importlib.util
import json
import re
import sys
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "benchmarks" / "gpu_check.py")
gpu_check = importlib.util.module_from_spec(spec)
sys.modules["gpu_check"] = gpu_check
spec.loader.exec_module(gpu_check)  # puts benchmarks/ on sys.path
import gpu_check_agreement as agreement  # noqa: E402  (section (a), with the thresholds)


def rows_of(out: Path) -> list[dict]:
    return json.loads((out / "gpu_check.json").read_text())["rows"]


@pytest.mark.slow
def test_cpu_form_checks_every_backend_runs_the_step_and_a_run(tmp_path: Path) -> None:
    code = gpu_check.main(["--device", "cpu", "--out", str(tmp_path)])
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    rows = report["rows"]
    failed = [r["check"] + ": " + r["measured"] for r in rows if r["status"] == "FAIL"]
    assert code == 0 and report["passed"] and not failed, failed
    checks = {r["check"]: r for r in rows}
    for backend in ("rasteriser", "hash grid", "marching tets"):
        judged = [r for r in rows if r["check"].startswith(backend) and r["status"] == "PASS"]
        assert len(judged) >= 2, backend
    ids = next(r for r in rows if r["check"].startswith("rasteriser") and r["check"].endswith("ids equal"))
    assert agreement.RASTER_MIN_IDS_EQUAL <= ids["data"]["value"] <= 1.0
    step = next(r for r in rows if r["section"] == "step" and r["check"].startswith("refine step"))
    assert step["status"] == "PASS" and step["data"]["plain_ms"] > 0 and step["data"]["faces"] > 0
    run = next(r for r in rows if r["check"].startswith("a3d-mesh run"))
    assert run["status"] == "PASS" and run["data"]["exit"] == 0
    assert checks["manifest lists every asset"]["status"] == "PASS"
    for stage in ("coarse", "refine"):  # it/s parsed from the run's own progress lines
        assert checks[f"stage {stage}"]["data"]["it_s"] > 0
    assets = json.loads((tmp_path / "run" / "manifest.json").read_text())["assets"]
    assert sorted(a["name"] for a in assets) == ["cat", "dog"]
    table = (tmp_path / "gpu_check.md").read_text()
    assert "| section | check | status |" in table and "all checks passed" in table
    assert all(len(re.findall(r"(?<!\\)\|", line)) == 7 for line in table.splitlines() if line.startswith("| "))


def test_planted_raster_disagreement_exits_1_and_names_the_row(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    real = agreement.raster_metrics

    def off_by_a_lot(a, b):  # noqa: ANN001, ANN202 - one comparison's result planted wrong
        return {**real(a, b), "ids": 0.5}

    monkeypatch.setattr(agreement, "raster_metrics", off_by_a_lot)
    assert gpu_check.main(["--device", "cpu", "--out", str(tmp_path), "--sections", "agreement"]) == 1
    failed = [r["check"] for r in rows_of(tmp_path) if r["status"] == "FAIL"]
    assert len(failed) == 1 and failed[0].startswith("rasteriser") and failed[0].endswith("ids equal")
    text = (tmp_path / "gpu_check.md").read_text()
    assert "1 check(s) FAILED: " + failed[0] in text


def test_marching_tets_that_reorders_faces_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = agreement.marching_tets

    def candidate_reordered(verts, tets, sdf, backend="auto"):  # noqa: ANN001, ANN202
        v, f = real(verts, tets, sdf, backend=backend)[:2]
        return (v, f.flip(0)) if backend == "auto" else (v, f)  # the reference ("cpu") stays right

    monkeypatch.setattr(agreement, "marching_tets", candidate_reordered)
    assert gpu_check.main(["--device", "cpu", "--out", str(tmp_path), "--sections", "agreement"]) == 1
    failed = {r["check"] for r in rows_of(tmp_path) if r["status"] == "FAIL"}
    assert failed == {"marching tets torch on cpu (auto) vs torch on cpu: faces identical",
                      "marching tets torch on cpu (auto) vs torch on cpu: verts max abs diff"}


def test_stage_times_and_rates_from_progress_lines() -> None:
    lines = [(0.5, "[run] 2 object(s): dog, cat -> out"), (2.0, "[guidance] loading m on cpu"),
             (9.0, "[coarse] starting step 0/6"), (10.0, "[coarse] 1/6 sds 1 grad 2 loss 3 | 0.50 it/s ETA 0:00:10"),
             (13.0, "[coarse] 6/6 sds 1 grad 2 loss 3 | 1.25 it/s ETA 0:00:00"),
             (14.0, "[previews] 7 files in out/previews"), (15.0, "[export] dog: 10 faces -> glb"),
             (16.5, "[export] cat: 12 faces -> glb")]
    assert gpu_check.stage_times(lines) == {"run": 0.5, "guidance": 1.5, "coarse": 4.0, "previews": 1.0,
                                            "export": 1.5}
    rates = {m["stage"]: float(m["rate"]) for _, ln in lines if (m := gpu_check.PROGRESS.match(ln))}
    assert rates == {"coarse": 1.25}


def test_manifest_problems_names_a_missing_file(tmp_path: Path) -> None:
    (tmp_path / "export").mkdir()
    (tmp_path / "export" / "dog.glb").write_bytes(b"glTF")
    assets = [{"name": "dog", "files": {"glb": "dog.glb"}}, {"name": "cat", "files": {"glb": "cat.glb"}}]
    (tmp_path / "manifest.json").write_text(json.dumps({"assets": assets}))
    assert gpu_check.manifest_problems(tmp_path) == (["cat: cat.glb missing or empty"], 2)
    assert gpu_check.manifest_problems(tmp_path / "nowhere") == (["no manifest.json"], 0)


def test_cosine_and_blob_scene() -> None:
    pos, tri, col = agreement.blob_scene(0)
    assert pos.shape[0] == 1 and pos.shape[2] == 4 and tri.shape == (2880, 3) and col.shape[1] == pos.shape[1]
    assert int(tri.max()) == pos.shape[1] - 1 and (pos[0, :, 3] > 0).all()  # all in front of the camera
    a = torch.tensor([1.0, 2.0, 3.0])
    assert agreement.cosine(a, 2 * a) == pytest.approx(1.0) and agreement.cosine(a, -a) == pytest.approx(-1.0)
    assert agreement.cosine(torch.zeros(3), torch.zeros(3)) == 1.0 and agreement.cosine(a, torch.zeros(3)) == 0.0


def test_a_backend_that_crashes_is_a_failed_row_and_the_others_still_run(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise RuntimeError("CUDA error: an illegal memory access was encountered\nmore detail")

    monkeypatch.setattr(agreement, "HashGrid", broken)
    assert gpu_check.main(["--device", "cpu", "--out", str(tmp_path), "--sections", "agreement"]) == 1
    rows = rows_of(tmp_path)
    crashed = [r for r in rows if r["status"] == "FAIL"]
    assert [r["check"] for r in crashed] == ["hash grid: crashed"]
    assert crashed[0]["measured"] == "RuntimeError: CUDA error: an illegal memory access was encountered"
    assert any(r["check"].startswith("marching tets") and r["status"] == "PASS" for r in rows)


def test_missing_accelerator_is_reported_not_failed_and_a_broken_one_fails() -> None:
    usable, rows = agreement.accelerator("hash grid tinycudann", "no_such_module_a3d", lambda: None)
    assert not usable and [(r.check, r.status) for r in rows] == [("hash grid tinycudann", "not installed")]
    usable, rows = agreement.accelerator("rasteriser nvdiffrast", "json", lambda: "ImportError: no plugin")
    assert not usable and rows[0].status == "FAIL" and "ImportError: no plugin" in rows[0].measured
    assert agreement.accelerator("x", "json", lambda: None) == (True, [])


def test_cuda_asked_for_without_cuda_is_a_usage_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit) as exc:
        gpu_check.main(["--device", "cuda"])
    assert exc.value.code == 2


def test_a_silent_hanging_run_is_killed_at_the_deadline() -> None:
    # The child prints once, starts a grandchild that keeps the pipe open, and hangs.
    code = "import subprocess, time; print('started', flush=True); subprocess.Popen(['sleep', '60']); time.sleep(60)"
    t0 = time.monotonic()
    rc, lines, _, _ = gpu_check.stream([sys.executable, "-c", code], 1.0, None)
    assert rc is None and [ln for _, ln in lines] == ["started"] and time.monotonic() - t0 < 20


@pytest.mark.parametrize("device", ["cuda", "cpu"])
def test_the_run_command_is_a_valid_a3d_mesh_run(device: str, tmp_path: Path) -> None:
    # The GPU command cannot run here; its preset and overrides must still load and validate.
    from a3d_mesh.config import load_config

    cmd = gpu_check.run_command(torch.device(device), tmp_path / "model", tmp_path / "p.txt", tmp_path / "run")
    i = cmd.index("--preset")
    cfg = load_config(cmd[i + 1], cmd[i + 2:])
    assert cfg.guidance.model == str(tmp_path / "model") and cfg.device == device
    assert cfg.export.formats == ["glb"] and cfg.coarse.steps <= 20 and cfg.refine.steps <= 10
