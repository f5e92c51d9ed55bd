"""Hyper-parameter sweeps over `snn-edge train`: a TOML config, Optuna's study, Dask's workers.

A config names the fixed `train` options, a search space over any of them, a sampler (grid,
random or Optuna's TPE), the seeds run at every point and the validation metric:

    [sweep]
    name = "quick"          # the study's name
    sampler = "grid"        # grid | random | tpe
    trials = 4              # points to evaluate (grid: the whole grid when unset)
    seeds = [0, 1]          # every point is trained once per seed; its score is the mean
    metric = "val_acc"      # val_acc (maximised) | val_nll | val_ece (minimised), at the best epoch
    out = "sweep-quick"     # results folder (default sweep-<name>)

    [train]                 # any option of `snn-edge train`, by its long name (dashes or underscores)
    data = "builtin"
    epochs = 2
    set = {grad_clip = 1.0} # the rule options that --set takes

    [space]
    lr = {low = 1e-4, high = 1e-2, log = true}   # a range (int when low and high are, optional step)
    arch = ["578-16-10", "578-32-10"]            # a list of values
    "set.k_train" = [1, 5]                       # a rule option
    variant = {choices = {plain = {rule = "bptt"}, solsa = {rule = "solsa", readout = "membrane"}}}
                                                 # labelled bundles of options, swept as one parameter

Relative paths (data, out) are taken from the current directory, as on a command line.

Optuna holds the study: by default an SQLite file, `<out>/study.db`, so an interrupted sweep
continues with --resume; a `postgresql://` storage lets sweeps on several machines share one
study. The process that runs the sweep asks Optuna for each trial's parameters and tells it the
result; the training runs (one per trial and seed) are Dask tasks, on a LocalCluster of worker
processes or on an existing cluster (`scheduler`). The workers never touch the study, so an
SQLite file needs no locking across machines.

A trial that raises is recorded as failed, with its error, and the sweep goes on. A trial cut
off by an interruption (Ctrl-C, or its process killed) is marked `interrupted`, does not count
towards `trials`, and its point is queued again for the next --resume. Processes that share a study
can each take the last free place at once: the later trial is marked `surplus` and not run.
"""
from __future__ import annotations

import json
import math
import os
import signal
import socket
import sys
import threading
import time
import traceback
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from edge.errors import SnnEdgeError

METRICS = {"val_acc": "maximize", "val_nll": "minimize", "val_ece": "minimize"}
SAMPLERS = ("grid", "random", "tpe")
# `train` options that the sweep sets itself for every run
RESERVED = {"seed": "list seeds in [sweep] seeds", "out": "each run's checkpoint goes under the sweep's out",
            "curve": "the sweep plots the best trial's curve", "resume": "use snn-edge sweep --resume",
            "no_progress": "runs are always quiet", "set": "name rule options as set.NAME"}
SWEEP_KEYS = {"name", "sampler", "trials", "seeds", "metric", "direction", "out", "sampler_seed"}
STUDY_FILE = "study.db"


@dataclass
class Param:
    """One searched parameter: an Optuna distribution; `bundles` maps a label to the options it sets."""
    name: str
    distribution: Any
    grid: list | None = None             # the values a grid sampler walks (None: a continuous range)
    bundles: dict[str, dict] | None = None

    def options(self, value) -> dict:
        return dict(self.bundles[value]) if self.bundles else {self.name: value}


@dataclass
class SweepConfig:
    name: str
    train: dict[str, Any]
    space: dict[str, Param]
    sampler: str = "tpe"
    trials: int = 0
    seeds: tuple[int, ...] = (0,)
    metric: str = "val_acc"
    direction: str = "maximize"
    sampler_seed: int = 0
    out: Path = Path(".")
    source: str = "sweep config"

    def signature(self) -> dict:
        """What must not change between the processes (and resumptions) that share one study."""
        return {"space": {n: repr(p.distribution) for n, p in self.space.items()},
                "bundles": {n: p.bundles for n, p in self.space.items() if p.bundles},
                "seeds": list(self.seeds), "metric": self.metric, "sampler": self.sampler}


