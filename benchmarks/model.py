"""Params, MACs and throughput of ResT sizes and knob sets, following timm's benchmark protocol.

    python -m benchmarks.model                                   # rest_lite, 224 px, batch 32
    python -m benchmarks.model rest_lite rest_small --train      # add training throughput
    python -m benchmarks.model "rest_lite:reduction=avg,head_norm=false"
    python -m benchmarks.model --msa-vs-emsa                     # the paper's Table 8 comparison
    python -m benchmarks.model --reference                       # against the official code's structure

    python -m benchmarks.model --versus-reference                # every size against benchmarks/official_rest.py,
    python -m benchmarks.model --versus-reference --train        #   interleaved, + GEMM peak (BENCHMARKS.md)
    python -m benchmarks.model --scaling                         # MSA vs EMSA at 224/320/448 px, interleaved

A model spec is a registered name, optionally followed by ``:knob=value,...``. Inference runs in eval
mode under ``torch.inference_mode``; training runs forward, backward and an AdamW step. Each timing is
``--warmup`` untimed iterations, then ``--iters`` timed ones on a fixed random batch.

``--versus-reference`` loads the same weights into ours and into the transcription of the official code
(benchmarks/official_rest.py) and times them in one process, alternating: ``--rounds`` rounds (default 7), each
timing both (``--iters`` iterations each, the order flipped every round), so drift and neighbours on a
shared machine hit both alike. It reports the median and range of img/s over the rounds, the median and
range of the per-round speed-up, and the achieved GFLOP/s (``macs_total`` x 2) as a fraction of the
machine's GEMM peak (fp32; fp16 under --amp) measured by the same script. Inference: 224 px, batch 32;
``--train``: forward + backward + AdamW at 64 px, batch 64 (override with ``--img-size`` / ``--batch-size``).
``--scaling`` does the same for plain MSA against EMSA (ResT-Lite) at ``--sizes`` (default 224 320 448),
with peak memory.
"""
from __future__ import annotations

import argparse
import csv
import statistics
import sys
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field

import timm
import torch
import torch.nn as nn

import rest
from benchmarks.official_rest import OfficialResT
from rest.complexity import complexity, peak_memory_bytes, time_iterations
from rest_knobs import MSA

# The paper's Table 8 (ResT-Lite, 224 px, measured on a V100 GPU): params (M), GFLOPs, img/s.
PAPER_MSA_VS_EMSA = {
    "MSA": dict(params_m=10.48, gflops=1.6, img_per_s=512),
    "EMSA": dict(params_m=10.49, gflops=1.4, img_per_s=1246),
}


@dataclass(frozen=True)
class Spec:
    label: str
    model: str
    knobs: dict = field(default_factory=dict)
    paper: dict | None = None


def parse_value(text: str):
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def parse_spec(text: str) -> Spec:
    """"rest_lite:reduction=avg,head_norm=false" -> Spec."""
    name, _, knob_text = text.partition(":")
    knobs = {}
    for item in filter(None, knob_text.split(",")):
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"model spec {text!r}: knob {item!r} needs the form name=value")
        knobs[key.strip()] = parse_value(value.strip())
    if name != "official" and name not in rest.VARIANTS:
        raise ValueError(f"model spec {text!r}: unknown model {name!r}; choose one of {', '.join(rest.VARIANTS)}")
    return Spec(label=text, model=name, knobs=knobs)


def build(spec: Spec) -> nn.Module:
    if spec.model == "official":
        return OfficialResT(**spec.knobs)
    return timm.create_model(spec.model, **spec.knobs)


