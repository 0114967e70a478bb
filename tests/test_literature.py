import pandas as pd

from nucseg.literature import PUBLISHED, literature_table


def test_published_figures_are_sorted_sources_and_marked():
    challenge = [p for p in PUBLISHED if p.comparable]
    assert challenge[0].aji == 0.691 and len(challenge) == 15
    assert [p.aji for p in challenge] == sorted((p.aji for p in challenge), reverse=True)
    other = [p for p in PUBLISHED if not p.comparable]
    assert [p.aji for p in other] == [0.721] and "Kumar et al. 2017" in other[0].split
    assert all(p.source for p in PUBLISHED)


def test_our_methods_take_their_place_in_the_ranking():
    table = literature_table({"unet": 0.641, "pix2pix": 0.70})
    assert list(table.aji) == sorted(table.aji, reverse=True)
    ours = table[table.entry.str.startswith("nucseg")].set_index("entry")
    assert ours.loc["nucseg: pix2pix", "rank"] == 1  # above the winner
    assert ours.loc["nucseg: unet", "rank"] == 15  # below 0.646, above 0.633
    mahmood = table[~table.comparable].iloc[0]
    assert pd.isna(mahmood["rank"])
    assert table.loc[table.entry.str.startswith("Shuang"), "rank"].item() == 8  # ties share