@dataclass
class SweepResult:
    study: Any                      # optuna.Study
    out: Path
    table_csv: Path
    table_md: Path
    rows: list[dict] = field(default_factory=list)  # result_rows: one per trial of the study
    plots: list[Path] = field(default_factory=list)
    best: Any = None                # optuna.trial.FrozenTrial, or None when no trial completed


# --- the config ---------------------------------------------------------------------------------

def _toml():
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]
    return tomllib


def load_config(path) -> SweepConfig:
    tomllib = _toml()
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise SnnEdgeError(f"{path}: no such sweep config") from None
    except tomllib.TOMLDecodeError as exc:
        raise SnnEdgeError(f"{path}: not valid TOML ({exc})") from None
    return parse_config(data, str(path))


def parse_config(data: dict, source: str = "sweep config") -> SweepConfig:
    unknown = set(data) - {"sweep", "train", "space"}
    if unknown:
        raise SnnEdgeError(f"{source}: unknown table(s) {sorted(unknown)}; expected [sweep], [train], [space]")
    sweep = dict(data.get("sweep", {}))
    bad = set(sweep) - SWEEP_KEYS
    if bad:
        raise SnnEdgeError(f"{source}: [sweep] has unknown key(s) {sorted(bad)}; expected {sorted(SWEEP_KEYS)}")
    name = str(sweep.get("name") or Path(source).stem)
    train = _normalise_options(data.get("train", {}), f"{source}: [train]")
    if not data.get("space"):
        raise SnnEdgeError(f"{source}: [space] is empty; name at least one option to search")
    space = {}
    for key, spec in data["space"].items():
        pname = key.replace("-", "_")
        space[pname] = _parse_param(pname, spec, f"{source}: [space] {key}")
    sampler = sweep.get("sampler", "tpe")
    if sampler not in SAMPLERS:
        raise SnnEdgeError(f"{source}: [sweep] sampler: expected one of {', '.join(SAMPLERS)}, got {sampler!r}")
    metric = sweep.get("metric", "val_acc")
    if metric not in METRICS:
        raise SnnEdgeError(f"{source}: [sweep] metric: expected one of {', '.join(METRICS)}, got {metric!r}")
    direction = sweep.get("direction", METRICS[metric])
    if direction not in ("maximize", "minimize"):
        raise SnnEdgeError(f"{source}: [sweep] direction: expected maximize or minimize, got {direction!r}")
    seeds = sweep.get("seeds", [0])
    if not (isinstance(seeds, list) and seeds and all(isinstance(s, int) for s in seeds)):
        raise SnnEdgeError(f"{source}: [sweep] seeds: expected a non-empty list of integers, got {seeds!r}")
    trials = sweep.get("trials")
    if sampler == "grid":
        missing = [n for n, p in space.items() if p.grid is None]
        if missing:
            raise SnnEdgeError(f"{source}: grid sampler: {', '.join(missing)} is a continuous range; give a list "
                               f"of values or a step")
        trials = trials or math.prod([len(p.grid or ()) for p in space.values()])
    if not isinstance(trials, int) or trials < 1:
        raise SnnEdgeError(f"{source}: [sweep] trials: expected a positive integer (required for sampler "
                           f"{sampler}), got {trials!r}")
    config = SweepConfig(name=name, train=train, space=space, sampler=sampler, trials=trials, seeds=tuple(seeds),
                         metric=metric, direction=direction, sampler_seed=int(sweep.get("sampler_seed", 0)),
                         out=Path(sweep.get("out", f"sweep-{name}")), source=source)
    # every option name is checked now (values are checked by each run): a typo fails before any work
    first = {n: (p.grid[0] if p.grid else p.distribution.low) for n, p in space.items()}
    train_args(point_options(config, first), source)
    return config


def override_train(config: SweepConfig, items: list[str]) -> None:
    """Fixed train options from KEY=VALUE strings (VALUE read as a TOML value, else as text), e.g. a
    smoke run of a long sweep with `--train epochs=1 --train limit=200`."""
    tomllib = _toml()
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise SnnEdgeError(f"--train: expected KEY=VALUE, got {item!r}")
        try:
            value = tomllib.loads(f"v = {text}")["v"]
        except tomllib.TOMLDecodeError:
            value = text
        config.train.update(_normalise_options({key.strip(): value}, "--train"))
    first = {n: (p.grid[0] if p.grid else p.distribution.low) for n, p in config.space.items()}
    train_args(point_options(config, first), "--train")


