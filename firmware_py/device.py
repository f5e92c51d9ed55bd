"""The Device: what the board's serial main loop calls. One model, its state, its learning rule, the
binner of the current sample, persistence. Every failure is a DeviceError (code + message); `call()`
turns any exception into (code, message) so the loop never dies, and a failed load keeps the old model.

Learning: `end_sample(label)` runs the buffered sample once from the zero state; with a label (and
learning on) the rule runs during that pass, so the returned class is the prediction of the pass that
learns (with k_update >= n_steps the weights change only after the last step). Without a label the pass
is inference only; in self-training mode a prediction whose confidence reaches the gate is then learned
in a second pass as if it were the label (see learning.py for the risk of that mode). With a guard
(firmware_py/guard.py; `guard=` a dict of its parameters, {} for the defaults; off by default) the
unlabelled samples' free passes are watched: no self-training during its warm-up, a RAM snapshot of the
learned weights after every good block, and a rollback to it plus a freeze when a block degrades.
"""
import gc
import struct

from firmware_py import blob as fblob
from firmware_py import learning
from firmware_py import memory
from firmware_py.binning import DEFAULT_SLOTS, BinSpec, Binner
from firmware_py.errors import (DeviceError, E_BAD_ARGUMENT, E_BAD_EVENT, E_BAD_LABEL, E_INTERNAL,
                                E_MODEL_FORMAT, E_NO_MEMORY, E_NO_MODEL, E_OK, E_STATE)
from firmware_py.runtime import KIND_LIF, Network, accumulate_rows
from firmware_py.store import load_stored_model, model_fit

VERSION = "1.0"


