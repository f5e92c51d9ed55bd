"""Readers on real recordings and on every kind of bad input the foundation issue lists."""
import numpy as np
import pytest

from edge.errors import DataError
from edge.events import (EVENT_DTYPE, list_folder_dataset, make_events, read_events, read_numpy,
                         validate_events)


def test_reads_all_real_nmnist_recordings(nmnist_small):
    items = list_folder_dataset(nmnist_small)
    assert len(items) == 1000
    counts = np.bincount([label for _, label in items])
    assert counts.tolist() == [97, 116, 99, 93, 105, 92, 94, 117, 87, 100]
    rec = read_events(items[0][0], items[0][1])
    assert rec.events.dtype == EVENT_DTYPE and rec.sensor_size == (34, 34, 2)
    assert 1000 < len(rec.events) < 8000 and 250_000 < rec.duration_us < 350_000


def test_reads_aedat2_mnist_dvs_and_aedat4(event_samples):
    dvs = read_events(event_samples / "mnist-dvs_digit0_scale4_0001.aedat")
    assert dvs.sensor_size == (128, 128, 2) and len(dvs.events) > 10_000
    assert dvs.events["t"][0] == 0 and np.all(np.diff(dvs.events["t"]) >= 0)
    davis = read_events(event_samples / "davis-sample.aedat4")
    assert davis.sensor_size == (320, 240, 2)
    assert len(davis.events) == 111_954
    assert set(np.unique(davis.events["p"])) == {0, 1}


def test_reads_numpy_structured(tmp_path):
    ev = make_events([1, 2], [3, 4], [10, 20], [0, 1])
    np.save(tmp_path / "e.npy", ev)
    rec = read_events(tmp_path / "e.npy")
    assert np.array_equal(rec.events, ev) and rec.sensor_size == (3, 5, 2)


def test_truncated_bin_names_file_and_bytes(nmnist_small, tmp_path):
    src = next((nmnist_small / "Train" / "3").iterdir()).read_bytes()
    bad = tmp_path / "cut.bin"
    bad.write_bytes(src[:-2])
    with pytest.raises(DataError, match=r"cut\.bin: truncated N-MNIST file: \d+ bytes is not a multiple of 5"):
        read_events(bad)
    empty = tmp_path / "empty.bin"
    empty.write_bytes(b"")
    with pytest.raises(DataError, match="empty.bin: empty file"):
        read_events(empty)


def test_broken_aedat_headers(event_samples, tmp_path):
    bad2 = tmp_path / "broken.aedat"
    bad2.write_bytes(b"\x00\x01garbage" + (event_samples / "mnist-dvs_digit0_scale4_0001.aedat").read_bytes()[400:])
    with pytest.raises(DataError, match="broken.aedat: broken AEDAT header"):
        read_events(bad2)
    bad4 = tmp_path / "broken.aedat4"
    bad4.write_bytes(b"#!AER-DAT3.1\r\n" + b"\x00" * 100)
    with pytest.raises(DataError, match=r"broken.aedat4: broken AEDAT4 header"):
        read_events(bad4)
    cut = tmp_path / "cut.aedat"
    raw = (event_samples / "mnist-dvs_digit0_scale4_0001.aedat").read_bytes()
    cut.write_bytes(raw[:-3])
    with pytest.raises(DataError, match="cut.aedat: truncated AEDAT 2 data"):
        read_events(cut)


def test_folder_errors(tmp_path):
    with pytest.raises(DataError, match="no recordings found"):
        list_folder_dataset(tmp_path)
    (tmp_path / "Train" / "cat").mkdir(parents=True)
    with pytest.raises(DataError, match="label folder name 'cat' is not a class number"):
        list_folder_dataset(tmp_path)
    with pytest.raises(DataError, match="dataset folder not found"):
        list_folder_dataset(tmp_path / "missing")


def test_sensor_size_and_time_rules():
    ev = make_events([1, 40], [1, 2], [0, 5], [0, 1])
    with pytest.raises(DataError, match=r"where: event 1 has x=40, outside the sensor \(34x34"):
        validate_events(ev, (34, 34, 2), "where")
    ev = make_events([1, 2], [1, 2], [-5, 5], [0, 1])
    with pytest.raises(DataError, match="negative timestamp -5"):
        validate_events(ev, (34, 34, 2), "where")
    ev = make_events([1, 2, 3], [1, 2, 3], [0, 50, 40], [0, 1, 1])
    with pytest.raises(DataError, match=r"timestamps go backwards at event 2 \(50 -> 40 us\)"):
        validate_events(ev, (34, 34, 2), "where")
    ev = make_events([1], [1], [0], [3])
    with pytest.raises(DataError, match="polarity 3, expected 0 or 1"):
        read_numpy(ev, (34, 34, 2))


def test_unknown_suffix_and_missing_file(tmp_path):
    (tmp_path / "x.csv").write_text("1,2,3,4")
    with pytest.raises(DataError, match="unknown recording format '.csv'"):
        read_events(tmp_path / "x.csv")
    with pytest.raises(DataError, match="no such file"):
        read_events(tmp_path / "nope.bin")


def test_tonic_dataset_never_downloads(tmp_path):
    from edge.events import read_tonic_dataset

    with pytest.raises(DataError, match=r"tonic dataset NMNIST \(train\) is not on disk: expected its extracted "
                                        r"files under .*Train or .*NMNIST/Train .*never downloads"):
        read_tonic_dataset("NMNIST", tmp_path)
    (tmp_path / "Train").mkdir()                    # the folder without any recording is not enough
    with pytest.raises(DataError, match="is not on disk"):
        read_tonic_dataset("NMNIST", tmp_path)
    with pytest.raises(DataError, match=r"NMNIST \(test\) is not on disk: .*Test"):
        read_tonic_dataset("NMNIST", tmp_path, train=False)
    with pytest.raises(DataError, match="tonic has no dataset class 'Nope'"):
        read_tonic_dataset("Nope", tmp_path)


@pytest.mark.parametrize("layout", ["nmnist-archive", "tonic"])
def test_tonic_dataset_reads_the_files_on_disk(tmp_path, nmnist_small, layout):
    """tonic's NMNIST class pointed at our 1,000 real recordings, in the archive layout (<root>/Train/<label>,
    as ../shared/data/nmnist-small) or in tonic's (<root>/NMNIST/Train/<label>): all of them, the same events
    as our reader, nothing downloaded."""
    from edge.events import read_tonic_dataset

    if layout == "tonic":
        (tmp_path / "NMNIST").mkdir()
        (tmp_path / "NMNIST" / "Train").symlink_to(nmnist_small / "Train")
        root = tmp_path
    else:
        root = nmnist_small
    ds = read_tonic_dataset("NMNIST", root)
    assert len(ds) == 1000 and sorted(set(ds.targets)) == list(range(10))
    events, target = ds[0]
    first = sorted((nmnist_small / "Train" / "0").iterdir())[0]
    ours = read_events(first).events
    assert target == 0 and np.array_equal(events["x"], ours["x"]) and np.array_equal(events["t"], ours["t"])
