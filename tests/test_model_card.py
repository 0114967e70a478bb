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
    assert "| lung | brain |" in text and "0.6123" in text
    assert "| min_size | fg_threshold |" in text
    assert LICENCE_CAVEAT in text
    path = write_model_card(tmp_path / "w" / "card.md", text)
    assert path.read_text() == text
