"""python -m benchmarks.model's interleaved modes, run small: the tables they write are what BENCHMARKS.md quotes."""
import csv

import pytest

from benchmarks import model as benchmark


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


@pytest.mark.parametrize("argv, message", [
    (["--versus-reference", "rest_tiny"], "--versus-reference takes size names"),
    (["--scaling", "rest_lite:head_norm=false"], "--scaling takes size names"),
    (["--versus-reference", "--device", "cuda:0"], "no CUDA device"),
    (["--scaling", "--versus-reference"], "not allowed with argument"),
])
def test_bad_arguments_are_refused_with_exit_2(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        benchmark.main(argv)
    assert exit_info.value.code == 2
    assert any(part in capsys.readouterr().err for part in message.split("|"))
