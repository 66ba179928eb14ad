"""``export`` keeps a run's own records (issue 29): re-exporting an edit run keeps its
``--keep-input-frame`` transform and its ``edit`` record, earlier hybrids stay in the manifest
with their files untouched, and ``export --out DIR`` lists only what is in DIR."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from a3d_mesh.export.asset import sha256_file
from a3d_mesh_cli.main import app
from tests.test_edit_hybrid import edited  # noqa: F401 - the module-scoped edit run (with a hybrid 'mix')
from tests.test_export_failures import exported  # noqa: F401 - a tiny plain run, exported once

pytestmark = pytest.mark.slow  # re-exports of end-to-end runs: not in the quick loop (-m 'not slow')

runner = CliRunner()


@pytest.fixture()
def run_dir(edited: Path, tmp_path: Path) -> Path:  # noqa: F811 - the fixture above
    out = tmp_path / "run"
    shutil.copytree(edited, out)
    return out


def manifest(run: Path) -> dict:
    return json.loads((run / "manifest.json").read_text())


def test_reexport_of_an_edit_run_keeps_its_frame_records_and_hybrids(run_dir: Path) -> None:
    before = manifest(run_dir)
    recs = {a["name"]: a for a in before["assets"]}
    assert recs["mix"]["kind"] == "hybrid" and before["edit"]["keep_input_frame"]
    res = runner.invoke(app, ["export", str(run_dir), "--texture-size", "32", "-q"])
    assert res.exit_code == 0, res.output
    after = manifest(run_dir)
    new = {a["name"]: a for a in after["assets"]}
    assert after["edit"] == before["edit"]
    for name in ("input", "cube"):  # re-exported, in the input's own frame, as the run did
        assert new[name]["transform"] == recs[name]["transform"] == before["edit"]["input_frame"]
        assert new[name]["texture_size"] == 32
    assert new["mix"] == recs["mix"]  # the earlier hybrid: entry kept, its files untouched
    for name, rec in new.items():  # files and manifest agree
        for rel, digest in rec["sha256"].items():
            assert sha256_file(run_dir / "export" / rel) == digest, (name, rel)
    assert sorted(after["previews"]) == sorted(before["previews"])


def test_export_out_lists_only_its_own_files(run_dir: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    res = runner.invoke(app, ["export", str(run_dir), "--out", str(elsewhere), "--texture-size", "32", "-q"])
    assert res.exit_code == 0, res.output
    man = manifest(elsewhere)
    assert man["previews"] == []
    assert sorted(a["name"] for a in man["assets"]) == ["cube", "input"]
    for rec in man["assets"]:
        assert rec["transform"] == man["edit"]["input_frame"]
        for rel, digest in rec["sha256"].items():
            assert sha256_file(elsewhere / rel) == digest
    assert not [p for p in elsewhere.iterdir() if p.name.startswith(".a3d-staging-")]


def test_reexport_keeps_earlier_hybrids_of_a_plain_run(exported: Path, tmp_path: Path) -> None:  # noqa: F811
    run = tmp_path / "run"
    shutil.copytree(exported, run)
    res = runner.invoke(app, ["hybrid", str(run), "--hybrid", "mix=dog@x>0,cat", "-q"])
    assert res.exit_code == 0, res.output
    hybrid = {a["name"]: a for a in manifest(run)["assets"]}["mix"]
    res = runner.invoke(app, ["export", str(run), "--texture-size", "64", "-q"])
    assert res.exit_code == 0, res.output
    recs = {a["name"]: a for a in manifest(run)["assets"]}
    assert recs["mix"] == hybrid and recs["dog"]["texture_size"] == 64
    assert "previews/mix.png" in manifest(run)["previews"]
    for rec in recs.values():
        for rel, digest in rec["sha256"].items():
            assert sha256_file(run / "export" / rel) == digest


def test_export_normal_map_flag_reaches_the_exporter(run_dir: Path) -> None:
    """The normal-map exporter is reachable from the command line (and export.normal_map): the
    GLB gains a normal texture and the manifest says so."""
    res = runner.invoke(app, ["export", str(run_dir), "--texture-size", "32", "--normal-map", "-q"])
    assert res.exit_code == 0, res.output
    recs = {a["name"]: a for a in manifest(run_dir)["assets"]}
    assert recs["cube"]["normal_map"] is True and recs["input"]["normal_map"] is True
    data = (run_dir / "export" / recs["cube"]["files"]["glb"]).read_bytes()
    doc = json.loads(data[20: 20 + int.from_bytes(data[12:16], "little")])
    assert doc["materials"][0]["normalTexture"]["index"] == 1
    assert "TANGENT" in doc["meshes"][0]["primitives"][0]["attributes"]
