"""The JOBS of ``a3d-mesh batch``: a folder of prompt files, or a YAML file listing sets, read into
:class:`SetJob` records and validated completely before anything runs.

A folder: every visible regular file is one set named after its stem (``pets.txt`` -> ``pets``),
with the batch's ``--preset``, ``--seed`` and overrides. A YAML file: a list of sets (or a mapping
``{sets: [...]}``), each a mapping with

    name       the set's name and its run folder's (optional when ``prompts`` is a file: its stem)
    prompts    a prompt file, relative to the YAML file, or an inline list of prompt-file lines
    preset     optional; a bundled name, or a YAML file relative to the YAML file
    seed       optional whole number (else the batch's ``--seed``, else the preset's)
    hybrids    optional list of ``--hybrid`` specs
    overrides  optional list of ``key=value`` (applied after the batch's own overrides)

Every set is checked with the project's own validators (prompt files:
:func:`a3d_mesh.prompts.load_prompts`; config: :func:`a3d_mesh.config.load_config`; hybrid specs:
:func:`a3d_mesh.hybrid.parse_all`), so a bad override in the last set fails before the first set
trains. Every problem is one :class:`BatchError` line naming the file and the set.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from a3d_mesh import config_ranges
from a3d_mesh.errors import A3DMeshError

SET_KEYS = ("name", "prompts", "preset", "seed", "hybrids", "overrides")
# A set's name is its run folder's name: no path separators, no leading dot (hidden, '..').
_SET_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
# Files of the batch folder itself, which a set's run folder must not shadow.
RESERVED_SET_NAMES = frozenset({"batch.json"})


class BatchError(A3DMeshError, ValueError):
    """A JOBS file, batch flag or batch folder that cannot be used (one line, exit 2)."""


@dataclass(frozen=True)
class SetJob:
    """One set of the batch, validated: what its child ``a3d-mesh run`` is given."""

    name: str
    source: str  # where the set was defined, for messages ("jobs.yaml: set 2", "prompts/pets.txt")
    prompt_text: str  # the prompts as a prompt file ("name: prompt" lines), parsed back identically
    asset_names: tuple[str, ...]
    preset: str  # a bundled preset name, or an absolute path to a preset file
    seed: int | None
    overrides: tuple[str, ...] = ()
    hybrids: tuple[str, ...] = ()
    config_yaml: str = field(default="", compare=False)  # the resolved config, as the run saves it

    def run_args(self) -> list[str]:
        """Options of a fresh ``a3d-mesh run`` (after PROMPTS and ``--out``)."""
        args = ["--preset", self.preset]
        if self.seed is not None:
            args += ["--seed", str(self.seed)]
        for h in self.hybrids:
            args += ["--hybrid", h]
        return args + list(self.overrides)

    def resume_args(self) -> list[str]:
        """Options of ``a3d-mesh run --resume``: the run's saved config.yaml is the config, so only
        the hybrids (made at the end, not saved in the config) are given again."""
        args = ["--resume"]
        for h in self.hybrids:
            args += ["--hybrid", h]
        return args


def parse_seed(text: Any, where: str) -> int:
    """A seed from a flag (text) or YAML (int): a whole number in 0..2^63-1, else a BatchError."""
    value = config_ranges.parse_seed(text)
    if value is None:
        shown = repr(text) if isinstance(text, bool) else f"'{text}'"
        raise BatchError(f"{where}: seed must be a whole number in 0..{config_ranges.MAX_SEED}, got {shown}")
    return value


def load_jobs(jobs: Path, preset: str | None = None, seed: int | None = None,
              overrides: tuple[str, ...] | list[str] = ()) -> list[SetJob]:
    """Every set of ``jobs`` (a folder of prompt files or a YAML file), validated; the batch's
    ``preset``, ``seed`` and ``overrides`` apply to every set (a set's own ones win)."""
    jobs = Path(jobs)
    if not jobs.exists():
        raise BatchError(f"jobs not found: {jobs} (give a folder of prompt files or a YAML file)")
    base_preset = _preset_at(preset, Path.cwd()) if preset else "default"
    if jobs.is_dir():
        entries = _folder_entries(jobs)
    elif jobs.suffix.lower() in (".yaml", ".yml"):
        entries = _yaml_entries(jobs)
    else:
        raise BatchError(f"jobs {jobs} must be a folder of prompt files or a .yaml file listing sets")
    out: list[SetJob] = []
    seen: dict[str, str] = {}
    for e in entries:
        name = e["name"]
        if name in seen:
            raise BatchError(f"{e['source']}: set name '{name}' is used twice (also {seen[name]}); names are run "
                             f"folder names and must differ")
        seen[name] = e["source"]
        out.append(_validated(e, base_preset, seed, tuple(overrides)))
    if not out:
        raise BatchError(f"jobs {jobs} lists no sets")
    return out


def _folder_entries(folder: Path) -> list[dict[str, Any]]:
    files = sorted(p for p in folder.iterdir() if not p.name.startswith(".") and p.is_file())
    if not files:
        raise BatchError(f"jobs folder {folder} has no prompt files")
    return [{"name": _set_name(p.stem, str(p)), "source": str(p), "prompts": p, "yaml_dir": None} for p in files]


def _yaml_entries(path: Path) -> list[dict[str, Any]]:
    try:
        data = yaml.safe_load(path.read_bytes().decode("utf-8-sig"))
    except UnicodeDecodeError as e:
        raise BatchError(f"{path} is not UTF-8 text (byte {e.start})") from None
    except yaml.YAMLError as e:
        raise BatchError(f"{path} is not valid YAML: {' '.join(str(e).split())}") from None
    except OSError as e:
        raise BatchError(f"cannot read {path}: {e.strerror or e}") from None
    if isinstance(data, dict):
        extra = sorted(set(data) - {"sets"})
        if extra:
            raise BatchError(f"{path}: unknown key '{extra[0]}' (the file is a list of sets, or a mapping with 'sets')")
        data = data.get("sets")
    if not isinstance(data, list) or not data:
        raise BatchError(f"{path} must list at least one set (a YAML list, or 'sets:' with a list)")
    entries = []
    for i, item in enumerate(data, 1):
        where = f"{path}: set {i}"
        if not isinstance(item, dict):
            raise BatchError(f"{where}: expected a mapping with {', '.join(SET_KEYS)}, got {type(item).__name__}")
        unknown = [k for k in item if k not in SET_KEYS]
        if unknown:
            raise BatchError(f"{where}: unknown key '{unknown[0]}' (known: {', '.join(SET_KEYS)})")
        prompts = item.get("prompts")
        if prompts is None:
            raise BatchError(f"{where}: 'prompts' is missing (a prompt file or a list of prompts)")
        if isinstance(prompts, str):
            prompts = (path.parent / prompts)
            name = item.get("name", prompts.stem)
        elif isinstance(prompts, list):
            if "name" not in item:
                raise BatchError(f"{where}: a set with inline prompts needs a 'name'")
            name = item["name"]
        else:
            raise BatchError(f"{where}: 'prompts' must be a file path or a list of prompts, got {type(prompts).__name__}")
        name = _set_name(name, where)
        entries.append({**item, "name": name, "source": f"{path}: set '{name}'", "prompts": prompts,
                        "yaml_dir": path.parent})
    return entries


def _set_name(name: Any, where: str) -> str:
    if not isinstance(name, str) or not _SET_NAME_RE.match(name) or name in RESERVED_SET_NAMES:
        raise BatchError(f"{where}: bad set name {name!r}: a set's name is its run folder's, so letters, digits, "
                         f"'_', '-' and '.', starting with a letter or digit, no path separators"
                         + (f", and not {name}" if name in RESERVED_SET_NAMES else ""))
    return name


def _str_list(value: Any, key: str, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise BatchError(f"{where}: '{key}' must be a list of strings")
    return tuple(value)


def _preset_at(preset: Any, base: Path) -> str:
    """A bundled preset name as is; a preset file made absolute (relative to ``base``), since the
    child runs may not share the batch's working directory (a Ray cluster)."""
    from a3d_mesh.config import is_preset_path

    if not isinstance(preset, str) or not preset.strip():
        raise BatchError(f"preset must be a preset name or a YAML file, got {preset!r}")
    return str((base / preset).resolve()) if is_preset_path(preset) else preset


def _validated(e: dict[str, Any], base_preset: str, batch_seed: int | None,
               batch_overrides: tuple[str, ...]) -> SetJob:
    """The set checked by the project's own validators: prompt file, config, hybrid specs."""
    from a3d_mesh.config import dump_config, load_config
    from a3d_mesh.hybrid import parse_all
    from a3d_mesh.prompts import load_prompts, parse_prompts

    where = e["source"]
    try:
        preset = _preset_at(e["preset"], e["yaml_dir"]) if e.get("preset") is not None else base_preset
        seed = parse_seed(e["seed"], where) if e.get("seed") is not None else batch_seed
        overrides = batch_overrides + _str_list(e.get("overrides"), "overrides", where)
        hybrids = _str_list(e.get("hybrids"), "hybrids", where)
        cfg = load_config(preset, list(overrides) + ([f"seed={seed}"] if seed is not None else []))
        neg, others = cfg.guidance.negative_prompt, cfg.guidance.negate_other_prompts
        if isinstance(e["prompts"], Path):
            pset = load_prompts(e["prompts"], neg, others)
        else:
            if not all(isinstance(p, str) for p in e["prompts"]):
                raise BatchError("'prompts' must be a list of strings (prompt-file lines)")
            pset = parse_prompts("\n".join(e["prompts"]), neg, source="inline prompts", negate_others=others)
        parse_all(list(hybrids), [], pset.names, 0.1, cfg.bound)  # the run's default --blend
    except A3DMeshError as err:
        msg = str(err)
        raise BatchError(msg if msg.startswith(where) else f"{where}: {msg}") from None
    return SetJob(e["name"], where, pset.to_text(), tuple(pset.names), preset, seed, overrides, hybrids,
                  dump_config(cfg))


def split_ray_address(jobs: Path, tokens: list[str], ray: bool) -> tuple[Path, list[str], str | None]:
    """``--ray [ADDRESS]`` on a command line whose other positionals are JOBS and ``key=value``
    overrides: the one token that is not ``key=value`` is the address (``auto``, ``host:6379``,
    ``ray://host:10001``; none contains '='). Returns (JOBS, overrides, address or None)."""
    loose = [t for t in tokens if "=" not in t]
    overrides = [t for t in tokens if "=" in t]
    if not ray:
        return jobs, tokens, None  # load_config names a token that is no override
    if len(loose) > 1:
        raise BatchError(f"--ray takes one address, got {' and '.join(loose)}")
    if loose and not jobs.exists() and Path(loose[0]).exists():  # 'batch --ray auto jobs.yaml'
        return Path(loose[0]), overrides, str(jobs)
    return jobs, overrides, loose[0] if loose else None
