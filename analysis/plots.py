"""Plots, as PNG and PDF (matplotlib, Agg backend).

    python -m analysis.plots table sweeps/pe.yaml          # results/pe/reports/quick_seeds-0/{bars,curves}.{png,pdf}
    python -m analysis.plots table results/pe --recipe quick --set train.epochs=1
    python -m analysis.plots scaling --sizes 112,160,224   # results/plots/scaling.{png,pdf,csv}: MSA vs EMSA
    python -m analysis.plots attention --run results/runs/rest-lite-s0-b2fc20285d   # its own validation image
    python -m analysis.plots attention --run results/runs/rest-lite-s0-b2fc20285d --image cat.jpg --stage 3

table: per metric of the sweep's table, our mean ± std as bars with seeds as dots and the paper's value as a
marker; validation top-1 against epoch for every cell. scaling: inference throughput and peak memory of
MSA vs EMSA against input resolution (benchmarks.model's models and timing; see analysis.scaling for how
memory is measured). attention: a trained run's attention maps, stage 4's last block by default, on an image
of its own validation data (see analysis.attention).
"""
from __future__ import annotations

import argparse
from pathlib import Path

from ablations.cli import OUTPUT_FLAGS, say
from ablations.experiment import add_selection_flags, selection_from_args
from analysis.source import InputError, cli, load_layout, note, output_dir, require_runs, warn


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
    t.add_argument(*OUTPUT_FLAGS, type=Path, help="output folder (default: the experiment's own folder, "
                                                               "<results>/<sweep>/reports/<recipe+overrides_seeds>/)")

    s = sub.add_parser("scaling", help="MSA vs EMSA throughput and peak memory against resolution")
    s.add_argument("--sizes", type=sizes, default=[112, 160, 224], help="input resolutions (default 112,160,224)")
    s.add_argument("--batch-size", "-b", type=int, default=8)
    s.add_argument("--warmup", type=int, default=1)
    s.add_argument("--iters", type=int, default=3, help="timed iterations per measurement")
    s.add_argument("--repeats", type=int, default=3, help="measurements per point, for the error bars (default 3)")
    s.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    s.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    s.add_argument(*OUTPUT_FLAGS, type=Path, default=Path("results/plots"), help="output folder")

    a = sub.add_parser("attention", help="a trained run's attention maps for one image")
    a.add_argument("--run", type=Path, help="a run folder with checkpoint.pt or best.pt (required, unless "
                                            "--random-weights)")
    a.add_argument("--random-weights", action="store_true", help="a random-weight model instead of a run (to look "
                   "at the code path only: not a result)")
    a.add_argument("--model", default="rest_lite", help="with --random-weights: which size (default rest_lite)")
    a.add_argument("--image", type=Path, help="an image file (default: an image of the run's validation data; "
                                              "with --random-weights, scikit-learn's bundled flower photo)")
    a.add_argument("--index", type=int, default=0, help="which validation image (default 0)")
    a.add_argument("--stage", type=int, choices=(1, 2, 3, 4), default=4, help="stage (default 4)")
    a.add_argument("--block", type=int, default=-1, help="block within the stage (default -1: the last)")
    a.add_argument("--img-size", type=int, help="input size (default: the run's training size)")
    a.add_argument(*OUTPUT_FLAGS, type=Path, default=Path("results/plots"), help="output folder")
    return p


def plot_table(args) -> list[Path]:
    from analysis.figures import table_figures
    from analysis.runs import collect

    layout = load_layout(args.target, args.sweep, args.results_root, selection=selection_from_args(args))
    require_runs(layout)
    df, problems = collect(layout.results_dir, run_dirs=layout.run_dirs, metas=layout.run_meta)
    warn(problems)
    note(layout)
    return table_figures(df, layout, args.output or output_dir(layout))


def plot_scaling(args) -> list[Path]:
    import torch

    from analysis.figures import save
    from analysis.scaling import figure, measure

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError("--device cuda: no CUDA device is available here; use --device cpu.")
    if args.batch_size < 1 or args.iters < 1 or args.warmup < 0 or args.repeats < 1:
        raise InputError("--batch-size, --iters and --repeats must be at least 1, --warmup at least 0.")
    df = measure(args.sizes, args.batch_size, args.warmup, args.iters, device, args.threads, progress=True,
                 repeats=args.repeats)
    args.output.mkdir(parents=True, exist_ok=True)
    df.to_csv(args.output / "scaling.csv", index=False)
    print(df.drop(columns="memory_method").to_string(index=False))
    return [*save(figure(df), args.output / "scaling"), args.output / "scaling.csv"]


def plot_attention(args) -> list[Path]:
    from analysis import attention
    from analysis.figures import save

    if args.run is None and not args.random_weights:
        raise InputError("attention: give --run RUN_DIR (a trained run's folder); maps of a random-weight model "
                         "show nothing about the method, and are drawn only with --random-weights.")
    if args.run is not None:
        if not args.run.is_dir():
            raise InputError(f"{args.run}: no such run folder.")
        model, trained_size, title = attention.model_from_run(args.run)
        name = f"attention-{args.run.name}-stage{args.stage}"
    else:
        import rest

        if args.model not in rest.VARIANTS:
            raise InputError(f"--model {args.model}: unknown; choose one of {', '.join(rest.VARIANTS)}.")
        model, title = attention.random_model(args.model)
        trained_size, name = 224, f"attention-{args.model}-random-stage{args.stage}"
    blocks = len(model.stages()[args.stage - 1])
    if not -blocks <= args.block < blocks:
        raise InputError(f"--block {args.block}: stage {args.stage} has {blocks} blocks (0 to {blocks - 1}, or -1).")
    block = args.block % blocks

    def draw(size: int):
        if size < 32:
            raise InputError(f"--img-size {size}: ResT needs inputs of at least 32 px.")
        if args.image is not None or args.run is None:
            image = attention.load_image(args.image, size)
            x = attention.to_input(image, model)
            source = args.image.name if args.image else "sample photo (scikit-learn flower.jpg)"
        else:
            x, image, source = attention.validation_input(args.run, size, args.index)
        probs, grid = attention.block_attention(model, x, args.stage, block)
        return image, probs, grid, source

    size = args.img_size or trained_size  # by default what the model saw in training, however few keys
    image, probs, grid, source = draw(size)
    note = " (the run's own input size)" if size == trained_size and args.run is not None else ""
    label = f"block {block} (of {blocks})" + (" = last" if block == blocks - 1 else "")
    return save(attention.figure(image, probs, grid, f"{title}; {source}, {size} px{note}", args.stage, label),
                args.output / name)


@cli
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    paths = {"table": plot_table, "scaling": plot_scaling, "attention": plot_attention}[args.command](args)
    say("wrote " + ", ".join(map(str, paths)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
