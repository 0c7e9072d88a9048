"""analysis plots: every figure is written as a non-empty PNG and PDF; attention and memory are measured right."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import timm
import torch

import rest  # noqa: F401 - registers the ResT models with timm
from analysis import attention, plots, scaling
from analysis.figures import table_figures
from analysis.runs import collect
from analysis.source import load_layout
from analysis.synthetic import write_run
from rest.complexity import peak_memory_bytes
from rest_knobs import MSA

SWEEP = """\
name: attention
paper_table: "MSA vs EMSA (paper Table 8), ResT-Lite, ImageNet-1k"
recipe: quick
model: rest_lite
seeds: [0, 1]
columns: [params_m, gflops, img_s, top1, top5]
axes:
  - name: attention
    baseline: EMSA
    levels:
      MSA: {model.reduction: none, model.head_conv: false, model.head_norm: false}
      EMSA: {}
published:
  MSA: {params_m: 10.48, gflops: 1.6, img_s: 512, top1: 72.68, top5: 90.46}
  EMSA: {params_m: 10.49, gflops: 1.4, img_s: 1246, top1: 72.88, top5: 90.62}
"""


def assert_written(paths: list[Path], *suffixes: str) -> None:
    magic = {".png": b"\x89PNG", ".pdf": b"%PDF"}
    assert sorted({p.suffix for p in paths}) == sorted(suffixes)
    for path in paths:
        assert path.stat().st_size > 1000, path
        if path.suffix in magic:
            assert path.read_bytes().startswith(magic[path.suffix]), path


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    results = tmp_path / "results" / "attention"
    for seed in range(2):
        write_run(results, "EMSA", seed, top1=95.0 + seed, top5=99.5, img_s=30.0 + seed, baseline=True,
                  axis="attention")
    write_run(results, "MSA", 0, top1=94.0, top5=99.0, img_s=20.0, params=10_480_000, macs_paper=1.6e9,
              axis="attention")
    write_run(results, "MSA", 1, state="failed", axis="attention")
    path = tmp_path / "attention.yaml"
    path.write_text(SWEEP)
    return path


def test_table_plots_cli(sweep, capsys):
    assert plots.main(["table", str(sweep), "--results-root", str(sweep.parent / "results")]) == 0
    (out,) = (sweep.parent / "results" / "attention" / "reports").iterdir()  # the experiment's own folder
    assert out.name.startswith("quick_seeds-")
    assert_written(sorted(out.iterdir()), ".png", ".pdf")
    assert sorted(p.stem for p in out.iterdir()) == ["bars", "bars", "curves", "curves"]
    assert "Traceback" not in capsys.readouterr().err


def test_table_plots_with_missing_cells_and_no_sweep(tmp_path):
    results = tmp_path / "pe"
    write_run(results, "PA", 0, baseline=True)
    write_run(results, "GL", 0, state="partial")
    write_run(results, "LE", 0, state="failed")
    layout = load_layout(results)
    paths = table_figures(collect(results)[0], layout, tmp_path / "plots")
    assert_written(paths, ".png", ".pdf")


def test_plots_bad_input(tmp_path, capsys):
    assert plots.main(["table", str(tmp_path / "missing")]) == 2
    assert plots.main(["attention", "--run", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "no such file or folder" in err and "config.json" in err and "Traceback" not in err


def test_scaling_plot_and_csv(tmp_path):
    out = tmp_path / "plots"
    args = ["scaling", "--sizes", "32,64", "-b", "2", "--warmup", "0", "--iters", "1", "--threads", "1",
            "--device", "cpu", "--repeats", "2", "--output", str(out)]
    assert plots.main(args) == 0
    assert_written([out / "scaling.png", out / "scaling.pdf"], ".png", ".pdf")
    df = pd.read_csv(out / "scaling.csv")
    assert sorted(zip(df["model"], df["img_size"], strict=True)) == [("EMSA", 32), ("EMSA", 64), ("MSA", 32),
                                                                       ("MSA", 64)]
    weights_mb = 10.4e6 * 4 / 2**20
    assert (df["peak_mem_mb"] > weights_mb).all() and (df["infer_img_s"] > 0).all()
    assert set(df["memory_method"]) == {scaling.CPU_MEMORY}
    assert (df["repeats"] == 2).all() and df["infer_img_s_std"].notna().all()  # repeated: error bars
    fig = scaling.figure(df)
    assert "measured on CPU (1 thread), not on a GPU" in fig.get_suptitle()
    ratio_ax = fig.axes[1]
    assert any(line.get_ydata()[0] == pytest.approx(1246 / 512) for line in ratio_ax.get_lines())  # the paper's
    ratios = scaling.ratios(df).set_index("img_size")
    emsa, msa = (df[df["model"] == m].set_index("img_size")["infer_img_s"] for m in ("EMSA", "MSA"))
    assert ratios.loc[64, "ratio"] == pytest.approx(emsa[64] / msa[64])


def test_cpu_peak_memory_sees_a_temporary_allocation():
    class Spike(torch.nn.Module):
        def forward(self, x):
            big = torch.ones(25_000_000)  # 100 MB, freed before returning
            return x + big[:1]

    peak = peak_memory_bytes(Spike(), torch.zeros(1))
    assert 100e6 <= peak < 110e6


@pytest.mark.parametrize("knobs", [{}, dict(reduction="avg", head_norm=False), MSA])
def test_attention_recomputation_is_exact(knobs):
    """The maps are recomputed from the hooked input with the module's weights: they must be the module's."""
    model = timm.create_model("rest_lite", num_classes=10, **knobs).eval()
    blocks = [model.stage2[0].attn, model.stage4[-1].attn]  # with key/value reduction, and without
    seen = {}
    hooks = [b.register_forward_hook(lambda m, a, out: seen.__setitem__(m, (a[0], tuple(a[1]), out)))
             for b in blocks]
    with torch.no_grad():
        model(torch.randn(1, 3, 64, 64))
        for block in blocks:
            x, size, out = seen[block]
            assert torch.allclose(attention.recompute_output(block, x, size), out, atol=1e-5)
    for h in hooks:
        h.remove()
    probs, grid = attention.last_block_attention(model, torch.randn(1, 3, 64, 64))
    assert probs.shape == (8, 4, 4) and grid == (2, 2)
    assert torch.allclose(probs.sum(-1), torch.ones(8, 4))


def test_attention_plot_random_weights(tmp_path, capsys):
    assert plots.main(["attention", "--img-size", "64", "--output", str(tmp_path)]) == 2  # never the default
    assert "--run" in capsys.readouterr().err and not list(tmp_path.iterdir())
    assert plots.main(["attention", "--random-weights", "--img-size", "64", "--output", str(tmp_path)]) == 0
    assert_written(sorted(tmp_path.iterdir()), ".png", ".pdf")


def test_attention_plot_from_a_run(tmp_path, capsys):
    run = write_run(tmp_path / "pe", "GL", 0, overrides={"model.pos_encoding": "le", "data.img_size": 64})
    model = timm.create_model("rest_lite", num_classes=10, pos_encoding="le", img_size=64)
    torch.save({"model": model.state_dict(), "epoch": 5}, run / "checkpoint.pt")
    image = tmp_path / "img.png"
    from PIL import Image

    Image.new("RGB", (80, 60), (200, 30, 30)).save(image)
    loaded, size, title = attention.model_from_run(run)
    assert size == 64 and "GL" in title
    key = "patch_embed_2.pos.pos_embed"  # the learned embedding of the run, not a fresh one
    assert torch.equal(loaded.state_dict()[key], model.state_dict()[key])
    assert plots.main(["attention", "--run", str(run), "--image", str(image), "--output", str(tmp_path / "o")]) == 0
    assert_written(sorted((tmp_path / "o").iterdir()), ".png", ".pdf")
    # default input: the run's own validation data (a digit), one shared colour scale with its colour bar
    x, shown, source = attention.validation_input(run, 64, 3)
    assert x.shape == (1, 3, 64, 64) and shown.shape == (64, 64, 3) and "validation image 3 of digits" in source
    probs, grid = attention.block_attention(loaded, x, 4, -1)
    fig = attention.figure(shown, probs, grid, "t", 4, "block 1 (of 2) = last")
    images = [im for ax in fig.axes for im in ax.get_images()]
    assert len(images) == 1 + 1 + 8  # input, mean of heads, 8 heads
    assert len({im.get_clim() for im in images[1:]}) == 1 and images[1].get_cmap().name == "viridis"
    assert len(fig.axes) == 10 + 1  # ten panels and the colour bar
    assert "stage 4, block 1 (of 2) = last" in fig.get_suptitle()
    assert plots.main(["attention", "--run", str(run), "--stage", "3", "--output", str(tmp_path / "v")]) == 0
    assert_written(sorted((tmp_path / "v").iterdir()), ".png", ".pdf")
    # by default at the run's own input size (64 px: stage 4 attends over 2x2 keys), never upsampled
    drawn = []
    real_figure = attention.figure
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(attention, "figure", lambda image, probs, grid, *a: drawn.append((image.shape, grid))
                      or real_figure(image, probs, grid, *a))
        assert plots.main(["attention", "--run", str(run), "--output", str(tmp_path / "w")]) == 0
    assert drawn == [((64, 64, 3), (2, 2))]
    (run / "checkpoint.pt").write_bytes(b"not a checkpoint")
    assert plots.main(["attention", "--run", str(run), "--output", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "checkpoint.pt: cannot be loaded" in err and "Traceback" not in err


class _RunsCode:
    def __reduce__(self):
        return (exec, ("open(__import__('os').environ['PWNED_MARK'], 'w').write('pwned')",))


def test_a_crafted_checkpoint_never_runs_code(tmp_path, monkeypatch):
    import pickle
    import re as re_

    from ablations import store
    from ablations.spec.config import RunConfig
    from ablations.spec.errors import InputError
    from analysis.attention import model_from_run

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    store.atomic_write_json(run_dir / store.CONFIG, {"config": RunConfig().to_dict(), "meta": {}})
    mark = tmp_path / "pwned"
    monkeypatch.setenv("PWNED_MARK", str(mark))
    torch.save({"model": _RunsCode()}, run_dir / store.CHECKPOINT, pickle_module=pickle)
    with pytest.raises(InputError, match="cannot be loaded as weights"):
        model_from_run(run_dir)
    assert not mark.exists(), "the pickle's code ran"
    # and no code path of the project loads a pickle any other way
    root = Path(__file__).resolve().parents[1]
    for path in [*root.glob("ablations/**/*.py"), *root.glob("analysis/**/*.py"), *root.glob("rest/**/*.py")]:
        for call in re_.findall(r"torch\.load\([^)]*\)", path.read_text()):
            assert "weights_only=True" in call, f"{path}: {call}"
        # pickletools (reading a pickle's opcodes, never executing them) is allowed; pickle itself is not
        assert not re_.search(r"\bimport pickle\b|\bfrom pickle\b|\bpickle\.loads?\(|Unpickler", path.read_text()), path


def three_seed_sweep(tmp_path: Path, top5: float = 100.0) -> Path:
    path = tmp_path / "attention.yaml"
    path.write_text(SWEEP.replace("seeds: [0, 1]", "seeds: [0, 1, 2]"))
    results = tmp_path / "results" / "attention"
    for seed in range(3):
        write_run(results, "EMSA", seed, top1=97.0 + 0.3 * seed, top5=top5, img_s=30.0, sweep_file=path)
        write_run(results, "MSA", seed, top1=96.2 + 0.5 * seed, top5=top5, img_s=20.0, sweep_file=path)
    return path


def figure_of(path: Path):
    from analysis import figures
    from analysis.table import build_table, per_seed, select_runs

    layout = load_layout(path, results_root=path.parent / "results")
    df = collect(layout.results_dir, run_dirs=layout.run_dirs)[0]
    table = build_table(df, layout)
    runs, _ = per_seed(select_runs(df, layout))
    return table, figures.bars(table, runs), figures.curves(table, runs)


def test_bars_are_a_grid_with_deltas_ci_and_the_papers_deltas(tmp_path):
    from matplotlib.collections import LineCollection

    from analysis import figures

    table, fig, curves = figure_of(three_seed_sweep(tmp_path))
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert len(axes) == 5
    width, height = fig.get_size_inches() * 150
    assert width <= 2600 and height <= 1600  # 5 metrics: two rows of at most three, not a 3000 px strip
    by_title = {ax.get_title(): ax for ax in axes}
    top5 = by_title["Top-5"]
    assert any("saturated" in t.get_text() for t in top5.texts) and not top5.patches  # not drawn as bars
    top1 = by_title["Top-1"]
    assert top1.get_ylabel().startswith("Δ Top-1 vs EMSA")
    msa = table.rows.set_index("cell").loc["MSA"]
    ci = [c for c in top1.collections if isinstance(c, LineCollection)]
    ends = sorted(ci[0].get_segments()[0][:, 1])
    assert ends == pytest.approx(sorted([msa["top1_ci_low"], msa["top1_ci_high"]]))  # the table's 95 % CI
    paper = [c for c in top1.collections if c.get_facecolor().size and
             tuple(c.get_facecolor()[0][:3]) == pytest.approx(matplotlib_rgb(figures.PAPER))]
    assert paper and paper[0].get_offsets()[0][1] == pytest.approx(72.68 - 72.88)  # the paper's Δ
    throughput = by_title["Throughput"]
    assert any("not compared" in t.get_text() for t in throughput.texts)  # CPU vs the paper's GPU
    assert throughput.get_ylim()[1] < 100  # the paper's 1246 img/s does not set the scale
    assert [ax.get_ylabel() for ax in curves.axes] == ["validation top-1 (%)", "validation loss"]
    assert len(curves.axes[0].collections) == 2  # a ± std band per cell (3 seeds)


def matplotlib_rgb(color: str) -> tuple[float, float, float]:
    from matplotlib.colors import to_rgb

    return to_rgb(color)


def test_bars_of_many_metrics_and_cells_stay_readable(tmp_path):
    path = three_seed_sweep(tmp_path, top5=99.0)
    _, fig, _ = figure_of(path)
    top5 = next(ax for ax in fig.axes if ax.get_title() == "Top-5")
    assert not any("saturated" in t.get_text() for t in top5.texts) and top5.patches


def test_learning_curves_of_many_cells_stay_apart(tmp_path):
    """Four or more cells: each curve has its own colour, line style and marker, and the ± std bands are light
    enough for the lines under them to be read."""
    from analysis import figures
    from analysis.table import build_table, per_seed, select_runs

    results = tmp_path / "pe"
    for i, cell in enumerate(("none", "LE", "GL", "PA", "PA2")):
        for seed in (0, 1):
            write_run(results, cell, seed, top1=90.0 + i + seed, baseline=cell == "PA")
    layout = load_layout(results)
    df = collect(results)[0]
    runs, _ = per_seed(select_runs(df, layout))
    fig = figures.curves(build_table(df, layout), runs)
    lines = [line for line in fig.axes[0].get_lines() if line.get_label() and not line.get_label().startswith("_")]
    assert len(lines) == 5
    looks = {(line.get_color(), line.get_linestyle(), line.get_marker()) for line in lines}
    # matplotlib reports any custom dash pattern as "--": three kinds of line and five markers show
    assert len({style for _, style, _ in looks}) >= 3 and len({marker for _, _, marker in looks}) == 5
    assert len(set(figures.CELL_STYLES)) == len(figures.CELL_STYLES) >= 4
    assert all(line.get_linestyle() != ":" for line in lines) and figures.FAILED_STYLE == ":"  # failed: dotted
    assert all(band.get_alpha() <= 0.15 for band in fig.axes[0].collections)
    assert "seeds 0, 1" in fig.get_suptitle() and "ours: digits" in fig.get_suptitle()
