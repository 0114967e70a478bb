"""nucseg: GAN-based and boundary-aware nuclei segmentation on MoNuSeg, scored with AJI."""

from __future__ import annotations

__version__ = "0.1.0"
