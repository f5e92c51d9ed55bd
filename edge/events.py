"""Read real DVS recordings into one event representation.

Every reader returns a `Recording`: a structured array with fields x, y (int16), t (int64, microseconds since
the recording's first timestamp origin as the file gives it, shifted so the first event is at t >= 0) and
p (int8, 0 = OFF, 1 = ON), plus the sensor size (W, H, 2). The file readers are tonic's (`tonic.io`); this module
adds what a user needs around them: format detection, validation with errors that name the file and the
problem, and a folder reader for the N-MNIST layout (`<root>/Train|Test/<label>/*.bin`).

tonic is an optional dependency (the `data` extra): it pulls in librosa/numba (~500 MB), which a user who only
flashes and monitors a board does not need. It is imported inside the readers.
"""
from __future__ import annotations

import os
import re
import tokenize
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge.errors import DataError

EVENT_DTYPE = np.dtype([("x", "<i2"), ("y", "<i2"), ("t", "<i8"), ("p", "<i1")])

NMNIST_SENSOR = (34, 34, 2)
DVS128_SENSOR = (128, 128, 2)
RECORDING_SUFFIXES = (".bin", ".aedat", ".aedat4", ".npy")


@dataclass(frozen=True)
class Recording:
    events: np.ndarray  # EVENT_DTYPE, sorted by t
    sensor_size: tuple[int, int, int]  # (W, H, polarities)
    path: str = ""
    label: int | None = None
    # True when the file does not declare its sensor and sensor_size is the events' extent (largest x, y + 1):
    # the binning's own sensor (--sensor) then governs, as long as the events fit in it
    sensor_inferred: bool = False

    @property
    def duration_us(self) -> int:
        return int(self.events["t"][-1] - self.events["t"][0]) if len(self.events) else 0


def _tonic_io():
    try:
        import tonic.io
    except ImportError as exc:  # pragma: no cover - exercised only without the extra
        raise DataError(
            "reading DVS recordings needs tonic: pip install 'snn-edge[data]'"
        ) from exc
    return tonic.io


def make_events(x, y, t, p) -> np.ndarray:
    ev = np.empty(len(x), dtype=EVENT_DTYPE)
    ev["x"], ev["y"], ev["t"], ev["p"] = x, y, t, p
    return ev


# What each field may hold before it is stored as EVENT_DTYPE: integers (or booleans for p) in range, never a
# float, string or object that a cast would truncate or wrap (int64 x = 65539 would become 3 in int16).
COORD_MAX = int(np.iinfo(np.int16).max)


def check_event_fields(events, where: str) -> None:
    """The array is 1-D and structured, with integer fields x, y, t and p (p may be boolean) whose values the
    stored types hold. Raises DataError naming the file, the field, what was expected and what was found."""
    if not isinstance(events, np.ndarray):
        raise DataError(f"{where}: expected an event array, got {type(events).__name__}")
    names = events.dtype.names or ()
    missing = [f for f in ("x", "y", "t", "p") if f not in names]
    if missing:
        raise DataError(f"{where}: event array lacks field(s) {missing}; expected a structured array with "
                        f"fields x, y, t, p, got dtype {events.dtype}")
    if events.ndim != 1:
        raise DataError(f"{where}: expected a 1-D event array, got shape {events.shape}")
    for field in ("x", "y", "t", "p"):
        dt = events.dtype[field]
        if dt.kind not in "iu" and not (field == "p" and dt.kind == "b"):
            raise DataError(f"{where}: field {field!r} has dtype {dt}, expected integers"
                            + (" or booleans" if field == "p" else "") + " (not cast: a cast would hide bad values)")
        if dt.shape:
            raise DataError(f"{where}: field {field!r} holds sub-arrays of shape {dt.shape}, expected one value")
    if len(events):
        for field in ("x", "y"):
            col = events[field]
            if int(col.max()) > COORD_MAX:
                i = int(np.argmax(col))
                raise DataError(f"{where}: event {i} has {field}={int(col[i])}, beyond {COORD_MAX}, the largest "
                                "coordinate stored (int16)")
        if events.dtype["t"] == np.uint64 and int(events["t"].max()) > np.iinfo(np.int64).max:
            raise DataError(f"{where}: timestamp {int(events['t'].max())} us does not fit int64")


def validate_events(events: np.ndarray, sensor_size, where: str) -> np.ndarray:
    """Check an event array against the field types, the sensor and the time rules; return it as EVENT_DTYPE.

    Raises DataError naming `where` (a file path or field) and the first offending event.
    """
    check_event_fields(events, where)
    w, h = int(sensor_size[0]), int(sensor_size[1])
    if len(events) == 0:
        raise DataError(f"{where}: no events")
    for field, limit in (("x", w), ("y", h)):
        bad = np.flatnonzero((events[field] < 0) | (events[field] >= limit))
        if bad.size:
            i = int(bad[0])
            raise DataError(
                f"{where}: event {i} has {field}={int(events[field][i])}, outside the sensor "
                f"({w}x{h}: expected 0 <= {field} < {limit}); {bad.size} such events"
            )
    pol = np.asarray(events["p"]).astype(np.int64)
    bad = np.flatnonzero((pol != 0) & (pol != 1))
    if bad.size:
        raise DataError(f"{where}: event {int(bad[0])} has polarity {int(pol[bad[0]])}, expected 0 or 1")
    ev = make_events(events["x"], events["y"], events["t"], pol)
    t = ev["t"]
    if t[0] < 0:
        raise DataError(f"{where}: negative timestamp {int(t[0])} us at event 0")
    back = np.flatnonzero(np.diff(t) < 0)
    if back.size:
        i = int(back[0]) + 1
        raise DataError(
            f"{where}: timestamps go backwards at event {i} ({int(t[i - 1])} -> {int(t[i])} us); "
            f"{back.size} such steps (expected non-decreasing time)"
        )
    return ev


