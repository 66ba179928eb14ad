"""Model sources: the known prior ``sd-2.1-base`` resolves to the first of its mirrors in the local
Hugging Face cache, else to the first the hub has (never the taken-down official id); every way of
not getting it is one line naming each source; a pipeline SDS cannot use (SDXL, SD3, inpainting,
mismatched widths, ...) is refused from its JSON configs before anything trains. Hub access is
monkeypatched: these tests never touch the network."""

from __future__ import annotations

import json
import shutil
import socket
import time
from pathlib import Path
from typing import Any, Callable

import pytest
from typer.testing import CliRunner

from a3d_mesh.guidance import (KNOWN_PRIORS, GuidanceModelError, ModelInputError, ModelKindError, build_tiny_pipeline,
                               load_components, loader, sources)
from a3d_mesh_cli.main import app

MIRROR, OFFICIAL, SECOND = (s.repo_id for s in KNOWN_PRIORS["sd-2.1-base"].sources)
REAL_FETCH_CONFIGS = sources.fetch_configs


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_pipeline(tmp_path_factory.mktemp("tiny") / "pipe", seed=0)


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """An empty Hugging Face cache for this test; any network access fails the test."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(loader, "hub_reachable", refuse)
    monkeypatch.setattr(sources, "fetch_configs", refuse)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    cache = tmp_path / "hf" / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    return cache


def put_in_cache(cache: Path, repo_id: str, pipeline: Path) -> Path:
    """Lay ``pipeline`` out as the hub cache does: models--owner--name/snapshots/<commit>/ + refs/main."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    commit = f"{abs(hash(repo_id)):040x}"[-40:]
    shutil.copytree(pipeline, repo / "snapshots" / commit)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    return repo / "snapshots" / commit


def one_line(call: Callable[[], Any], kind: type[Exception] = GuidanceModelError) -> str:
    with pytest.raises(kind) as info:
        call()
    message = str(info.value)
    assert message and "\n" not in message
    return message


def edited(tiny: Path, dest: Path, edits: dict[str, Callable[[dict], None]]) -> Path:
    """A copy of the tiny pipeline whose JSON files (relative paths) are changed by ``edits``."""
    shutil.copytree(tiny, dest)
    for rel, edit in edits.items():
        path = dest / rel
        data = json.loads(path.read_text())
        edit(data)
        path.write_text(json.dumps(data))
    return dest


# ---- resolution order -----------------------------------------------------------------------

def test_first_cached_mirror_loads_without_network(tiny: Path, hub: Path) -> None:
    put_in_cache(hub, SECOND, tiny)
    put_in_cache(hub, MIRROR, tiny)
    comps = load_components("sd-2.1-base", "cpu")
    assert comps.model_id == "sd-2.1-base" and comps.source == MIRROR
    assert comps.unet is not None and comps.vae is not None and comps.native_resolution == 64


def test_official_id_used_when_it_is_what_the_cache_has(tiny: Path, hub: Path) -> None:
    put_in_cache(hub, SECOND, tiny)
    put_in_cache(hub, OFFICIAL, tiny)
    assert loader.resolve_source("sd-2.1-base", None) == (OFFICIAL, True)
    # Named explicitly, the official id loads from the cache too.
    assert load_components(OFFICIAL, "cpu").source == OFFICIAL


