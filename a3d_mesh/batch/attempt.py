"""One attempt at one set: ``a3d-mesh run`` as a child process, watched until it ends.

A child process, not a call into :mod:`a3d_mesh.train.pipeline`, so that a crash, an OOM kill or
a SIGKILL of one set ends that process only (the batch goes on and retries it), and so that the
batch depends on the command line's contract (flags, exit codes, the run folder) rather than on
internal modules. The same code runs the child on this machine (:mod:`a3d_mesh.batch.runner`) and
inside a Ray task on any node (:func:`ray_task`), so a retry there also continues from the run
folder's last checkpoint: ``--resume`` is chosen by looking at the folder where the child runs.

Test hook (``A3D_BATCH_TEST_KILL``, read by the runner): ``kill="child"`` SIGKILLs the child as
soon as its run folder holds a checkpoint file on the first attempt; ``kill="worker"`` also
SIGKILLs the process running this code (a Ray worker: a lost node, as Ray sees it).
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from a3d_mesh.run.folder import checkpoint_files, started_run

ERROR_PREFIX = "a3d-mesh: error: "
EXIT_BAD_INPUT, EXIT_INTERRUPTED = 2, 130
INTERRUPT_GRACE_S = 60.0  # a child finishes its step in flight and writes a checkpoint in this time
_PR_SET_PDEATHSIG = 1


@dataclass
class AttemptSpec:
    """Everything a child needs; plain data, so that it travels to a Ray task as is."""

    name: str
    run_dir: str
    prompt_file: str
    fresh_args: list[str]
    resume_args: list[str]
    log: str
    attempt: int = 1
    env: dict[str, str] = field(default_factory=dict)
    device: str = "cpu"
    kill: str | None = None  # test hook: "child" or "worker" (see the module docstring)


@dataclass
class AttemptResult:
    """How an attempt ended. ``returncode`` is the child's (negative: killed by that signal), or
    None when the worker running it was lost (Ray)."""

    name: str
    attempt: int
    returncode: int | None
    seconds: float
    error: str = ""
    resumed_from: str = ""
    device: str = "cpu"

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    @property
    def interrupted(self) -> bool:
        return self.returncode in (EXIT_INTERRUPTED, -signal.SIGINT)

    @property
    def retriable(self) -> bool:
        """A died worker (signal, OOM, lost node, a crash) is worth another attempt from the last
        checkpoint; bad input (exit 2: a damaged checkpoint, a folder in use) would fail again."""
        return not self.ok and not self.interrupted and self.returncode != EXIT_BAD_INPUT

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def resume_point(run_dir: Path) -> str:
    """Where a child started now continues: the run folder's checkpoint files, ``config.yaml`` for
    a started run with none yet, or '' (a fresh run)."""
    return (", ".join(checkpoint_files(run_dir)) or "config.yaml") if started_run(run_dir) else ""


def _child_setup() -> None:
    """In the child before exec: SIGINT acts as Ctrl-C even when the batch was started with it
    ignored (``nohup``, a background job: the child would inherit that), and it is sent when the
    batch process dies (even by SIGKILL), so the child checkpoints and ends instead of running on
    with no one to record it."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    if sys.platform.startswith("linux"):
        _libc().prctl(_PR_SET_PDEATHSIG, signal.SIGINT)


_LIBC: Any = None


def _libc() -> Any:
    global _LIBC
    if _LIBC is None:
        _LIBC = ctypes.CDLL(None, use_errno=True)
    return _LIBC