def read_nmnist_bin(path, label=None) -> Recording:
    """N-MNIST / N-Caltech101 `.bin` (5 bytes an event) through tonic.io.read_mnist_file."""
    path = str(path)
    size = os.path.getsize(path)
    if size == 0:
        raise DataError(f"{path}: empty file (an N-MNIST .bin holds 5 bytes per event)")
    if size % 5:
        raise DataError(
            f"{path}: truncated N-MNIST file: {size} bytes is not a multiple of 5 "
            f"(5 bytes per event; {size % 5} trailing bytes)"
        )
    raw = _tonic_io().read_mnist_file(path, dtype=EVENT_DTYPE)
    return Recording(validate_events(raw, NMNIST_SENSOR, path), NMNIST_SENSOR, path, label)


def read_aedat2_dvs128(path, label=None) -> Recording:
    """AEDAT 2.0 from a DVS128 (MNIST-DVS, POKER-DVS): tonic's header and event readers.

    tonic 1.7's own `read_dvs_128` unpacks the three values of `read_aedat_header_from_file` into two and
    fails, so we call the two functions it is made of and decode the address as it does.
    """
    path = str(path)
    tio = _tonic_io()
    if os.path.getsize(path) == 0:
        raise DataError(f"{path}: empty file, expected an AEDAT 2.0 recording ('#!AER-DAT2.0' header)")
    try:
        version, start, _ = tio.read_aedat_header_from_file(path)
    except (UnboundLocalError, ValueError, IndexError, OSError) as exc:
        raise DataError(f"{path}: broken AEDAT header, expected a first line '#!AER-DAT2.0' ({exc})") from exc
    if not 2 <= version < 3:
        raise DataError(f"{path}: AEDAT version {version}, expected 2.x for a DVS128 recording")
    payload = os.path.getsize(path) - start
    if payload % 8:
        raise DataError(f"{path}: truncated AEDAT 2 data: {payload} bytes after the header is not a multiple of 8")
    raw = tio.get_aer_events_from_file(path, version, start)
    addr = raw["address"].astype(np.int64)
    t = raw["timeStamp"].astype(np.int64)
    ev = make_events((addr >> 8) & 0x7F, (addr >> 1) & 0x7F, t - (t[0] if len(t) else 0), addr & 1)
    return Recording(validate_events(ev, DVS128_SENSOR, path), DVS128_SENSOR, path, label)


def read_aedat4(path, label=None) -> Recording:
    """AEDAT 4 (DV software, DAVIS cameras) through the `aedat` package, made safe by edge.aedat4: the
    framing checked first, the decoder run in a child process; the sensor size from the file."""
    from edge import aedat4

    path = str(path)
    try:
        import aedat  # noqa: F401  (the child needs it: say so here, not as a child's failure)
    except ImportError as exc:
        raise DataError("reading AEDAT4 needs the `aedat` package: pip install aedat") from exc
    aedat4.check_framing(path)
    raw, (w, h) = aedat4.decode_isolated(path)
    sensor = (w, h, 2)
    if not len(raw):
        raise DataError(f"{path}: no events in the AEDAT4 event stream")
    if int(raw["t"].max()) > np.iinfo(np.int64).max:
        raise DataError(f"{path}: AEDAT4 timestamp {int(raw['t'].max())} us does not fit int64")
    t = raw["t"].astype(np.int64)
    ev = make_events(raw["x"], raw["y"], t - t[0], raw["on"].astype(np.int8))
    return Recording(validate_events(ev, sensor, path), sensor, path, label)


def read_numpy(path_or_array, sensor_size=None, label=None, where=None) -> Recording:
    """A numpy structured array with x, y, t, p (in memory or a `.npy` file); sensor size inferred if not given."""
    if isinstance(path_or_array, np.ndarray):
        arr, where = path_or_array, where or "event array"
    else:
        where = str(path_or_array)
        arr = load_npy(where)
    check_event_fields(arr, where)
    inferred = sensor_size is None
    if inferred:
        sensor_size = (int(arr["x"].max()) + 1, int(arr["y"].max()) + 1, 2) if len(arr) else (1, 1, 2)
    return Recording(validate_events(arr, sensor_size, where), tuple(sensor_size), where, label, inferred)


