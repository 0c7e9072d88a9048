"""Plots, as PNG and PDF (matplotlib, Agg backend).

    python -m analysis.plots table sweeps/pe.yaml          # results/pe/plots/{bars,curves}.{png,pdf}
    python -m analysis.plots table results/pe --recipe quick --set train.epochs=1
    python -m analysis.plots scaling --sizes 112,160,224   # results/plots/scaling.{png,pdf,csv}: MSA vs EMSA
    python -m analysis.plots attention --run results/pe/pa-s0-83da6d5ced --image cat.jpg
    python -m analysis.plots attention                     # random-weight ResT-Lite, bundled sample photo

table: per metric of the sweep's table, our mean ± std as bars with seeds as dots and the paper's value as a
marker; validation top-1 against epoch for every cell. scaling: inference throughput and peak memory of
MSA vs EMSA against input resolution (rest.benchmark's models and timing; see analysis.scaling for how
memory is measured). attention: stage 4's last-block attention maps (see analysis.attention).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ablations.cli import OUTPUT_FLAGS
from ablations.experiment import add_selection_flags, selection_from_args
from analysis.source import InputError, cli, load_layout, note, warn


def sizes(text: str) -> list[int]:
    try:
        values = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected sizes like 64,128,224") from None
    if not values or min(values) < 32:
        raise argparse.ArgumentTypeError(f"{text!r}: ResT needs inputs of at least 32 px")
    return values


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m analysis.plots", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("table", help="bars and training curves of one sweep")
    t.add_argument("target", type=Path, help="a sweep file or a sweep's results folder")
    t.add_argument("--sweep", type=Path, help="with a results folder: the sweep file")
    add_selection_flags(t)
    t.add_argument(*OUTPUT_FLAGS, type=Path, help="output folder (default: <results>/<sweep>/plots)")

    s = sub.add_parser("scaling", help="MSA vs EMSA throughput and peak memory against resolution")
    s.add_argument("--sizes", type=sizes, default=[112, 160, 224], help="input resolutions (default 112,160,224)")
    s.add_argument("--batch-size", "-b", type=int, default=8)
    s.add_argument("--warmup", type=int, default=1)
    s.add_argument("--iters", type=int, default=3)
    s.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    s.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    s.add_argument(*OUTPUT_FLAGS, type=Path, default=Path("results/plots"), help="output folder")

    a = sub.add_parser("attention", help="stage-4 last-block attention maps for one image")
    a.add_argument("--run", type=Path, help="a run folder with checkpoint.pt (default: random weights)")
    a.add_argument("--model", default="rest_lite", help="with random weights: which size (default rest_lite)")
    a.add_argument("--image", type=Path, help="an image file (default: scikit-learn's bundled flower photo)")
    a.add_argument("--img-size", type=int, help="input size (default: the run's training size, else 224)")
    a.add_argument(*OUTPUT_FLAGS, type=Path, default=Path("results/plots"), help="output folder")
    return p


def plot_table(args) -> list[Path]:
    from analysis.collect import collect
    from analysis.figures import table_figures

    layout = load_layout(args.target, args.sweep, args.results_root, selection=selection_from_args(args))
    if not layout.results_dir.is_dir():
        raise InputError(f"{layout.results_dir}: no such folder; the sweep {layout.source} has no results yet.")
    df, problems = collect(layout.results_dir, run_dirs=layout.run_dirs)
    warn(problems)
    note(layout)
    return table_figures(df, layout, args.output or layout.results_dir / "plots")


def plot_scaling(args) -> list[Path]:
    import torch

    from analysis.figures import save
    from analysis.scaling import figure, measure

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError("--device cuda: no CUDA device is available here; use --device cpu.")
    if args.batch_size < 1 or args.iters < 1 or args.warmup < 0:
        raise InputError("--batch-size and --iters must be at least 1, --warmup at least 0.")
    df = measure(args.sizes, args.batch_size, args.warmup, args.iters, device, args.threads)
    args.output.mkdir(parents=True, exist_ok=True)
    df.to_csv(args.output / "scaling.csv", index=False)
    print(df.drop(columns="memory_method").to_string(index=False))
    return [*save(figure(df), args.output / "scaling"), args.output / "scaling.csv"]


def plot_attention(args) -> list[Path]:
    from analysis import attention
    from analysis.figures import save

    if args.run is not None:
        if not args.run.is_dir():
            raise InputError(f"{args.run}: no such run folder.")
        model, trained_size, title = attention.model_from_run(args.run)
        name = f"attention-{args.run.name}"
    else:
        import rest

        if args.model not in rest.VARIANTS:
            raise InputError(f"--model {args.model}: unknown; choose one of {', '.join(rest.VARIANTS)}.")
        model, title = attention.random_model(args.model)
        trained_size, name = 224, f"attention-{args.model}-random"
    size = args.img_size or trained_size
    if size < 32:
        raise InputError(f"--img-size {size}: ResT needs inputs of at least 32 px.")
    image = attention.load_image(args.image, size)
    probs, grid = attention.last_block_attention(model, attention.to_input(image, model))
    source = args.image.name if args.image else "sample photo (scikit-learn flower.jpg)"
    return save(attention.figure(image, probs, grid, f"{title}; image {source}, {size} px"), args.output / name)


@cli
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    paths = {"table": plot_table, "scaling": plot_scaling, "attention": plot_attention}[args.command](args)
    print("wrote " + ", ".join(map(str, paths)), file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
