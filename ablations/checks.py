"""What a launch checks before it writes anything: every dataset can be found and gives each run a step per
epoch, attention can act at every cell's input size, and SLURM jobs start the processes the runs expect.
Each refusal is an InputError (exit 2, one paragraph naming the file and key)."""
from __future__ import annotations

import importlib.util

from ablations import store
from ablations.plan import Plan
from ablations.spec.errors import InputError
from rest_knobs import VARIANTS, inert_attention, smallest_live_size


def check_datasets(plan: Plan, runs) -> None:
    """Every dataset the runs read can be found (cheap: lists folders), and gives every run at least one
    training step per epoch; InputError otherwise.

    The training loader drops the last partial update, so a run trains only if an epoch holds one global
    batch: samples_per_device(n, devices x accumulation steps, data.repeated_aug) >= train.device_batch, which
    is n >= train.batch_size for n training images (after data.train_limit); with data.repeated_aug an epoch
    takes the images in whole multiples of 256, so n // 256 * 256 >= train.batch_size once n >= 256. Else the
    run would end with no step at all (ablations.training.loaders raises then): refused here, before anything
    is written.
    """
    from ablations.spec.dataset_checks import (
        DatasetError,
        check_dataset,
        enough_images,
        train_images,
        updates_per_epoch,
    )

    checked, counts = set(), {}
    for planned in runs:
        config = planned.run.config
        data = config.data
        key = (data.dataset, data.root, config.aug.rand_augment)
        if key not in checked:
            checked.add(key)
            try:
                check_dataset(config)
            except DatasetError as err:
                raise InputError(plan.sweep.path, "data.dataset",
                                 f"{data.dataset!r} (recipe {plan.recipe!r}): {err}") from None
        at_most = enough_images(config)  # counting further cannot change the verdict
        size_key = (data.dataset, data.root, data.train_limit, at_most)
        if size_key not in counts:
            counts[size_key] = train_images(config, at_most)
        n = counts[size_key]
        if updates_per_epoch(config, n) < 1:
            raise InputError(plan.sweep.path, "train.batch_size", no_step_message(config, n, planned.run.cell.label))


def inert_attention_cells(plan: Plan) -> dict[str, str]:
    """Cell label -> why attention cannot act at its runs' input size (rest_knobs.inert_attention), for the
    cells where it cannot."""
    out = {}
    for planned in plan.runs:
        config = planned.run.config
        if config.model.name not in VARIANTS:  # another timm model: no ResT attention knob to check
            continue
        problems = inert_attention(config.data.img_size, config.model.stem, config.model.reduction)
        if problems and planned.run.cell.label not in out:
            out[planned.run.cell.label] = f"at {config.data.img_size} px, {'; '.join(problems)}"
    return out


def check_live_attention(plan: Plan, allow: bool) -> None:
    """A knob that cannot act is an error, not a result: refuse an experiment in which some cell's attention
    cannot act (InputError, exit 2, one line), unless `allow`."""
    inert = inert_attention_cells(plan)
    if not inert or allow:
        return
    label, why = next(iter(inert.items()))
    live = max(smallest_live_size(p.run.config.model.stem, p.run.config.model.reduction) for p in plan.runs
               if p.run.config.model.name in VARIANTS)
    more = f" (and {len(inert) - 1} more cell{'s' if len(inert) > 2 else ''})" if len(inert) > 1 else ""
    raise InputError(plan.sweep.path, "data.img_size",
                     f"cell {label!r}{more}: {why}: one key per query, so softmax, Conv-1 and IN cannot act and "
                     f"the attention knobs compare nothing. Attention is alive in every stage of every cell from "
                     f"{live} px (--set data.img_size={live}); --allow-inert-attention runs it anyway")


def no_step_message(config, n: int, cell: str) -> str:
    """Why a run of `config` over `n` training images would train no step, and what to change."""
    from ablations.spec.dataset_checks import RA_EPOCH, TRAIN_IMAGES

    data, batch = config.data, config.train.batch_size
    where = f"dataset {data.dataset!r}" + (f" at {data.root}" if data.root else "")
    known = TRAIN_IMAGES.get(data.dataset)
    if data.train_limit is not None and n == data.train_limit:
        images = f"{n:,} training images of data.train_limit={n} ({where}" + (f" has {known:,})" if known else ")")
    else:
        images = f"{n:,} training images of {where}"
    usable = n
    if data.repeated_aug and n >= RA_EPOCH:
        usable = n // RA_EPOCH * RA_EPOCH
        images = (f"{usable:,} images an epoch takes with data.repeated_aug (whole multiples of {RA_EPOCH}) of the "
                  f"{images}")
    return (f"{batch} (the global batch of one update) is more than the {images}, cell {cell!r}: the training "
            f"loader drops the last partial batch, so the run would do no training step. Set train.batch_size to "
            f"at most {usable:,} (--set train.batch_size=N) or train on more images.")


