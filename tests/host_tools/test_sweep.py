"""`snn-edge sweep`: the quick example on 2 local Dask workers, a failing trial, resume after Ctrl-C,
and one study shared by two processes through a throwaway PostgreSQL server."""
from __future__ import annotations

import csv
import os
import pwd
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

optuna = pytest.importorskip("optuna", reason="the sweep extra is not installed (pip install -e '.[sweep]')")
pytest.importorskip("distributed", reason="the sweep extra is not installed (pip install -e '.[sweep]')")

from edge.errors import SnnEdgeError  # noqa: E402
from host_tools.cli import main as cli_main  # noqa: E402
from host_tools.sweep import load_config, run_sweep  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
QUICK = REPO / "examples" / "sweep-quick.toml"
LIMIT = 200  # the recordings every config here uses: one cache entry, made once by `warm_cache`


@pytest.fixture(scope="module", autouse=True)
def warm_cache():
    """Bin the built-in recordings once in this process: the workers then read them from the cache."""
    from edge.data import NMNIST_SPEC, load_frames

    load_frames("builtin", NMNIST_SPEC, limit=LIMIT, progress=False)


def _env() -> dict:
    return {**os.environ, "OPENBLAS_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


def _sweep_cmd(*args) -> list[str]:
    return [sys.executable, "-m", "host_tools.cli", "sweep", *map(str, args)]


def _trials(storage: str, name: str):
    return optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)


def _states(db: Path) -> set[str]:
    """The trial states in an Optuna SQLite file, read with plain SQL (opening it with Optuna while the
    sweep creates it would race the sweep to create the tables)."""
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
            return {row[0] for row in conn.execute("SELECT state FROM trials")}
    except sqlite3.Error:  # not created yet
        return set()


def _config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "sweep.toml"
    path.write_text(text)
    return path


