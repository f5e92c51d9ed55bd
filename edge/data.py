"""Datasets as spike tensors: recordings -> (denoise, refractory) -> binning -> X uint8 [S, T, N_in], y.

Sources: a folder in the N-MNIST layout, a single recording file, "builtin" (the synthetic generator,
`edge.generator`), or a tonic dataset (a "tonic:NAME:PATH" spec or the object itself, `edge.tonic_source`).
Results are cached on disk (`edge.cache`); long loads show a progress bar on a terminal.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from edge import cache
from edge.errors import DataError
from edge.events import Recording, list_folder_dataset, read_events
from edge.progress import bar
from edge.transforms import denoise, refractory, to_frames
from firmware_py.binning import BinSpec

NMNIST_SPEC = BinSpec(34, 34, dt_us=10_000, n_steps=30, downsample=2)
BUILTIN = "builtin"


@dataclass(frozen=True)
class Preprocess:
    """Event filters applied before binning (0 = off)."""
    denoise_us: int = 0
    refractory_us: int = 0

    def apply(self, events: np.ndarray) -> np.ndarray:
        if self.denoise_us:
            events = denoise(events, self.denoise_us)
        if self.refractory_us:
            events = refractory(events, self.refractory_us)
        return events


@dataclass(frozen=True)
class BuiltinSource:
    """The synthetic generator as a data source: n_per_class x 10 classes from `seed`, optional shift."""
    n_per_class: int = 150
    seed: int = 0
    shift: str = ""  # SensorShift.parse syntax

    def recordings(self) -> list[Recording]:
        from edge.generator import generate_dataset
        from edge.shifts import SensorShift

        return generate_dataset(self.n_per_class, self.seed, SensorShift.parse(self.shift))


def frames_of(recording: Recording, spec: BinSpec, pre: Preprocess = Preprocess()) -> np.ndarray:
    """Spike frames of a recording. A sensor the file declares must equal the binning's; one inferred from the
    events' extent (a .npy, e.g. saved from tonic) only has to fit in it: --sensor then says the real size."""
    w, h, _ = recording.sensor_size
    if recording.sensor_inferred:
        if w > spec.sensor_w or h > spec.sensor_h:
            raise DataError(f"{recording.path}: events reach x={w - 1}, y={h - 1}, outside the "
                            f"{spec.sensor_w}x{spec.sensor_h} sensor of the binning (set --sensor WxH)")
    elif (w, h) != (spec.sensor_w, spec.sensor_h):
        raise DataError(
            f"{recording.path}: sensor is {w}x{h} but the binning expects {spec.sensor_w}x{spec.sensor_h} "
            "(--sensor WxH)"
        )
    return to_frames(pre.apply(recording.events), spec, recording.path)


def _params(spec: BinSpec, pre: Preprocess, extra: dict) -> dict:
    return {"bin": list(map(lambda v: list(v) if isinstance(v, tuple) else v, spec.as_tuple())),
            "denoise_us": pre.denoise_us, "refractory_us": pre.refractory_us, **extra}


