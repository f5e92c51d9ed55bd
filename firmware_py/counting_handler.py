"""A small real handler for the link: it keeps exact, order-sensitive tallies of what it was given.

Used by the link's tests and benchmark (and as the board's fallback when no runtime handler is
installed). Every request changes state deterministically, so a host can compute the state a clean
run must reach and detect any corrupt, lost or twice-applied message:
- events: counted, and folded into a running 24-bit hash of (x, y, t, p);
- end_of_sample(label): the sample's hash picks the result, and a label "learns": it changes one
  weight byte as a function of the label and the sample hash (the order of samples matters);
- load_model / put_weights: chunks stored in order (a chunk out of order is an error, not a gap);
- checkpoint: weights and counters written to ckpt.bin via a temp file and rename, loaded at start,
  so a board reset resumes from the last checkpoint.
"""
import struct

N_CLASSES = 10
N_WEIGHTS = 64
CKPT = "ckpt.bin"
CKPT_FORMAT = "<IIII"       # samples, events, labels, event hash


def fold(h, x, y, t, p):
    """The running event hash (small ints only)."""
    h = ((h * 31) + x) & 0xFFFFFF
    h = ((h * 31) + y) & 0xFFFFFF
    h = ((h * 31) + (t & 0xFFFFFF)) & 0xFFFFFF
    return ((h * 31) + p) & 0xFFFFFF


def learn(weights, label, sample_hash):
    """The deterministic 'learning step' of one labelled sample."""
    k = (label * 7 + sample_hash) % len(weights)
    weights[k] = (weights[k] + 1 + (sample_hash & 0x0F)) & 0xFF


def result_of(sample_hash, sample_events):
    """(class, confidence, counts) of a sample: a function of exactly the events it received."""
    counts = [0] * N_CLASSES
    counts[sample_hash % N_CLASSES] = sample_events & 0xFFFF
    return sample_hash % N_CLASSES, sample_events & 0xFF, counts


class CountingHandler:
    def __init__(self, ckpt=CKPT):
        self.ckpt = ckpt
        self.model = bytearray()
        self.model_total = 0
        self.weights = bytearray(N_WEIGHTS)
        self.samples = 0
        self.n_events = 0
        self.labels = 0
        self.hash = 0
        self.sample_hash = 0
        self.sample_events = 0
        self._load_checkpoint()

    def hello(self):
        return b"counting-handler"

    def load_model(self, offset, total, chunk):
        if offset == 0:
            self.model = bytearray()
            self.model_total = total
        if offset != len(self.model) or total != self.model_total or offset + len(chunk) > total:
            raise ValueError("model chunk at %d (+%d of %d), expected offset %d of %d"
                             % (offset, len(chunk), total, len(self.model), self.model_total))
        self.model.extend(chunk)

    def events(self, batch):
        h = self.sample_hash
        for i in range(batch.count):
            x, y, t, p = batch.event(i)
            h = fold(h, x, y, t, p)
        self.sample_hash = h
        self.sample_events += batch.count
        self.n_events += batch.count

    def end_of_sample(self, label):
        if label >= N_CLASSES:
            raise ValueError("label %d outside the %d classes" % (label, N_CLASSES))
        r = result_of(self.sample_hash, self.sample_events)
        if label >= 0:
            learn(self.weights, label, self.sample_hash)
            self.labels += 1
        self.hash = fold(self.hash, self.sample_hash, self.sample_events, label & 0xFFFF, 0)
        self.samples += 1
        self.sample_hash = 0
        self.sample_events = 0
        return r

    def get_stats(self):
        return [("samples", self.samples), ("events", self.n_events), ("labels", self.labels),
                ("hash", self.hash), ("model_bytes", len(self.model))]

    def get_weights(self, offset, length):
        return self.weights[offset:offset + length], len(self.weights)

    def put_weights(self, offset, total, chunk):
        if total != len(self.weights) or offset + len(chunk) > total:
            raise ValueError("weights chunk at %d (+%d of %d), expected a total of %d"
                             % (offset, len(chunk), total, len(self.weights)))
        self.weights[offset:offset + len(chunk)] = chunk

    def checkpoint(self):
        import os
        tmp = self.ckpt + ".tmp"
        f = open(tmp, "wb")
        f.write(struct.pack(CKPT_FORMAT, self.samples, self.n_events, self.labels, self.hash))
        f.write(self.weights)
        f.close()
        os.rename(tmp, self.ckpt)

    def reset(self):
        self.weights = bytearray(N_WEIGHTS)
        self.samples = self.n_events = self.labels = self.hash = 0
        self.sample_hash = self.sample_events = 0

    def _load_checkpoint(self):
        try:
            f = open(self.ckpt, "rb")
        except OSError:
            return
        data = f.read()
        f.close()
        if len(data) != 16 + N_WEIGHTS:
            return
        self.samples, self.n_events, self.labels, self.hash = struct.unpack_from(CKPT_FORMAT, data, 0)
        self.weights = bytearray(data[16:])


def make_handler():
    return CountingHandler()


class TallyHandler(CountingHandler):
    """Counts events without looking at them: what the link alone costs (benchmarks)."""

    def events(self, batch):
        self.sample_events += batch.count
        self.n_events += batch.count


def make_tally_handler():
    return TallyHandler()
