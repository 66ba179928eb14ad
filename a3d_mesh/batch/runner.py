"""``a3d-mesh batch``: run every set of a JOBS file as an ordinary run folder ``OUT/<name>/``.

Order of events: the JOBS are validated and the run folders checked (:mod:`a3d_mesh.batch.jobs`,
:func:`a3d_mesh.batch.state.check_run_folders`) before anything is written; then the batch folder
is locked (one batch per folder), each set's prompts are written to ``OUT/.batch/prompts/`` (the
file its child reads), and the sets run, ``workers`` (or Ray's resources) at a time.

Fault tolerance: an attempt that ends in anything but success, bad input (exit 2) or an interrupt
(a signal, an OOM kill, a crash, a lost Ray worker or node) is retried up to ``retries`` times;
each retry runs ``run --resume`` when the folder holds a started run, so it continues from the
last checkpoint. A set that keeps failing is recorded and the others go on. Ctrl-C (or SIGTERM) sends each
running child one SIGINT (it checkpoints and exits), records them as interrupted and raises
:class:`BatchInterrupted`; ``--resume`` then skips the finished sets and continues the rest.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any, Callable, Iterator

from a3d_mesh.atomic import atomic_write_text
from a3d_mesh.batch.attempt import AttemptResult, AttemptSpec, resume_point
from a3d_mesh.batch.backends import LocalBackend, RayBackend
from a3d_mesh.batch.jobs import BatchError, SetJob
from a3d_mesh.batch.state import BatchState, check_run_folders
from a3d_mesh.run.manifest import finished_assets

BATCH_DIR = ".batch"  # the batch's own files inside OUT: prompt files given to the children, logs
LOCK_FILE = ".a3d-batch.lock"
KILL_ENV = "A3D_BATCH_TEST_KILL"
_KILL_MODES = {"after_checkpoint": "child", "worker_after_checkpoint": "worker"}


class BatchInterrupted(KeyboardInterrupt):
    """Ctrl-C: running sets were stopped at a checkpoint; ``batch.json`` says where each one is."""


def test_kills(env: str | None, use_ray: bool) -> dict[str, str]:
    """``A3D_BATCH_TEST_KILL=name:after_checkpoint[,name:worker_after_checkpoint]``: the sets whose
    first attempt is killed once a checkpoint exists (tests of the retry path). Killing the worker
    means a Ray worker; without Ray it is the child, as there the batch itself is the worker."""
    out: dict[str, str] = {}
    for item in filter(None, (p.strip() for p in (env or "").split(","))):
        name, _, mode = item.partition(":")
        if mode not in _KILL_MODES:
            raise BatchError(f"{KILL_ENV}: expected name:after_checkpoint or name:worker_after_checkpoint, got '{item}'")
        out[name] = _KILL_MODES[mode] if use_ray else "child"
    return out


@contextlib.contextmanager
def signals_as_interrupt() -> Iterator[None]:
    """SIGINT (Ctrl-C, ``kill -INT``) and SIGTERM (a job scheduler's stop, ``kill``) stop the batch:
    sets checkpointed and resumable, ``batch.json`` written. Installed explicitly, as ``run`` does
    for its steps: a batch started in the background of a script inherits SIGINT *ignored*, and
    Python then never turns it into KeyboardInterrupt (main thread only, where signals arrive)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    old = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, h in old.items():
            signal.signal(sig, h)


@contextlib.contextmanager
def batch_lock(out: Path) -> Iterator[None]:
    """One batch per folder (flock: released however the process ends)."""
    import fcntl

    fh = open(out / LOCK_FILE, "a+", encoding="utf-8")
    try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.close()
        raise BatchError(f"{out} is in use by another a3d-mesh batch; wait for it to end or choose another --out") from None
    try:
        yield
    finally:
        fh.close()


def run_batch(jobs: list[SetJob], out: Path, *, source: str, workers: int = 1, retries: int = 2,
              resume: bool = False, use_ray: bool = False, ray_address: str | None = None,
              gpus_per_set: float = 1.0, echo: Callable[[str], None] = print) -> BatchState:
    """Run the batch; returns its final state (``count('failed')`` > 0 when a set failed for good).

    ``workers``: sets at once (without Ray: child processes here, one GPU group each; with Ray:
    the local Ray's CPUs, and at most that many tasks in flight). ``ray_address``: None for a
    local Ray, else ``auto`` or a cluster's address. Raises :class:`BatchError` (bad input, before
    anything runs) and :class:`BatchInterrupted` (Ctrl-C).
    """
    if workers < 1:
        raise BatchError(f"--workers must be a whole number >= 1, got {workers}")
    if retries < 0:
        raise BatchError(f"--retries must be a whole number >= 0, got {retries}")
    if gpus_per_set < 0:
        raise BatchError(f"--gpus-per-set must be >= 0, got {gpus_per_set:g}")
    out = Path(out).absolute()  # children (and Ray workers) may run elsewhere
    finished = check_run_folders(jobs, out, resume)
    kills = test_kills(os.environ.get(KILL_ENV), use_ray)
    if use_ray:  # a local Ray runs `workers` sets at once; a cluster takes all and schedules by resources
        in_flight = workers if ray_address is None else len(jobs)
        backend: Any = RayBackend(ray_address, workers, gpus_per_set, in_flight, echo)
    else:
        backend = LocalBackend(workers, gpus_per_set, echo)
    out.mkdir(parents=True, exist_ok=True)
    with batch_lock(out), signals_as_interrupt():
        for job in jobs:  # what each child reads: the set's prompts exactly as validated
            atomic_write_text(_prompt_file(out, job), job.prompt_text)
        state = BatchState(out, jobs, source, workers, echo)
        state.write()
        echo(f"[batch] {len(jobs)} set(s) -> {out}")
        for name, assets in finished.items():
            state.skip(name, assets)
        todo = deque(j for j in jobs if j.name not in finished)
        if todo:
            try:
                backend.open()
                _loop(todo, out, backend, state, retries, kills)
            except BatchInterrupted:
                raise
            except KeyboardInterrupt:  # before any set started (connecting to Ray)
                state.finish("interrupted")
                raise BatchInterrupted() from None
            finally:
                backend.close()
        state.finish("failed" if state.count("failed") else "done")
        _write_page(out, [out / j.name for j in jobs if state.sets[j.name].status == "done"], echo)
    return state


def _write_page(out: Path, done: list[Path], echo: Callable[[str], None]) -> None:
    """``OUT/index.html``: the finished sets side by side, each linking to its own page. A page
    that cannot be written is a warning: the sets themselves are finished."""
    from a3d_mesh.errors import first_line
    from a3d_mesh.gallery import write_batch_index

    if not done:
        return
    try:
        echo(f"[batch] page: {write_batch_index(out, done)}")
    except Exception as e:  # noqa: BLE001 - the runs are done; a page is a view of them
        echo(f"[batch] warning: could not write the batch page ({first_line(e)}); "
             f"a3d-mesh view {out} writes it")


def _prompt_file(out: Path, job: SetJob) -> Path:
    return out / BATCH_DIR / "prompts" / f"{job.name}.txt"


def _spec(job: SetJob, out: Path, attempt: int, kills: dict[str, str]) -> AttemptSpec:
    return AttemptSpec(name=job.name, run_dir=str(out / job.name), prompt_file=str(_prompt_file(out, job)),
                       fresh_args=job.run_args(), resume_args=job.resume_args(),
                       log=str(out / BATCH_DIR / "logs" / f"{job.name}-{attempt}.log"), attempt=attempt,
                       kill=kills.get(job.name))


def _loop(todo: deque[SetJob], out: Path, backend: Any, state: BatchState, retries: int,
          kills: dict[str, str]) -> None:
    """Start sets while there is room, poll the running ones, retry or record each that ends."""
    running: dict[str, tuple[Any, SetJob]] = {}
    attempts = {j.name: 0 for j in todo}  # this batch's attempts (the state also counts earlier ones)
    try:
        while todo or running:
            while todo and backend.capacity > 0:
                job = todo.popleft()
                attempts[job.name] += 1
                spec = _spec(job, out, attempts[job.name], kills)
                resumed = resume_point(Path(spec.run_dir))
                handle, device = backend.start(spec)
                running[job.name] = (handle, job)
                state.started_attempt(job.name, state.sets[job.name].attempts + 1, device, resumed, spec.log)
            for name, (handle, job) in list(running.items()):
                r = backend.poll(handle)
                if r is not None:
                    del running[name]
                    _record(r, job, state, attempts[name] <= retries, todo)
            if running:
                time.sleep(0.2)
    except KeyboardInterrupt:
        handles = [h for h, _ in running.values()]
        backend.interrupt(handles)  # each child checkpoints the step in flight and exits
        for name, (handle, _) in running.items():
            state.finished_attempt(backend.result_after_interrupt(handle), "interrupted")
        state.finish("interrupted")
        raise BatchInterrupted() from None


def _record(r: AttemptResult, job: SetJob, state: BatchState, may_retry: bool, todo: deque[SetJob]) -> None:
    if r.ok:
        assets = finished_assets(Path(state.sets[job.name].run_dir), job.asset_names)
        if assets is not None:
            state.finished_attempt(r, "done", assets)
            return
        r.error, r.returncode = "ended without a consistent manifest.json", 1
    if r.retriable and may_retry:
        state.finished_attempt(r, "pending")
        todo.appendleft(job)  # first in line: it continues from its checkpoint
    else:
        state.finished_attempt(r, "interrupted" if r.interrupted else "failed")