def _normalise_options(options: dict, where: str) -> dict:
    """Dashes to underscores, `set = {k = v}` to set.k; reserved options refused."""
    out: dict[str, Any] = {}
    for key, value in options.items():
        key = key.replace("-", "_")
        if key == "set":
            if not isinstance(value, dict):
                raise SnnEdgeError(f"{where}: set: expected a table of rule options, got {value!r}")
            out.update({f"set.{k}": v for k, v in value.items()})
        elif key in RESERVED:
            raise SnnEdgeError(f"{where}: {key} cannot be set here ({RESERVED[key]})")
        else:
            out[key] = value
    return out


def _parse_param(name: str, spec, where: str) -> Param:
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    if name in RESERVED and not (isinstance(spec, dict) and "choices" in spec):
        raise SnnEdgeError(f"{where}: {name} cannot be searched ({RESERVED[name]})")
    if isinstance(spec, list):
        if not spec:
            raise SnnEdgeError(f"{where}: empty list of values")
        return Param(name, CategoricalDistribution(spec), grid=list(spec))
    if not isinstance(spec, dict):
        raise SnnEdgeError(f"{where}: expected a list of values, a range {{low, high}} or {{choices}}, got {spec!r}")
    if "choices" in spec:
        bundles = spec["choices"]
        if not (isinstance(bundles, dict) and bundles and all(isinstance(b, dict) for b in bundles.values())):
            raise SnnEdgeError(f"{where}: choices: expected a table of labelled option tables")
        bundles = {label: _normalise_options(b, where) for label, b in bundles.items()}
        return Param(name, CategoricalDistribution(list(bundles)), grid=list(bundles), bundles=bundles)
    extra = set(spec) - {"low", "high", "log", "step"}
    if extra or not {"low", "high"} <= set(spec):
        raise SnnEdgeError(f"{where}: a range takes low, high and optionally log, step; got {sorted(spec)}")
    low, high, log, step = spec["low"], spec["high"], bool(spec.get("log", False)), spec.get("step")
    is_int = all(isinstance(v, int) for v in (low, high)) and (step is None or isinstance(step, int))
    try:
        if is_int:
            dist = IntDistribution(low, high, log=log, step=step or 1)
            grid = None if log else list(range(low, high + 1, step or 1))
        else:
            dist = FloatDistribution(float(low), float(high), log=log, step=step)
            grid = None if step is None else [round(low + k * step, 12)
                                              for k in range(int(round((high - low) / step)) + 1)]
    except ValueError as exc:
        raise SnnEdgeError(f"{where}: {exc}") from None
    return Param(name, dist, grid=grid)


def point_options(config: SweepConfig, params: dict) -> dict:
    """The train options of one point: the fixed ones, overridden by the searched ones."""
    options = dict(config.train)
    for name, value in params.items():
        options.update(config.space[name].options(value))
    return options


def train_args(options: dict, source: str):
    """Parsed `snn-edge train` options (argparse.Namespace) from a dict; a bad one is a SnnEdgeError."""
    from host_tools.cmd_train import train_parser

    parser = train_parser()

    def fail(message) -> NoReturn:
        raise SnnEdgeError(f"{source}: train options: {message}")

    parser.error = fail  # type: ignore[method-assign]  # argparse would print usage and exit; a sweep records the error instead
    # argparse has no public table of its actions; _actions is the documented-by-use way to read it
    actions = {a.dest: a for a in parser._actions}
    argv: list[str] = []
    for key, value in options.items():
        if key.startswith("set."):
            argv.append(f"--set={key[4:]}={value}")
            continue
        action = actions.get(key)
        if action is None:
            fail(f"{key}: not an option of snn-edge train (see snn-edge train --help)")
        flag = next(s for s in action.option_strings if s.startswith("--"))
        if action.nargs == 0:
            if not isinstance(value, bool):
                fail(f"{key}: expected true or false, got {value!r}")
            if value:
                argv.append(flag)
        else:
            argv.append(f"{flag}={value}")  # '=' keeps a negative number from reading as a flag
    return parser.parse_args(argv)


# --- one run, on a Dask worker ------------------------------------------------------------------

