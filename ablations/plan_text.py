"""The plan as the user reads it: the experiment, its protocol, where the runs go (with what each SLURM job
array requests), one line per cell with its seeds' states, params, MACs and ETA, and what needs attention."""
from __future__ import annotations

import dataclasses
import json
from collections import Counter, defaultdict

from ablations import store
from ablations.checks import inert_attention_cells
from ablations.executors.job import MAX_DEFAULT_WORKERS
from ablations.experiment import HARDWARE_KEYS, describe_others
from ablations.plan import (
    Plan,
    PlanCache,
    Speed,
    dataset_sizes,
    distinct_runs,
    estimate,
    format_duration,
    measure_speed,
    recorded_gpu_speed,
    recorded_speed,
)
from ablations.results_root import origin
from ablations.spec.config import BUNDLED_DATASETS


def format_plan(plan: Plan, wanted: set, where: str, costs: bool, measure: bool, on_slurm: bool = False,
                settings=None, brief: bool = False) -> str:
    """The plan as the user sees it. costs: compute params/MACs/ETA (something is left to run); measure: time a
    few training steps when no finished run has recorded a speed for the model here; brief: the sweep's line,
    recipe and cells only (a study shows the protocol once)."""
    first = plan.runs[0].run.config
    cache = PlanCache()
    train_images = num_classes = None
    if costs:
        train_images, num_classes = dataset_sizes(first, cache)
    lines = [
        f"sweep {plan.sweep.name}: {plan.sweep.paper_table}",
        f"  file {plan.sweep.path}   runs {plan.experiment.store_dir}/   tables {plan.results_dir}/",
        f"  recipe {plan.recipe}: {first.data.dataset} at {first.data.img_size}px"
        + (f", {train_images} training images" if train_images else "")
        + f", {first.train.epochs} epochs, batch {first.train.batch_size}, {first.optim.name} lr {first.lr:g}",
    ]
    if not brief:
        lines += protocol_block(plan, wanted, where, on_slurm, settings)
    elif on_slurm and settings is not None:
        lines += slurm_request_lines([p for p in plan.runs if p.state.state in wanted], settings)
    speed: Speed | None = None
    if costs and on_slurm:  # the cluster's GPUs, not this machine: recorded GPU runs, or no ETA
        speed = recorded_gpu_speed(plan, first, num_classes, cache)
    elif costs:
        speed = recorded_speed(plan, first, num_classes, cache)
        if speed is None and measure:
            speed = measure_speed(first, num_classes, cache)

    by_cell: dict[str, list] = defaultdict(list)
    for planned in plan.runs:
        by_cell[planned.run.cell.label].append(planned)
    header = f"  {'cell':<24} {'seeds':<22}" + (f" {'params':>9} {'GMACs':>7} {'GMACs+attn':>10} {'img-epochs':>11} "
                                               f"{'ETA':>9}" if costs else "")
    lines += ["", header, "  " + "-" * (len(header) - 2)]
    total_eta, total_image_epochs = 0.0, 0
    for label, planned_runs in by_cell.items():
        seeds = " ".join(f"{p.run.seed}:{p.state.state}" for p in planned_runs)
        baseline = " *" if planned_runs[0].run.cell.is_baseline else ""
        cells = f"  {(label + baseline)[:24]:<24} {seeds[:22]:<22}"
        if costs:
            pending = sum(p.state.state in wanted for p in planned_runs)
            cost = estimate(planned_runs[0].run.config, num_classes, train_images, pending, speed, cache)
            eta = format_duration(cost.eta_s) if speed else "-"
            cells += (f" {cost.params / 1e6:>8.2f}M {cost.macs_paper / 1e9:>7.3f} {cost.macs_total / 1e9:>10.3f} "
                      f"{cost.image_epochs:>11,} {eta:>9}")
            total_eta += cost.eta_s if speed else 0.0
            total_image_epochs += cost.image_epochs
        lines.append(cells.rstrip())
    cache.save()
    counts = plan.counts()
    summary = ", ".join(f"{counts[s]} {s}" for s in store.STATE_ORDER if counts[s])
    lines += ["", f"  {len(by_cell)} cells x {len(plan.runs) // max(1, len(by_cell))} seeds = {len(plan.runs)} runs: "
                  f"{summary}.  (* = baseline)"]
    if costs:
        eta_text = f"ETA {format_duration(total_eta)} {speed.describe()}" if speed else \
            ("no ETA: no finished GPU run has recorded a speed for this model yet" if on_slurm else
             "no ETA: no finished run has recorded a speed for this model here yet (a launch measures one)")
        lines.append(f"  cost of what is left: {total_image_epochs:,} image-epochs; {eta_text}")
    reused = reused_runs(plan)
    if reused:
        lines.append(f"  reused: {len(reused)} run{'s' if len(reused) != 1 else ''} launched by another sweep or cell: "
                     + describe_reused(reused))
    others = describe_others(plan.experiment)
    if others:
        lines.append(f"  note: {others}")
    for problem in plan.problems:
        lines.append(f"  warning: {problem}")
    for label, why in inert_attention_cells(plan).items():
        lines.append(f"  WARNING (--allow-inert-attention): cell {label!r}: {why}: attention cannot act")
    return "\n".join(lines)


