"""``a3d-mesh``: the command-line tool. Parses flags, calls the library, turns errors into one line.

Exit codes: 0 success, 1 a failure while working (model, export, disk), 2 bad input (prompt file,
flags, config, run folder), 130 interrupted (a checkpoint was written; ``--resume`` continues).
"""

from __future__ import annotations

import errno
import sys
from pathlib import Path
from typing import Callable, List, Optional, TypeVar

import typer

from a3d_mesh import __version__

app = typer.Typer(
    name="a3d-mesh",
    help="Sets of structurally aligned, UV-textured 3D assets from text prompts (A3D, carried to meshes).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

T = TypeVar("T")

HYBRID_HELP = ("A hybrid asset: NAME=SOURCE[@REGION][,SOURCE[@REGION]...]; SOURCE is an asset name or index, REGION "
               "is x>v, x<v (y, z likewise, in the set's frame) or box:x0,y0,z0,x1,y1,z1; a SOURCE without a region "
               "takes the rest of space. Repeatable.")
ANCHORS_HELP = "A YAML/JSON list of {point: [x, y, z], source: NAME} blended by radial basis functions (one hybrid per file)."
BLEND_HELP = "Width of the transition between hybrid regions, in scene units (the scene cube is [-1, 1]^3)."
PRESET_HELP = ("Preset name (configs/*.yaml) or a YAML file; a name means the bundled preset, a path (./toy, "
               "mine.yaml) the file. Default: default.")
FINETUNE_HELP = ("Polish each hybrid with STEPS of SDS at a mixed prompt, on a copy of the model (the set is untouched); "
                 "skipped with a message for guidance.kind=images runs.")


def fail(message: str, code: int) -> None:
    typer.echo(f"a3d-mesh: error: {message}", err=True)
    raise typer.Exit(code)


def guarded(fn: Callable[[], T]) -> T:
    """Run ``fn`` and map every expected failure to a one-line message and an exit code."""
    from a3d_mesh.errors import A3DMeshError
    from a3d_mesh.export import ExportError
    from a3d_mesh.train.loop import Interrupted

    try:
        return fn()
    except A3DMeshError as e:  # every user-facing error (config, prompts, run folder, model...) carries its code
        fail(str(e), e.exit_code)
    except ExportError as e:
        fail(f"export failed: {e}", 1)
    except Interrupted as e:
        typer.echo(f"\na3d-mesh: interrupted after step {e.step}; checkpoint saved. Continue with --resume.", err=True)
        raise typer.Exit(130)
    except KeyboardInterrupt:
        typer.echo("\na3d-mesh: interrupted", err=True)
        raise typer.Exit(130)
    except OSError as e:
        if e.errno == errno.ENOSPC:
            fail(f"no space left on device{f' writing {e.filename}' if e.filename else ''}; earlier results are intact", 1)
        fail(f"{e.strerror or e}{f': {e.filename}' if e.filename else ''}", 1)
    raise AssertionError("unreachable")


@app.command()
def run(
    prompts: Path = typer.Argument(..., help="Prompt file: one prompt per line, optional 'name: prompt', '#' comments."),
    preset: Optional[str] = typer.Option(None, "--preset", "-p", help=PRESET_HELP),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Run folder [default: runs/<prompt file name>]."),
    seed: Optional[str] = typer.Option(None, "--seed", metavar="<int>", help="Random seed (overrides the preset's)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its last checkpoint."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print nothing but errors."),
    hybrid: Optional[List[str]] = typer.Option(None, "--hybrid", help=HYBRID_HELP),
    hybrid_anchors: Optional[List[Path]] = typer.Option(None, "--hybrid-anchors", help=ANCHORS_HELP),
    blend: float = typer.Option(0.1, "--blend", help=BLEND_HELP),
    hybrid_finetune: Optional[str] = typer.Option(None, "--hybrid-finetune", metavar="STEPS", help=FINETUNE_HELP),
    overrides: Optional[List[str]] = typer.Argument(None, help="Config overrides, e.g. refine.steps=300 export.formats=glb,obj"),
) -> None:
    """Generate an aligned set: one textured mesh per prompt, previews and a manifest.

    Examples:

      a3d-mesh run examples/animals.txt --preset tiny

      a3d-mesh run pets.txt --preset default --out runs/pets refine.steps=3000

      a3d-mesh run pets.txt --out runs/pets --resume

      a3d-mesh run pets.txt --preset tiny --hybrid dogcat=dog@x>0,cat --hybrid-finetune 50
    """
    from a3d_mesh.config import load_config
    from a3d_mesh.prompts import load_prompts
    from a3d_mesh.progress import Progress
    from a3d_mesh.train.pipeline import run as run_pipeline

    def go() -> Path:
        run_dir = out or Path("runs") / prompts.stem
        progress = Progress(quiet=quiet)
        build, steps = hybrid_specs(hybrid, hybrid_anchors, blend), finetune_steps(hybrid_finetune, hybrid, hybrid_anchors)
        extra = config_overrides(overrides, seed, preset, resume)
        if resume:
            return run_pipeline(run_dir, load_prompts(prompts), resume=True, progress=progress, hybrids=build,
                                hybrid_finetune=steps)
        cfg = load_config(preset or "default", extra)
        pset = load_prompts(prompts, cfg.guidance.negative_prompt, cfg.guidance.negate_other_prompts)
        return run_pipeline(run_dir, pset, cfg, progress=progress, hybrids=build, hybrid_finetune=steps)

    manifest = guarded(go)
    if not quiet:
        typer.echo(str(manifest))


def hybrid_specs(specs: Optional[List[str]], anchors: Optional[List[Path]], blend: float):  # noqa: ANN201
    """A callable (prompts, config) -> hybrid specs, or None when no hybrid was asked for."""
    if not specs and not anchors:
        return None

    def build(prompts, cfg):  # noqa: ANN001, ANN202
        from a3d_mesh.hybrid import parse_all

        return list(parse_all(specs or [], anchors or [], prompts.names, blend, cfg.bound))

    return build


def finetune_steps(text: Optional[str], specs: Optional[List[str]], anchors: Optional[List[Path]]) -> int:
    """``--hybrid-finetune`` as a step count (0 when not given); it needs a hybrid to act on."""
    from a3d_mesh.config import ConfigError
    from a3d_mesh.train.finetune import parse_steps

    steps = parse_steps(text)
    if text is not None and not specs and not anchors:
        raise ConfigError("--hybrid-finetune needs at least one --hybrid or --hybrid-anchors")
    return steps


def config_overrides(overrides: Optional[List[str]], seed: Optional[str], preset: Optional[str], resume: bool) -> List[str]:
    """The overrides with ``--seed`` appended; ``--resume`` refuses all three (its run's saved
    config.yaml is the config). A seed that is no whole number in range is a one-line error here,
    before any run folder exists."""
    from a3d_mesh.config import ConfigError
    from a3d_mesh.config_ranges import MAX_SEED, parse_seed

    if resume:
        flags = (("--preset", preset is not None), ("--seed", seed is not None), ("the overrides", bool(overrides)))
        given = [name for name, present in flags if present]
        if given:
            raise ConfigError(f"--resume continues with the run's saved config.yaml; drop {' and '.join(given)}")
        return []
    if seed is None:
        return list(overrides or [])
    value = parse_seed(seed)
    if value is None:
        raise ConfigError(f"--seed: expected a whole number in 0..{MAX_SEED}, got '{seed}'")
    return list(overrides or []) + [f"seed={value}"]


def format_list(text: str) -> List[str]:
    """``--format glb,obj``: lower-cased names, each one known (bad input, exit 2, before any work)."""
    from a3d_mesh.config import ConfigError
    from a3d_mesh.config_ranges import format_problem

    fmts = [f.strip().lower() for f in text.split(",") if f.strip()]
    problem = format_problem(fmts, "--format")
    if problem:
        raise ConfigError(problem)
    return fmts


@app.command()
def hybrid(
    run_dir: Path = typer.Argument(..., help="A run folder with checkpoints/refine.pt (finished or checkpointed)."),
    hybrid: Optional[List[str]] = typer.Option(None, "--hybrid", help=HYBRID_HELP),
    hybrid_anchors: Optional[List[Path]] = typer.Option(None, "--hybrid-anchors", help=ANCHORS_HELP),
    blend: float = typer.Option(0.1, "--blend", help=BLEND_HELP),
    formats: Optional[str] = typer.Option(None, "--format", "-f", help="Comma-separated formats [default: the run's]."),
    hybrid_finetune: Optional[str] = typer.Option(None, "--hybrid-finetune", metavar="STEPS", help=FINETUNE_HELP),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
) -> None:
    """Mix parts of a trained set into new assets, without retraining; adds them to the run's
    previews, export/ and manifest. Works on edit runs too (the input is 'input' or 0; a
    --keep-input-frame edit exports its hybrids in the input's frame as well).

    Example: a3d-mesh hybrid runs/pets --hybrid dogcat=dog@y>0.2,cat --blend 0.15 --hybrid-finetune 50
    """
    from a3d_mesh.config import ConfigError
    from a3d_mesh.progress import Progress
    from a3d_mesh.train.pipeline import add_hybrids

    def go() -> Path:
        build = hybrid_specs(hybrid, hybrid_anchors, blend)
        if build is None:
            raise ConfigError("give at least one --hybrid or --hybrid-anchors")
        steps = finetune_steps(hybrid_finetune, hybrid, hybrid_anchors)
        fmts = format_list(formats) if formats else None  # checked before any work
        return add_hybrids(run_dir, build, steps, fmts, Progress(quiet=quiet))

    manifest = guarded(go)
    if not quiet:
        typer.echo(str(manifest))


@app.command()
def edit(
    input_mesh: Path = typer.Argument(..., help="The mesh to transform: GLB/GLTF, OBJ or PLY."),
    prompts: Path = typer.Argument(..., help="Prompt file of the targets (as for run)."),
    preset: Optional[str] = typer.Option(None, "--preset", "-p", help=PRESET_HELP),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Run folder [default: runs/<input name>-edit]."),
    input_prompt: str = typer.Option("a 3D model", "--input-prompt", help="What the input shows (object 0's prompt)."),
    keep_input_frame: bool = typer.Option(False, "--keep-input-frame",
                                          help="Export in the input mesh's own frame and units, overlaying it."),
    seed: Optional[str] = typer.Option(None, "--seed", metavar="<int>", help="Random seed (overrides the preset's)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the edit run in --out from its last checkpoint."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print nothing but errors."),
    hybrid: Optional[List[str]] = typer.Option(None, "--hybrid", help=HYBRID_HELP + " The input is 'input' or 0."),
    hybrid_anchors: Optional[List[Path]] = typer.Option(None, "--hybrid-anchors", help=ANCHORS_HELP),
    blend: float = typer.Option(0.1, "--blend", help=BLEND_HELP),
    hybrid_finetune: Optional[str] = typer.Option(None, "--hybrid-finetune", metavar="STEPS", help=FINETUNE_HELP),
    overrides: Optional[List[str]] = typer.Argument(None, help="Config overrides, e.g. refine.steps=300"),
) -> None:
    """Transform an input mesh into new objects that keep its pose and part layout.

    Object 0 ('input') is pinned to the mesh by a reconstruction loss on renders; the prompts'
    objects start from it and move towards their prompts.

    Example: a3d-mesh edit chair.glb styles.txt --preset fast --input-prompt "a wooden chair"

    Example: a3d-mesh edit chair.glb styles.txt --hybrid mix=input@y<0,1 --keep-input-frame
    """
    from a3d_mesh.config import load_config
    from a3d_mesh.prompts import load_prompts
    from a3d_mesh.progress import Progress
    from a3d_mesh.train.pipeline import edit as edit_pipeline

    def go() -> Path:
        run_dir = out or Path("runs") / f"{input_mesh.stem}-edit"
        progress = Progress(quiet=quiet)
        build, steps = hybrid_specs(hybrid, hybrid_anchors, blend), finetune_steps(hybrid_finetune, hybrid, hybrid_anchors)
        extra = config_overrides(overrides, seed, preset, resume)
        if resume:
            return edit_pipeline(run_dir, resume=True, progress=progress, hybrids=build, hybrid_finetune=steps)
        cfg = load_config(preset or "default", extra)
        targets = load_prompts(prompts, cfg.guidance.negative_prompt, cfg.guidance.negate_other_prompts)
        return edit_pipeline(run_dir, input_mesh, targets, cfg, input_prompt, keep_input_frame, progress=progress,
                             hybrids=build, hybrid_finetune=steps)

    manifest = guarded(go)
    if not quiet:
        typer.echo(str(manifest))


@app.command("export")
def export_cmd(
    run_dir: Path = typer.Argument(..., help="A run folder with checkpoints/refine.pt."),
    formats: str = typer.Option("glb", "--format", "-f", help="Comma-separated: glb, obj, fbx, usdz (any of them)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Output folder [default: RUN_DIR/export]."),
    faces: Optional[int] = typer.Option(None, "--faces", help="Decimate each asset to at most N faces (N >= 4)."),
    texture_size: Optional[int] = typer.Option(None, "--texture-size", help="Texture width/height in pixels (16..16384)."),
    normal_map: Optional[bool] = typer.Option(None, "--normal-map/--no-normal-map",
                                              help="Also bake a tangent-space normal map [default: the run's export.normal_map]."),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
) -> None:
    """Export (again) every asset of a run, e.g. in other formats or sizes, and update the manifest.

    Example: a3d-mesh export runs/pets --format glb,obj --faces 20000 --texture-size 2048 --normal-map
    """
    from a3d_mesh.config import ConfigError
    from a3d_mesh.config_ranges import MAX_FACES, MIN_FACES, TEXTURE_SIZES
    from a3d_mesh.progress import Progress
    from a3d_mesh.run import export_run

    def go() -> Path:
        # The config's bounds (export.texture_size, export.target_faces), checked before any work.
        if texture_size is not None and not TEXTURE_SIZES[0] <= texture_size <= TEXTURE_SIZES[1]:
            raise ConfigError(f"--texture-size must be in {TEXTURE_SIZES[0]}..{TEXTURE_SIZES[1]}, got {texture_size}")
        if faces is not None and not MIN_FACES <= faces <= MAX_FACES:
            raise ConfigError(f"--faces must be in {MIN_FACES}..{MAX_FACES}, got {faces}")
        return export_run(run_dir, format_list(formats), texture_size, faces, out, normal_map,
                          Progress(quiet=quiet).message)

    manifest = guarded(go)
    if not quiet:
        typer.echo(str(manifest))


@app.command()
def batch(
    jobs: Path = typer.Argument(..., help="A folder of prompt files (one set each, named after the file) or a YAML "
                                          "file listing sets (docs/batch.md)."),
    out: Path = typer.Option(..., "--out", "-o", help="Batch folder: OUT/<set>/ is each set's run folder; OUT/batch.json the summary."),
    workers: int = typer.Option(1, "--workers", "-j", help="Sets at once (here: one GPU group each; with --ray: the local Ray's CPUs)."),
    ray: bool = typer.Option(False, "--ray", help="Run each set as a Ray task: a local Ray, or the cluster at an "
                                                  "ADDRESS given after JOBS (--ray auto, --ray host:6379)."),
    gpus_per_set: float = typer.Option(1.0, "--gpus-per-set", help="GPUs per set (CPU when there are none); with --ray a fraction shares a GPU."),
    retries: int = typer.Option(2, "--retries", help="Retries of a set whose worker died, each from its last checkpoint."),
    resume: bool = typer.Option(False, "--resume", help="Skip the finished sets and continue the others."),
    preset: Optional[str] = typer.Option(None, "--preset", "-p", help=PRESET_HELP + " A set's own preset wins."),
    seed: Optional[str] = typer.Option(None, "--seed", metavar="<int>", help="Seed of every set without its own."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print nothing but errors."),
    overrides: Optional[List[str]] = typer.Argument(None, help="Config overrides for every set, e.g. refine.steps=300"),
) -> None:
    """Run many sets: each set of JOBS becomes an ordinary run folder OUT/<name>/, on this machine or on Ray.

    A set whose worker dies is retried from its last checkpoint; exit code 1 when a set failed.

    Examples:

      a3d-mesh batch prompts/ --out runs/batch --preset fast --workers 2

      a3d-mesh batch jobs.yaml --out runs/batch --ray auto --gpus-per-set 1
    """
    from a3d_mesh.batch import BatchInterrupted, load_jobs, parse_seed, run_batch
    from a3d_mesh.batch.jobs import split_ray_address

    def echo(line: str) -> None:
        if not quiet:
            typer.echo(line, err=True)

    def go():  # noqa: ANN202
        jobs_path, extra, address = split_ray_address(jobs, list(overrides or []), ray)
        sets = load_jobs(jobs_path, preset, parse_seed(seed, "--seed") if seed is not None else None, extra)
        try:
            return run_batch(sets, out, source=str(jobs_path), workers=workers, retries=retries, resume=resume,
                             use_ray=ray, ray_address=address, gpus_per_set=gpus_per_set, echo=echo)
        except BatchInterrupted:
            typer.echo("\na3d-mesh: batch interrupted; every set is resumable: add --resume to continue", err=True)
            raise typer.Exit(130)

    state = guarded(go)
    if not quiet:
        typer.echo(str(state.out / "batch.json"))
    if state.count("failed"):
        raise typer.Exit(1)


@app.command()
def view(
    run_dir: Path = typer.Argument(..., help="A run folder (with manifest.json) or a folder of run folders (a batch)."),
    port: int = typer.Option(0, "--port", help="Port to serve on; 0 takes any free one."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to serve on (0.0.0.0: every interface)."),
    no_write: bool = typer.Option(False, "--no-write", help="Serve the existing index.html without refreshing it."),
) -> None:
    """Write (refresh) the folder's index.html, then serve the folder read-only until Ctrl-C.

    The page shows every asset and hybrid in one synchronised 3D view, the transitions, the
    turnarounds, prompts, codes, counts and links to every exported file.

    Example: a3d-mesh view runs/pets --port 8000
    """
    from a3d_mesh.gallery import INDEX, GalleryError, check_folder, serve, write_page

    def go() -> None:
        check_folder(run_dir)
        if not no_write:
            write_page(run_dir)
        elif not (run_dir / INDEX).is_file():
            raise GalleryError(f"no {INDEX} in {run_dir}; drop --no-write to write it")
        serve(run_dir, host=host, port=port)

    guarded(go)


@app.command()
def info() -> None:
    """Show versions, which backends are active on this machine, and the presets."""
    import torch

    from a3d_mesh.config import preset_names
    from a3d_mesh.guidance.sources import known_prior_lines
    from a3d_mesh.preflight import preflight

    # The same preflight a run does (tiny forward + backward of each backend on the default device):
    # a broken accelerator shows up here as "fallback" with its cause, not mid-run.
    device = "cuda" if torch.cuda.is_available() else "cpu"
    report = guarded(lambda: preflight(device, log=lambda line: typer.echo(line, err=True)))
    lines = [
        f"a3d-mesh {__version__}",
        f"python {sys.version.split()[0]}, torch {torch.__version__}, CUDA available: {torch.cuda.is_available()}",
        *report.lines(),  # rasteriser, hash grid, marching tets: implementation (version) ok|fallback, time
        f"presets: {', '.join(preset_names())}",
        *known_prior_lines(),  # which known priors' sources are in the local Hugging Face cache
    ]
    typer.echo("\n".join(lines))


def version_callback(value: bool) -> None:
    if value:
        typer.echo(f"a3d-mesh {__version__}")
        raise typer.Exit()


@app.callback()
def main(version: bool = typer.Option(False, "--version", callback=version_callback, is_eager=True,
                                      help="Print the version and exit.")) -> None:
    """a3d-mesh: text prompts in, structurally aligned game-ready meshes out."""


if __name__ == "__main__":
    app()
