"""The synthetic generator: deterministic, valid DVS-like events, classes that differ, a shift that bites."""
import numpy as np
import pytest

from edge.events import validate_events
from edge.generator import N_CLASSES, SENSOR, generate_dataset, generate_sample
from edge.shifts import SensorShift
from edge.transforms import to_frames
from firmware_py.binning import BinSpec

SPEC = BinSpec(34, 34, 10_000, 30, downsample=2)


def test_same_seed_same_events_other_seed_other_events():
    a, b, c = generate_dataset(2, seed=5), generate_dataset(2, seed=5), generate_dataset(2, seed=6)
    assert all(np.array_equal(x.events, y.events) for x, y in zip(a, b))
    assert not all(len(x.events) == len(z.events) and np.array_equal(x.events, z.events) for x, z in zip(a, c))


def test_events_are_valid_sensor_output_with_both_polarities():
    for rec in generate_dataset(3, seed=1):
        validate_events(rec.events, SENSOR, rec.path)
        assert set(np.unique(rec.events["p"])) == {0, 1}
        assert len(rec.events) > 300


def test_labels_balanced_and_classes_separable_by_nearest_mean():
    train = generate_dataset(20, seed=0)
    test = generate_dataset(10, seed=1)
    feats = lambda recs: np.stack([to_frames(r.events, SPEC).reshape(6, 5, -1).sum(1).ravel() for r in recs])
    ytr = np.array([r.label for r in train])
    assert np.bincount(ytr).tolist() == [20] * N_CLASSES
    means = np.stack([feats(train)[ytr == c].mean(0) for c in range(N_CLASSES)])
    xte, yte = feats(test), np.array([r.label for r in test])
    pred = np.argmin(((xte[:, None, :] - means[None]) ** 2).sum(-1), axis=1)
    assert (pred == yte).mean() > 0.6  # chance is 0.1: the classes carry information


def test_sensor_shift_changes_the_input_statistics():
    rng_a, rng_b = np.random.default_rng(3), np.random.default_rng(3)
    plain = generate_sample(4, rng_a)
    shifted = generate_sample(4, rng_b, SensorShift(rotation_deg=30, polarity_gain=0.5, noise_rate_hz=20))
    on_frac = lambda r: r.events["p"].mean()
    assert on_frac(shifted) < on_frac(plain) - 0.1  # gain 0.5 halves ON events
    assert len(shifted.events) != len(plain.events)
    assert SensorShift.parse("rotation=20,gain=0.5,noise=5,hot=3") == SensorShift(20.0, 0.5, 5.0, 3)
    with pytest.raises(ValueError, match="cannot parse 'spin=3'"):
        SensorShift.parse("spin=3")
