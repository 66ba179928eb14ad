"""The batch's bookkeeping: each set's status, the run folders' own state, ``batch.json``, and the
progress lines.

A set is *finished* when its run folder's ``manifest.json`` is there and consistent: it lists the
set's prompts (the same names), every one of them as an asset, and every file it names exists
(paths relative to the run's ``export/``).
``batch.json`` is rewritten atomically after every change, so it can be read (or the batch
killed) at any moment and still describe every set.
"""

from __future__ import annotations

import datetime as _dt
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from a3d_mesh.atomic import atomic_write_text
from a3d_mesh.batch.attempt import AttemptResult
from a3d_mesh.batch.jobs import BatchError, SetJob
from a3d_mesh.run.folder import started_run
from a3d_mesh.run.manifest import finished_assets

BATCH_FILE = "batch.json"
STATUSES = ("pending", "running", "done", "failed", "interrupted")


def check_run_folders(jobs: list[SetJob], out: Path, resume: bool) -> dict[str, list[str]]:
    """Refuse, before anything runs, a batch that would clash with what ``out`` holds; returns the
    finished sets' asset names (skipped by ``resume``).

    Without ``resume`` every set's folder must be new or empty. With it, a started set's saved
    prompts and config must be the job's (``run --resume`` continues with the saved ones, so a
    changed JOBS file would otherwise be silently ignored for it).
    """
    from a3d_mesh.config import dump_config, load_run_config

    if out.exists() and not out.is_dir():
        raise BatchError(f"--out {out} is a file; give a folder (new, or a batch folder to --resume)")
    done: dict[str, list[str]] = {}
    for job in jobs:
        run_dir = out / job.name
        if run_dir.exists() and not run_dir.is_dir():
            raise BatchError(f"set '{job.name}': {run_dir} is a file; move it or choose another --out")
        if not run_dir.is_dir() or not any(run_dir.iterdir()):
            continue
        if not resume:
            raise BatchError(f"set '{job.name}': {run_dir} is not empty; continue the batch with --resume or "
                             f"choose another --out")
        assets = finished_assets(run_dir, job.asset_names)
        if assets is not None:
            done[job.name] = assets
            continue
        if not started_run(run_dir):
            continue  # only a lock file (killed before its first write): it starts afresh
        try:
            saved = (run_dir / "prompts.txt").read_text(encoding="utf-8")
            same_config = dump_config(load_run_config(run_dir / "config.yaml")) == job.config_yaml
        except (OSError, UnicodeDecodeError, ValueError) as e:
            raise BatchError(f"set '{job.name}': cannot read the run in {run_dir} ({e}); move it away to start "
                             f"the set again") from None
        if saved != job.prompt_text:
            raise BatchError(f"set '{job.name}': the prompts differ from those of the run in {run_dir}; restore "
                             f"them or move the folder away")
        if not same_config:
            raise BatchError(f"set '{job.name}': its preset, seed or overrides differ from the run in {run_dir} "
                             f"(see its config.yaml); restore them or move the folder away")
    return done


@dataclass
class SetState:
    """One set's line in ``batch.json``."""

    name: str
    run_dir: str
    status: str = "pending"
    attempts: int = 0
    seconds: float = 0.0
    device: str = ""
    assets: list[str] = field(default_factory=list)
    error: str = ""
    resumed_from: str = ""
    log: str = ""


