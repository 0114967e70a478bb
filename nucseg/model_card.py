"""Model cards: a short Markdown description written next to published weights."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

LICENCE_CAVEAT = (
    "The weights were trained on MoNuSeg 2018 (Kumar et al. 2017, 2019), which is licensed "
    "CC BY-NC-SA 4.0. Treat the weights as derived from it: non-commercial use, with attribution, "
    "shared alike. They are meant for research on H&E images at 40x."
)


def _rows(values: Mapping[str, Any]) -> list[str]:
    def show(v: Any) -> str:
        return f"{v:.4f}" if isinstance(v, float) else str(v)

    return ["| " + " | ".join(map(str, values)) + " |", "|" + "---|" * len(values),
            "| " + " | ".join(show(v) for v in values.values()) + " |"]  # fmt: skip


def model_card(
    title: str,
    facts: Mapping[str, Any],
    per_organ: Mapping[str, float] | None = None,
    postprocess: Mapping[str, Any] | None = None,
    reproduce: str | None = None,
) -> str:
    """Compose a model card.

    Args:
        title: heading, e.g. the weights file name.
        facts: ordered key -> value pairs (data, profile, training time, scores, ...), each
            measured by the run that produced the weights.
        per_organ: mean test AJI per organ.
        postprocess: the post-processing settings stored with the weights.
        reproduce: the command that reproduces the weights.

    Returns:
        Markdown text.
    """
    lines = [f"# {title}", "", "| | |", "|---|---|"]
    lines += [f"| {key} | {value} |" for key, value in facts.items()]
    if per_organ:
        lines += ["", "Mean test AJI per organ:", "", *_rows(per_organ)]
    if postprocess:
        lines += ["", "Post-processing (tuned on validation images only):", "", *_rows(postprocess)]
    if reproduce:
        lines += ["", "Reproduce:", "", "```bash", reproduce, "```"]
    lines += ["", "## Licence of the training data", "", LICENCE_CAVEAT, ""]
    return "\n".join(lines)


def write_model_card(path: str | Path, text: str) -> Path:
    """Write a model card (Markdown) and return its path."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    return out
