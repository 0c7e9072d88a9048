"""Params, MACs and throughput of ResT sizes and knob sets, following timm's benchmark protocol.

    python -m rest.benchmark                                   # rest_lite, 224 px, batch 32
    python -m rest.benchmark rest_lite rest_small --train      # add training throughput
    python -m rest.benchmark "rest_lite:reduction=avg,head_norm=false"
    python -m rest.benchmark --msa-vs-emsa                     # the paper's Table 8 comparison
    python -m rest.benchmark --reference                       # against the official code's structure

A model spec is a registered name, optionally followed by ``:knob=value,...``. Inference runs in eval
mode under ``torch.inference_mode``; training runs forward, backward and an SGD step. Each timing is
``--warmup`` untimed iterations, then ``--iters`` timed ones on a fixed random batch.
"""
from __future__ import annotations

import argparse
import csv
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field

import timm
import torch
import torch.nn as nn

import rest
from rest.complexity import complexity
from rest.reference import OfficialResT

# The paper's Table 8 (ResT-Lite, 224 px, measured on a V100 GPU): params (M), GFLOPs, img/s.
PAPER_MSA_VS_EMSA = {
    "MSA": dict(params_m=10.48, gflops=1.6, img_per_s=512),
    "EMSA": dict(params_m=10.49, gflops=1.4, img_per_s=1246),
}
MSA_KNOBS = dict(reduction="none", head_conv=False, head_norm=False)


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


def time_iterations(step: Callable[[], None], warmup: int, iters: int, device: torch.device) -> float:
    """Seconds per iteration over `iters` timed runs after `warmup` untimed ones."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        step()
    sync()
    start = time.perf_counter()
    for _ in range(iters):
        step()
    sync()
    return (time.perf_counter() - start) / iters


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
        model.eval()

        def infer():
            with torch.inference_mode(), amp:
                model(x)

        row["infer_img_s"] = args.batch_size / time_iterations(infer, args.warmup, args.iters, device)

    if args.train:
        model.train()
        optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
        target = torch.randint(0, 1000, (args.batch_size,), device=device)
        scaler = torch.amp.GradScaler(device.type, enabled=args.amp and device.type == "cuda")

        def train():
            optimizer.zero_grad(set_to_none=True)
            with amp:
                loss = nn.functional.cross_entropy(model(x), target)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()

        row["train_img_s"] = args.batch_size / time_iterations(train, args.warmup, args.iters, device)
    if device.type == "cuda":
        row["peak_mem_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    return row


def specs_from_args(args: argparse.Namespace) -> list[Spec]:
    specs = [parse_spec(s) for s in args.models]
    if args.msa_vs_emsa:
        specs += [
            Spec("MSA", "rest_lite", MSA_KNOBS, PAPER_MSA_VS_EMSA["MSA"]),
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
    p = argparse.ArgumentParser(prog="python -m rest.benchmark", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("models", nargs="*", default=None, help="model specs (default: rest_lite)")
    p.add_argument("--msa-vs-emsa", action="store_true", help="add the paper's MSA vs EMSA rows (Table 8)")
    p.add_argument("--reference", action="store_true", help="add a transcription of the official code as baseline")
    p.add_argument("--batch-size", "-b", type=int, default=32)
    p.add_argument("--img-size", type=parse_img_size, default=(224, 224), help="N or HxW (default 224)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--amp", action="store_true", help="float16 autocast (CUDA only)")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--warmup", type=int, default=3, help="untimed iterations")
    p.add_argument("--iters", type=int, default=10, help="timed iterations")
    p.add_argument("--train", action="store_true", help="also time forward + backward + SGD step")
    p.add_argument("--no-infer", action="store_true", help="skip the inference timing")
    p.add_argument("--threads", type=int, default=0, help="torch threads on CPU (default: torch's choice)")
    p.add_argument("--csv", metavar="PATH", help="also write the table as CSV")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.models and not (args.msa_vs_emsa or args.reference):
        args.models = ["rest_lite"]
    args.models = args.models or []
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
    print(format_table(rows))
    if args.csv:
        with open(args.csv, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(dict.fromkeys(k for r in rows for k in r)))
            writer.writeheader()
            writer.writerows(rows)
        print(f"wrote {args.csv}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

