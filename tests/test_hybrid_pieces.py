"""A hybrid whose halves do not meet is reported: its manifest record counts its pieces and the
export log says, in one line, what can join them."""

from __future__ import annotations

from pathlib import Path

import pytest

from a3d_mesh.run import export_set, hybrid_assets
from a3d_mesh.hybrid import parse_hybrid
from test_export_ground import MeshSet, box, glb_verts, mesh_of

TABLE = box([0.8, 0.7, 0.6], [0.0, -0.15, 0.0])
BENCH = box([0.8, 0.4, 0.4], [0.0, -0.3, 0.0])


def export_with_hybrid(tmp_path: Path, hybrid: MeshSet) -> tuple[dict, list[str]]:
    spec = parse_hybrid("mix=table@x>0,bench", list(hybrid.objects), blend=0.1)
    lines: list[str] = []
    recs = export_set(hybrid, tmp_path, extra=hybrid_assets(hybrid, [spec]), log=lines.append)
    return {r["name"]: r for r in recs}, lines


def test_a_hybrid_in_two_pieces_is_counted_and_warned_about(tmp_path: Path) -> None:
    # The table's half and the bench's half, with a gap between them: nothing joins them.
    apart = mesh_of(box([0.35, 0.7, 0.6], [0.2, -0.15, 0.0]), box([0.35, 0.4, 0.4], [-0.2, -0.3, 0.0]))
    recs, lines = export_with_hybrid(tmp_path, MeshSet({"table": mesh_of(TABLE), "bench": mesh_of(BENCH)}, apart))
    assert recs["mix"]["components"] == 2 and recs["mix"]["kind"] == "hybrid"
    assert "components" not in recs["table"]  # objects are what they are; only hybrids are judged
    warnings = [ln for ln in lines if "warning" in ln]
    assert warnings == ["[export] warning: hybrid 'mix' falls apart into 2 pieces; "
                        "a wider --blend or --hybrid-finetune STEPS can join them"]
    # The hybrid stands on y = 0 like every asset of the set.
    assert glb_verts(tmp_path / recs["mix"]["files"]["glb"])[:, 1].min() == pytest.approx(0.0, abs=1e-6)


def test_a_hybrid_in_one_piece_gets_no_warning(tmp_path: Path) -> None:
    # One closed surface (the halves met) plus a speck of debris, which cleanup drops: one piece.
    whole = mesh_of(box([0.8, 0.7, 0.6], [0.0, -0.15, 0.0]), box([0.01, 0.01, 0.01], [0.0, 0.6, 0.0]))
    recs, lines = export_with_hybrid(tmp_path, MeshSet({"table": mesh_of(TABLE), "bench": mesh_of(BENCH)}, whole))
    assert recs["mix"]["components"] == 1 and recs["mix"]["cleanup"]["components"]["before"] == 2
    assert not [ln for ln in lines if "warning" in ln]
