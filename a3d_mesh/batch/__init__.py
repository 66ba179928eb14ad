"""``a3d-mesh batch``: many sets from one JOBS file, each an ordinary run folder, on this machine
(one after another, or ``--workers N`` at once, one GPU group each) or as Ray tasks; retried from
their last checkpoint when a worker dies. See ``docs/batch.md``."""

from a3d_mesh.batch.jobs import BatchError, SetJob, load_jobs, parse_seed
from a3d_mesh.batch.runner import BatchInterrupted, run_batch

__all__ = ["BatchError", "BatchInterrupted", "SetJob", "load_jobs", "parse_seed", "run_batch"]
