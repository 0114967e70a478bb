from nucseg.model_card import LICENCE_CAVEAT, model_card, write_model_card


def test_model_card_has_facts_organs_and_licence(tmp_path):
    text = model_card(
        "unet.pt",
        {"data": "MoNuSeg", "test AJI": "0.700"},
        per_organ={"lung": 0.61234, "brain": 0.7},
        postprocess={"min_size": 30, "fg_threshold": 0.5},
        reproduce="nucseg train --profile monuseg-cpu",
    )
    assert text.startswith("# unet.pt")
    assert "| test AJI | 0.700 |" in text
    assert "| lung | brain |" in text and "0.612" in text
    assert "| min_size | fg_threshold |" in text
    assert LICENCE_CAVEAT in text
    path = write_model_card(tmp_path / "w" / "card.md", text)
    assert path.read_text() == text


def test_rescore_rebuilds_the_card_and_keeps_the_log(tmp_path):
    import pandas as pd

    from nucseg.checkpoint import save_checkpoint, weights_checkpoint
    from nucseg.model_card import read_scorings, rescore_card
    from nucseg.models import build_model

    weights = tmp_path / "w.pt"
    meta = {"architecture": "U-Net", "training time": "1 min", "config": {"width": 2},
            "test-time augmentation": "flips"}  # fmt: skip
    net = build_model("unet", width=2, depth=1)
    save_checkpoint(
        weights_checkpoint({"net": net}, postprocess={"min_size": 3}, meta=meta), weights
    )
    scores = tmp_path / "unet.csv"
    pd.DataFrame(
        {
            "organ": ["lung", "lung", "brain"],
            "aji": [0.5, 0.7, 0.9],
            "aji_plus": [0.6] * 3,
            "pq": [0.5] * 3,
            "dice": [0.8] * 3,
        }
    ).to_csv(scores)
    first = {"date": "d1", "commit": "aaa", "ground truth": "old", "command": "c1"}
    card = rescore_card(weights, scores, first, reproduce="make it")
    second = {"date": "d2", "commit": "bbb", "ground truth": "exact", "command": "c2"}
    assert "| test-time augmentation | flips |" in card.read_text()
    rescore_card(weights, scores, second, tta="none")
    text = card.read_text()
    assert "| test-time augmentation | none |" in text
    assert "| architecture | U-Net |" in text and "config" not in text
    assert "| test AJI (14 images, mean per image) | 0.700 |" in text
    assert "| ground truth | exact |" in text and "make it" in text
    assert [r["commit"] for r in read_scorings(card)] == ["aaa", "bbb"]
    assert read_scorings(card)[1]["mean AJI"] == "0.700"
