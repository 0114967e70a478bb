"""Synthetic image–mask pairs on disk: random masks, turned into H&E by the CycleGAN generator.

``nucseg synth --n N --out DIR [--seed S] [--size PX] [--organ NAME] [--weights PATH]`` writes
``DIR/images/<id>.png`` (8-bit RGB) and ``DIR/labels/<id>.png`` (16-bit instance maps,
0 = background). The folder is in the split-folder layout ``nucseg.data.monuseg`` reads, so
``TrainConfig(extra_pairs_dir=DIR)`` adds the pairs to a U-Net's training. Pair ``i`` depends
only on ``(seed, i)``, the organ, the size and the weights: the same seed gives the same pairs.

The generator checkpoint carries the per-organ mask statistics of its training images
(``CycleGANMethod.meta``), so synthesis needs no data. Every check (N, size, organ, device,
output folder, weights) runs before the first pair is made.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from nucseg import checkpoint as ckpt
from nucseg.data.images import write_image, write_label_map
from nucseg.errors import NucsegError
from nucseg.outputs import check_writable_folder
from nucseg.runtime import resolve_device
from nucseg.synth.cyclegan import mask_image
from nucseg.synth.masks import MaskStatistics, SynthError, random_mask
from nucseg.tiling import predict_tiled

#: Generator weights shipped with the package, once a monuseg-cpu CycleGAN has been committed.
DEFAULT_GENERATOR_WEIGHTS = (
    Path(__file__).resolve().parents[1] / "weights" / "cyclegan_generator_monuseg_cpu.pt"
)
GENERATOR = "G_mask2he"


@dataclass(frozen=True)
class Synthesizer:
    """A loaded mask-to-H&E generator and the mask statistics stored with it."""

    generator: Any
    statistics: dict[str, MaskStatistics]
    boundary_width: int
    device: Any
    weights: Path

    def organs(self) -> list[str]:
        """Organs with statistics ("all" pools them)."""
        return sorted(self.statistics)

    def image(self, instances: np.ndarray) -> np.ndarray:
        """The synthetic H&E of an instance map: uint8 (H, W, 3)."""
        encoded = mask_image(instances, self.boundary_width)
        side = max(encoded.shape[:2])
        multiple = getattr(self.generator, "multiple", 4)
        tile = -(-side // multiple) * multiple  # one tile: instance norm sees the whole image
        out = predict_tiled(
            self.generator, encoded, tile=tile, overlap=0, device=self.device,
            output="identity", value_range="symmetric", progress=False,
        )  # fmt: skip
        return ((np.clip(out, -1.0, 1.0) + 1.0) * 127.5).round().astype(np.uint8).transpose(1, 2, 0)

    def pair(self, organ: str, size: int, seed: int, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Pair ``index`` of ``seed``: (image uint8 (size, size, 3), instances int32)."""
        rng = np.random.default_rng((seed, index))
        instances = random_mask(self.statistics_for(organ), size, rng)
        return self.image(instances), instances

    def statistics_for(self, organ: str) -> MaskStatistics:
        """The mask statistics of an organ; refuses an unknown one, naming the known ones."""
        if organ not in self.statistics:
            raise SynthError(f"unknown organ {organ!r}; the weights know {self.organs()}")
        return self.statistics[organ]


def load_synthesizer(weights: str | Path | None = None, device: str = "auto") -> Synthesizer:
    """Load the generator and its mask statistics.

    Args:
        weights: A CycleGAN checkpoint or exported generator; None = the packaged weights.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ...

    Raises:
        SynthError: No weights there, or weights without mask statistics.
        NucsegError: An unknown or missing device, or an unreadable checkpoint.

    """
    path = Path(weights) if weights is not None else DEFAULT_GENERATOR_WEIGHTS
    if not path.is_file():
        raise SynthError(
            f"{path}: no generator weights; train them with `nucseg train-cyclegan --profile "
            "monuseg-cpu` and pass --weights OUT/last.pt"
        )
    torch_device = resolve_device(device)
    generator, state = ckpt.load_model(path, torch_device, network=GENERATOR)
    meta = state.get("meta") or {}
    stored = meta.get("mask_statistics")
    if not stored:
        raise SynthError(f"{path}: the weights carry no mask statistics (meta.mask_statistics)")
    statistics = {organ: MaskStatistics.from_dict(d) for organ, d in stored.items()}
    boundary = int((meta.get("config") or {}).get("boundary_width", 2))
    return Synthesizer(generator, statistics, boundary, torch_device, path)


def synthesize_pairs(
    n: int,
    out: str | Path,
    seed: int = 0,
    size: int = 256,
    organ: str = "all",
    weights: str | Path | None = None,
    device: str = "auto",
    overwrite: bool = False,
    synthesizer: Synthesizer | None = None,
) -> list[str]:
    """Write ``n`` synthetic pairs into ``out/images`` and ``out/labels``; returns their ids.

    Raises:
        SynthError: ``n`` or ``size`` out of range, an unknown organ, an output folder that
            is not writable or already holds pairs (unless ``overwrite``), missing weights.

    """
    if n < 1:
        raise SynthError(f"--n must be >= 1, got {n}")
    if size < 16:
        raise SynthError(f"--size must be >= 16 pixels, got {size}")
    folder = Path(out)
    check_writable_folder(folder)
    held = [p for sub in ("images", "labels") for p in sorted((folder / sub).glob("*.png"))]
    if held and not overwrite:
        raise SynthError(
            f"{folder}: already holds {len(held)} pair files (e.g. {held[0].name}); choose "
            "another --out or pass --overwrite"
        )
    synth = synthesizer or load_synthesizer(weights, device)
    synth.statistics_for(organ)  # an unknown organ fails before any work
    ids = []
    for index in tqdm(range(n), desc="synthesize", unit="pair", disable=n < 5):
        image, instances = synth.pair(organ, size, seed, index)
        pair_id = f"synth-{organ}-s{seed}-{index:05d}"
        write_image(folder / "images" / f"{pair_id}.png", image)
        write_label_map(folder / "labels" / f"{pair_id}.png", instances)
        ids.append(pair_id)
    return ids


def main(argv: Sequence[str] | None = None) -> int:
    """``nucseg synth --n N --out DIR [--seed S] [--size PX] [--organ NAME] [--weights PATH]``."""
    parser = argparse.ArgumentParser(prog="nucseg synth", description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, required=True, help="number of pairs")
    parser.add_argument("--out", required=True, help="output folder (images/, labels/)")
    parser.add_argument("--seed", type=int, default=0, help="same seed, same pairs")
    parser.add_argument("--size", type=int, default=256, help="side of each pair in pixels")
    parser.add_argument("--organ", default="all", help="organ whose statistics the masks follow")
    parser.add_argument("--weights", help="generator checkpoint (default: packaged)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    parser.add_argument("--overwrite", action="store_true", help="replace pairs already in OUT")
    args = parser.parse_args(argv)
    try:
        ids = synthesize_pairs(args.n, args.out, args.seed, args.size, args.organ, args.weights,
                               args.device, args.overwrite)  # fmt: skip
    except NucsegError as err:
        print(f"nucseg synth: error: {err}", file=sys.stderr)
        return 2
    print(
        f"{len(ids)} pairs written to {Path(args.out) / 'images'} and {Path(args.out) / 'labels'}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
