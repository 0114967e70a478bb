"""Prediction for every method: image in, instance map out, and the file-level `predict` path.

Methods are looked up by name in `METHODS`. Each entry builds a predictor, a callable that takes
an RGB uint8 image and returns an int32 instance map. Learned methods join the registry as their
chapters land:

- ``classical``: hematoxylin thresholding and a distance watershed (`nucseg.classical`);
- ``pix2pix``: the generator of the conditional GAN (`nucseg.pix2pix`), a U-Net with the same
  3-class output, predicted and post-processed exactly as ``unet``, weights
  `DEFAULT_PIX2PIX_WEIGHTS`;
- ``unet``: a trained U-Net run tile by tile (`nucseg.tiling`), then the marker-controlled
  watershed of `nucseg.postprocess` with the settings tuned on validation images and stored in
  the checkpoint. Weights default to `DEFAULT_UNET_WEIGHTS`, shipped inside the package.

torch is imported only when a learned method is built, so the classical path stays light.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from tqdm.auto import tqdm

from nucseg.classical import ClassicalParams, segment_classical
from nucseg.data.annotations import write_instances_xml
from nucseg.data.images import (
    IMAGE_SUFFIXES,
    read_image,
    read_label_map,
    write_image,
    write_label_map,
)
from nucseg.errors import ImageReadError, NucsegError, ShapeMismatchError
from nucseg.nuclei_table import write_nuclei_csv
from nucseg.outputs import claim_outputs, plan_outputs
from nucseg.overlay import overlay_contours
from nucseg.postprocess import PostprocessParams, instances_from_three_class

if TYPE_CHECKING:
    import torch

Predictor = Callable[[np.ndarray], np.ndarray]

#: Trained U-Net weights shipped with the package (written by ``nucseg train``, then committed).
DEFAULT_UNET_WEIGHTS = Path(__file__).resolve().parent / "weights" / "unet_monuseg_cpu.pt"
#: Trained pix2pix generator shipped with the package (``nucseg train-pix2pix``, then committed).
DEFAULT_PIX2PIX_WEIGHTS = DEFAULT_UNET_WEIGHTS.with_name("pix2pix_monuseg_cpu.pt")
#: Default tiling of the U-Net predictor: a 1000x1000 MoNuSeg image is one padded 1024 tile
#: (the cheapest on CPU: 256-pixel tiles cost 2.4x as much); larger images take tiles of at
#: most 1024 pixels overlapping by half the network's receptive field
#: (`nucseg.tiling.default_overlap`) unless an overlap is given.
UNET_TILE = 1024


def _classical(**options: object) -> Predictor:
    try:
        params = ClassicalParams(**options) if options else ClassicalParams()
    except TypeError as err:
        raise NucsegError(f"method 'classical': bad option ({err})") from None
    return lambda image: segment_classical(image, params)


class UNetPredictor:
    """A loaded U-Net and its post-processing: ``predictor(image) -> int32 instance map``.

    Attributes:
        model: the network, in eval mode on ``device``.
        checkpoint: the loaded checkpoint dict (``model``, ``state_dict``, ``postprocess``,
            ``meta``).
        params: post-processing settings used by ``__call__``.
        weights: the weights file.
        device: where the network runs.
        tile: largest tile side (see `nucseg.tiling.axis_tiles`).
        overlap: minimal tile overlap in pixels.
        tta: test-time augmentation (see `nucseg.tiling.tta_transforms`).
        batch_size: tiles per forward pass.
    """

    #: Weights used when none are given, and the command that makes them.
    default_weights = DEFAULT_UNET_WEIGHTS
    train_command = "nucseg train --profile monuseg-cpu"

    def __init__(
        self,
        weights: str | Path | None = None,
        tta: bool | str = False,
        device: str = "auto",
        tile: int = UNET_TILE,
        overlap: int | None = None,
        batch_size: int = 4,
        postprocess: PostprocessParams | Mapping[str, Any] | None = None,
    ) -> None:
        """Load the weights.

        Args:
            weights: checkpoint or exported weights; None = `DEFAULT_UNET_WEIGHTS`.
            tta: test-time augmentation: False, True (8 dihedral transforms) or ``"flips"``.
            device: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"``, ...
            tile: largest tile side, a multiple of ``2**depth`` of the network.
            overlap: minimal overlap of neighbouring tiles, in pixels; None = half the
                network's receptive field.
            batch_size: tiles per forward pass.
            postprocess: settings overriding the checkpoint's tuned ones (whole
                `PostprocessParams`, or a mapping of fields to change).

        Raises:
            NucsegError: no weights at the default location (with how to train them).
            CheckpointError: unreadable weights file, or weights that do not fit the network.
        """
        from nucseg.checkpoint import load_model, postprocess_from
        from nucseg.runtime import resolve_device

        path = Path(weights) if weights is not None else self.default_weights
        if weights is None and not path.is_file():
            raise NucsegError(
                f"no trained weights at {path}: train and export them with "
                f"`{self.train_command}`, or pass your own with `--weights PATH`"
            )
        self.weights, self.tta, self.tile, self.overlap = path, tta, tile, overlap
        self.batch_size = batch_size
        self.device: torch.device = resolve_device(device)
        self.model, self.checkpoint = load_model(path, device=self.device)
        try:
            stored = postprocess_from(self.checkpoint) or PostprocessParams()
        except TypeError as err:
            raise NucsegError(f"{path}: bad post-processing settings ({err})") from None
        if isinstance(postprocess, PostprocessParams):
            stored = postprocess
        elif postprocess:
            stored = dataclasses.replace(stored, **dict(postprocess))
        self.params: PostprocessParams = stored

    def probabilities(self, image: np.ndarray) -> np.ndarray:
        """(3, H, W) float32 [background, inside, boundary] probabilities of an RGB image.

        A U-Net with the auxiliary distance head adds its predicted distance map: (4, H, W).
        """
        from nucseg.tiling import predict_probabilities

        return predict_probabilities(
            self.model,
            image,
            tile=self.tile,
            overlap=self.overlap,
            device=self.device,
            tta=self.tta,
            batch_size=self.batch_size,
        )

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """Segment an (H, W, 3) uint8 RGB image into an int32 (H, W) instance map."""
        return instances_from_three_class(self.probabilities(image), self.params)


class Pix2PixPredictor(UNetPredictor):
    """The pix2pix generator (a U-Net, ``nucseg.pix2pix``), tiled and post-processed as the U-Net.

    Options as `UNetPredictor`; weights default to `DEFAULT_PIX2PIX_WEIGHTS`.
    """

    default_weights = DEFAULT_PIX2PIX_WEIGHTS
    train_command = "nucseg train-pix2pix --profile monuseg-cpu"


def _otsu(**options: object) -> Predictor:
    """The classical foreground kept as connected components, without the watershed."""
    return _classical(**{"split": False, **options})


METHODS: dict[str, Callable[..., Predictor]] = {
    "classical": _classical,
    "otsu": _otsu,
    "unet": UNetPredictor,
    "pix2pix": Pix2PixPredictor,
}


def get_predictor(method: str, **options: object) -> Predictor:
    """Build the predictor of a method by name.

    Args:
        method: a key of `METHODS`.
        **options: method-specific settings: ClassicalParams fields for ``classical``;
            ``weights``, ``tta``, ``device``, ``tile``, ``overlap``, ``batch_size``,
            ``postprocess`` for ``unet`` (see `UNetPredictor`).

    Returns:
        A callable image -> int32 instance map.

    Raises:
        NucsegError: the method is unknown, an option is invalid, or (``unet``) the default
            weights file is missing.
    """
    if method not in METHODS:
        raise NucsegError(f"unknown method {method!r}; choose one of {sorted(METHODS)}")
    try:
        inspect.signature(METHODS[method]).bind(**options)
    except TypeError as err:
        raise NucsegError(f"method {method!r}: bad options {sorted(options)} ({err})") from None
    return METHODS[method](**options)


def expand_image_paths(paths: Iterable[str | Path]) -> list[Path]:
    """Turn files and folders into a sorted list of image files.

    Folders contribute every image directly inside them. A named file that does not exist,
    or is not an image, is an error rather than being skipped.
    """
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            inside = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not inside:
                raise ImageReadError(f"{path}: folder holds no image ({', '.join(IMAGE_SUFFIXES)})")
            found.extend(inside)
        elif not path.exists():
            raise ImageReadError(f"{path}: no such file")
        elif path.suffix.lower() not in IMAGE_SUFFIXES:
            raise ImageReadError(f"{path}: not an image file ({', '.join(IMAGE_SUFFIXES)})")
        else:
            found.append(path)
    return found


@dataclass(frozen=True)
class PredictionFiles:
    """What `predict_files` wrote for one input image."""

    image: Path
    instances: Path
    overlay: Path | None
    n_nuclei: int
    xml: Path | None = None
    nuclei_csv: Path | None = None


def predict_files(
    paths: Sequence[str | Path],
    out_dir: str | Path,
    method: str = "classical",
    overlay: bool = False,
    predictor: Predictor | None = None,
    xml: bool = False,
    nuclei_csv: bool = False,
    **options: object,
) -> list[PredictionFiles]:
    """Segment image files and write `<stem>.tif` instance maps (and overlays, XML, CSV).

    Every output path is checked before any work starts (`nucseg.outputs.plan_outputs`):
    an input file, a file predict did not write, or one path claimed by two inputs is
    refused, naming the files. Every file is written atomically.

    Args:
        paths: image files or folders of images.
        out_dir: output folder, created if needed.
        method: method name, ignored when `predictor` is given.
        overlay: also write a contour overlay PNG per image (`<stem>_overlay.png`).
        predictor: an already built predictor, to reuse loaded weights.
        xml: also write the nuclei as ImageScope XML polygons (`<stem>.xml`).
        nuclei_csv: also write per-nucleus area and centroid (`<stem>_nuclei.csv`).
        **options: passed to `get_predictor`.

    Returns:
        One `PredictionFiles` per input image, in input order.

    Raises:
        NucsegError: Unreadable input, a bad method or option, or an unsafe output folder
            (`nucseg.outputs.OutputError`).

    """
    plan = plan_outputs(expand_image_paths(paths), out_dir, overlay, xml, nuclei_csv)
    predict = predictor or get_predictor(method, **options)
    claim_outputs(plan)
    written = []
    bar = tqdm(plan.images, desc=f"predict {method}", unit="image", disable=len(plan.images) < 3)
    for item in bar:
        image = read_image(item.image)
        instances = predict(image)
        if instances.shape != image.shape[:2]:
            raise ShapeMismatchError(
                f"{item.image}: method {method!r} predicted shape {instances.shape} for an "
                f"image of shape {image.shape[:2]}"
            )
        write_label_map(item.instances, instances)
        if item.overlay is not None:
            write_image(item.overlay, overlay_contours(image, instances))
        if item.xml is not None:
            write_instances_xml(item.xml, instances, item.image.stem)
        if item.nuclei_csv is not None:
            write_nuclei_csv(instances, item.nuclei_csv)
        n_nuclei = int(np.count_nonzero(np.unique(instances)))
        written.append(
            PredictionFiles(
                item.image, item.instances, item.overlay, n_nuclei, item.xml, item.nuclei_csv
            )
        )
    return written


def predict_samples(
    samples: Sequence,
    predictor: Predictor,
    out_dir: str | Path | None = None,
    desc: str = "predict",
) -> dict[str, np.ndarray]:
    """Predict instance maps for loaded samples, caching each as `<out_dir>/<image_id>.tif`.

    A cached map is reused instead of predicting again, so an analysis can read a method's saved
    predictions without rerunning it. Delete the folder to predict afresh.

    Args:
        samples: objects with `image_id` and `image` (e.g. `nucseg.data.monuseg.Sample`).
        predictor: image -> instance map.
        out_dir: cache folder; None predicts without caching.
        desc: progress-bar label.

    Returns:
        image id -> int32 instance map.
    """
    folder = Path(out_dir) if out_dir is not None else None
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
    predictions = {}
    for sample in tqdm(samples, desc=desc, unit="image"):
        cached = folder / f"{sample.image_id}.tif" if folder is not None else None
        if cached is not None and cached.exists():
            predictions[sample.image_id] = read_label_map(cached)
            continue
        predictions[sample.image_id] = predictor(sample.image)
        if cached is not None:
            write_label_map(cached, predictions[sample.image_id])
    return predictions