def benchmark_model(model: nn.Module, args: argparse.Namespace) -> dict:
    device = torch.device(args.device)
    memory_format = torch.channels_last if args.channels_last else torch.contiguous_format
    model = model.to(device=device, memory_format=memory_format)
    h, w = args.img_size
    x = torch.randn(args.batch_size, 3, h, w, device=device).contiguous(memory_format=memory_format)
    amp = torch.autocast(device.type, dtype=torch.float16) if args.amp and device.type == "cuda" else nullcontext()
    row = {}
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    if not args.no_infer:
        infer = infer_step(model, x, amp)  # the same step as --versus-reference
        row["infer_img_s"] = args.batch_size / time_iterations(infer, args.warmup, args.iters, device)

    if args.train:
        train = train_step(model, x, amp, device)  # the same step as --versus-reference --train
        row["train_img_s"] = args.batch_size / time_iterations(train, args.warmup, args.iters, device)
    if device.type == "cuda":
        row["peak_mem_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    return row


def specs_from_args(args: argparse.Namespace) -> list[Spec]:
    specs = [parse_spec(s) for s in args.models]
    if args.msa_vs_emsa:
        specs += [
            Spec("MSA", "rest_lite", MSA, PAPER_MSA_VS_EMSA["MSA"]),
            Spec("EMSA", "rest_lite", {}, PAPER_MSA_VS_EMSA["EMSA"]),
        ]
    if args.reference:
        specs.insert(0, Spec("official (transcription)", "official"))
        if not any(s.model == "rest_lite" and not s.knobs for s in specs):
            specs.insert(1, Spec("rest_lite", "rest_lite"))
    return specs


def run(args: argparse.Namespace) -> list[dict]:
    torch.manual_seed(0)
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    for spec in specs_from_args(args):
        model = build(spec)
        counts = complexity(model, args.img_size)
        row = {
            "model": spec.label,
            "img_size": "x".join(map(str, args.img_size)),
            "batch_size": args.batch_size,
            "device": args.device,
            "params_m": counts["params"] / 1e6,
            "gmacs_paper": counts["macs_paper"] / 1e9,
            "gmacs_total": counts["macs_total"] / 1e9,
            **benchmark_model(model, args),
        }
        if spec.paper:
            row.update({f"paper_{k}": v for k, v in spec.paper.items()})
        rows.append(row)
        print(f"  measured {spec.label}", file=sys.stderr, flush=True)
    return rows


# ---- interleaved comparisons ----------------------------------------------------------------------------------
def gemm_peak_gflops(device: torch.device, dtype: torch.dtype = torch.float32, n: int = 0, rounds: int = 7) -> float:
    """The best matmul (n x n x n) rate seen over `rounds` timings: the machine's GEMM peak in `dtype` (fp32:
    sgemm; float16 for AMP runs, whose matmuls and convolutions run in half precision)."""
    n = n or (8192 if device.type == "cuda" else 2048)
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    best = 0.0
    for _ in range(rounds):
        seconds = time_iterations(lambda: torch.mm(a, b), 1, 3, device)
        best = max(best, 2 * n**3 / seconds / 1e9)
    return best


def interleave(steps: dict[str, Callable[[], None]], rounds: int, warmup: int, iters: int,
               device: torch.device) -> dict[str, list[float]]:
    """Seconds per iteration of each step in each round; the order of the steps flips every round."""
    for step in steps.values():
        for _ in range(warmup):
            step()
    times: dict[str, list[float]] = {name: [] for name in steps}
    names = list(steps)
    for r in range(rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            times[name].append(time_iterations(steps[name], 0, iters, device))
    return times


def summarize(label: str, times: list[float], batch: int) -> dict:
    rates = [batch / t for t in times]
    return {f"{label}_img_s": statistics.median(rates), f"{label}_min": min(rates), f"{label}_max": max(rates)}


def infer_step(model: nn.Module, x: torch.Tensor, amp) -> Callable[[], None]:
    model.eval()

    def step():
        with torch.inference_mode(), amp:
            model(x)

    return step


def train_step(model: nn.Module, x: torch.Tensor, amp, device: torch.device) -> Callable[[], None]:
    """forward + backward + AdamW step (timm's default optimizer family), optionally under AMP."""
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.05)
    target = torch.randint(0, 1000, (x.shape[0],), device=device)
    scaler = torch.amp.GradScaler(device.type, enabled=device.type == "cuda" and not isinstance(amp, nullcontext))

    def step():
        optimizer.zero_grad(set_to_none=True)
        with amp:
            loss = nn.functional.cross_entropy(model(x), target)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    return step


def autocast(args: argparse.Namespace, device: torch.device):
    """float16 autocast with --amp on CUDA (on CPU --amp is ignored, as in the plain benchmark)."""
    return torch.autocast(device.type, dtype=torch.float16) if args.amp and device.type == "cuda" else nullcontext()


def prepare(model: nn.Module, args: argparse.Namespace, device: torch.device) -> nn.Module:
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if args.compile:
        model = torch.compile(model)
    return model


def versus_reference(args: argparse.Namespace) -> list[dict]:
    """Each size against benchmarks/official_rest.py with the same weights, interleaved (see the module docstring)."""
    device = torch.device(args.device)
    amp = autocast(args, device)
    gemm_dtype = torch.float32 if isinstance(amp, nullcontext) else torch.float16
    peak = gemm_peak_gflops(device, gemm_dtype)
    print(f"  {str(gemm_dtype).removeprefix('torch.')} GEMM peak: {peak:.1f} GFLOP/s ({torch.get_num_threads()} "
          f"threads)", file=sys.stderr, flush=True)
    rows = []
    for name in args.models or list(rest.VARIANTS):
        torch.manual_seed(0)
        with device:  # initialize on the device (a CPU init of ResT-Large takes longer than its timing)
            official = OfficialResT(**rest.VARIANTS[name])
            ours = timm.create_model(name)
        ours.load_state_dict(official.state_dict(), strict=True)
        h, w = args.img_size
        macs = complexity(ours, (h, w))["macs_total"]
        memory_format = torch.channels_last if args.channels_last else torch.contiguous_format
        x = torch.randn(args.batch_size, 3, h, w, device=device).contiguous(memory_format=memory_format)
        models = {"official": prepare(official, args, device), "ours": prepare(ours, args, device)}
        if args.train:
            steps = {k: train_step(m, x, amp, device) for k, m in models.items()}
            flops_per_img = 3 * 2 * macs  # backward ~ 2x forward
        else:
            steps = {k: infer_step(m, x, amp) for k, m in models.items()}
            flops_per_img = 2 * macs
        times = interleave(steps, args.rounds, args.warmup, args.iters, device)
        ratios = [t_ref / t_ours for t_ref, t_ours in zip(times["official"], times["ours"], strict=True)]
        row = {
            "model": name,
            "mode": ("train" if args.train else "infer") + ("+amp" if not isinstance(amp, nullcontext) else "")
            + ("+cl" if args.channels_last else "") + ("+compile" if args.compile else ""),
            "img_size": f"{h}x{w}",
            "batch": args.batch_size,
            "rounds": args.rounds,
            **summarize("official", times["official"], args.batch_size),
            **summarize("ours", times["ours"], args.batch_size),
            "speedup": statistics.median(ratios),
            "speedup_min": min(ratios),
            "speedup_max": max(ratios),
        }
        for label in ("official", "ours"):
            row[f"{label}_peak_frac"] = row[f"{label}_img_s"] * flops_per_img / 1e9 / peak
        row["gemm_peak_gflops"], row["gemm_dtype"] = peak, str(gemm_dtype).removeprefix("torch.")
        rows.append(row)
        print(format_table([row]), file=sys.stderr, flush=True)  # each size as soon as it is measured
    return rows


def scaling(args: argparse.Namespace) -> list[dict]:
    """Plain MSA against EMSA (ResT-Lite) at each of --sizes, interleaved, with peak memory."""
    device = torch.device(args.device)
    torch.manual_seed(0)
    models = {"MSA": timm.create_model("rest_lite", **MSA).to(device),
              "EMSA": timm.create_model("rest_lite").to(device)}
    amp = autocast(args, device)
    rows = []
    for size in args.sizes:
        x = torch.randn(args.batch_size, 3, size, size, device=device)
        steps = {k: infer_step(m, x, amp) for k, m in models.items()}
        times = interleave(steps, args.rounds, args.warmup, args.iters, device)
        ratios = [t_msa / t_emsa for t_msa, t_emsa in zip(times["MSA"], times["EMSA"], strict=True)]
        row = {"img_size": size, "batch": args.batch_size, "rounds": args.rounds,
               **summarize("MSA", times["MSA"], args.batch_size), **summarize("EMSA", times["EMSA"], args.batch_size),
               "emsa_over_msa": statistics.median(ratios), "ratio_min": min(ratios), "ratio_max": max(ratios)}
        for name, model in models.items():
            row[f"{name}_peak_mb"] = peak_memory_bytes(model, x) / 2**20
        row["paper_ratio_v100"] = PAPER_MSA_VS_EMSA["EMSA"]["img_per_s"] / PAPER_MSA_VS_EMSA["MSA"]["img_per_s"]
        rows.append(row)
        print(format_table([row]), file=sys.stderr, flush=True)
    return rows


def format_table(rows: list[dict]) -> str:
    columns = list(dict.fromkeys(k for row in rows for k in row))
    cells = [[format_cell(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(lines)


def format_cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}" if value < 100 else f"{value:.1f}"
    return str(value)


def parse_img_size(text: str) -> tuple[int, int]:
    parts = text.lower().split("x")
    try:
        sizes = tuple(int(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--img-size {text!r}: expected N or HxW, e.g. 224 or 320x192") from None
    if len(sizes) not in (1, 2) or min(sizes) < 32:
        raise argparse.ArgumentTypeError(f"--img-size {text!r}: expected N or HxW with each side >= 32")
    return (sizes[0], sizes[-1])


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.model", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("models", nargs="*", default=None, help="model specs (default: rest_lite)")
    p.add_argument("--msa-vs-emsa", action="store_true", help="add the paper's MSA vs EMSA rows (Table 8)")
    p.add_argument("--reference", action="store_true", help="add a transcription of the official code as baseline")
    modes = p.add_mutually_exclusive_group()
    modes.add_argument("--versus-reference", action="store_true",
                   help="each size (or the given ones) against the official code, interleaved, with GEMM peak")
    modes.add_argument("--scaling", action="store_true", help="MSA vs EMSA at --sizes, interleaved, with peak memory")
    p.add_argument("--sizes", type=int, nargs="+", default=[224, 320, 448], help="--scaling input sizes")
    p.add_argument("--rounds", type=int, default=7,
                   help="alternations for --versus-reference / --scaling")
    p.add_argument("--compile", action="store_true", help="--versus-reference: torch.compile both models")
    p.add_argument("--batch-size", "-b", type=int, default=None, help="default 32 (64 with --versus-reference --train)")
    p.add_argument("--img-size", type=parse_img_size, default=None,
                   help="N or HxW (default 224; 64 with --versus-reference --train)")
    p.add_argument("--device", default=None, help="default: cuda when available")
    p.add_argument("--amp", action="store_true", help="float16 autocast (CUDA only)")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--warmup", type=int, default=3, help="untimed iterations")
    p.add_argument("--iters", type=int, default=10, help="timed iterations")
    p.add_argument("--train", action="store_true", help="also time forward + backward + AdamW step")
    p.add_argument("--no-infer", action="store_true", help="skip the inference timing")
    p.add_argument("--threads", type=int, default=0, help="torch threads on CPU (default: torch's choice)")
    p.add_argument("--csv", metavar="PATH", help="also write the table as CSV")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    train_defaults = args.versus_reference and args.train
    if args.device is None:
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.batch_size is None:  # --scaling: MSA at 448 px has 12,544 stage-1 tokens attending to each other
        args.batch_size = 64 if train_defaults else 8 if args.scaling else 32
    args.img_size = args.img_size or ((64, 64) if train_defaults else (224, 224))
    args.models = args.models or []
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.versus_reference or args.scaling:
        if args.device.startswith("cuda") and not torch.cuda.is_available():
            parser.error("--device cuda: no CUDA device is available here; use --device cpu")
        mode = versus_reference if args.versus_reference else scaling
        unknown = [m for m in args.models if m not in rest.VARIANTS]
        if unknown:
            flag = "--" + mode.__name__.replace("_", "-")
            parser.error(f"{flag} takes size names ({', '.join(rest.VARIANTS)}), not {unknown}")
        rows = mode(args)
        emit(rows, args)
        return 0
    if not args.models and not (args.msa_vs_emsa or args.reference):
        args.models = ["rest_lite"]
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available here; use --device cpu")
    try:
        for spec in specs_from_args(args):  # every knob is checked before anything is timed
            if spec.model != "official":
                with torch.device("meta"):
                    build(spec)
    except (ValueError, TypeError) as err:
        parser.error(str(err))
    rows = run(args)
    emit(rows, args)
    return 0


def emit(rows: list[dict], args: argparse.Namespace) -> None:
    print(format_table(rows))
    if args.csv:
        with open(args.csv, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(dict.fromkeys(k for r in rows for k in r)))
            writer.writeheader()
            writer.writerows(rows)
        print(f"wrote {args.csv}")


if __name__ == "__main__":
    raise SystemExit(main())

