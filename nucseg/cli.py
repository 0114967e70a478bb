"""Command line: `nucseg COMMAND`, also `python -m nucseg COMMAND`.

Commands: demo-data, evaluate, predict, tune, report, train, train-cyclegan, train-pix2pix, synth.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

from nucseg.errors import AnnotationWarning, NucsegError, ScoringWarning


def _demo_data(args: argparse.Namespace) -> int:
    from nucseg.data.demo import write_demo_dataset

    root = write_demo_dataset(
        args.out, n_train=args.n_train, n_test=args.n_test, size=args.size, seed=args.seed
    )
    print(f"demo data written to {root}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from nucseg.evaluate import evaluate_folders, format_table, prediction_files, write_table
    from nucseg.outputs import check_writable_folder

    prediction_files(args.pred_dir)  # a bad folder fails before anything is scored
    csv = Path(args.csv) if args.csv else Path(args.pred_dir) / "scores.csv"
    if csv.is_dir():
        raise NucsegError(f"{csv}: --csv is a folder; give a file name, e.g. {csv / 'scores.csv'}")
    check_writable_folder(csv.parent, "the --csv folder")
    table = evaluate_folders(args.gt_dir, args.pred_dir, split=args.split)
    print(format_table(table))
    write_table(table, csv)
    print(f"scores written to {csv}")
    return 0


def _predict(args: argparse.Namespace) -> int:
    from nucseg.infer import predict_files

    options = {
        name: getattr(args, name)
        for name in ("weights", "tta", "device", "tile", "overlap")
        if getattr(args, name) is not None
    }
    if args.device is not None:  # a missing CUDA fails before any image is read
        from nucseg.runtime import resolve_device

        resolve_device(args.device)
    written = predict_files(
        args.images, args.out, method=args.method, overlay=args.overlay, xml=args.xml,
        nuclei_csv=args.csv, **options,
    )  # fmt: skip
    for item in written:
        extra = [p for p in (item.overlay, item.xml, item.nuclei_csv) if p is not None]
        line = f"{item.image.name}: {item.n_nuclei} nuclei -> {item.instances}"
        print(", ".join([line, *map(str, extra)]))
    return 0


def _tune(args: argparse.Namespace) -> int:
    from nucseg.data.monuseg import load_split
    from nucseg.data.source import resolve_data_root
    from nucseg.infer import DEFAULT_UNET_WEIGHTS
    from nucseg.retune import check_output, check_unseen, describe, retune, write_retuned

    weights = args.weights or DEFAULT_UNET_WEIGHTS
    if args.out:  # refuse before the long part
        check_output(weights, args.out, args.overwrite)
    if args.data:
        samples, source = load_split(resolve_data_root(args.data), args.split), f"{args.data}"
        check_unseen(weights, samples, source)
    else:
        from nucseg.train import split_training_samples
        from nucseg.train_config import profile_config

        config = profile_config(args.profile)
        split = load_split(resolve_data_root(config.data_dir), "train")
        check_unseen(weights, split, f"all training images of profile {args.profile}")
        samples = split_training_samples(config, split)[1]
        source = f"the validation split of profile {args.profile}"
    tta = False if args.tta == "none" else args.tta
    result = retune(weights, samples, tta=tta, device=args.device, select=args.select,
                    min_area_ratio=args.min_area_ratio or None)  # fmt: skip
    print(describe(result, source))
    if args.out:
        written = write_retuned(weights, args.out, result, source, overwrite=args.overwrite)
        print(f"weights with the chosen post-processing written to {written}")
    return 0


def _report(args: argparse.Namespace) -> int:
    from nucseg.profiles import resolve_user_path
    from nucseg.report import run_report

    run_dir = run_report(
        profile=args.profile, data=resolve_user_path(args.data), out=args.out, only=args.only,
        render=args.render,
    )  # fmt: skip
    print(f"executed notebooks, figures and results in {run_dir}")
    print((run_dir / "results.md").read_text())
    return 0


#: Subcommands that are another module's command line, with its own flags.
DELEGATED = {
    "train": ("nucseg.train", "train the boundary U-Net: --profile P [--out DIR] [--resume] ..."),
    "train-cyclegan": (
        "nucseg.synth.cyclegan",
        "train the mask <-> H&E CycleGAN: --profile P [--out DIR] [--resume] ...",
    ),
    "train-pix2pix": (
        "nucseg.pix2pix",
        "train the pix2pix cGAN (H&E -> 3-class map): --profile P [--out DIR] [--resume] ...",
    ),
    "synth": ("nucseg.synth.pairs", "write synthetic pairs: --n N --out DIR [--seed S] ..."),
}


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser of the `nucseg` command."""
    parser = argparse.ArgumentParser(prog="nucseg", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo-data", help="write the embedded demo dataset in MoNuSeg layout")
    demo.add_argument("out", help="output folder")
    demo.add_argument("--n-train", type=int, default=12)
    demo.add_argument("--n-test", type=int, default=6)
    demo.add_argument("--size", type=int, default=256, help="tile side in pixels")
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(func=_demo_data)

    ev = sub.add_parser("evaluate", help="score predicted label maps against ground truth")
    ev.add_argument("gt_dir", help="MoNuSeg folder (any layout) or folder of label maps")
    ev.add_argument("pred_dir", help="folder of <image_id>.npy|.png|.tif label maps")
    ev.add_argument(
        "--split", choices=["train", "test"], help="score one split of a MoNuSeg folder"
    )
    ev.add_argument("--csv", help="where to write the per-image CSV (default PRED_DIR/scores.csv)")
    ev.set_defaults(func=_evaluate)

    pr = sub.add_parser("predict", help="segment H&E images into instance maps")
    pr.add_argument("images", nargs="+", help="image files or folders")
    pr.add_argument("--method", default="classical", help="segmentation method")
    pr.add_argument("--out", required=True, help="output folder")
    pr.add_argument("--overlay", action="store_true", help="also write contour overlay PNGs")
    pr.add_argument("--csv", action="store_true", help="also write per-nucleus area/centroid CSVs")
    pr.add_argument("--xml", action="store_true", help="also write ImageScope XML polygons")
    unet = pr.add_argument_group("learned methods (--method unet, pix2pix)")
    unet.add_argument("--weights", help="checkpoint or exported weights (default: packaged)")
    unet.add_argument(
        "--tta",
        nargs="?",
        const="dihedral",
        choices=["dihedral", "flips"],
        help="test-time augmentation: 8 dihedral transforms (default when given) or 4 flips",
    )
    unet.add_argument("--device", help="auto (default), cpu, cuda, cuda:1, ...")
    unet.add_argument("--tile", type=int, help="largest tile side in pixels (default 1024)")
    unet.add_argument(
        "--overlap", type=int, help="minimal tile overlap in pixels (default: half receptive field)"
    )
    pr.set_defaults(func=_predict)

    for name, text in DELEGATED.items():
        sub.add_parser(name, help=text[1], add_help=False)

    tu = sub.add_parser("tune", help="re-tune the post-processing of U-Net weights on annotations")
    tu.add_argument("--weights", help="U-Net weights (default: the committed ones)")
    tu.add_argument("--profile", default="monuseg-cpu", help="use this profile's validation split")
    tu.add_argument("--data", help="annotated images instead, in any layout nucseg reads")
    tu.add_argument("--split", default="train", help="with --data: train or test (default train)")
    tu.add_argument("--tta", default="flips", choices=["none", "flips", "dihedral"])
    tu.add_argument("--device", default="cpu", help="cpu (default), cuda, auto")
    tu.add_argument("--select", default="plateau", choices=["plateau", "peak"])
    tu.add_argument("--min-area-ratio", type=float, default=0.95,
                    help="least predicted / annotated nuclear area (0: no limit)")  # fmt: skip
    tu.add_argument("--out", help="write a copy of the weights with the chosen setting")
    tu.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    tu.set_defaults(func=_tune)

    rep = sub.add_parser("report", help="run the notebooks headless with papermill")
    rep.add_argument(
        "--profile", default="demo", help="a profile in params/ (demo, monuseg-cpu, ...)"
    )
    rep.add_argument(
        "--data", help="MoNuSeg folder, relative to the current folder (default: the profile's)"
    )
    rep.add_argument("--out", help="run folder (default runs/PROFILE)")
    rep.add_argument("--only", nargs="*", help="run only notebooks whose name starts with these")
    rep.add_argument(
        "--render",
        action="store_true",
        help="copy executed notebooks over notebooks/ and save figures to figures/",
    )
    rep.set_defaults(func=_report)
    return parser


def _one_line_warnings(command: str) -> Callable[..., None]:
    """A ``warnings.showwarning`` that prints nucseg's own warnings as one line each."""
    default = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001
        if issubclass(category, AnnotationWarning | ScoringWarning):
            print(f"nucseg {command}: warning: {message}", file=sys.stderr)
        else:
            default(message, category, filename, lineno, file, line)

    return show


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    with warnings.catch_warnings():
        warnings.showwarning = _one_line_warnings(argv[0] if argv else "")
        if argv[:1] and argv[0] in DELEGATED:  # e.g. `nucseg train` = `python -m nucseg.train`
            module = importlib.import_module(DELEGATED[argv[0]][0])
            return module.main(argv[1:])
        args = build_parser().parse_args(argv)
        try:
            return args.func(args)
        except NucsegError as err:
            print(f"nucseg {args.command}: error: {err}", file=sys.stderr)
            return 2


if __name__ == "__main__":
    raise SystemExit(main())
