"""Model resolution: every way of not finding a model is a one-line GuidanceModelError, offline
without touching the network."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
import torch

from a3d_mesh.guidance import GuidanceModelError, ModelInputError, load_components, resolve_dtype
from a3d_mesh.guidance import build_tiny_pipeline, loader, sources
from a3d_mesh.guidance.tiny import model_index


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if anything tries to open a socket or probe the hub."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(loader, "hub_reachable", refuse)


def _one_line_error(model: str, **kwargs: object) -> str:
    with pytest.raises(GuidanceModelError) as info:
        load_components(model, "cpu", **kwargs)
    message = str(info.value)
    assert message and "\n" not in message
    return message


def test_unknown_hub_id_offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, no_network: None) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    message = _one_line_error("a3d-test-owner/no-such-model")
    assert "a3d-test-owner/no-such-model" in message
    assert "download" in message


def test_explicit_local_files_only(monkeypatch: pytest.MonkeyPatch, no_network: None) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    message = _one_line_error("a3d-test-owner/no-such-model", local_files_only=True)
    assert "cache" in message


def test_uncached_id_with_unreachable_hub(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(loader, "hub_reachable", lambda timeout_s=0.0: False)
    message = _one_line_error("a3d-test-owner/no-such-model")
    assert "cannot be reached" in message and "hf download a3d-test-owner/no-such-model" in message


def test_missing_folder_and_bad_id(tmp_path: Path, no_network: None) -> None:
    assert "does not exist" in _one_line_error(str(tmp_path / "nowhere" / "model"))
    with pytest.raises(ModelInputError):  # bad input: the CLI exits with 2, not 1
        load_components(str(tmp_path / "nowhere"), "cpu")
    assert "does not exist" in _one_line_error("./no/such/folder")
    assert "valid" in _one_line_error("not a model id!")


def test_folder_without_model_index(tmp_path: Path, no_network: None) -> None:
    (tmp_path / "unet").mkdir()
    assert "model_index.json" in _one_line_error(str(tmp_path))


def test_broken_weights_are_reported_not_raised_raw(tmp_path: Path, no_network: None) -> None:
    # Configs that pass the kind check, weights that do not load: one line, not a traceback.
    folder = build_tiny_pipeline(tmp_path / "pipe")
    (folder / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"not safetensors")
    message = _one_line_error(str(folder))
    assert "could not load" in message


def test_hub_probe_fails_fast_on_closed_port(monkeypatch: pytest.MonkeyPatch) -> None:
    # Port 9 on localhost: nothing listens, so the probe must say unreachable (not hang).
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    assert loader.hub_reachable(timeout_s=1.0) is False


def test_dtype_policy() -> None:
    assert resolve_dtype("cpu") == torch.float32
    assert resolve_dtype("cuda") == torch.float16
    assert resolve_dtype("cuda", torch.float32) == torch.float32


def test_unwritable_tiny_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("A3D_CACHE", str(blocker))
    assert "A3D_CACHE" in _one_line_error("tiny")


def test_incomplete_cache_asks_hub_before_giving_up(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # The cache holds the repo's model_index.json but none of its parts (an interrupted download).
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    snapshot = tmp_path / "snapshot"
    snapshot.mkdir()
    (snapshot / "model_index.json").write_text(json.dumps(model_index()))
    probes: list[float] = []
    monkeypatch.setattr(sources, "cached_snapshot", lambda repo_id: snapshot)
    monkeypatch.setattr(loader, "hub_reachable", lambda timeout_s=0.0: probes.append(timeout_s) or False)
    message = _one_line_error("a3d-test-owner/no-such-model")
    assert len(probes) == 1 and "not (completely) in the local Hugging Face cache" in message
    assert "hf download a3d-test-owner/no-such-model" in message
