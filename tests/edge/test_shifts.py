"""Sensor changes on real N-MNIST recordings (edge.shifts): each knob does what it says, deterministically."""
from __future__ import annotations

import numpy as np
import pytest

from edge.shifts import SensorShift, shift_recording


@pytest.fixture(scope="module")
def recording(nmnist_small):
    from edge.events import read_events
    return read_events(sorted((nmnist_small / "Train" / "3").glob("*.bin"))[0], 3)


def shifted(rec, text, seed=0):
    return shift_recording(rec, SensorShift.parse(text), np.random.default_rng(seed))


def test_no_shift_is_the_recording_itself(recording):
    assert shifted(recording, "") is recording


def test_offset_moves_every_event_and_drops_what_leaves_the_sensor(recording):
    e = recording.events
    w = recording.sensor_size[0]
    out = shifted(recording, "dx=3,dy=-2").events
    inside = (e["x"] + 3 < w) & (e["y"] - 2 >= 0)
    assert len(out) == int(inside.sum()) < len(e)
    assert np.array_equal(out["x"], e["x"][inside] + 3) and np.array_equal(out["y"], e["y"][inside] - 2)
    assert np.array_equal(out["t"], e["t"][inside]) and np.array_equal(out["p"], e["p"][inside])


def test_four_quarter_turns_give_the_recording_back(recording):
    rec = recording
    once = shifted(rec, "rotation=90").events
    w = rec.sensor_size[0]
    assert np.array_equal(once["x"], w - 1 - rec.events["y"]) and np.array_equal(once["y"], rec.events["x"])
    for _ in range(4):
        rec = shifted(rec, "rotation=90")
    assert np.array_equal(rec.events, recording.events)


def test_polarity_gain_thins_on_events_only_and_is_seeded(recording):
    e = recording.events
    out = shifted(recording, "gain=0.5", seed=4).events
    on, off = int((e["p"] == 1).sum()), int((e["p"] == 0).sum())
    assert int((out["p"] == 0).sum()) == off
    kept = int((out["p"] == 1).sum())
    assert abs(kept - on / 2) < 5 * np.sqrt(on / 4)                  # binomial(on, 1/2) within 5 sigma
    assert np.array_equal(out, shifted(recording, "gain=0.5", seed=4).events)
    assert not np.array_equal(out, shifted(recording, "gain=0.5", seed=5).events)


def test_time_scale_stretches_about_the_first_event(recording):
    e = recording.events
    out = shifted(recording, "time=2").events
    assert np.array_equal(out["t"] - e["t"][0], 2 * (e["t"] - e["t"][0]))
    assert np.array_equal(out["x"], e["x"])


def test_noise_and_hot_pixels_add_events_in_the_sensor_and_the_recording_span(recording):
    e = recording.events
    w, h = recording.sensor_size[:2]
    rate, duration = 20.0, int(e["t"][-1] - e["t"][0])
    out = shifted(recording, "noise=20").events
    added = len(out) - len(e)
    expect = rate * w * h * duration * 1e-6
    assert abs(added - expect) < 5 * np.sqrt(expect)                 # Poisson within 5 sigma
    assert np.all(np.diff(out["t"]) >= 0)
    assert out["x"].max() < w and out["y"].max() < h and out["t"][0] >= e["t"][0] and out["t"][-1] <= e["t"][-1]
    hot = shifted(recording, "hot=2,hot_rate=1000").events
    extra = len(hot) - len(e)
    assert abs(extra - 2 * 1000 * duration * 1e-6) < 5 * np.sqrt(2 * 1000 * duration * 1e-6)


@pytest.mark.parametrize("text,message", [("gain=0", "gain=0: expected a number > 0"),
                                          ("time=-1", "expected a finite number >= 0"),
                                          ("dx=1.5", "dx='1.5' is not a whole number"),
                                          ("spin=3", "expected name=value with name in")])
def test_bad_shift_specs_name_the_problem(text, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        SensorShift.parse(text)


def test_stream_samples_of_real_recordings_are_shifted_the_same_every_time(nmnist_small):
    from host_tools.stream import samples_from
    plain = samples_from(str(nmnist_small / "Train"), limit=3)
    moved = samples_from(str(nmnist_small / "Train"), shift="dx=2,noise=5", limit=3)
    again = samples_from(str(nmnist_small / "Train"), shift="dx=2,noise=5", limit=3)
    for a, b, c in zip(plain, moved, again):
        assert a.label == b.label and a.name == b.name
        assert len(b.x) != len(a.x) and np.array_equal(b.x, c.x) and np.array_equal(b.t, c.t)