class Device:
    def __init__(self, heap=None, store=None, rows=None, self_train_gate=None, learn=True, factorised=None,
                 slots=DEFAULT_SLOTS, guard=None):
        self.heap = heap            # bytes a model may take; None: the heap free when it loads
        self.slots = slots          # the event buffer: distinct (step, input) pairs a sample may hold
        self.store = store
        self.rows = rows if rows is not None else accumulate_rows
        self.self_train_gate = self_train_gate
        self.learn = learn
        self.factorised = factorised          # None: the model's choice; 0/1 forces SOLSA full/factorised
        self.net = None
        self.rule = None
        self.binner = None
        self.events_bad = None      # fast.events_bad_viper with the fast kernels: add_events' check
        self.model_crc = 0
        self.in_sample = False
        self.guard_params = None    # None: no guard; a dict of firmware_py.guard.Guard's parameters
        self.guard = None
        self.snapshot = None
        self.calibration = None     # (reference, align.Moments, samples left) while calibrating (calibrate)
        self.t_last = 0             # the current sample's last event time (us): its duration, for alignment
        self.dropping = False       # this sample overflowed the event buffer: the rest of it is ignored
        self.noise_filter = None    # noise_filter.NoiseFilter once a calibration found sensor noise
        self.filter_state = 0       # 0 off, 1 on, -1 wanted but no heap for it (STATS noise_filter)
        if guard is not None:
            self.set_guard(guard)
        self._clear_stats()

    def set_self_training(self, gate, guard=None):
        """Self-training without labels: learn a prediction whose confidence reaches `gate` (0..256; None: off),
        with the guard's parameters `guard` (a dict, {} for the defaults; None: no guard). Both checked first."""
        if gate is not None and (not isinstance(gate, int) or not 0 <= gate <= 256):
            raise DeviceError(E_BAD_ARGUMENT, "self-training gate %r: expected 0..256 (256: never) or off" % (gate,))
        self.set_guard(guard)
        self.self_train_gate = gate

    def set_guard(self, params):
        """Arm the self-training guard with `params` (a dict of Guard's keyword parameters, {} for the
        defaults) or disarm it (None). Armed on the model loaded now (a fresh warm-up) and on every later one."""
        from firmware_py import guard as fguard
        if params is not None:
            if not isinstance(params, dict):
                raise DeviceError(E_BAD_ARGUMENT, "guard: expected a dict of parameters or None, got %r"
                                  % (params,))
            for k in params:
                if k not in fguard.DEFAULTS:
                    raise DeviceError(E_BAD_ARGUMENT, "guard: unknown parameter %r (known: %s)"
                                      % (k, ", ".join(sorted(fguard.DEFAULTS))))
            fguard.Guard(1, **params)         # checks the values
        self.guard_params = params
        self.guard = None
        self.snapshot = None
        if self.net is not None and self.rule is not None and params is not None:
            self.guard, self.snapshot = self._make_guard(self.net.model, self.rule)

    def _make_guard(self, model, rule):
        from firmware_py import guard as fguard
        return fguard.Guard(model.n_classes, **self.guard_params), fguard.Snapshot(model, rule)

    def _clear_stats(self):
        self.dropped_samples = 0
        self.samples = 0
        self.labelled = 0
        self.correct = 0
        self.self_trained = 0
        self.events = 0
        self.bad_events = 0

    # ---- model ----------------------------------------------------------------------------------

    def load_model(self, data, persist=True):
        """Parse, check and install a model (blob, or the .onnx file); on any error the previous model
        stays. Returns info(). Only blobs are persisted (boot reads model.blob; see store.py)."""
        data = memoryview(data)
        if len(data) < fblob.HEADER_SIZE + 4:
            raise DeviceError(E_MODEL_FORMAT, "model blob truncated: %d bytes" % len(data))
        fit = model_fit(self.heap, self.factorised)
        is_blob = bytes(data[:4]) == fblob.MAGIC
        try:
            if is_blob:
                model = fblob.loads(data, fit)
                crc = struct.unpack("<I", bytes(data[len(data) - 4:]))[0]
            else:                             # the .onnx file itself (firmware_py/onnx_reader.py)
                from firmware_py import onnx_reader
                try:
                    model = onnx_reader.read_model(data)
                except DeviceError as exc:
                    if exc.code != E_MODEL_FORMAT:
                        raise
                    raise DeviceError(E_MODEL_FORMAT, "not a model blob (magic %r, expected %r) and not an "
                                      "snn-edge .onnx file (%s)" % (bytes(data[:4]), fblob.MAGIC, exc.msg))
                dims = [(L.n_in, L.n_out, L.per_input) for L in model.layers]
                fit(dims, model.rule, model.params, model.compartments,
                    model.binning[3] if model.binning else None)
                crc = fblob.crc32(data)
        except MemoryError:
            gc.collect()
            raise DeviceError(E_NO_MEMORY, "out of heap while loading the model (previous model kept)")
        self._install(model, crc)
        if persist and self.store is not None and is_blob:
            self.store.save_model(data)
            self.store.clear_weights()
        return self.info()

    def _install(self, model, crc):
        if model.binning is None:
            raise DeviceError(E_MODEL_FORMAT, "model has no binning: the device cannot turn events into inputs")
        sw, sh, dt, ns, ds, crop, mode = model.binning
        try:
            spec = BinSpec(sw, sh, dt, ns, ds, crop, mode)
        except ValueError as exc:
            raise DeviceError(E_MODEL_FORMAT, "model binning: %s" % exc)
        if spec.n_inputs != model.n_inputs:
            raise DeviceError(E_MODEL_FORMAT, "model binning gives %d inputs, layer 0 has %d"
                              % (spec.n_inputs, model.n_inputs))
        try:
            if model.probabilistic:
                from firmware_py.gem import GlmNetwork
                net = GlmNetwork(model)
            else:
                lif = None
                if self.rows is not accumulate_rows:     # fast kernels asked for: the neuron update too
                    from firmware_py import fast
                    lif = fast.best_lif()
                net = Network(model, self.rows, lif)
            rule = learning.make_rule(net, None, self.factorised)
            if rule is not None and self.rows is not accumulate_rows and hasattr(rule, "use_kernel"):
                from firmware_py import fast     # fast rows asked for: the fast learning kernel too
                rule.use_kernel(fast.best_solsa_full())
            binner = Binner(spec, self.slots)
            if self.rows is not accumulate_rows:
                from firmware_py import fast
                kernels = fast.best_events()
                if kernels is not None:
                    self.events_bad = kernels[0]
                    binner.use_kernel(kernels[1])
            guard = snapshot = None
            if self.guard_params is not None and rule is not None:
                guard, snapshot = self._make_guard(model, rule)
        except MemoryError:
            gc.collect()
            raise DeviceError(E_NO_MEMORY, "out of heap while allocating the model's state (previous model kept)")
        self.net, self.rule, self.binner, self.model_crc = net, rule, binner, crc
        self.guard, self.snapshot = guard, snapshot
        self.calibration = None      # a new model bins as its file says: no alignment carries over
        self.noise_filter = None
        self.filter_state = 0
        self.in_sample = False
        self._clear_stats()
        gc.collect()

    def boot(self, stored=None):
        """Install the store's model (and its learned weights) at power-on; returns True if a model loaded.
        `stored` is load_stored_model's answer when the caller read the model earlier; a model that does
        not load raises its DeviceError."""
        if self.store is None:
            return False
        model, crc, error = stored if stored is not None else load_stored_model(self.store, self.heap,
                                                                                 self.factorised)
        if error is not None:
            raise error
        if model is None:
            return False
        self._install(model, crc)
        wpath = self.store.weights_path()
        if wpath is not None:
            with open(wpath, "rb") as f:
                data = f.read()
            from firmware_py.store import apply_checkpoint, persistent_banks
            try:
                apply_checkpoint(self.net.model, data, self.model_crc, persistent_banks(self.rule))
            except DeviceError:
                pass                  # a checkpoint of another model: the model's own weights stand
        return True

    def _need_model(self):
        if self.net is None:
            raise DeviceError(E_NO_MODEL, "no model loaded")

    def info(self):
        self._need_model()
        m = self.net.model
        sizes = [m.layers[0].n_in] + [L.n_out for L in m.layers]
        return {"sizes": sizes, "rule": m.rule if self.rule is not None else "none",
                "n_steps": self.binner.spec.n_steps, "crc": self.model_crc,
                "factorised": getattr(self.rule, "factorised", None)}

    # ---- samples --------------------------------------------------------------------------------

    def begin_sample(self):
        self._need_model()
        self.binner.reset()
        self.t_last = 0
        self.dropping = False
        if self.noise_filter is not None:
            self.noise_filter.reset()
        self.in_sample = True

    def calibrate(self, samples, ref_x, ref_y, ref_dur, ref_pairs=0):
        """Align the input to the model's training data (firmware_py/align.py) from the next `samples`
        samples, labelled or not: `ref_x`, `ref_y` (centroid of the training data's active inputs, cells,
        Q8), `ref_dur` (its mean sample duration, us) and `ref_pairs` (its active (step, input) pairs per
        sample; 0: unknown, no noise detection) are the model's reference (host:
        converters.quantize.input_reference). The alignment replaces the current one (it is measured in the
        binning in use, so calibrating again refines it); a new model bins as its file says."""
        self._need_model()
        from firmware_py import align
        if not isinstance(samples, int) or not 1 <= samples <= align.MAX_SAMPLES:
            raise DeviceError(E_BAD_ARGUMENT, "calibrate: samples %r, expected 1..%d" % (samples, align.MAX_SAMPLES))
        spec = self.binner.spec
        for what, v, hi in (("ref_x", ref_x, spec.out_w << 8), ("ref_y", ref_y, spec.out_h << 8),
                            ("ref_dur", ref_dur, 1 << 30), ("ref_pairs", ref_pairs, spec.n_inputs * spec.n_steps)):
            if not isinstance(v, int) or not 0 <= v <= hi:
                raise DeviceError(E_BAD_ARGUMENT, "calibrate: %s %r, expected 0..%d" % (what, v, hi))
        self.calibration = ((ref_x, ref_y, ref_dur, ref_pairs), align.Moments(), samples)

    def alignment(self):
        """(crop x, crop y, dt_us) the binner uses now, and the calibration samples still to come."""
        self._need_model()
        spec = self.binner.spec
        left = self.calibration[2] - self.calibration[1].samples if self.calibration is not None else 0
        return spec.crop[0], spec.crop[1], spec.dt_us, left

    def _calibration_step(self):
        """Add this sample (still in the binner) to the calibration; at its last sample, re-register."""
        from firmware_py import align
        ref, moments, samples = self.calibration
        moments.add_binner(self.binner, self.t_last)
        if moments.samples >= samples:
            self.calibration = None
            dt0 = self.net.model.binning[2]              # the model's own step (BinSpec.as_tuple order)
            try:
                spec, filtering, again = align.next_binning(self.binner.spec, ref, moments, dt0,
                                                            self.noise_filter is not None)
            except ValueError:
                return                # no active input in any calibration sample: nothing to align to
            if filtering and self.noise_filter is None:
                from firmware_py.noise_filter import NoiseFilter
                try:
                    self.noise_filter = NoiseFilter(spec.sensor_w, spec.sensor_h)
                    self.filter_state = 1
                    if self.events_bad is not None:      # the fast event path: the filter's kernel too
                        from firmware_py import fast
                        if fast.best_filter() is not None:
                            self.noise_filter.use_kernel(fast.best_filter())
                except MemoryError:
                    gc.collect()
                    self.filter_state = -1        # STATS says so; the alignment goes on without it
            self.binner.set_spec(spec)
            if again:
                self.calibration = (ref, align.Moments(), samples)

    def add_events(self, xs, ys, ts, ps, n=None):
        """Bin a batch of events (parallel sequences; the first n items, all when n is None). The whole
        batch is checked first: a bad event rejects the batch (E_BAD_EVENT, nothing added). Returns the
        number of events binned."""
        self._need_model()
        if not self.in_sample:
            raise DeviceError(E_STATE, "add_events before begin_sample")
        if self.dropping:
            return 0                 # the rest of a sample that overflowed the event buffer
        if n is None:
            n = len(xs)
        if len(ys) < n or len(ts) < n or len(ps) < n or len(xs) < n:
            raise DeviceError(E_BAD_ARGUMENT, "events: x, y, t, p lengths differ (%d, %d, %d, %d)"
                              % (n, len(ys), len(ts), len(ps)))
        spec = self.binner.spec
        w = spec.sensor_w
        h = spec.sensor_h
        first = 0
        if self.events_bad is not None and not isinstance(xs, list):
            first = self.events_bad(xs, ys, ts, ps, n, w, h)    # -1: all good (same test as below)
            first = n if first < 0 else first
        for k in range(first, n):
            x = xs[k]
            y = ys[k]
            if x < 0 or y < 0 or x >= w or y >= h or (ps[k] != 0 and ps[k] != 1) or ts[k] < 0:
                self.bad_events += 1
                raise DeviceError(E_BAD_EVENT, "event %d: (x=%d, y=%d, t=%d, p=%d) outside the %dx%d sensor, "
                                               "p in {0, 1}, t >= 0" % (k, x, y, ts[k], ps[k], w, h))
        before = self.binner.dropped
        kept = n
        if self.noise_filter is not None:     # moves the events it keeps to the front of the batch
            kept = self.noise_filter.apply(xs, ys, ts, ps, n)
        try:
            self.binner.add_many(xs, ys, ts, ps, kept)
        except MemoryError:
            # the sample is dropped whole: its later events are ignored (not the start of another sample) and
            # end_sample answers with the same error, without learning or counting anything
            gc.collect()
            self.binner.reset()
            self.dropping = True
            raise DeviceError(E_NO_MEMORY, "event buffer full (%d active (step, input) pairs): sample dropped"
                              % self.binner.slots)
        self.events += n
        if n and ts[n - 1] > self.t_last:     # events come in time order: the batch's last is its latest
            self.t_last = ts[n - 1]
        return kept - (self.binner.dropped - before)

    def end_sample(self, label=None):
        """Run the sample; returns (class, per-class measure, confidence 0..255)."""
        self._need_model()
        if not self.in_sample:
            raise DeviceError(E_STATE, "end_sample without begin_sample")
        if self.dropping:
            self.dropping = False
            self.in_sample = False
            self.dropped_samples += 1
            raise DeviceError(E_NO_MEMORY, "sample dropped: its events overflowed the event buffer (%d active "
                              "(step, input) pairs)" % self.binner.slots)
        n_cls = self.net.model.n_classes
        if label is not None and (not isinstance(label, int) or label < 0 or label >= n_cls):
            self.in_sample = False
            raise DeviceError(E_BAD_LABEL, "label %r outside the %d classes 0..%d (sample dropped)"
                              % (label, n_cls, n_cls - 1))
        self.in_sample = False
        if self.calibration is not None and self.t_last > 0:
            # measured on this sample's binning; the next one is re-registered. A sample without events (or
            # one whose events were refused: the buffer overflowed, and the host then ends an empty one) says
            # nothing about the sensor and does not count.
            self._calibration_step()
        rule = self.rule if self.learn else None
        if rule is not None and label is not None and getattr(rule, "clamps", False):
            # GEM learns with the output clamped to the label: the prediction comes from a free pass first
            cls, measure, conf = learning.run_sample(self.net, None, self.binner, None)
            learning.run_sample(self.net, rule, self.binner, label)
        else:
            cls, measure, conf = learning.run_sample(self.net, rule, self.binner, label)
        self.samples += 1
        if label is not None:
            self.labelled += 1
            if cls == label:
                self.correct += 1
        elif rule is not None and self.self_train_gate is not None:
            learn = True
            if self.guard is not None:
                learn = self._guard_step(cls, measure, conf)
            pseudo = learning.pseudo_label(cls, conf, self.self_train_gate) if learn else None
            if pseudo is not None:
                learning.run_sample(self.net, rule, self.binner, pseudo)
                self.self_trained += 1
        return cls, measure, conf

    def _guard_step(self, cls, measure, conf):
        """The guard's decision on an unlabelled sample, applied: snapshot or rollback. True: may learn."""
        from firmware_py import guard as fguard
        model = self.net.model
        action = self.guard.observe(cls, measure, conf, model.layers[-1].kind == KIND_LIF)
        if action == fguard.SNAPSHOT:
            self.snapshot.take(model, self.rule)
        elif action == fguard.ROLLBACK:
            self.snapshot.restore(model, self.rule)
        return fguard.learns(action)

    # ---- weights, persistence, state -----------------------------------------------------------

    def _layer(self, layer):
        self._need_model()
        layers = self.net.model.layers
        if not isinstance(layer, int) or layer < 0 or layer >= len(layers):
            raise DeviceError(E_BAD_ARGUMENT, "layer %r, the model has layers 0..%d" % (layer, len(layers) - 1))
        return layers[layer]

    def get_weights(self, layer):
        """W as int8 bytes (row-major [n_in, n_out]), then a_syn as u16 little-endian when per-input."""
        L = self._layer(layer)
        out = bytes(L.W)
        if L.per_input:
            out += struct.pack("<%dH" % L.n_in, *L.a_syn)
        return out

    def put_weights(self, layer, data):
        L = self._layer(layer)
        n = L.n_in * L.n_out + (2 * L.n_in if L.per_input else 0)
        if len(data) != n:
            raise DeviceError(E_BAD_ARGUMENT, "put_weights layer %d: expected %d bytes, got %d"
                              % (layer, n, len(data)))
        nw = L.n_in * L.n_out
        for k in range(nw):
            if data[k] == 128:
                raise DeviceError(E_BAD_ARGUMENT, "put_weights layer %d: weight %d is -128, outside [-127, 127]"
                                  % (layer, k))
        a = None
        if L.per_input:
            a = struct.unpack("<%dH" % L.n_in, bytes(data[nw:]))
            for i in range(L.n_in):
                if a[i] > 4096:
                    raise DeviceError(E_BAD_ARGUMENT, "put_weights layer %d: a_syn[%d] = %d > 4096" % (layer, i, a[i]))
        W = L.W
        for k in range(nw):
            v = data[k]
            W[k] = v - 256 if v > 127 else v
        if a is not None:
            for i in range(L.n_in):
                L.a_syn[i] = a[i]

    def checkpoint(self):
        """Write the current weights to the store atomically (NAME.new + rename)."""
        self._need_model()
        if self.store is None:
            raise DeviceError(E_BAD_ARGUMENT, "no filesystem store on this device")
        from firmware_py.store import checkpoint_segments, persistent_banks
        segs, total = checkpoint_segments(self.net.model, self.model_crc, persistent_banks(self.rule))
        self.store.save_weights(segs)     # the weight arrays are written in place: no full copy in RAM
        return total

    def reset(self):
        """Zero the network state, the rule's traces and its generator bank, and the statistics."""
        self._need_model()
        self.net.reset()
        if self.rule is not None:
            self.rule.reset()
        if self.guard is not None:
            self.guard.reset()
        self.binner.reset()
        self.in_sample = False
        self._clear_stats()

    def stats(self):
        d = {"samples": self.samples, "labelled": self.labelled, "correct": self.correct,
             "self_trained": self.self_trained, "events": self.events, "bad_events": self.bad_events,
             "dropped_samples": self.dropped_samples}
        if self.net is not None:
            d["nsat"] = self.net.nsat + (self.rule.nsat if self.rule is not None else 0)
            d["updates"] = self.rule.updates if self.rule is not None else 0
            d["memory"] = memory.held(self.net, self.rule, self.binner, self.guard is not None)
            if self.guard is not None:
                d["guard"] = self.guard.state()
            a = self.alignment()
            d["align_x"], d["align_y"], d["align_dt"], d["calibrating"] = a
            d["noise_filter"] = self.filter_state
        try:
            d["heap_free"] = gc.mem_free()
        except AttributeError:
            pass
        return d

    # ---- the loop's safe entry point ------------------------------------------------------------

    def call(self, name, *args):
        """Run method `name`; returns (E_OK, result) or (code, message). Never raises."""
        try:
            return E_OK, getattr(self, name)(*args)
        except DeviceError as exc:
            return exc.code, exc.msg
        except MemoryError:
            gc.collect()
            return E_NO_MEMORY, "out of heap in %s" % name
        except Exception as exc:   # noqa: BLE001 - the loop must survive anything
            return E_INTERNAL, "%s: %r" % (name, exc)