def run_seed(options: dict, seed: int, checkpoint: str, metric: str) -> dict:
    """Train one point with one seed -> {"value", "history", "seconds"} or {"error", "traceback", "seconds"}.

    Runs in a Dask worker; errors come back as data so that any exception (even one that does not
    pickle) reaches the sweep as a readable line.
    """
    t0 = time.perf_counter()
    try:
        from host_tools.cmd_train import train_from_args

        args = train_args({**options, "seed": seed, "out": checkpoint, "no_progress": True}, "trial")
        result = train_from_args(args, curve_png=None)
        best = result.history[result.best_epoch] if result.best_epoch >= 0 else {}
        if metric not in best:
            raise SnnEdgeError(f"metric {metric}: the run has no validation split (val_fraction "
                               f"{args.val_fraction})")
        value = float(best[metric])
        if not math.isfinite(value):
            raise SnnEdgeError(f"metric {metric} is {value}")
        return {"value": value, "history": result.history, "seconds": time.perf_counter() - t0}
    except Exception as exc:  # noqa: BLE001 - every failure of a run is a result of the sweep
        return {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()[-4000:],
                "seconds": time.perf_counter() - t0}


# --- the study ----------------------------------------------------------------------------------

def _sampler(config: SweepConfig):
    import optuna

    if config.sampler == "grid":
        class AskTellGridSampler(optuna.samplers.GridSampler):
            """GridSampler.after_trial calls study.stop() once the grid is walked, which only works inside
            study.optimize; the sweep asks and tells itself and stops at its trial count."""

            def after_trial(self, study, trial, state, values) -> None:
                pass

        return AskTellGridSampler({n: p.grid for n, p in config.space.items()}, seed=config.sampler_seed)
    if config.sampler == "random":
        return optuna.samplers.RandomSampler(seed=config.sampler_seed)
    return optuna.samplers.TPESampler(seed=config.sampler_seed)


def _distributions(config: SweepConfig) -> dict:
    from optuna.distributions import CategoricalDistribution

    if config.sampler == "grid":  # the grid sampler draws from its lists; the trial must agree with them
        return {n: CategoricalDistribution(p.grid) for n, p in config.space.items()}
    return {n: p.distribution for n, p in config.space.items()}