def check_devices(plan: Plan, settings) -> None:
    """A SLURM job runs train.devices processes: nodes x tasks_per_node of each run's resource group must
    match its config."""
    for planned in plan.runs:
        group = settings.for_levels(list(planned.run.cell.levels.values()))
        tasks, wanted = group.nodes * group.tasks_per_node, planned.run.config.train.devices
        if wanted != tasks:
            raise InputError("train.devices", f"cell {planned.run.cell.label!r} is configured for {wanted} "
                             f"device(s) but its SLURM job would start {tasks} task(s) (nodes x tasks per node); "
                             f"give --tasks-per-node / --nodes to match, or --set train.devices={tasks}")


def check_run_folders(launches) -> None:
    """A symbolic link inside a run folder a launch will write (its tensorboard/, wandb/ or previous/) would
    receive the run's files, and a checkpoint.pt that is not a regular file would be resumed from: InputError
    naming it, before anything is written. (The folders above them are refused for every command:
    ablations.experiment.refuse_links.)"""
    for launch in launches:
        for name in (store.TENSORBOARD, store.WANDB, store.PREVIOUS):
            if (launch.planned.run_dir / name).is_symlink():
                raise InputError(launch.planned.run_dir / name, "<folder>", store.LINK_UNDER_ROOT)
        checkpoint = launch.planned.run_dir / store.CHECKPOINT
        if checkpoint.is_symlink() or (checkpoint.exists() and not checkpoint.is_file()):  # a FIFO would hang a read
            raise InputError(checkpoint, "<file>", "is not a regular file (a link, a FIFO, a device or a folder): "
                             "the run would resume from it. Remove it; the run then starts over")


def check_loggers(plans) -> None:
    """train.logger wandb needs the wandb package: refused before anything is written, not when a run starts."""
    for plan in plans:
        if any(p.run.config.train.logger == "wandb" for p in plan.runs) and importlib.util.find_spec("wandb") is None:
            raise InputError("train.logger", "wandb, but the wandb package is not installed here: pip install "
                                             "'.[wandb]', or --logger tensorboard")


def check_models(plans) -> None:
    """Every model that is not a ResT size is one timm knows and takes its run's input size (a forward pass on
    the meta device); refused naming the sweep, the cell, the model and the sizes it takes. Imports timm and
    torch only when such a model is in a plan."""
    others = {}
    for plan in plans:
        for planned in plan.runs:
            config = planned.run.config
            if config.model.name not in VARIANTS:
                others.setdefault((config.model.name, config.data.img_size), (plan, planned))
    if not others:
        return
    import timm

    from ablations.training.models import size_problem, sizes_taken

    for (name, size), (plan, planned) in others.items():
        sweep = plan.sweep.path
        if not timm.is_model(name):
            raise InputError(sweep, "model.name", f"{name!r} (cell {planned.run.cell.label!r}) is neither a ResT size "
                             f"({', '.join(VARIANTS)}) nor a model timm knows; python -c \"import timm; "
                             f"print(timm.list_models('*{name[:6]}*'))\" lists names")
        problem = size_problem(planned.run.config, 10)
        if problem:
            taken = sizes_taken(planned.run.config, 10)
            raise InputError(sweep, "data.img_size", f"{name} (cell {planned.run.cell.label!r}) cannot take {size} px "
                             f"({problem}); sizes it takes: {', '.join(map(str, taken)) or 'none of those tried'} "
                             f"(--set data.img_size=N)")


def check_schedules(plans) -> None:
    """RunConfig.check_schedule for every cell a launch (or its dry run) would train: at launch only, so tables
    of runs launched before the check still read them."""
    for plan in plans:
        for planned in plan.runs:
            try:
                planned.run.config.check_schedule()
            except InputError as err:
                raise InputError(plan.sweep.path, err.key, f"cell {planned.run.cell.label!r}: {err.message}") from None
