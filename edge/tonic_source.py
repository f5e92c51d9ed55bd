"""tonic datasets and transforms as data sources: `--data tonic:NMNIST:PATH[:train|test]`, a tonic dataset
object in Python, and tonic transforms (`--transform "Denoise(filter_time=10000)"`, or the dataset's own
`transform=`).

Each sample the dataset returns (after its transforms) becomes one spike tensor [T, N_in]:
- an event array (fields x, y, t, p): binned by our one binning (firmware_py/binning.py, what the board runs);
- dense frames, e.g. from `tonic.transforms.ToFrame` ([T', P, H, W] counts): flattened in the same (p, y, x)
  order, cut or zero-padded to T steps, and made binary (> 0) or saturated at 255 as the BinSpec's mode says.
Our binning equals `ToFrame(sensor_size, time_window=dt_us, start_time=0, include_incomplete=True)` cut to T
frames (tested on real recordings); see docs/CONTRACTS.md.

tonic is the `data` extra; it is imported only when a tonic source is used. Nothing is downloaded: the dataset
class is pointed at files already on disk (edge.events.read_tonic_dataset).
"""
from __future__ import annotations

import ast
import os

import numpy as np

from edge import cache
from edge.errors import DataError
from edge.events import read_tonic_dataset, validate_events
from edge.progress import bar
from edge.transforms import to_frames
from firmware_py.binning import BINARY, BinSpec

PREFIX = "tonic:"
SPLITS = ("train", "test")


def is_spec(source) -> bool:
    return isinstance(source, str) and source.startswith(PREFIX)


def is_dataset(source) -> bool:
    """A dataset object (tonic's, or anything indexable that returns (sample, target) pairs)."""
    return (not isinstance(source, (str, bytes, os.PathLike, np.ndarray)) and hasattr(source, "__getitem__")
            and hasattr(source, "__len__"))


def parse_spec(spec: str) -> tuple[str, str, bool]:
    """'tonic:NAME:PATH[:train|test]' -> (tonic class name, folder, train?)."""
    parts = spec[len(PREFIX):].split(":")
    train = True
    if len(parts) >= 3 and parts[-1] in SPLITS:
        train = parts.pop() == "train"
    if len(parts) < 2 or not parts[0] or not parts[1]:
        raise DataError(f"--data {spec}: expected tonic:NAME:PATH[:train|test], e.g. tonic:NMNIST:../shared/data/"
                        "nmnist-small")
    return parts[0], ":".join(parts[1:]), train


def open_spec(spec: str, transform=None):
    """The tonic dataset a 'tonic:NAME:PATH[:split]' spec names, over the files on disk, with `transform`."""
    name, path, train = parse_spec(spec)
    if not os.path.isdir(path):
        raise DataError(f"--data {spec}: folder {path} does not exist")
    return read_tonic_dataset(name, path, train=train, transform=transform)


def parse_transforms(texts: list[str]):
    """tonic transforms written as calls, e.g. ["Denoise(filter_time=10000)", "Downsample(spatial_factor=0.5)"],
    built from tonic.transforms with literal arguments only (nothing else is evaluated); several are Composed."""
    if not texts:
        return None
    import tonic.transforms as tt

    made = []
    for text in texts:
        try:
            call = ast.parse(text.strip(), mode="eval").body
            if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Name)):
                raise ValueError("expected Name(arg=value, ...)")
            args = [ast.literal_eval(a) for a in call.args]
            kwargs = {str(k.arg): ast.literal_eval(k.value) for k in call.keywords if k.arg is not None}
            if len(kwargs) != len(call.keywords):
                raise ValueError("** arguments are not literal")
        except (SyntaxError, ValueError) as exc:
            raise DataError(f"--transform {text!r}: not a tonic transform call with literal arguments "
                            f"({exc})") from None
        cls = getattr(tt, call.func.id, None)
        if not isinstance(cls, type):
            raise DataError(f"--transform {text!r}: tonic.transforms has no {call.func.id}")
        try:
            made.append(cls(*args, **kwargs))
        except TypeError as exc:
            raise DataError(f"--transform {text!r}: {exc}") from None
    return made[0] if len(made) == 1 else tt.Compose(made)