def reused_runs(plan: Plan) -> list[tuple[str, int, str]]:
    """(cell, seed, origin) of the runs of the plan first launched by another sweep or cell (shared configs)."""
    found = []
    for planned in plan.runs:
        if planned.state.state != store.NEW and (where := origin(planned.run_dir, plan.meta(planned.run))):
            found.append((planned.run.cell.label, planned.run.seed, where))
    return found


MAX_REUSED_NAMED = 4


def describe_reused(reused: list[tuple[str, int, str]]) -> str:
    named = [f"{cell} seed {seed} = {where}" for cell, seed, where in reused[:MAX_REUSED_NAMED]]
    more = len(reused) - MAX_REUSED_NAMED
    return "; ".join(named) + (f"; and {more} more" if more > 0 else "")


def protocol_block(plan: Plan, wanted: set, where: str, on_slurm: bool, settings) -> list[str]:
    """The plan's lines on the protocol (batch split, optimizer, schedule, augmentation, cells that differ,
    overrides and deviations from the recipe), where the runs go and what SLURM arrays request."""
    first = plan.runs[0].run.config
    overrides = ", ".join(f"{k}={v}" for k, v in plan.experiment.overrides.items())
    lines = []
    devices, device_batch, accum = first.batch_split()
    lines.append(f"  global batch {first.train.batch_size} = {devices} device{'s' if devices != 1 else ''} x "
                 f"{device_batch} per device x {accum} accumulation step{'s' if accum != 1 else ''}"
                 + ("" if devices > 1 else "  (--set train.devices=N for N GPUs)"))
    first_protocol = protocol_lines(first)
    lines += first_protocol[1:]  # its global batch is the line above
    shown = set(first_protocol)
    differing: dict[tuple, list[str]] = {}
    for planned in plan.runs:  # cells whose protocol is not the first cell's: only the lines that differ
        other = tuple(line for line in protocol_lines(planned.run.config) if line not in shown)
        if other:
            differing.setdefault(other, []).append(planned.run.cell.label)
    for other, labels in differing.items():
        lines += [f"    for {', '.join(dict.fromkeys(labels))}: {line.strip()}" for line in other]
    if overrides:
        lines.append(f"  command-line overrides: {overrides}")
    deviations = recipe_deviations(plan)
    if deviations:
        lines.append(f"  DEVIATION from recipe {plan.recipe}: {deviations}")
    lines.append(f"  runs go to: {where}")
    if on_slurm and settings is not None:
        lines += slurm_request_lines([p for p in plan.runs if p.state.state in wanted], settings)
    if plan.recipe == "quick":
        lines.append("  NOTE: the quick recipe is the same experiment, smaller (bundled digits): its numbers are "
                     "not comparable to the paper's. Use --recipe paper-ablation --data-root PATH for the protocol.")
    return lines


