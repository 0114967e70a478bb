"""Tests of nucseg.data.organs: organ of every MoNuSeg id, organs.csv, validation splits."""

import pytest

from nucseg.data.organs import TSS_ORGANS, organ_of, read_organs_csv, split_by_organ
from nucseg.errors import LayoutError

# image_id, split, organ of all 44 MoNuSeg 2018 images (facts from the dataset's organs.csv)
MONUSEG_ORGANS = """
TCGA-18-5592-01Z-00-DX1 train liver;TCGA-21-5784-01Z-00-DX1 train liver
TCGA-21-5786-01Z-00-DX1 train liver;TCGA-2Z-A9J9-01A-01-TS1 test kidney
TCGA-38-6178-01Z-00-DX1 train liver;TCGA-44-2665-01B-06-BS6 test lung
TCGA-49-4488-01Z-00-DX1 train liver;TCGA-50-5931-01Z-00-DX1 train liver
TCGA-69-7764-01A-01-TS1 test lung;TCGA-A6-6782-01A-01-BS1 test colon
TCGA-A7-A13E-01Z-00-DX1 train breast;TCGA-A7-A13F-01Z-00-DX1 train breast
TCGA-AC-A2FO-01A-01-TS1 test breast;TCGA-AO-A0J2-01A-01-BSA test breast
TCGA-AR-A1AK-01Z-00-DX1 train breast;TCGA-AR-A1AS-01Z-00-DX1 train breast
TCGA-AY-A8YK-01A-01-TS1 train colon;TCGA-B0-5698-01Z-00-DX1 train kidney
TCGA-B0-5710-01Z-00-DX1 train kidney;TCGA-B0-5711-01Z-00-DX1 train kidney
TCGA-CH-5767-01Z-00-DX1 train prostate;TCGA-CU-A0YN-01A-02-BSB test bladder
TCGA-DK-A2I6-01A-01-TS1 train bladder;TCGA-E2-A14V-01Z-00-DX1 train breast
TCGA-E2-A1B5-01Z-00-DX1 train breast;TCGA-EJ-A46H-01A-03-TSC test prostate
TCGA-FG-A4MU-01B-01-TS1 test brain;TCGA-G2-A2EK-01A-02-TSB train bladder
TCGA-G9-6336-01Z-00-DX1 train prostate;TCGA-G9-6348-01Z-00-DX1 train prostate
TCGA-G9-6356-01Z-00-DX1 train prostate;TCGA-G9-6362-01Z-00-DX1 train prostate
TCGA-G9-6363-01Z-00-DX1 train prostate;TCGA-GL-6846-01A-01-BS1 test kidney
TCGA-HC-7209-01A-01-TS1 test prostate;TCGA-HE-7128-01Z-00-DX1 train kidney
TCGA-HE-7129-01Z-00-DX1 train kidney;TCGA-HE-7130-01Z-00-DX1 train kidney
TCGA-HT-8564-01Z-00-DX1 test brain;TCGA-IZ-8196-01A-01-BS1 test kidney
TCGA-KB-A93J-01A-01-TS1 train stomach;TCGA-NH-A8F7-01A-01-TS1 train colon
TCGA-RD-A8N9-01A-01-TS1 train stomach;TCGA-ZF-A9R5-01A-01-TS1 test bladder
"""
ORGAN_ROWS = [tuple(e.split()) for e in MONUSEG_ORGANS.replace("\n", ";").split(";") if e]


def test_every_monuseg_id_has_its_organ():
    assert len(ORGAN_ROWS) == 44
    for image_id, _, organ in ORGAN_ROWS:
        assert organ_of(image_id) == organ, image_id
    assert set(TSS_ORGANS.values()) == {o for _, _, o in ORGAN_ROWS}


def test_organ_counts_per_split():
    def counts(split):
        out = {}
        for _, s, organ in ORGAN_ROWS:
            if s == split:
                out[organ] = out.get(organ, 0) + 1
        return out

    assert counts("train") == {
        "breast": 6, "kidney": 6, "liver": 6, "prostate": 6, "bladder": 2, "colon": 2, "stomach": 2
    }  # fmt: skip
    assert counts("test") == {
        "kidney": 3, "breast": 2, "lung": 2, "prostate": 2, "bladder": 2, "brain": 2, "colon": 1
    }  # fmt: skip


def test_organ_of_unknown_and_table(tmp_path):
    assert organ_of("TCGA-ZZ-0000") == "unknown"
    assert organ_of("DEMO-demo-a-001") == "unknown"
    assert organ_of("") == "unknown"
    assert organ_of("tcga-a7-x") == "breast"
    assert organ_of("TCGA-A7-x", {"TCGA-A7-x": "other"}) == "other"
    csv = tmp_path / "organs.csv"
    csv.write_text("image_id,split,organ\nA,train,x\nB,test,y\n")
    assert read_organs_csv(csv) == {"A": "x", "B": "y"}
    csv.write_text("name,tissue\nA,x\n")
    with pytest.raises(LayoutError, match="image_id"):
        read_organs_csv(csv)


def test_split_by_organ():
    ids = [r[0] for r in ORGAN_ROWS if r[1] == "train"]
    organs = [organ_of(i) for i in ids]
    train, val = split_by_organ(ids, organs, 0.2, seed=0)
    assert sorted(train + val) == sorted(ids) and not set(train) & set(val)
    for organ in set(organs):  # every organ (all have >= 2 images) on both sides
        assert any(organ_of(i) == organ for i in val) and any(organ_of(i) == organ for i in train)
    assert len(val) == 3 * 1 + 4 * 1  # round(6 * 0.2) = 1, round(2 * 0.2) = 0 -> 1
    assert split_by_organ(ids, organs, 0.2, seed=0) == (train, val)
    rev = split_by_organ(ids[::-1], organs[::-1], 0.2, seed=0)
    assert rev == (train, val)  # independent of input order
    seeds = {tuple(split_by_organ(ids, organs, 0.2, seed=s)[1]) for s in range(6)}
    assert len(seeds) > 1
    assert split_by_organ(ids, organs, 0.0, seed=0) == (sorted(ids), [])
    train, val = split_by_organ(["a", "b", "c"], ["x", "x", "y"], 0.5, seed=0)
    assert len(val) == 1 and "c" in train  # single-image organ stays in training
    _, val = split_by_organ(ids, organs, 0.5, seed=1)
    assert len(val) == 4 * 3 + 3 * 1  # halves round up, but each organ keeps a train image
    for bad in [(ids, organs[:-1], 0.2), (["a", "a"], ["x", "x"], 0.2), (ids, organs, 1.0)]:
        with pytest.raises(ValueError):
            split_by_organ(*bad, seed=0)