def _redact(url: str) -> str:
    """A storage URL without its password, for messages."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        if ":" in creds:
            return f"{scheme}://{creds.split(':')[0]}:***@{host}"
    return url


def open_study(config: SweepConfig, storage: str | None, resume: bool):
    import optuna
    import sqlalchemy.exc

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    config.out.mkdir(parents=True, exist_ok=True)
    url = storage or f"sqlite:///{(config.out / STUDY_FILE).resolve()}"
    try:
        study = optuna.create_study(study_name=config.name, storage=_rdb_storage(url), sampler=_sampler(config),
                                    direction=config.direction, load_if_exists=resume)
    except optuna.exceptions.DuplicatedStudyError:
        raise SnnEdgeError(f"{_redact(url)}: study {config.name!r} already exists; --resume continues it "
                           f"(or give another [sweep] name or --out)") from None
    except (sqlalchemy.exc.SQLAlchemyError, ImportError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SnnEdgeError(f"--storage {_redact(url)}: cannot open the study ({first})") from None
    signature = config.signature()
    stored = study.user_attrs.get("signature")
    if stored is None:
        try:
            study.set_user_attr("signature", signature)
        except sqlalchemy.exc.IntegrityError:  # another process sharing the study stored it just now
            pass
        stored = study.user_attrs.get("signature")
    if stored != json.loads(json.dumps(signature)):
        raise SnnEdgeError(f"{_redact(url)}: study {config.name!r} was made with another search space, seeds, "
                           f"metric or sampler than {config.source}; give another [sweep] name or --out")
    if study.direction.name.lower() != config.direction:
        raise SnnEdgeError(f"{_redact(url)}: study {config.name!r} is to {study.direction.name.lower()}, "
                           f"{config.source} says {config.direction}")
    return study, url


def _rdb_storage(url: str):
    """Optuna's SQL storage; sweeps that start together on an empty database race to create its tables
    (the loser gets a duplicate-table error): the loser waits and opens the tables the winner made."""
    import optuna
    import sqlalchemy.exc

    for attempt in range(5):
        try:
            return optuna.storages.RDBStorage(url)
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError):
            if attempt == 4:
                raise
            time.sleep(0.5 * (attempt + 1))


def _alive(pid) -> bool:
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, TypeError, ValueError):
        return True
    return True


def _interrupt(study, trial) -> None:
    """Mark a running trial as cut off: failed, not counted, its point queued again."""
    from optuna.trial import TrialState

    try:
        trial.set_user_attr("interrupted", True)
    except RuntimeError:  # Optuna's UpdateFinishedTrialError: it was told before the interruption
        return
    study.enqueue_trial(trial.params, user_attrs={"requeued_from": trial.number})
    study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)


def requeue_orphans(study) -> int:
    """Trials left running by a dead process of this machine (killed sweeps) -> interrupted. Count."""
    import optuna
    from optuna.trial import TrialState

    host, n = socket.gethostname(), 0
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if t.user_attrs.get("driver_host") == host and not _alive(t.user_attrs.get("driver_pid")):
            # Trial(study, id) is Optuna's own handle on a stored trial; FrozenTrial has no public id
            _interrupt(study, optuna.trial.Trial(study, t._trial_id))
            n += 1
    return n


def _counts(t) -> bool:
    """Whether a trial counts towards the target: not cut off by an interruption, not a surplus one."""
    return not (t.user_attrs.get("interrupted") or t.user_attrs.get("surplus"))


def _surplus(study, trial, target: int) -> bool:
    """Whether a just-asked trial lies beyond the target. Processes sharing a study each count, then
    ask: two can count the same free place. Trial numbers come from the storage in one order for
    everyone, so the first `target` counted trials by number are the ones that run."""
    from optuna.trial import TrialState

    numbers = sorted(t.number for t in study.get_trials(
        deepcopy=False, states=(TrialState.COMPLETE, TrialState.FAIL, TrialState.RUNNING)) if _counts(t))
    return trial.number not in numbers[:target]


def counted_trials(study) -> tuple[int, int]:
    """(finished, running) trials that count towards the target, from every process sharing the study."""
    from optuna.trial import TrialState

    finished = running = 0
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.FAIL, TrialState.RUNNING)):
        if not _counts(t):
            continue
        if t.state == TrialState.RUNNING:
            running += 1
        else:
            finished += 1
    return finished, running


# --- the sweep ----------------------------------------------------------------------------------

@contextmanager
def _deferred_ctrl_c():
    """Hold Ctrl-C back while the study is written (asking a trial and tagging it, telling a result):
    cut off there, a trial would be left half-sampled or untagged, which --resume cannot tell apart
    from another machine's running trial. The KeyboardInterrupt is raised when the block ends."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if caught:
            raise KeyboardInterrupt


@dataclass
class _Pending:
    trial: Any
    options: dict
    results: dict = field(default_factory=dict)  # seed -> run_seed's dict


def _client(workers: int | None, scheduler: str | None):
    import logging

    from distributed import Client, LocalCluster

    if scheduler:
        try:
            return Client(scheduler, timeout="20s"), None
        except (OSError, TimeoutError) as exc:
            raise SnnEdgeError(f"--scheduler {scheduler}: cannot connect ({exc})") from None
    # One BLAS thread per run: the workers are the parallelism (the processes inherit this environment)
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")
    n = workers or os.cpu_count() or 1
    # ":0": its HTTP server on a free port (None still asks for 8787, and warns when another sweep has it)
    cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=":0",
                           # runs report their own errors; Dask's logs only add shutdown noise (a worker's
                           # heartbeat failing as the scheduler closes first)
                           silence_logs=logging.CRITICAL)
    return Client(cluster), cluster


def _warm_data_cache(config: SweepConfig) -> None:
    """Bin the first point's data once in this process: local workers then read it from the shared
    cache (edge.cache) instead of every worker binning the same recordings at the same time."""
    from host_tools.cmd_train import _bin_spec, _load

    first = {n: (p.grid[0] if p.grid else p.distribution.low) for n, p in config.space.items()}
    try:
        args = train_args(point_options(config, first), config.source)
        _load(args.data, _bin_spec(args), args.limit, False)
    except SnnEdgeError:
        pass  # the trials record it (other points may differ)


