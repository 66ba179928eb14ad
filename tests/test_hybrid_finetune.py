"""``--hybrid-finetune STEPS``: a short SDS polish of a hybrid on a copy of the model, with the
bundled random ``tiny`` prior. The set itself (checkpoints, exported meshes, manifest records) stays
byte-for-byte as it was; the fine-tuned hybrid is exported, previewed and recorded; bad STEPS are
one-line errors; ``guidance: images`` runs skip the fine-tune with a message."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from a3d_mesh.run import TrainedSet, hybrid_assets
from a3d_mesh.config import ConfigError, dump_config, load_config
from a3d_mesh.hybrid import code_field, parse_hybrid
from a3d_mesh.train.finetune import SKIP_IMAGES, parse_steps, tuned_hybrid_assets, volume_share
from a3d_mesh_cli.main import app

pytestmark = pytest.mark.slow  # a trained tiny set and SDS fine-tunes: not in the quick loop (-m 'not slow')

# The smallest tiny-prior run that still has a surface at both corners (about 30 s on one core).
SMALL = ["coarse.steps=2", "refine.steps=1", "refine.init_steps=60", "export.formats=[glb]", "export.texture_size=64",
         "preview.resolution=32", "preview.views=2", "preview.sweep_frames=2"]
runner = CliRunner()


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny set trained with one hybrid fine-tuned at run time (``run --hybrid-finetune``)."""
    d = tmp_path_factory.mktemp("ft")
    (d / "pets.txt").write_text("dog: a dog\ncat: a cat\n")
    res = runner.invoke(app, ["run", str(d / "pets.txt"), "--preset", "tiny", "--out", str(d / "run"), "-q",
                              "--hybrid", "first=dog@y>0,cat", "--hybrid-finetune", "2", *SMALL])
    assert res.exit_code == 0, res.output
    return d / "run"


def test_run_exports_its_finetuned_hybrid(trained: Path) -> None:
    man = json.loads((trained / "manifest.json").read_text())
    recs = {a["name"]: a for a in man["assets"]}
    assert list(recs) == ["dog", "cat", "first"] and recs["first"]["finetune"]["steps"] == 2
    assert (trained / "export" / "first.glb").is_file() and "previews/first.png" in man["previews"]


def digests(run_dir: Path) -> dict[str, str]:
    files = sorted((run_dir / "checkpoints").iterdir()) + sorted((run_dir / "export").iterdir())
    return {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in files}


def test_cli_finetune_leaves_the_set_untouched(trained: Path) -> None:
    before = digests(trained)
    set_records = json.loads((trained / "manifest.json").read_text())["assets"]
    res = runner.invoke(app, ["hybrid", str(trained), "--hybrid", "mix=dog@x>0,cat", "--hybrid-finetune", "3", "-q"])
    assert res.exit_code == 0, res.output
    after = digests(trained)
    assert {k: after[k] for k in before} == before  # checkpoints and the set's exports: byte-identical
    assert set(after) - set(before) == {"mix.glb"} and (trained / "previews" / "mix.png").is_file()
    man = json.loads((trained / "manifest.json").read_text())
    recs = {a["name"]: a for a in man["assets"]}
    assert [recs[a["name"]] for a in set_records] == set_records
    ft = recs["mix"]["finetune"]
    assert recs["mix"]["kind"] == "hybrid" and ft["steps"] == 3
    assert set(ft["prompt_mix"]) == {"dog", "cat"} and sum(ft["prompt_mix"].values()) == pytest.approx(1.0, abs=1e-3)
    assert recs["mix"]["sha256"]["mix.glb"] == after["mix.glb"]