def test_quick_example_on_two_workers(tmp_path):
    out = tmp_path / "quick"
    assert cli_main(["sweep", str(QUICK), "--workers", "2", "--out", str(out), "--no-progress"]) == 0
    trials = _trials(f"sqlite:///{out / 'study.db'}", "quick")
    assert [t.state.name for t in trials] == ["COMPLETE"] * 4
    assert {(t.params["lr"], t.params["a_mem"]) for t in trials} == {(2e-3, 0.8), (2e-3, 0.9), (1e-2, 0.8),
                                                                     (1e-2, 0.9)}
    for t in trials:  # the value is the validation accuracy of the best epoch, from the run's own history
        history = t.user_attrs["histories"][0]
        assert len(history) == 3 and t.value == max(h["val_acc"] for h in history)
        assert 0.0 <= t.value <= 1.0 and (out / "trials" / f"{t.number:04d}" / "seed0.ckpt").is_file()
    with open(out / "results.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["state"] for r in rows] == ["complete"] * 4
    assert [float(r["val_acc"]) for r in rows] == pytest.approx([t.value for t in trials])
    best = max(trials, key=lambda t: t.value)
    md = (out / "results.md").read_text()
    assert f"Best: trial {best.number}, val_acc {best.value:.4f}" in md and md.count("| complete |") == 4
    assert (out / "metric_vs_params.png").stat().st_size > 5000 and (out / "best_curve.png").stat().st_size > 5000


FAILING = """
[sweep]
name = "failing"
sampler = "grid"
metric = "val_acc"
out = "{out}"
[train]
data = "builtin"
limit = 200
epochs = {epochs}
batch-size = 16
[space]
arch = ["578-48-10", "578-48-4"]  # 4 outputs for 10 classes: that point's trials fail
lr = [2e-3, 1e-2]
"""


def test_failed_trial_is_recorded_and_resume_continues_after_ctrl_c(tmp_path):
    out = tmp_path / "failing"
    config = _config(tmp_path, FAILING.format(out=out, epochs=12))
    storage = f"sqlite:///{out / 'study.db'}"
    proc = subprocess.Popen(_sweep_cmd(config, "--workers", "1"), env=_env(), cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            states = _states(out / "study.db")
            if "RUNNING" in states and ("COMPLETE" in states or "FAIL" in states):
                break  # one trial done, the next one running: cut it off
            time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    first = _trials(storage, "failing")
    done = [t for t in first if t.state.is_finished() and not t.user_attrs.get("interrupted")]
    assert 1 <= len(done) < 4, "the interruption came too late to test --resume"
    # the trial that was running: marked interrupted and its point queued again by the Ctrl-C handler,
    # or (if the signal came between asking and submitting) left running, for --resume to find
    # (none when that trial finished between the last look and the signal: a loaded machine does that)
    cut = [t for t in first if t.user_attrs.get("interrupted") or t.state.name == "RUNNING"]
    assert len(cut) <= 1
    if cut and cut[0].state.name == "FAIL":
        assert [t.user_attrs["requeued_from"] for t in first if t.state.name == "WAITING"] == [cut[0].number]

    with pytest.raises(SnnEdgeError, match="already exists; --resume continues it"):
        run_sweep(load_config(config), workers=2, progress=False)
    result = run_sweep(load_config(config), workers=2, resume=True, progress=False)
    final = [t for t in _trials(storage, "failing") if not t.user_attrs.get("interrupted")]
    assert len(final) == 4 and all(t.state.is_finished() for t in final), [(t.number, t.state.name, t.params, t.user_attrs.get("requeued_from")) for t in _trials(storage, "failing")]
    points = {(t.params["arch"], t.params["lr"]) for t in final}
    assert points == {(a, lr) for a in ("578-48-10", "578-48-4") for lr in (2e-3, 1e-2)}
    for t in final:
        if t.params["arch"] == "578-48-4":
            assert t.state.name == "FAIL"
            assert "the data has 10 classes, the last size is 4" in t.user_attrs["error"]
        else:
            assert t.state.name == "COMPLETE" and len(t.user_attrs["histories"][0]) == 12
    rows = {r["trial"]: r for r in result.rows}
    assert sum(r["state"] == "fail" and "the data has 10 classes" in r["error"] for r in rows.values()) == 2
    if cut:
        assert rows[cut[0].number]["state"] == "interrupted"
    assert [r["state"] for r in rows.values()].count("interrupted") == len(cut)
    assert "| fail |" in result.table_md.read_text()


@pytest.mark.parametrize("space,message", [
    ('lr = {low = 1e-4, high = 1e-2, log = true}', "grid sampler: lr is a continuous range"),
    ('hiden = [1, 2]', "hiden: not an option of snn-edge train"),
    ('seed = [1, 2]', "seed cannot be searched (list seeds in [sweep] seeds)"),
    ('lr = {low = 1e-2, high = 1e-4}', "[space] lr:"),
])
def test_bad_configs_name_the_problem(tmp_path, space, message):
    config = _config(tmp_path, f'[sweep]\nsampler = "grid"\n[train]\ndata = "builtin"\n[space]\n{space}\n')
    with pytest.raises(SnnEdgeError, match=re.escape(message)):
        load_config(config)


def test_tpe_and_random_draw_inside_ranges_and_expand_bundles(tmp_path):
    """No Dask here: the samplers' draws and how a point becomes train options."""
    from host_tools.sweep import _distributions, open_study, point_options, train_args

    for sampler in ("tpe", "random"):
        config = load_config(_config(tmp_path, f"""
[sweep]
name = "{sampler}"
sampler = "{sampler}"
trials = 3
out = "{tmp_path / sampler}"
[train]
data = "builtin"
set = {{grad_clip = 2.0}}
[space]
lr = {{low = 1e-4, high = 1e-2, log = true}}
batch-size = {{low = 8, high = 32, step = 8}}
net = {{choices = {{plain = {{readout = "spikes"}}, leaky = {{readout = "membrane", reset-grad = true}}}}}}
"""))
        study, _ = open_study(config, None, resume=False)
        for _ in range(3):
            trial = study.ask(_distributions(config))
            assert 1e-4 <= trial.params["lr"] <= 1e-2 and trial.params["batch_size"] in (8, 16, 24, 32)
            args = train_args(point_options(config, trial.params), "test")
            assert args.lr == trial.params["lr"] and args.batch_size == trial.params["batch_size"]
            assert args.set == ["grad_clip=2.0"]
            assert (args.readout, args.reset_grad) == {"plain": ("spikes", False),
                                                       "leaky": ("membrane", True)}[trial.params["net"]]
        assert (tmp_path / sampler / "study.db").is_file()


def test_a_trial_beyond_the_target_is_surplus(tmp_path):
    """Two processes that count one free place at once both ask: the later-numbered trial is surplus."""
    from host_tools.sweep import _distributions, _surplus, open_study

    config = load_config(_config(tmp_path, f'[sweep]\nsampler = "grid"\ntrials = 1\nout = "{tmp_path}"\n'
                                           f'[train]\ndata = "builtin"\n[space]\nlr = [1e-3, 2e-3]\n'))
    study, _ = open_study(config, None, resume=False)
    first, second = study.ask(_distributions(config)), study.ask(_distributions(config))
    assert not _surplus(study, first, 1) and _surplus(study, second, 1)
    assert not _surplus(study, second, 2)


# --- one study, two processes, a real PostgreSQL server ----------------------------------------------

def _pg_bindir() -> Path | None:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name)
                   if p.parent.parent.name.isdigit() else 0)
    if found:
        return found[-1].parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def postgres_url():
    """A throwaway PostgreSQL server on 127.0.0.1 (initdb into a temp folder; as `postgres` under root)."""
    bindir = _pg_bindir()
    if bindir is None:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) not found: apt-get install postgresql")
    pytest.importorskip("psycopg", reason="psycopg is not installed (the sweep extra)")
    run_as: list[str] = []
    workdir = Path(tempfile.mkdtemp(prefix="snn-edge-pg-"))
    if os.geteuid() == 0:  # initdb refuses to run as root
        try:
            user = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no `postgres` user to run the server as")
        os.chown(workdir, user.pw_uid, user.pw_gid)
        run_as = ["runuser", "-u", "postgres", "--"]
    data, port = workdir / "data", _free_port()
    pg_ctl = [*run_as, str(bindir / "pg_ctl"), "-D", str(data)]
    try:
        subprocess.run([*run_as, str(bindir / "initdb"), "-D", str(data), "-U", "sweeper", "-A", "trust",
                        "--no-sync"], check=True, capture_output=True)
        subprocess.run([*pg_ctl, "-l", str(workdir / "server.log"), "-w", "-o",
                        f"-p {port} -k {workdir} -c listen_addresses=127.0.0.1 -c fsync=off", "start"],
                       check=True, capture_output=True)
        subprocess.run([str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "sweeper", "sweeps"],
                       check=True, capture_output=True)
        yield f"postgresql://sweeper@127.0.0.1:{port}/sweeps"
    finally:
        subprocess.run([*pg_ctl, "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(workdir, ignore_errors=True)


SHARED = """
[sweep]
name = "shared"
sampler = "grid"
[train]
data = "builtin"
limit = 200
arch = "578-16-10"
epochs = 2
batch-size = 16
[space]
lr = [2e-3, 1e-2]
"""


def test_two_processes_share_one_study_on_postgresql(tmp_path, postgres_url):
    config = _config(tmp_path, SHARED)
    procs = [subprocess.Popen(_sweep_cmd(config, "--storage", postgres_url, "--resume", "--workers", "1",
                                         "--out", tmp_path / name), env=_env(), cwd=tmp_path,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for name in ("a", "b")]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    trials = _trials(postgres_url, "shared")
    # each process alone would have run both points: together they ran each once (a trial asked by both
    # for the same last place at once is marked surplus and not run)
    ran = [t for t in trials if not t.user_attrs.get("surplus")]
    assert [t.state.name for t in ran] == ["COMPLETE", "COMPLETE"]
    assert sorted(t.params["lr"] for t in ran) == [2e-3, 1e-2]
    assert all(0.0 <= t.value <= 1.0 for t in ran)
    assert all(t.state.name == "FAIL" and "histories" not in t.user_attrs for t in trials if t not in ran)