def load_npy(path: str) -> np.ndarray:
    """A .npy file's array, its declared shape checked against the file's size before anything is allocated
    (a memory map reads only the header; a header declaring more data than the file holds is refused)."""
    with open(path, "rb") as fh:
        magic = fh.read(6)
    if magic != b"\x93NUMPY":
        kind = "a zip archive (.npz?)" if magic[:2] == b"PK" else f"it starts with {magic!r}"
        raise DataError(f"{path}: not a .npy file: {kind}, expected the .npy magic b'\\x93NUMPY'")
    try:
        mapped = np.load(path, mmap_mode="r", allow_pickle=False)
        return np.array(mapped)               # a copy in memory: the file may change or go
    except (ValueError, OSError, EOFError, SyntaxError, TypeError, OverflowError, RecursionError,
            tokenize.TokenError) as exc:     # numpy parses the header with tokenize and ast.literal_eval
        text = " ".join(str(exc).split())[:200]
        raise DataError(f"{path}: not a readable .npy event array ({type(exc).__name__}: {text})") from None


def read_events(path, label=None) -> Recording:
    """Read one recording, choosing the reader by file suffix."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix == ".bin":
        return read_nmnist_bin(path, label)
    if suffix == ".aedat4":
        return read_aedat4(path, label)
    if suffix == ".aedat":
        return read_aedat2_dvs128(path, label)
    if suffix == ".npy":
        return read_numpy(path, label=label)
    raise DataError(f"{path}: unknown recording format {suffix!r}; expected one of {', '.join(RECORDING_SUFFIXES)}")


def list_folder_dataset(root, split: str | None = None) -> list[tuple[Path, int]]:
    """(file, label) pairs of a dataset in the N-MNIST layout: `<root>/[Train|Test/]<label>/*.bin`.

    `root` may be the dataset root (holding Train/ and/or Test/) or one split folder. With `split` None and a
    root holding both, Train is listed first, then Test. Labels are the digit folder names.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(
            f"{root}: dataset folder not found; expected the N-MNIST layout <root>/Train/<label>/*.bin "
            "(put the extracted recordings there; nothing is downloaded)"
        )
    splits = [root / s for s in ("Train", "Test") if (root / s).is_dir()]
    if split is not None:
        splits = [root / split]
        if not splits[0].is_dir():
            raise DataError(f"{root}: no {split}/ folder; expected <root>/{split}/<label>/*.bin")
    elif not splits:
        splits = [root]
    items: list[tuple[Path, int]] = []
    for folder in splits:
        for sub in sorted(folder.iterdir()):
            if not sub.is_dir():
                continue
            if not re.fullmatch(r"\d+", sub.name):
                raise DataError(f"{sub}: label folder name {sub.name!r} is not a class number (expected 0, 1, 2, ...)")
            label = int(sub.name)
            items.extend((f, label) for f in sorted(sub.iterdir()) if f.suffix.lower() in RECORDING_SUFFIXES)
    if not items:
        raise DataError(
            f"{root}: no recordings found; expected files like {root}/Train/0/00002.bin "
            f"(suffixes {', '.join(RECORDING_SUFFIXES)})"
        )
    return items


def read_tonic_dataset(name: str, save_to, train: bool = True, **kwargs):
    """A tonic dataset class (e.g. "NMNIST", "DVSGesture", "POKERDVS") read from files already on disk.

    tonic's classes download when their file check fails (for N-MNIST: the archive present and at least 10,000
    recordings). Here the check is only that the extracted split folder (e.g. `Train/`) is there with files in it,
    either as `save_to/<split>` (the N-MNIST archive layout, e.g. ../shared/data/nmnist-small) or as tonic's own
    `save_to/<ClassName>/<split>`; tonic is pointed at it, so a subset works too. A missing folder is an error
    that says which files to put where: nothing is ever downloaded. `kwargs` go to the class (e.g. transform).
    """
    try:
        import tonic.datasets
    except ImportError as exc:  # pragma: no cover - only without the extra
        raise DataError("tonic datasets need tonic: pip install 'snn-edge[data]'") from exc
    cls = getattr(tonic.datasets, name, None)
    if not isinstance(cls, type):
        raise DataError(f"tonic has no dataset class {name!r}")
    roots = (str(save_to), os.path.join(str(save_to), cls.__name__))

    class OnDiskOnly(cls):  # type: ignore[misc, valid-type]
        def _check_exists(self):
            for root in roots:
                folder = os.path.join(root, getattr(self, "folder_name", "") or "")
                if os.path.isdir(folder) and any(files for _, _, files in os.walk(folder)):
                    self.location_on_system = root
                    return True
            return False

        def download(self):
            split = getattr(self, "folder_name", "") or ""
            raise DataError(
                f"tonic dataset {name} ({'train' if train else 'test'}) is not on disk: expected its extracted "
                f"files under {os.path.join(roots[0], split)} or {os.path.join(roots[1], split)} (from archive "
                f"{getattr(self, 'filename', '?')}); put them there, this tool never downloads"
            )

    OnDiskOnly.__name__ = cls.__name__  # tonic derives the folder name from the class name
    return OnDiskOnly(save_to=str(save_to), train=train, **kwargs)
