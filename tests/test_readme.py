"""The README's two commands are what a fresh machine needs: the first sets up and runs the main job
offline, the second is the test command, and CI runs exactly that one after the same set-up."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from a3d_mesh.config import load_config
from a3d_mesh.guidance.loader import bundled_toy_prior
from a3d_mesh.prompts import load_prompts

ROOT = Path(__file__).resolve().parents[1]


def _quick_start() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 2, "the quick start holds exactly two commands"
    return [b.strip() for b in blocks]


def test_the_main_command_runs_offline_on_the_bundled_prior() -> None:
    setup, run = _quick_start()[0].split(" && ")
    assert setup == "bash install.sh"
    argv = shlex.split(run)
    assert argv[:2] == [".venv/bin/a3d-mesh", "run"]
    prompts = load_prompts(ROOT / argv[2])  # a real prompt file of the repository
    assert len(prompts.prompts) >= 2  # a set, so the main job shows alignment
    cfg = load_config(argv[argv.index("--preset") + 1])
    assert cfg.guidance.model == "toy" and (bundled_toy_prior() / "model_index.json").is_file()


def test_ci_runs_the_readme_test_command_after_the_same_setup() -> None:
    test_cmd = _quick_start()[1]
    lines = [ln.strip() for ln in (ROOT / ".ci" / "run").read_text().splitlines()
             if ln.strip() and not ln.startswith("#")]
    assert "bash install.sh" in lines
    assert lines[-1] == test_cmd and lines.index("bash install.sh") < len(lines) - 1