def run_sweep(config: SweepConfig, *, workers: int | None = None, scheduler: str | None = None,
              storage: str | None = None, resume: bool = False, progress: bool | None = None) -> SweepResult:
    """Run (or continue) the sweep until `config.trials` trials have finished, then write its results.

    workers: LocalCluster worker processes (default: the CPU count); scheduler: the address of an
    existing Dask scheduler instead. storage: an Optuna storage URL (default <out>/study.db).
    progress: a tqdm bar over trials (default: when stderr is a terminal).
    """
    from tqdm import tqdm

    data = config.train.get("data")
    if isinstance(data, str) and data != "builtin" and Path(data).exists():
        config.train["data"] = str(Path(data).resolve())  # the workers may run in another folder
    study, url = open_study(config, storage, resume)
    if resume:
        requeue_orphans(study)
    finished, _ = counted_trials(study)
    show = sys.stderr.isatty() if progress is None else progress
    bar = tqdm(total=config.trials, initial=min(finished, config.trials), unit="trial", desc=config.name,
               disable=not show)
    client = cluster = None
    pending: dict[int, _Pending] = {}
    try:
        if finished < config.trials:
            if scheduler is None:
                _warm_data_cache(config)
            client, cluster = _client(workers, scheduler)
            _drive(study, config, client, pending, bar)
    except BaseException:
        for p in pending.values():
            _interrupt(study, p.trial)
        raise
    finally:
        bar.close()
        if client is not None:
            client.close()
        if cluster is not None:
            cluster.close()
        result = write_results(study, config)
    return result


def _drive(study, config: SweepConfig, client, pending: dict, bar) -> None:
    from distributed import as_completed
    from optuna.trial import TrialState

    slots = max(1, sum(client.nthreads().values()))
    distributions = _distributions(config)
    host, pid = socket.gethostname(), os.getpid()
    jobs = as_completed()
    owner: dict[str, tuple[int, int]] = {}

    def launch() -> None:
        while sum(len(config.seeds) - len(p.results) for p in pending.values()) < slots:
            if sum(counted_trials(study)) >= config.trials:
                return
            with _deferred_ctrl_c():
                trial = study.ask(distributions)
                trial.set_user_attr("driver_host", host)
                trial.set_user_attr("driver_pid", pid)
                if _surplus(study, trial, config.trials):
                    trial.set_user_attr("surplus", True)
                    study.tell(trial, state=TrialState.FAIL)
                    return
                options = point_options(config, trial.params)
                pending[trial.number] = _Pending(trial, options)
            folder = (config.out / "trials" / f"{trial.number:04d}").resolve()
            for seed in config.seeds:
                future = client.submit(run_seed, options, seed, str(folder / f"seed{seed}.ckpt"), config.metric,
                                       pure=False, key=f"sweep-{config.name}-{trial.number}-seed{seed}-{pid}")
                owner[future.key] = (trial.number, seed)
                jobs.add(future)

    launch()
    for future in jobs:
        number, seed = owner.pop(future.key)
        try:
            outcome = future.result()
        except Exception as exc:  # noqa: BLE001 - a worker that died, a task the scheduler lost
            outcome = {"error": f"{type(exc).__name__}: {exc}", "seconds": float("nan")}
        p = pending[number]
        p.results[seed] = outcome
        if len(p.results) == len(config.seeds):
            with _deferred_ctrl_c():
                line = _finish(study, config, p)
                del pending[number]
            bar.update(1)
            bar.write(line)
        launch()


def _finish(study, config: SweepConfig, p: _Pending) -> str:
    """Tell the study one trial's outcome; -> a line for the log."""
    from optuna.trial import TrialState

    runs = [p.results[s] for s in config.seeds]
    errors = [f"seed {s}: {r['error']}" for s, r in zip(config.seeds, runs) if "error" in r]
    values = [r.get("value") for r in runs]
    t = p.trial
    t.set_user_attr("seed_values", values)
    t.set_user_attr("seconds", round(sum(r["seconds"] for r in runs if math.isfinite(r["seconds"])), 2))
    t.set_user_attr("histories", [r.get("history", []) for r in runs])
    point = ", ".join(f"{k}={v}" for k, v in t.params.items())
    if errors:
        t.set_user_attr("error", errors[0][:1000])
        tb = next((r["traceback"] for r in runs if "traceback" in r), None)
        if tb:
            t.set_user_attr("traceback", tb)
        study.tell(t, state=TrialState.FAIL)
        return f"trial {t.number} ({point}) failed: {errors[0]}"
    mean = sum(values) / len(values)
    t.set_user_attr(f"{config.metric}_std", _std(values))
    study.tell(t, mean)
    return f"trial {t.number} ({point}): {config.metric} {mean:.4f} over {len(values)} seed(s)"


