"""`snn-edge sweep CONFIG.toml`: a hyper-parameter sweep over `train` options (host_tools/sweep.py)."""
from __future__ import annotations

import argparse
from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser("sweep", help="search train options: Optuna study, runs as Dask tasks",
                       description="Run a sweep described by a TOML config (see host_tools/sweep.py and "
                                   "examples/sweep-quick.toml): grid, random or TPE over any train option, "
                                   "several seeds per point, a validation metric; results table and plots.",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("config", help="the sweep's TOML file")
    p.add_argument("--workers", type=int, default=None,
                   help="local Dask worker processes, one thread each (unset: the CPU count)")
    p.add_argument("--scheduler", default=None, metavar="tcp://HOST:8786",
                   help="an existing Dask scheduler instead of a local cluster")
    p.add_argument("--storage", default=None, metavar="URL",
                   help="Optuna storage, e.g. postgresql://user:pw@host/db (unset: sqlite <out>/study.db)")
    p.add_argument("--resume", action="store_true",
                   help="continue the study (after an interruption, or one shared with other machines)")
    p.add_argument("--out", default=None, help="results folder (overrides [sweep] out)")
    p.add_argument("--trials", type=int, default=None, help="target number of trials (overrides [sweep] trials)")
    p.add_argument("--train", action="append", default=[], metavar="KEY=VALUE",
                   help="override a fixed train option of the config, e.g. --train epochs=1")
    p.add_argument("--no-progress", action="store_true", help="no tqdm bar (it shows only on a terminal anyway)")
    p.set_defaults(func=cmd_sweep)


def cmd_sweep(args) -> int:
    from edge.errors import SnnEdgeError
    from host_tools.sweep import load_config, override_train, run_sweep

    config = load_config(args.config)
    override_train(config, args.train)
    if args.out:
        config.out = Path(args.out)
    if args.trials is not None:
        if args.trials < 1:
            raise SnnEdgeError(f"--trials: expected a positive number, got {args.trials}")
        config.trials = args.trials
    if args.workers is not None and args.workers < 1:
        raise SnnEdgeError(f"--workers: expected a positive number, got {args.workers}")
    result = run_sweep(config, workers=args.workers, scheduler=args.scheduler, storage=args.storage,
                       resume=args.resume, progress=False if args.no_progress else None)
    if result.best is None:
        running = [r for r in result.rows if r["state"] == "running"]
        print(f"no trial has completed{f' ({len(running)} still running elsewhere)' if running else ''}; "
              f"table {result.table_md}")
        return 0 if running else 1
    point = ", ".join(f"{k}={v}" for k, v in result.best.params.items())
    print(f"best: trial {result.best.number} ({point}) {config.metric} {result.best.value:.4f}; "
          f"table {result.table_csv}, {result.table_md}; plots {', '.join(str(p) for p in result.plots)}")
    return 0
