"""tonic datasets and transforms as data sources, `--sensor` for recordings that do not declare their sensor, and
our binning against tonic's ToFrame, on the real N-MNIST recordings (../shared/data/nmnist-small)."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from edge.data import NMNIST_SPEC, Preprocess, load_frames
from edge.errors import DataError
from edge.events import list_folder_dataset, read_events, read_tonic_dataset
from edge.transforms import to_frames
from firmware_py.binning import COUNT, BinSpec
from host_tools.cli import main

tonic = pytest.importorskip("tonic", reason="tonic (the `data` extra) is not installed")
N_TOFRAME = 300    # every (1000 // N)-th recording is compared with ToFrame (334 here; N = 1000: all of them)


def test_tonic_spec_reads_what_the_folder_reader_reads(nmnist_small):
    X, y, names = load_frames(str(nmnist_small), NMNIST_SPEC, progress=False, limit=300)
    Xt, yt, names_t = load_frames(f"tonic:NMNIST:{nmnist_small}", NMNIST_SPEC, progress=False, limit=300)
    assert Xt.shape == (300, 30, 578) and names_t == names
    assert np.array_equal(Xt, X) and np.array_equal(yt, y)
    again = load_frames(f"tonic:NMNIST:{nmnist_small}:train", NMNIST_SPEC, progress=False, limit=300)[0]  # cached
    assert np.array_equal(again, X)
    with pytest.raises(DataError, match=r"NMNIST \(test\) is not on disk"):
        load_frames(f"tonic:NMNIST:{nmnist_small}:test", NMNIST_SPEC, progress=False)


def test_our_binning_is_tonic_toframe_from_time_zero_with_the_incomplete_window(nmnist_small):
    """Counts per 10 ms bin from t = 0, every bin up to the last event: ToFrame(time_window=dt, start_time=0,
    include_incomplete=True) cut to T frames, on every third real recording (all 1,000 with N_TOFRAME = 1000:
    the note of issue 13). tonic's default start (the first event's time) shifts the bins, so its frames differ."""
    T = 40                                      # longer than any recording: nothing cut on our side
    spec = BinSpec(34, 34, dt_us=10_000, n_steps=T, mode=COUNT)
    exact = tonic.transforms.ToFrame(sensor_size=(34, 34, 2), time_window=10_000, start_time=0,
                                     include_incomplete=True)
    default = tonic.transforms.ToFrame(sensor_size=(34, 34, 2), time_window=10_000)
    ds = read_tonic_dataset("NMNIST", nmnist_small)
    differ_default = 0
    for i in range(0, 1000, 1000 // N_TOFRAME):
        events, _ = ds[i]
        ours = to_frames(read_events(ds.data[i]).events, spec)
        theirs = exact(events).reshape(-1, 2 * 34 * 34)
        assert len(theirs) <= T and ours[len(theirs):].sum() == 0, ds.data[i]
        assert np.array_equal(ours[:len(theirs)], np.minimum(theirs, 255)), ds.data[i]
        d = default(events).reshape(-1, 2 * 34 * 34)
        differ_default += not (len(d) <= T and np.array_equal(ours[:len(d)], d))
    assert differ_default > 0.9 * N_TOFRAME, differ_default


def test_tonic_transforms_give_the_default_spike_tensor(nmnist_small):
    """The README's model input (34x34 -> 17x17, T = 30 bins of 10 ms, binary) built by tonic's own transforms
    (Downsample then ToFrame) equals our binning; a tonic event transform (Denoise) equals our denoise."""
    X, y, _ = load_frames(str(nmnist_small), NMNIST_SPEC, progress=False, limit=100)
    frames = tonic.transforms.Compose([
        tonic.transforms.Downsample(spatial_factor=0.5),
        tonic.transforms.ToFrame(sensor_size=(17, 17, 2), time_window=10_000, start_time=0, include_incomplete=True)])
    Xt, yt, _ = load_frames(read_tonic_dataset("NMNIST", nmnist_small, transform=frames), NMNIST_SPEC,
                            progress=False, limit=100)
    assert np.array_equal(Xt, X) and np.array_equal(yt, y)
    denoised = read_tonic_dataset("NMNIST", nmnist_small, transform=tonic.transforms.Denoise(filter_time=10_000))
    Xd, _, _ = load_frames(denoised, NMNIST_SPEC, progress=False, limit=30)
    ours, _, _ = load_frames(str(nmnist_small), NMNIST_SPEC, Preprocess(denoise_us=10_000), progress=False, limit=30)
    assert np.array_equal(Xd, ours) and not np.array_equal(Xd, X[:30])


@pytest.fixture(scope="module")
def tonic_saved_npy(nmnist_small, tmp_path_factory):
    """Two real recordings per digit saved from tonic's NMNIST as .npy (np.save of its event array) in the
    N-MNIST layout; the first is 00247.bin, whose largest x is 32."""
    ds = read_tonic_dataset("NMNIST", nmnist_small)
    root = tmp_path_factory.mktemp("npy") / "Train"
    items = list_folder_dataset(nmnist_small)
    wanted = {str(nmnist_small / "Train" / "0" / "00247.bin")}
    for digit in range(10):
        wanted |= set(sorted(str(f) for f, label in items if label == digit)[:2])
    sources = {}
    for i, path in enumerate(ds.data):
        if path in wanted:
            events, label = ds[i]
            out = root / str(label) / (path.rsplit("/", 1)[1][:-4] + ".npy")
            out.parent.mkdir(parents=True, exist_ok=True)
            np.save(out, events)
            sources[out] = path
    return root, sources


def test_sensor_option_bins_a_tonic_saved_npy_as_34x34(tonic_saved_npy, tmp_path, capsys):
    root, sources = tonic_saved_npy
    npy = root / "0" / "00247.npy"
    rec = read_events(npy)
    assert rec.sensor_size[:2] == (33, 34) and rec.sensor_inferred        # largest x is 32
    X, _, _ = load_frames(str(npy), NMNIST_SPEC, progress=False)
    want, _, _ = load_frames(sources[npy], NMNIST_SPEC, progress=False)
    assert np.array_equal(X, want)
    with pytest.raises(DataError, match=r"events reach x=32, y=33, outside the 32x32 sensor .*--sensor"):
        load_frames(str(npy), BinSpec(32, 32, 10_000, 30, 2), progress=False)
    rc = main(["train", "--data", str(root.parent), "--sensor", "34x34", "--arch", "578-8-10", "--epochs", "1",
               "--out", str(tmp_path / "m.ckpt"), "--no-progress"])
    assert rc == 0 and "best validation accuracy" in capsys.readouterr().out


def test_cli_tonic_data_and_transform(nmnist_small, tonic_saved_npy, tmp_path, capsys):
    folder = tmp_path / "few"
    for f, label in list_folder_dataset(nmnist_small)[::50]:        # 20 real recordings, 2 per digit
        (folder / "Train" / str(label)).mkdir(parents=True, exist_ok=True)
        shutil.copy(f, folder / "Train" / str(label) / f.name)
    ckpt = tmp_path / "m.ckpt"
    assert main(["train", "--data", f"tonic:NMNIST:{folder}", "--transform", "Denoise(filter_time=10000)",
                 "--arch", "578-8-10", "--epochs", "1", "--out", str(ckpt), "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["eval", str(ckpt), "--data", f"tonic:NMNIST:{folder}", "--transform",
                 "Denoise(filter_time=10000)", "--json", "--no-progress"]) == 0
    assert '"n": 20' in capsys.readouterr().out


@pytest.mark.parametrize("argv,message", [
    (["--data", "tonic:NMNIST"], "expected tonic:NAME:PATH"),
    (["--data", "tonic:NMNIST:/nonexistent/x"], "folder /nonexistent/x does not exist"),
    (["--data", "tonic:Nope:."], "tonic has no dataset class 'Nope'"),
    (["--data", "builtin", "--transform", "Denoise(filter_time=1)"], "tonic transforms apply to a tonic dataset"),
    (["--data", "tonic:NMNIST:.", "--transform", "Denoise(filter_time=open('x'))"], "not a tonic transform call"),
    (["--data", "tonic:NMNIST:.", "--transform", "__import__('os')"], "tonic.transforms has no __import__"),
    (["--data", "tonic:NMNIST:.", "--transform", "Nope(a=1)"], "tonic.transforms has no Nope"),
])
def test_bad_tonic_arguments_are_one_line_errors(argv, message, tmp_path, capsys):
    assert main(["train", *argv, "--epochs", "1", "--out", str(tmp_path / "m.ckpt")]) == 2
    assert message in capsys.readouterr().err
