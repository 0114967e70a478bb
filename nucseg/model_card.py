"""Model cards: a short Markdown description written next to published weights.

A card lists the facts of the run that made the weights and a **log of every test scoring**
(date, commit, ground truth, scores, command), so that each time the test set was scored stays
on record. ``python -m nucseg.model_card rescore`` rebuilds a card after the test set was
scored again (e.g. against corrected ground truth): facts from the weights' own ``meta``, the
new test scores, and one more row in the log.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from nucseg.runtime import write_bytes_atomic

SCORINGS_HEADING = "## Test scorings"
SCORING_COLUMNS = ("date", "commit", "ground truth", "mean AJI", "AJI+ / PQ / Dice", "command")
TEST_AJI_FACT = "test AJI (14 images, mean per image)"
TEST_OTHER_FACT = "test AJI+ / PQ / Dice"
#: checkpoint meta keys that are run bookkeeping, not card facts
_NOT_FACTS = {"config", "total_steps", "world_size", "torch", "best", "exported_from", "method",
              "network", "plan"}  # fmt: skip

LICENCE_CAVEAT = (
    "The weights were trained on MoNuSeg 2018 (Kumar et al. 2017, 2019), which is licensed "
    "CC BY-NC-SA 4.0. Treat the weights as derived from it: non-commercial use, with attribution, "
    "shared alike. They are meant for research on H&E images at 40x."
)


def _rows(values: Mapping[str, Any]) -> list[str]:
    def show(v: Any) -> str:
        return f"{v:.3f}" if isinstance(v, float) else str(v)

    return ["| " + " | ".join(map(str, values)) + " |", "|" + "---|" * len(values),
            "| " + " | ".join(show(v) for v in values.values()) + " |"]  # fmt: skip


def model_card(
    title: str,
    facts: Mapping[str, Any],
    per_organ: Mapping[str, float] | None = None,
    postprocess: Mapping[str, Any] | None = None,
    reproduce: str | None = None,
    scorings: Sequence[Mapping[str, str]] = (),
) -> str:
    """Compose a model card.

    Args:
        title: heading, e.g. the weights file name.
        facts: ordered key -> value pairs (data, profile, training time, scores, ...), each
            measured by the run that produced the weights.
        per_organ: mean test AJI per organ.
        postprocess: the post-processing settings stored with the weights.
        reproduce: the command that reproduces the weights.
        scorings: every test scoring so far, as rows with :data:`SCORING_COLUMNS`.

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
    if scorings:
        lines += [
            "",
            SCORINGS_HEADING,
            "",
            "Every test scoring of the weights published under this name, oldest first, across "
            "retrainings (a row whose command says new weights starts a new model; earlier rows "
            "scored its predecessors):",
            "",
            "| " + " | ".join(SCORING_COLUMNS) + " |",
            "|" + "---|" * len(SCORING_COLUMNS),
        ]
        lines += ["| " + " | ".join(str(r.get(c, "")) for c in SCORING_COLUMNS) + " |"
                  for r in scorings]  # fmt: skip
    lines += ["", "## Licence of the training data", "", LICENCE_CAVEAT, ""]
    return "\n".join(lines)


def write_model_card(path: str | Path, text: str) -> Path:
    """Write a model card (Markdown) atomically and return its path."""
    return write_bytes_atomic(path, text.encode("utf-8"))


def git_commit(folder: str | Path | None = None) -> str:
    """Short commit hash of the repository holding ``folder`` (this package), or "unknown"."""
    import subprocess

    where = Path(folder) if folder else Path(__file__).resolve().parent
    done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=where,
                          capture_output=True, text=True, check=False)  # fmt: skip
    return done.stdout.strip() if done.returncode == 0 else "unknown"


def read_scorings(path: str | Path) -> list[dict[str, str]]:
    """The test-scoring log of an existing card (empty if the card or the log is missing)."""
    path = Path(path)
    if not path.is_file():
        return []
    lines = path.read_text().splitlines()
    if SCORINGS_HEADING not in lines:
        return []
    rows, table = [], False
    for line in lines[lines.index(SCORINGS_HEADING) + 1 :]:
        if line.startswith("## "):
            break
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| date"):
            table = True
        elif table and line.startswith("|") and not line.startswith("|---"):
            rows.append(dict(zip(SCORING_COLUMNS, cells, strict=False)))
    return rows


def rescore_card(
    weights: str | Path,
    scores_csv: str | Path,
    scoring: Mapping[str, str],
    card: str | Path | None = None,
    reproduce: str | None = None,
    tta: str | None = None,
) -> Path:
    """Rebuild a card after scoring the test set again, and log the scoring.

    Args:
        weights: the published weights; their ``meta`` holds the training facts and their
            post-processing is shown.
        scores_csv: per-image test scores (``aji``, ``aji_plus``, ``pq``, ``dice``, ``organ``),
            as ``nucseg evaluate`` or notebook 05 write them.
        scoring: ``date``, ``commit``, ``ground truth`` and ``command`` of this scoring.
        card: the card to rewrite (default: beside the weights, ``.md``); its log is kept.
        reproduce: the command that reproduces the weights (default: the card's own).
        tta: the test-time augmentation these scores were predicted with ("none", "flips",
            ...); it replaces the one recorded at export, so the headline says how it was made.

    Returns:
        The card's path.
    """
    import pandas as pd

    from nucseg.checkpoint import load_checkpoint

    weights = Path(weights)
    card = Path(card) if card else weights.with_suffix(".md")
    checkpoint = load_checkpoint(weights)
    scores = pd.read_csv(scores_csv)
    facts = {k: v for k, v in (checkpoint.get("meta") or {}).items() if k not in _NOT_FACTS}
    facts["ground truth"] = scoring["ground truth"]
    if tta is not None:
        facts["test-time augmentation"] = tta
    facts[TEST_AJI_FACT] = f"{scores.aji.mean():.3f}"
    other = f"{scores.aji_plus.mean():.3f} / {scores.pq.mean():.3f} / {scores.dice.mean():.3f}"
    facts[TEST_OTHER_FACT] = other
    row = {**scoring, "mean AJI": facts[TEST_AJI_FACT], "AJI+ / PQ / Dice": other}
    if reproduce is None and card.is_file():
        text = card.read_text().split("```bash\n", 1)
        reproduce = text[1].split("\n", 1)[0] if len(text) == 2 else None
    per_organ = scores.groupby("organ").aji.mean().round(3).to_dict()
    text = model_card(weights.name, facts, per_organ, checkpoint.get("postprocess"), reproduce,
                      [*read_scorings(card), row])  # fmt: skip
    return write_model_card(card, text)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m nucseg.model_card rescore WEIGHTS SCORES_CSV --commit C ...``."""
    parser = argparse.ArgumentParser(prog="python -m nucseg.model_card")
    sub = parser.add_subparsers(dest="command", required=True)
    re = sub.add_parser("rescore", help="rebuild a card after a new test scoring, and log it")
    re.add_argument("weights")
    re.add_argument("scores_csv")
    re.add_argument("--commit", required=True)
    re.add_argument("--date", required=True)
    re.add_argument("--ground-truth", required=True)
    re.add_argument("--how", required=True, help="the command that produced the scores")
    re.add_argument("--tta", help="test-time augmentation of the scored predictions (none, flips)")
    args = parser.parse_args(argv)
    scoring = {"date": args.date, "commit": args.commit, "ground truth": args.ground_truth,
               "command": args.how}  # fmt: skip
    print(rescore_card(args.weights, args.scores_csv, scoring, tta=args.tta))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
