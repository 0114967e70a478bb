"""nucseg.models registry (build_model itself is exercised in test_unet.py)."""

from torch import nn

from nucseg.models import MODELS, build_model


def test_every_registered_model_builds_with_defaults():
    for name in MODELS:
        assert isinstance(build_model(name), nn.Module)