def load_frames(source, spec: BinSpec = NMNIST_SPEC, pre: Preprocess = Preprocess(), *,
                use_cache: bool = True, progress: bool = True, limit: int | None = None):
    """(X uint8 [S, T, N_in], y int64 [S], names list[str]) for a folder, a file, "builtin"/BuiltinSource, a
    tonic spec "tonic:NAME:PATH[:train|test]" or a dataset object (e.g. a tonic dataset with its transforms;
    edge.tonic_source).

    `limit`: only the first N recordings (a folder reads only those; the built-in set generates only those).
    """
    from edge import tonic_source

    if tonic_source.is_spec(source):
        source = tonic_source.open_spec(source)
    if tonic_source.is_dataset(source):
        return tonic_source.dataset_frames(source, spec, _params(spec, pre, {}), pre, use_cache, progress, limit)
    if source == BUILTIN:
        source = BuiltinSource()
    if isinstance(source, BuiltinSource):
        from edge.generator import N_CLASSES

        if limit is not None and limit < source.n_per_class * N_CLASSES:
            # The generator draws its recordings in order from one seeded stream, so the first `limit`
            # of the full set are the whole of a smaller set: generate (and cache) only those.
            source = replace(source, n_per_class=-(-limit // N_CLASSES))
        key = cache.make_key(_params(spec, pre, {"builtin": vars(source)}), [])
        if use_cache and (hit := cache.load(key)) is not None:
            return hit["X"][:limit], hit["y"][:limit], [str(n) for n in hit["names"]][:limit]
        recs = source.recordings()
        X = np.stack([frames_of(r, spec, pre) for r in bar(recs, progress, desc="binning")])
        y = np.array([r.label for r in recs], dtype=np.int64)
        names = [f"builtin:{i}" for i in range(len(recs))]
    else:
        path = Path(source)
        if path.is_file():
            items = [(path, -1)]
            root = path.parent
        else:
            items = list_folder_dataset(path)
            root = path
        if limit is not None:
            items = items[:limit]
        names = [str(f.relative_to(root)) for f, _ in items]
        digests = [cache.file_digest(f) for f, _ in items]
        key = cache.make_key(_params(spec, pre, {}), list(zip(names, digests)))
        if use_cache and (hit := cache.load(key)) is not None:
            return hit["X"], hit["y"], names
        X = np.empty((len(items), spec.n_steps, spec.n_inputs), dtype=np.uint8)
        for i, (f, label) in enumerate(bar(items, progress, desc=f"reading {path.name}")):
            X[i] = frames_of(read_events(f, label), spec, pre)
        y = np.array([label for _, label in items], dtype=np.int64)
    if use_cache:
        cache.store(key, {"X": X, "y": y, "names": np.array(names)})
    if isinstance(source, BuiltinSource) and limit is not None:
        return X[:limit], y[:limit], names[:limit]  # the generator interleaves classes: a prefix is balanced
    return X, y, names


def split_stratified(y: np.ndarray, val_fraction: float = 0.2, seed: int = 0):
    """Train/validation indices with the same class proportions; deterministic from seed."""
    if not 0 < val_fraction < 1:
        raise DataError(f"val_fraction must be in (0, 1), got {val_fraction}")
    rng = np.random.default_rng(seed)
    train, val = [], []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        n_val = int(round(len(idx) * val_fraction))
        val.extend(idx[:n_val])
        train.extend(idx[n_val:])
    return np.sort(np.array(train, dtype=np.int64)), np.sort(np.array(val, dtype=np.int64))


# ---- The evaluation protocol of the seed tables (issue 18) ------------------------------------
# One fixed stratified three-way split of a labelled recording set: every seed table trains on
# `train`, picks settings (learning rate, epoch, options) on `val` only, and reports `test`.
PROTOCOL_FRACTIONS = (0.6, 0.2, 0.2)   # train / validation / test
PROTOCOL_SEED = 18


@dataclass(frozen=True)
class ThreeWaySplit:
    train: np.ndarray   # int64 indices into the loaded arrays, sorted
    val: np.ndarray
    test: np.ndarray

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "val": len(self.val), "test": len(self.test)}


def split_three_way(y: np.ndarray, names: list[str], fractions=PROTOCOL_FRACTIONS,
                    seed: int = PROTOCOL_SEED) -> ThreeWaySplit:
    """Stratified train / validation / test indices, deterministic from the recording names and seed.

    Within each class the recordings are ordered by name before the seeded permutation, so the split
    does not depend on the order the files were listed or loaded in (T = 5 and T = 30 binnings of
    the same folder get the same recordings in each part). Per class, round(n * f_val) recordings go
    to validation, round(n * f_test) to test, the rest to train.
    """
    y = np.asarray(y)
    if len(names) != len(y):
        raise DataError(f"split_three_way: {len(names)} names for {len(y)} labels")
    if len(fractions) != 3 or any(f <= 0 for f in fractions) or abs(sum(fractions) - 1.0) > 1e-9:
        raise DataError(f"split_three_way: expected three positive fractions summing to 1, got {fractions}")
    if len(set(names)) != len(names):
        raise DataError("split_three_way: recording names must be unique (the split is keyed by them)")
    rng = np.random.default_rng(seed)
    parts: tuple[list, list, list] = ([], [], [])
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        idx = idx[np.argsort([names[i] for i in idx], kind="stable")]
        idx = idx[rng.permutation(len(idx))]
        n_val, n_test = int(round(len(idx) * fractions[1])), int(round(len(idx) * fractions[2]))
        if len(idx) - n_val - n_test < 1 or n_val < 1 or n_test < 1:
            raise DataError(f"split_three_way: class {c} has {len(idx)} recordings, too few for {fractions}")
        parts[1].extend(idx[:n_val])
        parts[2].extend(idx[n_val:n_val + n_test])
        parts[0].extend(idx[n_val + n_test:])
    return ThreeWaySplit(*(np.sort(np.array(p, dtype=np.int64)) for p in parts))


def last_event_times(source, names: list[str]) -> np.ndarray | None:
    """The last event time (us, as binned: since the sample's start) of each named recording of a folder
    (N-MNIST layout, `load_frames`' names), or None for a source without files (built-in, tonic): what a
    model's input reference (converters.quantize.input_reference) takes as the sample duration."""
    path = Path(source) if isinstance(source, (str, Path)) and source != BUILTIN else None
    if path is None or not path.is_dir():
        return None
    by_name = {f"{p.parent.name}/{p.name}": (p, label) for p, label in list_folder_dataset(path)}
    out = []
    for n in names:
        if n not in by_name:
            return None
        t = read_events(*by_name[n]).events["t"]
        out.append(int(t.max()) if len(t) else 0)
    return np.array(out, np.int64)