def test_finetuned_hybrid_has_its_own_parameters(trained: Path) -> None:
    ts = TrainedSet.load(trained)
    saved = {k: v.clone() for k, v in ts.dmtet.state_dict().items()}
    spec = parse_hybrid("mix=dog@x>0,cat", ts.prompts.names)
    plain, tuned = hybrid_assets(ts, [spec])[0], tuned_hybrid_assets(ts, [spec], 3)[0]
    assert plain.model is None and tuned.model is not None and tuned.info["finetune"]["steps"] == 3
    moved = [k for k, v in tuned.model.dmtet.state_dict().items() if not torch.equal(v, saved[k])]
    assert moved, "three SDS steps changed no DMTet parameter"
    assert all(torch.equal(v, saved[k]) for k, v in ts.dmtet.state_dict().items())  # the set's model is untouched
    u = code_field(spec, ts.n)
    (v0, f0), (v1, f1) = ts.mesh(u), tuned.model.mesh(u)
    assert f0.shape != f1.shape or not torch.equal(v0, v1)  # the tuned hybrid evaluates differently
    assert not any(p.requires_grad for p in tuned.model.dmtet.parameters())  # handed back ready to evaluate


def test_volume_share_is_on_the_simplex(trained: Path) -> None:
    ts = TrainedSet.load(trained)
    share = volume_share(ts, code_field(parse_hybrid("mix=dog@x>0.5,cat", ts.prompts.names), ts.n))
    assert share.shape == (2,) and bool((share >= 0).all()) and float(share.sum()) == pytest.approx(1.0)
    assert float(share[1]) > float(share[0])  # the dog owns only x > 0.5: less than half the volume


def test_images_runs_skip_with_a_message(trained: Path, tmp_path: Path) -> None:
    # An images-guided run folder: the same trained set, its config saying guidance.kind=images.
    img = tmp_path / "img"
    shutil.copytree(trained, img)
    cfg = load_config(str(img / "config.yaml"))
    (img / "config.yaml").write_text(dump_config(dataclasses.replace(cfg, guidance=dataclasses.replace(cfg.guidance, kind="images"))))
    res = runner.invoke(app, ["hybrid", str(img), "--hybrid", "mix=dog@x>0,cat", "--hybrid-finetune", "3"])
    assert res.exit_code == 0, res.output
    assert f"[finetune] skipped: {SKIP_IMAGES}; hybrids are exported untuned" in res.output
    rec = {a["name"]: a for a in json.loads((img / "manifest.json").read_text())["assets"]}["mix"]
    assert rec["finetune"] == {"steps": 0, "requested_steps": 3, "skipped": SKIP_IMAGES}
    assert (img / "export" / "mix.glb").is_file()


@pytest.mark.parametrize("steps", ["-3", "abc", "1.5", "", "1e3", "\u00b2", "100001"])
def test_malformed_steps_are_one_line_errors(trained: Path, tmp_path: Path, steps: str) -> None:
    with pytest.raises(ConfigError, match="--hybrid-finetune: expected a whole number"):
        parse_steps(steps)
    for args in (["hybrid", str(trained), "--hybrid", "bad=dog@x>0,cat"],
                 ["run", str(trained / "prompts.txt"), "--preset", "tiny", "--out", str(tmp_path / "r"),
                  "--hybrid", "bad=dog@x>0,cat"]):
        res = runner.invoke(app, [*args, "--hybrid-finetune", steps])
        lines = [ln for ln in res.output.splitlines() if ln.strip()]
        assert res.exit_code == 2 and len(lines) == 1 and lines[0].startswith("a3d-mesh: error: --hybrid-finetune"), res.output
    assert not (tmp_path / "r").exists() and not (trained / "export" / "bad.glb").exists()


def test_finetune_needs_a_hybrid(trained: Path) -> None:
    res = runner.invoke(app, ["run", str(trained / "prompts.txt"), "--preset", "tiny", "--out", str(trained.parent / "x"),
                              "--hybrid-finetune", "3"])
    assert res.exit_code == 2 and "needs at least one --hybrid" in res.output and res.output.count("\n") == 1
    assert parse_steps(None) == 0 and parse_steps(" 7 ") == 7
