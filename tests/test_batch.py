"""``a3d-mesh batch`` without training: every bad JOBS file, flag or batch folder is one line and
exit 2 before anything is written; the pieces (JOBS parsing, finished-set detection, error lines,
the test hook's parsing) on their own."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from a3d_mesh.batch.attempt import error_line
from a3d_mesh.batch.jobs import BatchError, load_jobs, split_ray_address
from a3d_mesh.batch.runner import test_kills as parse_kills
from a3d_mesh.batch.state import check_run_folders
from a3d_mesh.run.manifest import finished_assets
from a3d_mesh.config import dump_config, load_config
from a3d_mesh_cli.main import app

runner = CliRunner()


def one_line_error(res, text: str) -> None:
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.output.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("a3d-mesh: error:"), res.output
    assert text in lines[0], lines[0]


@pytest.fixture()
def jobs_dir(tmp_path: Path) -> Path:
    (tmp_path / "pets.txt").write_text("dog: a dog\ncat: a cat\n")
    (tmp_path / "chairs.txt").write_text("a chair\n")
    return tmp_path


@pytest.mark.parametrize("yaml_text, text", [
    ("- {name: a, prompts: nowhere.txt}\n", "prompt file not found"),
    ("- {name: a, prompts: pets.txt}\n- {name: a, prompts: [a cat]}\n", "set name 'a' is used twice"),
    ("- {name: a, prompts: pets.txt, steps: 3}\n", "unknown key 'steps'"),
    ("sets: [{prompts: pets.txt}]\nworkers: 2\n", "unknown key 'workers'"),
    ("- {name: a/b, prompts: pets.txt}\n", "bad set name 'a/b'"),
    ("- {name: .., prompts: pets.txt}\n", "bad set name '..'"),
    ("- {name: batch.json, prompts: pets.txt}\n", "bad set name"),
    ("- {name: a, prompts: []}\n", "has no prompts"),
    ("- {name: a, prompts: empty.txt}\n", "has no prompts"),
    ("- {prompts: [a cat]}\n", "needs a 'name'"),
    ("- {name: a, prompts: pets.txt}\n- {name: b, prompts: pets.txt, overrides: [refine.stepz=3]}\n",
     "set 'b': unknown config key 'refine.stepz'"),
    ("- {name: a, prompts: pets.txt, preset: nosuch}\n", "unknown preset 'nosuch'"),
    ("- {name: a, prompts: pets.txt, seed: -1}\n", "seed must be a whole number"),
    ("- {name: a, prompts: pets.txt, hybrids: ['mix=dog@x>0,horse']}\n", "horse"),
    ("- {name: a, prompts: pets.txt, overrides: refine.steps=3}\n", "'overrides' must be a list"),
    ("[]\n", "must list at least one set"),
    ("- a: [\n", "not valid YAML"),
])
def test_bad_jobs_yaml_is_one_line_before_anything_runs(jobs_dir: Path, yaml_text: str, text: str) -> None:
    (jobs_dir / "empty.txt").write_text("# nothing\n")
    (jobs_dir / "jobs.yaml").write_text(yaml_text)
    out = jobs_dir / "out"
    one_line_error(runner.invoke(app, ["batch", str(jobs_dir / "jobs.yaml"), "--out", str(out), "--preset", "tiny"]),
                   text)
    assert not out.exists()  # nothing written for bad input


def test_bad_jobs_folder_and_flags(jobs_dir: Path, tmp_path: Path) -> None:
    out = str(tmp_path / "out")
    one_line_error(runner.invoke(app, ["batch", str(tmp_path / "none"), "--out", out]), "jobs not found")
    (tmp_path / "empty").mkdir()
    one_line_error(runner.invoke(app, ["batch", str(tmp_path / "empty"), "--out", out]), "has no prompt files")
    (jobs_dir / "bad.txt").write_bytes(b"a dog\n\xff\n")
    one_line_error(runner.invoke(app, ["batch", str(jobs_dir), "--out", out, "--preset", "tiny"]), "not UTF-8")
    (jobs_dir / "bad.txt").unlink()
    one_line_error(runner.invoke(app, ["batch", str(jobs_dir), "--out", out, "--preset", "tiny", "refine.steps=x"]),
                   "refine.steps")
    one_line_error(runner.invoke(app, ["batch", str(jobs_dir), "--out", out, "--seed", "1.5"]), "--seed")
    one_line_error(runner.invoke(app, ["batch", str(jobs_dir), "--out", out, "--preset", "tiny", "--workers", "0"]),
                   "--workers")
    assert not Path(out).exists()


def test_missing_ray_is_one_line(jobs_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    res = runner.invoke(app, ["batch", str(jobs_dir), "--out", str(tmp_path / "out"), "--preset", "tiny", "--ray"])
    one_line_error(res, "pip install 'a3d-mesh[ray]'")
    assert not (tmp_path / "out").exists()


def test_folder_jobs_are_named_after_files_and_take_the_batch_settings(jobs_dir: Path, tmp_path: Path) -> None:
    (jobs_dir / ".hidden").write_text("ignored\n")
    jobs = load_jobs(jobs_dir, "tiny", 7, ["refine.steps=3"])
    assert [j.name for j in jobs] == ["chairs", "pets"]
    pets = jobs[1]
    assert pets.asset_names == ("dog", "cat") and pets.prompt_text == "dog: a dog\ncat: a cat\n"
    assert pets.run_args() == ["--preset", "tiny", "--seed", "7", "refine.steps=3"]
    assert pets.resume_args() == ["--resume"]
    assert "steps: 3" in pets.config_yaml and "seed: 7" in pets.config_yaml


def test_yaml_jobs_resolve_paths_and_let_a_set_override_the_batch(jobs_dir: Path, tmp_path: Path) -> None:
    (jobs_dir / "mine.yaml").write_text("guidance: {model: tiny}\n")
    (jobs_dir / "jobs.yaml").write_text(
        "sets:\n"
        "  - prompts: pets.txt\n"
        "    preset: mine.yaml\n"
        "    seed: 3\n"
        "    hybrids: ['mix=dog@x>0,cat']\n"
        "    overrides: [refine.steps=5]\n"
        "  - name: furniture\n"
        "    prompts: ['chair: a chair', 'a table']\n")
    pets, furniture = load_jobs(jobs_dir / "jobs.yaml", "tiny", 1, ["refine.steps=2"])
    assert pets.name == "pets" and pets.preset == str((jobs_dir / "mine.yaml").resolve())
    assert pets.run_args() == ["--preset", pets.preset, "--seed", "3", "--hybrid", "mix=dog@x>0,cat",
                               "refine.steps=2", "refine.steps=5"]  # the set's own override comes last: it wins
    assert pets.resume_args() == ["--resume", "--hybrid", "mix=dog@x>0,cat"]
    assert furniture.asset_names == ("chair", "a_table") and furniture.preset == "tiny" and furniture.seed == 1


def test_run_folders_are_checked_before_anything_runs(jobs_dir: Path, tmp_path: Path) -> None:
    jobs = load_jobs(jobs_dir, "tiny")
    out = tmp_path / "out"
    (out / "pets").mkdir(parents=True)
    assert check_run_folders(jobs, out, resume=False) == {}  # an empty folder is fine
    (out / "pets" / "config.yaml").write_text(dump_config(load_config("tiny", ["refine.steps=9"])))
    (out / "pets" / "prompts.txt").write_text(jobs[1].prompt_text)
    with pytest.raises(BatchError, match="not empty; continue the batch with --resume"):
        check_run_folders(jobs, out, resume=False)
    with pytest.raises(BatchError, match="preset, seed or overrides differ"):
        check_run_folders(jobs, out, resume=True)
    (out / "pets" / "config.yaml").write_text(jobs[1].config_yaml)
    assert check_run_folders(jobs, out, resume=True) == {}  # started: it will be continued
    (out / "pets" / "prompts.txt").write_text("dog: a wolf\ncat: a cat\n")
    with pytest.raises(BatchError, match="prompts differ"):
        check_run_folders(jobs, out, resume=True)
    res = runner.invoke(app, ["batch", str(jobs_dir), "--out", str(out), "--preset", "tiny"])
    one_line_error(res, "not empty")
    assert not (out / "batch.json").exists()


def test_a_set_is_finished_only_with_a_consistent_manifest(tmp_path: Path) -> None:
    (tmp_path / "export").mkdir()
    (tmp_path / "export" / "dog.glb").write_bytes(b"glb")
    m = {"prompts": [{"name": "dog", "prompt": "a dog"}],
         "assets": [{"name": "dog", "files": {"glb": "dog.glb"}}, {"name": "mix", "files": {}}]}
    assert finished_assets(tmp_path, ("dog",)) is None  # no manifest
    (tmp_path / "manifest.json").write_text(json.dumps(m))
    assert finished_assets(tmp_path, ("dog",)) == ["dog", "mix"]
    assert finished_assets(tmp_path, ("dog", "cat")) is None  # another set's prompts
    (tmp_path / "export" / "dog.glb").unlink()
    assert finished_assets(tmp_path, ("dog",)) is None  # a file it lists is gone
    (tmp_path / "manifest.json").write_text("{")
    assert finished_assets(tmp_path, ("dog",)) is None


def test_error_lines_and_ray_address_and_test_hook(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    log.write_text("[coarse] 1/6\na3d-mesh: error: asset 'dog' has an empty surface\n")
    assert error_line(1, log) == "asset 'dog' has an empty surface"
    assert error_line(-9, log) == "worker died: killed by SIGKILL (out of memory, or killed)"
    assert error_line(0, log) == ""
    j = tmp_path / "jobs.yaml"
    j.write_text("[]")
    assert split_ray_address(j, ["auto", "a=1"], True) == (j, ["a=1"], "auto")
    assert split_ray_address(j, ["a=1"], True) == (j, ["a=1"], None)
    assert split_ray_address(Path("auto"), [str(j)], True) == (j, [], "auto")  # 'batch --ray auto jobs.yaml'
    assert split_ray_address(j, ["oops"], False) == (j, ["oops"], None)  # an override error later, as for run
    assert parse_kills("a:after_checkpoint,b:worker_after_checkpoint", True) == {"a": "child", "b": "worker"}
    assert parse_kills("b:worker_after_checkpoint", False) == {"b": "child"}
    with pytest.raises(BatchError):
        parse_kills("a:sometime", False)