class Attempt:
    """A running child ``a3d-mesh run``; :meth:`poll` until it returns a result."""

    def __init__(self, spec: AttemptSpec) -> None:
        self.spec = spec
        run_dir = Path(spec.run_dir)
        self.resumed_from = resume_point(run_dir)
        args = spec.resume_args if self.resumed_from else spec.fresh_args
        cmd = [sys.executable, "-m", "a3d_mesh_cli.main", "run", spec.prompt_file, "--out", spec.run_dir, *args]
        Path(spec.log).parent.mkdir(parents=True, exist_ok=True)
        if sys.platform.startswith("linux"):
            _libc()  # loaded here, not between fork and exec
        self._log = open(spec.log, "ab")
        self._log.write(f"$ {' '.join(cmd)}\n".encode())
        self._log.flush()
        self.t0 = time.monotonic()
        self.killed_by_hook = self.interrupt_sent = False
        # Own session: a Ctrl-C on the terminal reaches the batch only, which forwards exactly one
        # SIGINT (a second one would abort the child's step without a checkpoint).
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
                                     env={**os.environ, **spec.env}, start_new_session=True,
                                     preexec_fn=_child_setup)

    def poll(self) -> AttemptResult | None:
        """The result once the child has ended, else None (and the test hook gets its chance)."""
        code = self.proc.poll()
        if code is None:
            self._test_hook()
            return None
        return self._result(code)

    def wait(self) -> AttemptResult:
        """Block until the child ends; a KeyboardInterrupt (Ctrl-C, ``ray.cancel``) is passed on to it."""
        try:
            while (r := self.poll()) is None:
                time.sleep(0.2)
            return r
        except KeyboardInterrupt:
            self.interrupt()
            return self._result(self.proc.wait())

    def interrupt(self, grace_s: float = INTERRUPT_GRACE_S) -> None:
        """SIGINT, as a Ctrl-C: the child checkpoints the step in flight and exits 130; SIGKILL
        after ``grace_s`` (its last periodic checkpoint is still there to resume from)."""
        if self.proc.poll() is not None:
            return
        self.send_interrupt()
        try:
            self.proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            self.kill()
        except KeyboardInterrupt:  # a second Ctrl-C: stop now
            self.kill()

    def send_interrupt(self) -> None:
        """One SIGINT, never two: a second one aborts the child's step without a checkpoint."""
        if not self.interrupt_sent and self.proc.poll() is None:
            self.interrupt_sent = True
            self.proc.send_signal(signal.SIGINT)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def _test_hook(self) -> None:
        if self.spec.kill and self.spec.attempt == 1 and not self.killed_by_hook and checkpoint_files(self.spec.run_dir):
            self.killed_by_hook = True
            self.proc.kill()
            if self.spec.kill == "worker":  # the Ray worker itself dies, as on a lost node
                self.proc.wait()
                os.kill(os.getpid(), signal.SIGKILL)

    def _result(self, code: int) -> AttemptResult:
        if not self._log.closed:
            self._log.close()
        seconds = time.monotonic() - self.t0
        return AttemptResult(self.spec.name, self.spec.attempt, code, round(seconds, 2), error_line(code, Path(self.spec.log)),
                             self.resumed_from, self.spec.device)


def error_line(code: int, log: Path) -> str:
    """One line on why an attempt failed ('' when it did not): the child's own one-line message
    (its last line of output), or the signal that ended it."""
    if code == 0:
        return ""
    last = _last_line(log)
    if code < 0:
        name = signal.Signals(-code).name if -code in signal.Signals._value2member_map_ else f"signal {-code}"
        why = " (out of memory, or killed)" if code == -signal.SIGKILL else ""
        return f"worker died: killed by {name}{why}"
    if code == EXIT_INTERRUPTED:
        return "interrupted; resumable"
    return last.removeprefix(ERROR_PREFIX) or f"exit code {code}"


def _last_line(log: Path) -> str:
    try:
        with open(log, "rb") as fh:
            fh.seek(max(0, fh.seek(0, os.SEEK_END) - 8192))
            tail = fh.read().decode("utf-8", "replace")
    except OSError:
        return ""
    lines = [ln.strip() for ln in tail.replace("\r", "\n").splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def ray_task(spec: dict[str, Any]) -> dict[str, Any]:
    """The body of a set's Ray task: run the attempt here (on whichever node Ray chose, with the
    GPUs Ray gave it in CUDA_VISIBLE_DEVICES) and return its result as plain data."""
    try:
        import ray

        gpus = [str(g) for g in ray.get_gpu_ids()]
    except Exception:  # noqa: BLE001 - outside Ray (tests call it directly): no GPUs assigned
        gpus = []
    s = AttemptSpec(**spec)
    s.device = f"{socket.gethostname()} " + (f"gpu {','.join(gpus)}" if gpus else "cpu")
    return Attempt(s).wait().to_dict()
