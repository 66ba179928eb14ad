"""Prompt files: parsing, naming, negatives and every rejected form."""

from pathlib import Path

import pytest

from a3d_mesh.prompts import MAX_PROMPTS, PromptError, load_prompts, negative_prompts, parse_prompts, slugify, subject


def test_parse_names_comments_and_blank_lines() -> None:
    ps = parse_prompts("# animals\n\ndog: a dog animal\n  a cat animal  \n# end\n")
    assert ps.names == ["dog", "a_cat_animal"]
    assert ps.prompts == ["a dog animal", "a cat animal"]


def test_colon_inside_a_prompt_is_not_a_name() -> None:
    ps = parse_prompts("a cat, style: watercolour\n")
    assert ps.prompts == ["a cat, style: watercolour"]


def test_negatives_hold_the_other_subjects() -> None:
    ps = parse_prompts("dog: a dog\ncat: a cat\nfox: the fox\n", base_negative="blurry")
    assert ps.negatives[0] == "blurry, cat, fox"
    assert ps.negatives[2] == "blurry, dog, cat"
    assert negative_prompts(["a dog"]) == [""]  # one prompt: plain text-to-3D, no others to push from


def test_negating_the_others_can_be_switched_off(tmp_path: Path) -> None:
    ps = parse_prompts("dog: a dog\ncat: a cat\n", base_negative="blurry", negate_others=False)
    assert ps.negatives == ["blurry", "blurry"]
    f = tmp_path / "p.txt"
    f.write_text("a dog\na cat\n")
    assert load_prompts(f, negate_others=False).negatives == ["", ""]


def test_a_resumed_run_keeps_its_saved_negatives_rule(tmp_path: Path) -> None:
    """The toy preset switches the rule off, and --resume must read the run back the same way."""
    from a3d_mesh.config import load_config
    from a3d_mesh.train.pipeline import prepare_run_dir

    cfg = load_config("toy")
    assert cfg.guidance.negate_other_prompts is False
    ps = parse_prompts("chair: a red chair\ntable: a green table\n", negate_others=False)
    prepare_run_dir(tmp_path / "run", ps, cfg, resume=False)
    saved, saved_cfg = prepare_run_dir(tmp_path / "run", None, None, resume=True)
    assert saved.negatives == ["", ""] and saved_cfg.guidance.negate_other_prompts is False
    assert load_config("default").guidance.negate_other_prompts is True  # the method's rule stays the default


def test_subject_and_slug() -> None:
    assert subject("An owl") == "owl"
    assert slugify("A red car!") == "a_red_car"


def test_round_trip_through_to_text() -> None:
    ps = parse_prompts("dog: a dog\na cat\n")
    again = parse_prompts(ps.to_text())
    assert (again.names, again.prompts) == (ps.names, ps.prompts)


@pytest.mark.parametrize("text, message", [
    ("", "has no prompts"),
    ("# only a comment\n\n", "has no prompts"),
    ("dog: a dog\ndog: another dog\n", "duplicate asset name 'dog'"),
    ("a dog\na dog\n", "duplicate asset name 'a_dog'"),
    ("".join(f"p{i}: thing {i}\n" for i in range(MAX_PROMPTS + 1)), f"at most {MAX_PROMPTS}"),
])
def test_rejected_texts(text: str, message: str) -> None:
    with pytest.raises(PromptError, match=message):
        parse_prompts(text)


def test_missing_and_non_utf8_files(tmp_path: Path) -> None:
    with pytest.raises(PromptError, match="not found"):
        load_prompts(tmp_path / "nope.txt")
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"a dog\n\xff\xfe cat\n")
    with pytest.raises(PromptError, match="not UTF-8"):
        load_prompts(bad)
    with pytest.raises(PromptError, match="not a file"):
        load_prompts(tmp_path)


def test_index_by_name_or_number() -> None:
    ps = parse_prompts("dog: a dog\ncat: a cat\n")
    assert ps.index("cat") == 1 and ps.index("0") == 0
    with pytest.raises(PromptError, match="unknown asset 'cow'"):
        ps.index("cow")