def format_study(plans: list[Plan], wanted: set, where: str, costs: bool, measure: bool, on_slurm: bool,
                 settings: dict) -> str:
    """Several sweeps' plan as one: each sweep's cells (the protocol once, again only where a sweep's differs),
    then the study: cells, distinct runs (a run several sweeps list counts once), and the cost of what is left
    in image-epochs and device-hours, each distinct run counted once."""
    parts, shown = [], None
    for plan in plans:
        protocol = (plan.recipe, tuple(protocol_lines(plan.runs[0].run.config)))
        parts.append(format_plan(plan, wanted, where, costs=False, measure=False, on_slurm=on_slurm,
                                 settings=settings[plan.sweep.path], brief=protocol == shown))
        shown = shown or protocol
    launches = distinct_runs(plans)
    cells = sum(len({p.run.cell.label for p in plan.runs}) for plan in plans)
    runs = sum(len(plan.runs) for plan in plans)
    states = Counter(launch.planned.state.state for launch in launches)
    summary = ", ".join(f"{states[s]} {s}" for s in store.STATE_ORDER if states[s])
    lines = ["", f"study: {len(plans)} sweeps, {cells} cells, {runs} runs of which {len(launches)} distinct "
                 f"(a run several sweeps list is trained once): {summary}"]
    if costs:
        lines.append("  " + study_cost(plans, [x for x in launches if x.planned.state.state in wanted], measure,
                                       on_slurm))
    return "\n\n".join(parts) + "\n" + "\n".join(lines)


def study_cost(plans: list[Plan], todo, measure: bool, on_slurm: bool) -> str:
    """The cost of the distinct runs left: image-epochs, and device-hours from recorded (or measured) speeds."""
    cache = PlanCache()
    image_epochs, device_s, unknown = 0, 0.0, 0
    speeds: dict[tuple, Speed | None] = {}
    for launch in todo:
        config = launch.planned.run.config
        train_images, num_classes = dataset_sizes(config, cache)
        key = (config.model.name, config.data.img_size)
        if key not in speeds:
            find = recorded_gpu_speed if on_slurm else recorded_speed
            speeds[key] = find(launch.plan, config, num_classes, cache)
            if speeds[key] is None and measure:
                speeds[key] = measure_speed(config, num_classes, cache)
        cost = estimate(config, num_classes, train_images, 1, speeds[key], cache)
        image_epochs += cost.image_epochs
        if speeds[key]:
            device_s += cost.eta_s * config.train.devices
        else:
            unknown += 1
    cache.save()
    if unknown == len(todo):
        return (f"cost of what is left: {image_epochs:,} image-epochs; no device-hours: no finished run has "
                f"recorded a speed for these models here yet" + ("" if on_slurm else " (a launch measures one)"))
    sources = {speed.source for speed in speeds.values() if speed}
    how = ("speeds recorded by finished runs" if sources <= {"recorded", "recorded-gpu"} else
           "a speed measurement on this machine" + (" and recorded speeds" if len(sources) > 1 else ""))
    hours = f"{device_s / 3600:.2f} device-hours ({format_duration(device_s)} on one device, from {how})"
    missing = f", not counting {unknown} run(s) of models with no recorded speed" if unknown else ""
    return f"cost of what is left: {image_epochs:,} image-epochs, {hours}{missing}"


