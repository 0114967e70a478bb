"""Published AJI figures, and where nucseg's methods stand among them.

Only the MoNuSeg 2018 challenge's own test-set ranking is comparable with nucseg's test scores:
the same 14 images, scored as the mean of per-image AJI. Figures measured on other splits (the
Kumar et al. 2017 test images that Mahmood et al. 2019 used) are listed with
``comparable=False``. Each entry carries its source; the numbers are the sources' own.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass

import pandas as pd

__all__ = ["PUBLISHED", "Published", "literature_table"]

_CHALLENGE = "Kumar et al. 2019, IEEE TMI 39(5), Table III (MoNuSeg 2018 test set)"


@dataclass(frozen=True)
class Published:
    """One published figure: who, how much, on what, and whether it compares with ours."""

    entry: str
    aji: float
    split: str
    source: str
    comparable: bool


#: The top fifteen of the challenge's final ranking, then the adversarial method of the study.
PUBLISHED: tuple[Published, ...] = (
    *(
        Published(team, aji, "MoNuSeg 2018 test (14 images)", _CHALLENGE, True)
        for team, aji in [
            ("CUHK & IMSIGHT (winner)", 0.691),
            ("BUPT.J.LI", 0.687),
            ("pku.hzq", 0.685),
            ("Yunzhi", 0.679),
            ("Navid Alemi", 0.678),
            ("xuhuaren", 0.664),
            ("aetherAI", 0.663),
            ("Shuang Yang", 0.662),
            ("Bio-totem & SYSUCC", 0.662),
            ("Amirreza Mahbod", 0.657),
            ("CMU-UIUC", 0.656),
            ("Graham & Vu", 0.653),
            ("Unblockabulls", 0.651),
            ("Tencent AI Lab", 0.646),
            ("DeepMD", 0.633),
        ]
    ),  # fmt: skip
    Published(
        "Mahmood et al. 2019 (cGAN + synthetic pairs)",
        0.721,
        "Kumar et al. 2017 test images",
        "Mahmood et al., IEEE TMI 39(11), 2020",
        False,
    ),  # fmt: skip
)


def literature_table(ours: Mapping[str, float]) -> pd.DataFrame:
    """Published figures and nucseg's test-set means in one table, best first.

    Args:
        ours: method -> mean per-image test AJI on the MoNuSeg 2018 test set.

    Returns:
        Columns ``entry``, ``aji``, ``split``, ``source``, ``comparable`` and ``rank``: the place
        an entry would take in the challenge ranking listed here (1 = above the winner), for
        comparable entries only (None for the others).

    """
    rows = [asdict(p) for p in PUBLISHED]
    rows += [
        {"entry": f"nucseg: {method}", "aji": float(aji), "split": "MoNuSeg 2018 test (14 images)",
         "source": "this report, chapter 05", "comparable": True}
        for method, aji in ours.items()
    ]  # fmt: skip
    table = pd.DataFrame(rows).sort_values("aji", ascending=False, kind="stable")
    challenge = [p.aji for p in PUBLISHED if p.comparable]

    def rank(row: pd.Series) -> int | None:
        if not row.comparable:
            return None
        return 1 + sum(aji > row.aji for aji in challenge)

    table["rank"] = table.apply(rank, axis=1).astype("Int64")
    return table.reset_index(drop=True)
