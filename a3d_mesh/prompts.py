"""Prompt files -> :class:`PromptSet` (asset names, prompts, negative prompts).

File format (UTF-8): one prompt per line; blank lines and lines starting with ``#`` are ignored;
``name: prompt`` names an asset (names are ``[a-z0-9_-]``, starting with a letter or digit),
otherwise the name is a slug of the prompt. Each prompt's negative prompt is the base negative
prompt plus the *subjects* of the other prompts (the prompt without a leading article), so that
object i is pushed away from looking like object j (method note, section 2); with
``negate_others=False`` (``guidance.negate_other_prompts: false``) it is the base negative alone.

Names that would overwrite the run's own files are refused: :data:`RESERVED_NAMES` (``set``:
``previews/set.png`` is the set overview), and two pairs of names whose transition previews
(:func:`transition_file`) would share a file.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from pathlib import Path

from a3d_mesh.errors import A3DMeshError

MAX_PROMPTS = 16
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
# "name: prompt" only when the part before the colon looks like a name, so "a cat: sitting" is a prompt.
_NAMED_RE = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9_-]{0,63})\s*:\s*(.+?)\s*$")
_ARTICLES = ("a ", "an ", "the ")
# Asset and hybrid names that are file names of the run itself: previews/set.png is the set overview.
RESERVED_NAMES = frozenset({"set"})


class PromptError(A3DMeshError, ValueError):
    """A prompt file that cannot be used; the message is one line for the user."""


@dataclass(frozen=True)
class PromptSet:
    """The N prompts of one run, in file order; object k is the simplex corner e_k."""

    names: list[str]
    prompts: list[str]
    negatives: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.prompts)

    def index(self, name_or_index: str) -> int:
        """Resolve an asset name or a 0-based index (as text) to an index."""
        if name_or_index in self.names:
            return self.names.index(name_or_index)
        if name_or_index.isdigit() and int(name_or_index) < len(self):
            return int(name_or_index)
        raise PromptError(f"unknown asset '{name_or_index}' (known: {', '.join(self.names)})")

    def to_text(self) -> str:
        """The set as a prompt file that parses back to the same names and prompts."""
        return "".join(f"{n}: {p}\n" for n, p in zip(self.names, self.prompts))


def transition_file(a: str, b: str) -> str:
    """File name of the preview sweeping from asset ``a`` to asset ``b``."""
    return f"transition_{a}_{b}.gif"


def slugify(text: str, max_len: int = 40) -> str:
    """Lower-case ASCII slug: 'A red car!' -> 'a_red_car'."""
    slug = re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")
    return (slug[:max_len].rstrip("_")) or "object"


def subject(prompt: str) -> str:
    """The prompt's subject: the prompt without a leading article ('a dog animal' -> 'dog animal')."""
    p = prompt.strip()
    for art in _ARTICLES:
        if p.lower().startswith(art):
            return p[len(art):].strip()
    return p


def negative_prompts(prompts: list[str], base_negative: str = "", negate_others: bool = True) -> list[str]:
    """Per-prompt negatives: the base negative plus (``negate_others``) every *other* prompt's subject."""
    out = []
    for i, _ in enumerate(prompts):
        parts = [base_negative.strip()] if base_negative.strip() else []
        if negate_others:
            parts += [subject(p) for j, p in enumerate(prompts) if j != i and subject(p) != subject(prompts[i])]
        out.append(", ".join(parts))
    return out


def parse_prompts(text: str, base_negative: str = "", source: str = "prompt file",
                  negate_others: bool = True) -> PromptSet:
    """Parse prompt-file text; raises :class:`PromptError` with a one-line message."""
    names: list[str] = []
    prompts: list[str] = []
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        m = _NAMED_RE.match(line)
        if m:
            name, prompt = m.group(1).lower(), m.group(2)
            if not _NAME_RE.match(name):
                raise PromptError(f"{source}:{lineno}: invalid asset name '{m.group(1)}'")
        else:
            name, prompt = slugify(line), line
        if name in names:
            raise PromptError(f"{source}:{lineno}: duplicate asset name '{name}' (name prompts with 'name: prompt')")
        if name in RESERVED_NAMES:
            raise PromptError(f"{source}:{lineno}: asset name '{name}' is reserved (previews/{name}.png is the set "
                              f"overview); name the prompt with 'other_name: prompt'")
        names.append(name)
        prompts.append(prompt)
    if not prompts:
        raise PromptError(f"{source} has no prompts (one prompt per line; '#' starts a comment)")
    if len(prompts) > MAX_PROMPTS:
        raise PromptError(f"{source} has {len(prompts)} prompts; at most {MAX_PROMPTS} are supported in one set")
    seen: dict[str, tuple[str, str]] = {}
    for a, b in itertools.combinations(names, 2):  # e.g. (a, b_c) and (a_b, c): both transition_a_b_c.gif
        f = transition_file(a, b)
        if f in seen:
            raise PromptError(f"{source}: asset names {'/'.join(seen[f])} and {a}/{b} would share the preview file "
                              f"{f}; rename one of them")
        seen[f] = (a, b)
    return PromptSet(names, prompts, negative_prompts(prompts, base_negative, negate_others))


def load_prompts(path: str | Path, base_negative: str = "", negate_others: bool = True) -> PromptSet:
    """Read and parse a prompt file; every failure is a :class:`PromptError`."""
    p = Path(path)
    if not p.exists():
        raise PromptError(f"prompt file not found: {p}")
    if not p.is_file():
        raise PromptError(f"prompt file is not a file: {p}")
    try:
        text = p.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise PromptError(f"{p} is not UTF-8 text (byte {e.start}: {e.reason})") from None
    except OSError as e:
        raise PromptError(f"cannot read {p}: {e.strerror}") from None
    return parse_prompts(text, base_negative, source=str(p), negate_others=negate_others)
