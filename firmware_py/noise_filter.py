"""Background-activity filter for a noisy sensor (label-free alignment turns it on: firmware_py/align.py).

An event is kept when one of its 4-neighbour pixels on the sensor had an event (kept or not) less than
`filter_us` before it in the sample (events in arrival order; an event is never its own neighbour); every event
then marks its pixel. This is tonic's denoise (Delbruck's background-activity filter) without its two edge
cases: the bounds are the sensor's (not the largest x and y of the recording) and a pixel that has not fired
in the sample is not "seen at time 0". The host's vectorised twin is edge.transforms.background_filter; tests
compare them event by event on real recordings.

Memory: one int32 per sensor pixel (the time of its last event + 1; 0: none yet in this sample), allocated
when the filter is turned on: 4.6 KB for the 34 x 34 N-MNIST sensor.
"""
from firmware_py.prealloc import zeros

FILTER_US = 5000     # chosen on the training split (noise=5,hot=3: 0.16 -> 0.78 with 5 ms; 2 ms 0.74, 10 ms 0.73)


def filter_bytes(sensor_w, sensor_h):
    return 4 * sensor_w * sensor_h + 16


class NoiseFilter:
    def __init__(self, sensor_w, sensor_h, filter_us=FILTER_US):
        self.w = sensor_w
        self.h = sensor_h
        self.filter_us = filter_us
        self.last = zeros("i", sensor_w * sensor_h)    # pixel x * h + y
        self.dropped = 0
        self.kernel = None
        self.geo = None

    def use_kernel(self, kernel):
        """Filter event arrays with fast.filter_viper (the same events kept, in place)."""
        from array import array
        self.geo = array("i", [self.w, self.h, self.filter_us])
        self.kernel = kernel

    def reset(self):
        """A new sample: no pixel has fired yet."""
        last = self.last
        for k in range(len(last)):
            last[k] = 0

    def apply(self, xs, ys, ts, ps, n):
        """Keep the first n events (checked against the sensor) that pass, moved to the front of the four
        sequences in order; returns how many."""
        if self.kernel is not None and not isinstance(xs, list):
            kept = self.kernel(xs, ys, ts, ps, n, self.last, self.geo)
            self.dropped += n - kept
            return kept
        last = self.last
        w = self.w
        h = self.h
        ft = self.filter_us
        kept = 0
        for i in range(n):
            x = xs[i]
            y = ys[i]
            t = ts[i]
            q = x * h + y
            keep = False
            if x > 0:
                v = last[q - h]
                if v and t - v + 1 < ft:
                    keep = True
            if not keep and x < w - 1:
                v = last[q + h]
                if v and t - v + 1 < ft:
                    keep = True
            if not keep and y > 0:
                v = last[q - 1]
                if v and t - v + 1 < ft:
                    keep = True
            if not keep and y < h - 1:
                v = last[q + 1]
                if v and t - v + 1 < ft:
                    keep = True
            last[q] = t + 1
            if keep:
                if kept != i:
                    xs[kept] = x
                    ys[kept] = y
                    ts[kept] = t
                    ps[kept] = ps[i]
                kept += 1
        self.dropped += n - kept
        return kept
