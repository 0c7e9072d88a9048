"""rest.benchmark's interleaved modes, run small: the tables they write are what BENCHMARKS.md quotes."""
import csv

import pytest

from rest import benchmark


def read_rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_versus_reference_times_both_codes_and_reports_spread(tmp_path):
    out = tmp_path / "infer.csv"
    assert benchmark.main(["--versus-reference", "rest_lite", "--device", "cpu", "--img-size", "64",
                           "--batch-size", "2", "--rounds", "3", "--iters", "1", "--warmup", "1",
                           "--csv", str(out)]) == 0
    (row,) = read_rows(out)
    assert row["model"] == "rest_lite" and row["mode"] == "infer" and row["rounds"] == "3"
    for label in ("official", "ours"):
        low, mid, high = (float(row[f"{label}_{k}"]) for k in ("min", "img_s", "max"))
        assert 0 < low <= mid <= high
    assert float(row["speedup_min"]) <= float(row["speedup"]) <= float(row["speedup_max"])
    assert 0 < float(row["ours_peak_frac"]) < 1


def test_kernel_bound_splits_the_official_training_step(tmp_path):
    out = tmp_path / "bound.csv"
    assert benchmark.main(["--kernel-bound", "rest_lite", "--img-size", "64", "--batch-size", "2",
                           "--rounds", "1", "--iters", "1", "--warmup", "1", "--csv", str(out)]) == 0
    (row,) = read_rows(out)
    gemm, adamw, conv_gelu = (float(row[k]) for k in ("gemm_frac", "adamw_frac", "conv_gelu_frac"))
    assert row["img_size"] == "64x64" and row["batch"] == "2" and row["rounds"] == "1"
    assert gemm > 0 and adamw > 0 and conv_gelu > 0 and gemm + adamw + conv_gelu < 1
    assert float(row["bound_gemm_adamw"]) == pytest.approx(1 / (gemm + adamw))
    ceiling = float(row["bound_all_shared"])  # one round: the median is that round's figure
    assert 1 < ceiling == pytest.approx(1 / (gemm + adamw + conv_gelu))
    assert float(row["bound_all_min"]) == float(row["bound_all_max"]) == pytest.approx(ceiling)


@pytest.mark.parametrize("argv, message", [
    (["--kernel-bound", "rest_tiny"], "--kernel-bound takes size names"),
    (["--scaling", "rest_lite:head_norm=false"], "--scaling takes size names"),
    (["--kernel-bound", "--device", "cuda:0"], "no CUDA device|measures the CPU only"),
    (["--kernel-bound", "--compile"], "do not apply to it"),
    (["--kernel-bound", "--versus-reference"], "not allowed with argument"),
])
def test_bad_arguments_are_refused_with_exit_2(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        benchmark.main(argv)
    assert exit_info.value.code == 2
    assert any(part in capsys.readouterr().err for part in message.split("|"))