class BatchState:
    """Every set's state, ``batch.json`` and the progress lines."""

    def __init__(self, out: Path, jobs: list[SetJob], source: str, concurrency: int,
                 echo: Callable[[str], None]) -> None:
        self.out, self.source, self.concurrency, self.echo = out, source, max(1, concurrency), echo
        self.sets = {j.name: SetState(j.name, str(out / j.name)) for j in jobs}
        self.started = _now()
        self.state = "running"
        self._t0 = time.monotonic()
        self._previous(out / BATCH_FILE)

    def _previous(self, path: Path) -> None:
        """A resumed batch keeps its sets' attempts and seconds so far."""
        try:
            old = {s["name"]: s for s in json.loads(path.read_text(encoding="utf-8"))["sets"]}
        except (OSError, ValueError, KeyError, TypeError):
            return
        for name, s in self.sets.items():
            if name in old:
                s.attempts = int(old[name].get("attempts", 0))
                s.seconds = float(old[name].get("seconds", 0.0))
                s.device = str(old[name].get("device", ""))

    def count(self, status: str) -> int:
        return sum(1 for s in self.sets.values() if s.status == status)

    def skip(self, name: str, assets: list[str]) -> None:
        s = self.sets[name]
        s.status, s.assets, s.error = "done", assets, ""
        self.write()
        self.echo(f"[batch] {name}: already finished ({len(assets)} assets); skipped")

    def started_attempt(self, name: str, attempt: int, device: str, resumed_from: str, log: str) -> None:
        s = self.sets[name]
        s.status, s.attempts, s.device, s.resumed_from, s.log = "running", attempt, device, resumed_from, log
        self.write()
        how = f"continuing from {resumed_from}" if resumed_from else "from the start"
        self.echo(f"[batch] {name}: attempt {attempt} on {device}, {how} | {self.summary()}")

    def finished_attempt(self, r: AttemptResult, status: str, assets: list[str] | None = None) -> None:
        """Record an attempt's end; ``status``: done, failed, interrupted, or pending (to be retried)."""
        s = self.sets[r.name]
        s.status, s.seconds, s.device = status, round(s.seconds + r.seconds, 2), r.device or s.device
        s.resumed_from = r.resumed_from or s.resumed_from
        s.error = "" if status == "done" else r.error
        s.assets = list(assets or [])
        self.write()
        what = {"done": f"done in {_fmt(r.seconds)} ({len(s.assets)} assets)",
                "pending": f"attempt {r.attempt} failed ({r.error}); retrying from its last checkpoint",
                "failed": f"failed after {s.attempts} attempt(s): {r.error}",
                "interrupted": "interrupted; resumable with --resume"}[status]
        self.echo(f"[batch] {r.name}: {what} | {self.summary()}")

    def summary(self) -> str:
        n = len(self.sets)
        eta = self.eta()
        return (f"{self.count('done')}/{n} done, {self.count('running')} running, {self.count('failed')} failed"
                + (f", ETA {_fmt(eta)}" if eta is not None else ""))

    def eta(self) -> float | None:
        """Seconds left: the mean time of the sets finished so far, times the sets still to run,
        over the sets that run at once; None before any set has finished."""
        times = [s.seconds for s in self.sets.values() if s.status == "done" and s.seconds > 0]
        left = self.count("pending") + self.count("running")
        if not times or not left:
            return None if left else 0.0
        return sum(times) / len(times) * left / min(self.concurrency, left)

    def write(self) -> None:
        data = {
            "jobs": self.source,
            "out": str(self.out),
            "state": self.state,
            "started": self.started,
            "updated": _now(),
            "elapsed_s": round(time.monotonic() - self._t0, 1),
            "counts": {k: self.count(k) for k in STATUSES},
            "eta_s": None if (eta := self.eta()) is None else round(eta, 1),
            "sets": [asdict(s) for s in self.sets.values()],
        }
        atomic_write_text(self.out / BATCH_FILE, json.dumps(data, indent=2) + "\n")

    def finish(self, state: str) -> None:
        self.state = state
        self.write()
        n = len(self.sets)
        self.echo(f"[batch] {state}: {self.count('done')}/{n} done, {self.count('failed')} failed"
                  + (f", {n - self.count('done') - self.count('failed')} to --resume" if state == "interrupted" else "")
                  + f"; {self.out / BATCH_FILE}")


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _fmt(s: float) -> str:
    s = int(round(s))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"