def _std(values: list[float]) -> float:
    m = sum(values) / len(values)
    return math.sqrt(sum((v - m) ** 2 for v in values) / len(values))


# --- results ------------------------------------------------------------------------------------

def _state(t) -> str:
    for mark in ("interrupted", "surplus"):
        if t.user_attrs.get(mark):
            return mark
    return t.state.name.lower()


def result_rows(study, config: SweepConfig) -> list[dict]:
    """One row per trial of the study (every process's), in trial order."""
    rows = []
    for t in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number):
        row: dict[str, Any] = {"trial": t.number, "state": _state(t)}
        row.update({n: t.params.get(n, "") for n in config.space})
        values = t.user_attrs.get("seed_values") or []
        row[config.metric] = "" if t.value is None else round(t.value, 6)
        row[f"{config.metric}_std"] = "" if t.value is None else round(t.user_attrs.get(f"{config.metric}_std", 0), 6)
        row["seeds"] = ";".join("" if v is None else f"{v:.4f}" for v in values)
        row["seconds"] = t.user_attrs.get("seconds", "")
        row["error"] = t.user_attrs.get("error", "")
        rows.append(row)
    return rows


def _best(study):
    from optuna.trial import TrialState

    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not done:
        return None
    pick = max if study.direction.name == "MAXIMIZE" else min
    return pick(done, key=lambda t: t.value)


def write_results(study, config: SweepConfig) -> SweepResult:
    """results.csv, results.md, metric_vs_params.png and best_curve.png in config.out."""
    import csv
    import io

    from edge import plots
    from edge.atomic import write_atomic

    rows = result_rows(study, config)
    columns = list(rows[0]) if rows else ["trial", "state", *config.space, config.metric, "error"]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    csv_path, md_path = config.out / "results.csv", config.out / "results.md"
    write_atomic(csv_path, buf.getvalue().encode())
    best = _best(study)
    lines = [f"# Sweep {config.name}", "",
             f"{config.sampler} sampler, {len(config.seeds)} seed(s) per point {list(config.seeds)}, metric "
             f"{config.metric} on the validation split at each run's best epoch ({config.direction}d), "
             f"mean over seeds; config {config.source}.", ""]
    if best is not None:
        lines += [f"Best: trial {best.number}, {config.metric} {best.value:.4f}, "
                  + ", ".join(f"{k}={v}" for k, v in best.params.items()), ""]
    lines += ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(r[c]) for c in columns) + " |" for r in rows]
    write_atomic(md_path, ("\n".join(lines) + "\n").encode())
    result = SweepResult(study=study, out=config.out, table_csv=csv_path, table_md=md_path, rows=rows, best=best)
    done = [r for r in rows if r["state"] == "complete"]
    if done:
        points = {n: [(r[n], r[config.metric]) for r in done] for n in config.space}
        log_x = frozenset(n for n, p in config.space.items() if getattr(p.distribution, "log", False)
                          or _spans_decades([v for v, _ in points[n]]))
        path = config.out / "metric_vs_params.png"
        plots.metric_vs_params(points, config.metric, path, title=f"sweep {config.name}", log_x=log_x)
        result.plots.append(path)
    if best is not None and best.user_attrs.get("histories"):
        path = config.out / "best_curve.png"
        plots.training_curves(best.user_attrs["histories"][0], path,
                              title=f"best trial {best.number} (seed {config.seeds[0]})")
        result.plots.append(path)
    return result


def _cell(value) -> str:
    """A Markdown table cell: floats to 6 significant digits (the CSV keeps them whole), no pipes."""
    text = f"{value:.6g}" if isinstance(value, float) else str(value)
    return text.replace("|", "/").replace("\n", " ")


def _spans_decades(values: list) -> bool:
    nums = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return len(nums) == len(values) and bool(nums) and min(nums) > 0 and max(nums) / min(nums) >= 50