def protocol_lines(config) -> list[str]:
    """The whole training protocol of a run, as the plan shows it: global batch, optimizer (the lr scaling as
    arithmetic), schedule with its milestones, augmentation and drop path."""
    optim, sched, aug = config.optim, config.sched, config.aug
    lr = (f"{optim.lr:g} x {config.train.batch_size} / {optim.lr_base_batch} = {config.lr:g}" if optim.lr_base_batch
          else f"{config.lr:g}")
    optimizer = f"  optimizer {optim.name}: lr {lr}, weight decay {optim.weight_decay:g}"
    if optim.name == "sgd":
        optimizer += f", momentum {optim.momentum:g}"
    if optim.clip_grad:
        optimizer += f", gradient clipping at norm {optim.clip_grad:g}"
    schedule = f"  schedule {sched.name} over {config.train.epochs} epochs"
    if sched.warmup_epochs:
        schedule += f", warm-up {sched.warmup_epochs} epochs from {config.warmup_lr:g}"
    if sched.name == "cosine":
        schedule += f", down to {config.min_lr:g}"
    elif sched.name == "step":
        every = config.step_decay_epochs
        milestones = list(range(every, config.train.epochs, every))
        schedule += f", lr x 0.1 after epochs {', '.join(map(str, milestones)) or '(none within the run)'}"
    schedule += ", stepped per epoch" if sched.per_epoch else ", stepped per update"
    if config.train.ema:
        schedule += f"; weight EMA (decay {config.train.ema_decay:g})"
    augmentation = (f"  augmentation: crop scale ({aug.scale_min:g}, 1), flip {aug.hflip:g}, RandAugment "
                    f"{aug.rand_augment or 'off'}, mixup {aug.mixup:g}, cutmix {aug.cutmix:g}, label smoothing "
                    f"{aug.label_smoothing:g}, erasing {aug.reprob:g}"
                    + (", repeated augmentation" if config.data.repeated_aug else "")
                    + f"; drop path {config.model.drop_path_rate:g}")
    batch = f"  global batch {config.train.batch_size}"
    return [batch, optimizer, schedule, augmentation]


def resource_groups(runs, settings) -> list[tuple]:
    """The runs by resource group: (SLURM settings with the cells' per_level applied, their runs), one job
    array each."""
    groups: dict[str, tuple] = {}
    for planned in runs:
        cell_settings = settings.for_levels(list(planned.run.cell.levels.values()))
        key = json.dumps(dataclasses.asdict(cell_settings), sort_keys=True, default=str)
        groups.setdefault(key, (cell_settings, []))[1].append(planned)
    return list(groups.values())


def slurm_request_lines(todo, settings) -> list[str]:
    """What each job array of a launch will ask SLURM for: one line per resource group of the runs to run."""
    lines = []
    for group, runs in resource_groups(todo, settings):
        labels = [planned.run.cell.label for planned in runs]
        asks = [f"{group.nodes} node{'s' if group.nodes > 1 else ''} x {group.tasks_per_node} task"
                f"{'s' if group.tasks_per_node > 1 else ''}", f"{group.gpus_per_node} GPU/node",
                f"{group.time_min} min"]
        asks += [f"{name} {value}" for name, value in (
            ("cpus/task", group.cpus_per_task), ("mem", f"{group.mem_gb:g} GB" if group.mem_gb else None),
            ("partition", group.partition), ("account", group.account), ("qos", group.qos),
            ("constraint", group.constraint)) if value]
        cells = ", ".join(dict.fromkeys(labels))
        lines.append(f"  SLURM array for {cells}: {', '.join(asks)}; at most {group.array_parallelism} at once")
        from_files = any(p.run.config.data.dataset not in BUNDLED_DATASETS for p in runs)
        if group.gpus_per_node and group.cpus_per_task is None and from_files:
            lines.append(f"    warning: no cpus/task for {cells}: the runs' data-loading workers follow it (the job's "
                         f"CPUs but one, at most {MAX_DEFAULT_WORKERS}), and a cluster's default (often 1 CPU) leaves "
                         f"a GPU waiting for JPEG decoding; give --cpus-per-task (e.g. {MAX_DEFAULT_WORKERS + 1})")
    return lines


def recipe_deviations(plan: Plan) -> str:
    """The command line's overrides that change a value the recipe sets (hardware keys aside), as text."""
    recipe = plan.experiment.recipe
    model = plan.runs[0].run.config.model.name
    recipe_values = {**recipe.overrides, **recipe.per_model.get(model, {})}
    changed = [f"{k}={v} (recipe: {recipe_values[k]})" for k, v in plan.experiment.overrides.items()
               if k in recipe_values and k not in HARDWARE_KEYS and recipe_values[k] != v]
    return ", ".join(changed)