def dense_to_spikes(frames: np.ndarray, spec: BinSpec, where: str) -> np.ndarray:
    """Dense frames [T', P, H, W] (or [T', N]) -> uint8 [T, N_in]: cut or zero-padded to T, binary or saturated."""
    flat = frames.reshape(frames.shape[0], -1)
    if flat.shape[1] != spec.n_inputs:
        raise DataError(f"{where}: frames of {list(frames.shape[1:])} give {flat.shape[1]} inputs per step, the "
                        f"binning expects {spec.n_inputs} (2 x {spec.out_h} x {spec.out_w})")
    out = np.zeros((spec.n_steps, spec.n_inputs), np.uint8)
    T = min(spec.n_steps, flat.shape[0])
    body = flat[:T]
    if (body < 0).any():
        raise DataError(f"{where}: negative frame values; expected event counts")
    out[:T] = (body > 0) if spec.mode == BINARY else np.minimum(body, 255)
    return out


def sample_to_spikes(sample, spec: BinSpec, sensor, where: str, pre=None) -> np.ndarray:
    """One sample of a dataset (events or dense frames) -> uint8 [T, N_in]. `sensor`: the (W, H) the dataset
    declares, or None when unknown (after a transform): the binning's sensor then governs if the events fit."""
    sample = np.asarray(sample)
    if sample.dtype.names is None:
        if pre is not None and (pre.denoise_us or pre.refractory_us):
            raise DataError(f"{where}: denoise/refractory filter events; this dataset gives frames")
        return dense_to_spikes(sample, spec, where)
    if sensor is not None and tuple(sensor) != (spec.sensor_w, spec.sensor_h):
        raise DataError(f"{where}: the dataset's sensor is {sensor[0]}x{sensor[1]} but the binning expects "
                        f"{spec.sensor_w}x{spec.sensor_h} (--sensor)")
    events = validate_events(sample, (spec.sensor_w, spec.sensor_h, 2), where)
    if pre is not None:
        events = pre.apply(events)
    return to_frames(events, spec, where)


def _cache_key(ds, spec_params: dict, paths: list[str], limit) -> str | None:
    files = [(os.path.basename(os.path.dirname(p)) + "/" + os.path.basename(p), cache.file_digest(p)) for p in paths]
    return cache.make_key({**spec_params, "tonic": type(ds).__name__, "train": getattr(ds, "train", None),
                           "transform": repr(getattr(ds, "transform", None)), "limit": limit}, files)


def dataset_frames(ds, spec: BinSpec, spec_params: dict, pre=None, use_cache: bool = True, progress: bool = True,
                   limit: int | None = None):
    """(X uint8 [S, T, N_in], y int64 [S], names) of a dataset object; cached when its samples are files."""
    n = len(ds) if limit is None else min(limit, len(ds))
    label = type(ds).__name__
    data = list(getattr(ds, "data", []))[:n]
    paths = [str(p) for p in data] if len(data) == n and all(isinstance(p, (str, os.PathLike)) and
                                                            os.path.isfile(p) for p in data) else None
    names = ([os.path.relpath(p, getattr(ds, "location_on_system", os.path.dirname(p))) for p in paths]
             if paths is not None else [f"{label}:{i}" for i in range(n)])
    key = _cache_key(ds, spec_params, paths, limit) if paths is not None and use_cache else None
    if key is not None and (hit := cache.load(key)) is not None:
        return hit["X"], hit["y"], names
    transformed = getattr(ds, "transform", None) is not None or getattr(ds, "transforms", None) is not None
    sensor = getattr(ds, "sensor_size", None)
    sensor = None if transformed or sensor is None else tuple(sensor)[:2]
    X = np.empty((n, spec.n_steps, spec.n_inputs), np.uint8)
    y = np.empty(n, np.int64)
    for i in bar(range(n), progress, desc=f"reading {label}"):
        sample, target = ds[i]
        X[i] = sample_to_spikes(sample, spec, sensor, f"{label}[{i}] ({names[i]})", pre)
        y[i] = int(target)
    if key is not None:
        cache.store(key, {"X": X, "y": y, "names": np.array(names)})
    return X, y, names