def test_offline_without_any_source_names_every_source(hub: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(GuidanceModelError) as info:
        load_components("sd-2.1-base", "cpu")
    assert not isinstance(info.value, ModelInputError)  # the name is right; the machine lacks the files
    message = str(info.value)
    assert all(repo in message for repo in (MIRROR, OFFICIAL, SECOND))
    assert f"hf download {MIRROR}" in message and "HF_HUB_OFFLINE" in message


def test_unreachable_hub_names_every_source(hub: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(loader, "hub_reachable", lambda timeout_s=0.0: False)
    message = one_line(lambda: load_components("sd-2.1-base", "cpu"))
    assert all(repo in message for repo in (MIRROR, OFFICIAL, SECOND))
    assert "cannot be reached" in message and f"hf download {MIRROR}" in message


def test_online_takes_the_first_source_the_hub_has(tiny: Path, hub: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[str] = []

    def fetch(repo_id: str) -> Path:
        asked.append(repo_id)
        if repo_id == MIRROR:
            raise sources.HubAnswer(f"the hub has no repository {repo_id} (404)")
        return tiny

    monkeypatch.setattr(loader, "hub_reachable", lambda timeout_s=0.0: True)
    monkeypatch.setattr(sources, "fetch_configs", fetch)
    assert loader.resolve_source("sd-2.1-base", None) == (SECOND, False)
    assert asked == [MIRROR, SECOND]  # the taken-down official id is never asked of the hub


def test_online_with_no_source_left_is_one_line(hub: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def fetch(repo_id: str) -> Path:
        raise sources.HubAnswer(f"the hub has no repository {repo_id} (404)")

    monkeypatch.setattr(loader, "hub_reachable", lambda timeout_s=0.0: True)
    monkeypatch.setattr(sources, "fetch_configs", fetch)
    message = one_line(lambda: load_components("sd-2.1-base", "cpu"))
    assert all(repo in message for repo in (MIRROR, OFFICIAL, SECOND)) and "404" in message


def test_hub_id_the_hub_does_not_have(hub: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub.errors import RepositoryNotFoundError

    def not_found(*args: object, **kwargs: object) -> str:
        exc = RepositoryNotFoundError.__new__(RepositoryNotFoundError)
        Exception.__init__(exc, "404 Client Error: Repository Not Found")
        raise exc

    monkeypatch.setattr(loader, "hub_reachable", lambda timeout_s=0.0: True)
    monkeypatch.setattr(sources, "fetch_configs", REAL_FETCH_CONFIGS)  # its download call is what fails
    monkeypatch.setattr("huggingface_hub.get_hf_file_metadata", not_found)  # the HEAD that checks existence
    message = one_line(lambda: load_components("a3d-test-owner/no-such-model", "cpu"), ModelInputError)
    assert "no repository a3d-test-owner/no-such-model (404)" in message and "sd-2.1-base" in message


def test_hub_that_refuses_connections_answers_fast(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Port 9 on localhost: nothing listens. One line within seconds, not half a minute of retries.
    monkeypatch.setattr("huggingface_hub.constants.ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    start = time.monotonic()
    with pytest.raises(sources.HubAnswer, match="did not answer for a3d-test-owner/model"):
        sources.fetch_configs("a3d-test-owner/model")
    assert time.monotonic() - start < 10


def test_taken_down_official_id_points_to_the_mirror(hub: Path) -> None:
    # Not cached: no network is needed to know the hub no longer has it.
    message = one_line(lambda: load_components(OFFICIAL, "cpu"), ModelInputError)
    assert "taken down" in message and "guidance.model=sd-2.1-base" in message and f"hf download {MIRROR}" in message


def test_unknown_name_lists_the_known_priors(hub: Path) -> None:
    message = one_line(lambda: load_components("sd 2.1", "cpu"), ModelInputError)
    assert "known prior (sd-2.1-base)" in message


def test_info_lists_cached_priors(tiny: Path, hub: Path) -> None:
    runner = CliRunner()
    before = runner.invoke(app, ["info"])
    assert before.exit_code == 0 and "sd-2.1-base" in before.output and "not cached" in before.output
    put_in_cache(hub, SECOND, tiny)
    after = runner.invoke(app, ["info"])
    assert after.exit_code == 0 and f"cached: {SECOND}" in after.output


# ---- the kind check -------------------------------------------------------------------------

def _set(key: str, value: object) -> Callable[[dict], None]:
    return lambda d: d.__setitem__(key, value)


def _sd3(index: dict) -> None:
    del index["unet"]
    index["transformer"] = ["diffusers", "SD3Transformer2DModel"]


WRONG_KINDS = {
    "sdxl": ({"model_index.json": _set("text_encoder_2", ["transformers", "CLIPTextModelWithProjection"])},
             "two text encoders"),
    "sdxl-unet": ({"unet/config.json": _set("addition_embed_type", "text_time")}, "SDXL-style UNet"),
    "transformer": ({"model_index.json": _sd3}, "transformer denoiser"),
    "inpainting": ({"unet/config.json": _set("in_channels", 9)}, "9 input channels"),
    "upscaler": ({"unet/config.json": _set("num_class_embeds", 1000)}, "class or image conditioning"),
    "widths": ({"unet/config.json": _set("cross_attention_dim", 64)}, "cross-attention width [64]"),
    "sample-prediction": ({"scheduler/scheduler_config.json": _set("prediction_type", "sample")}, "'sample'"),
    "kandinsky": ({"model_index.json": _set("unet", ["diffusers", "UNet2DModel"])}, "not a Stable Diffusion pipeline"),
}


@pytest.mark.parametrize("kind", sorted(WRONG_KINDS))
def test_wrong_kind_folder_is_one_line(tiny: Path, tmp_path: Path, hub: Path, kind: str) -> None:
    edits, text = WRONG_KINDS[kind]
    folder = edited(tiny, tmp_path / kind, edits)
    message = one_line(lambda: load_components(str(folder), "cpu"), ModelKindError)
    assert text in message and str(folder) in message


def test_incomplete_folder_and_broken_json(tiny: Path, tmp_path: Path, hub: Path) -> None:
    folder = edited(tiny, tmp_path / "p", {})
    (folder / "unet" / "config.json").unlink()
    assert "no unet/config.json" in one_line(lambda: load_components(str(folder), "cpu"), ModelKindError)
    (folder / "model_index.json").write_text("{")
    assert "broken config" in one_line(lambda: load_components(str(folder), "cpu"), ModelKindError)


def test_wrong_kind_in_the_cache_is_refused_before_loading(tiny: Path, tmp_path: Path, hub: Path) -> None:
    folder = edited(tiny, tmp_path / "xl", WRONG_KINDS["sdxl"][0])
    put_in_cache(hub, MIRROR, folder)
    message = one_line(lambda: load_components("sd-2.1-base", "cpu"), ModelKindError)
    assert MIRROR in message and "two text encoders" in message


def test_v_prediction_768_loads_and_warns_at_512(tiny: Path, tmp_path: Path, hub: Path) -> None:
    # SD 2.1 (non-base) is a 768 px v-prediction model: SDS supports it, a 512 px preset gets a note.
    folder = edited(tiny, tmp_path / "v", {"scheduler/scheduler_config.json": _set("prediction_type", "v_prediction"),
                                           "unet/config.json": _set("sample_size", 96)})
    comps = load_components(str(folder), "cpu")
    assert comps.native_resolution == 768
    note = comps.resolution_note(512)
    assert note is not None and "\n" not in note and "768 px v-prediction" in note
    assert "refine.sds.resolution=768" in note
    assert comps.resolution_note(768) is None


def test_cli_wrong_kind_exits_before_training(tiny: Path, tmp_path: Path, hub: Path) -> None:
    folder = edited(tiny, tmp_path / "xl", WRONG_KINDS["sdxl"][0])
    prompts = tmp_path / "pets.txt"
    prompts.write_text("dog: a dog\ncat: a cat\n")
    out = tmp_path / "run"
    res = CliRunner().invoke(app, ["run", str(prompts), "--preset", "tiny", "--out", str(out), "-q",
                                   f"guidance.model={folder}"])
    lines = [ln for ln in res.output.strip().splitlines() if ln.strip()]
    assert res.exit_code == 2, res.output  # bad input, like a bad config value
    assert len(lines) == 1 and lines[0].startswith("a3d-mesh: error:") and "two text encoders" in lines[0]
    assert not list(out.glob("checkpoints/*"))  # nothing was trained
