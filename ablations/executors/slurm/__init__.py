"""Launching runs on SLURM through submitit: one job array per submission, one `RunJob` per array task.

    settings.py   the sweep's `slurm:` block and command-line overrides, validated
    submit.py     code snapshot, submission (one job array), the submissions log
    queue.py      squeue / sacct: job states, job ids
    monitor.py    status and cancel of an experiment's runs
    named.py      an experiment's jobs by job name, from submitit's pickles

    settings = SlurmSettings.from_mapping(sweep_yaml.get("slurm", {}), source="sweeps/table5.yaml")
    settings = settings.with_cli(partition="learnfair", time_min=600)      # None = not given
    job_ids = submit(store_dir, run_dirs, settings, job_name=experiment.job_name())  # [] if nothing to run
    status(store_dir)   # one RunStatus per run folder: pending/running/requeued/done/failed/cancelled/new
    cancel(store_dir)   # scancel every job still pending or running
    named = jobs_named(store_dir, experiment.job_name(), run_dirs)  # also the jobs no file recorded
    status(store_dir, run_dirs, named); cancel(store_dir, run_dirs, named)

Nothing cluster-specific lives here: partition, account, QoS, constraint and any other sbatch option come
from the sweep file or the command line. The code is snapshotted at submission (a copy of the packages
rest/, ablations/, analysis/, rest_knobs.py in <store_dir>/.code/<hash>/, put first on the job's PYTHONPATH),
so editing the checkout while jobs wait in the queue cannot change them. submitit's files and the jobs' logs
are in <store_dir>/.submitit/. store_dir is the results root's run store (results/runs/, shared by every
sweep, so one submission lock covers them all: ablations.results_root). Each run folder's slurm.json says
which job works on it (see ablations.executors.job), and .submitit/submissions.jsonl every job id of every
submission. The job name is the experiment's (ablations.experiment.Experiment.job_name), so its jobs are
found in squeue even where neither was written.
"""
from ablations.executors.slurm.monitor import RunStatus, cancel, failure_reason, status
from ablations.executors.slurm.named import NamedJobs, jobs_named, run_dir_of_job
from ablations.executors.slurm.queue import (
    ACTIVE_STATES,
    CANCELLABLE_STATES,
    controller_answers,
    job_ids_of,
    slurm_installed,
    valid_job_id,
)
from ablations.executors.slurm.settings import SBATCH_VALUE, SlurmSettings
from ablations.executors.slurm.submit import CODE_DIR, SUBMITIT_DIR, SubmissionError, snapshot_code, submit

__all__ = [
    "ACTIVE_STATES", "CANCELLABLE_STATES", "CODE_DIR", "SBATCH_VALUE", "SUBMITIT_DIR", "NamedJobs", "RunStatus",
    "SlurmSettings", "SubmissionError", "cancel", "controller_answers", "failure_reason", "job_ids_of", "jobs_named",
    "run_dir_of_job", "slurm_installed", "snapshot_code", "status", "submit", "valid_job_id",
]
