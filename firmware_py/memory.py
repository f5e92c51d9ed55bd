"""Bytes the runtime holds: one formula used on the device (from the model in RAM) and on the host
(from the model file, before flashing): weights, state, learning traces, buffers.

Counts are for a 32-bit board: array items at their item size, list items one 4-byte word each, plus
a fixed per-object overhead. Every buffer is allocated when the model loads (a sample allocates nothing):
the event buffer holds `slots` distinct (step, input) pairs (binning.Binner), a declared budget.
"""
from firmware_py.binning import DEFAULT_SLOTS
from firmware_py.errors import DeviceError, E_NO_MEMORY

OBJ_OVERHEAD = 16          # header of an array/list object on a 32-bit port (approximate, per object)
SLOT_BYTES = 7             # one (step, input) slot of binning.Binner: neuron, next, step (u16 each), count (u8)
STEPS_BOUND = 64           # time steps assumed for the binner's per-step heads where the binning is not at hand
# Heap taken by the firmware's own code once imported (precompiled .mpy in RAM): the whole Device
# (runtime, rules, blob, store) measured 56K on the 64-bit unix port, whose objects are twice a 32-bit
# board's; half of that is counted here. Frozen firmware takes less.
FIRMWARE_BYTES = 28 * 1024
# What loading and running need on top of what they keep: the blob reader's and the answers' transient
# buffers, a sample's allocations, and what is left between objects. Since board_main collects every 4 KB
# allocated (GC_THRESHOLD) the heap no longer scatters at import, and the limit is what a sample needs.
# Measured on the emulated Cortex-M3 (ROMFS, SOLSA, one labelled N-MNIST sample after boot): 140K runs
# 578-92-10 (6.8 KB free after boot) and not 578-96-10 (4.8 KB); 192K runs 578-160-10 and not 578-170-10.
# 14 KB puts the plan's largest at 578-78-10 and 578-157-10: below those limits, and a model 10 % bigger
# than the plan's largest does not run (tests/host_tools/test_size_walk.py).
HEADROOM = 14336


def layer_bytes(n_in, n_out, per_input):
    """(weights, state) bytes of one layer as runtime.Layer / runtime.LayerState allocate them."""
    weights = n_in * n_out + OBJ_OVERHEAD                           # W array('b')
    if per_input:
        weights += 4 * n_in + OBJ_OVERHEAD                          # a_syn array('i')
    state = 3 * (4 * n_out + OBJ_OVERHEAD)                          # I, V, vpre array('i')
    state += 4 * n_out + OBJ_OVERHEAD                               # acc list
    state += n_out + OBJ_OVERHEAD                                   # s bytearray
    state += 4 * n_out + OBJ_OVERHEAD                               # out list (at most n_out)
    if per_input:
        state += 3 * (4 * n_in + OBJ_OVERHEAD)                      # x, nz, nzv array('i')
    return weights, state


def glm_layer_bytes(n_in, n_out, K):
    """(weights, state) bytes of one probabilistic layer with K compartments (gem.GlmNetwork)."""
    weights = n_in * n_out + 2 * (4 * n_out + OBJ_OVERHEAD) + OBJ_OVERHEAD     # W, bias, w_fb
    state = 4 * K * n_in + OBJ_OVERHEAD                                         # x
    state += 5 * (4 * K * n_out + OBJ_OVERHEAD) + K * n_out + OBJ_OVERHEAD      # f, f_prev, idx, P, lanes; s
    state += 4 * 2 * n_in                                                       # nz, nzv scratch (bound)
    return weights, state


def buffer_bytes(n_in, slots, n_steps=STEPS_BOUND):
    """The event buffer (binning.Binner: slots; per-step heads; latest, idx, vals, frame per input) and the
    handler's decoded EVENTS batch (169 events of x, y, t, p)."""
    slots = min(slots, n_steps * n_in, 0xFFFF)
    binner = slots * SLOT_BYTES + 2 * n_steps + 6 * n_in + 9 * OBJ_OVERHEAD
    return binner + 169 * 9 + 4 * OBJ_OVERHEAD


def breakdown(dims, rule="none", params=None, factorised=None, slots=DEFAULT_SLOTS, tables=0, compartments=1,
              firmware=FIRMWARE_BYTES, n_steps=STEPS_BOUND, guard=False):
    """{weights, state, traces, buffers, guard, model, firmware, headroom, total} for layers dims
    [(n_in, n_out, per_input)]: `model` is what loading the model allocates (weights, state, traces,
    buffers, and with `guard` the self-training guard's RAM snapshot and state, firmware_py/guard.py),
    `firmware` what the imported code holds, `headroom` what the link loop and a sample need on top."""
    from firmware_py.learning import state_bytes_for
    params = params or {}
    w = 0
    s = 0
    for n_in, n_out, per_input in dims:
        if rule == "gem":
            a, b = glm_layer_bytes(n_in, n_out, compartments)
        else:
            a, b = layer_bytes(n_in, n_out, per_input)
        w += a
        s += b
    n_cls = dims[-1][1]
    s += 2 * (4 * n_cls + OBJ_OVERHEAD)                             # readout counts and scores
    w += tables
    n_in, n_out, per_input = dims[-1]
    if rule == "gem":
        from firmware_py.gem import gem_state_bytes
        traces = gem_state_bytes(dims, compartments)
    else:
        traces = state_bytes_for(rule, n_in, n_out, per_input, params, factorised)
        if rule == "solsa" and params.get("learn_all"):       # NUMERICS.md §10.8: every hidden layer too
            from firmware_py.solsa_hidden import hidden_state_bytes
            for a, b, pi in dims[:-1]:
                traces += hidden_state_bytes(a, b, pi, params.get("k_update", 1))
    buffers = buffer_bytes(dims[0][0], slots, n_steps)
    g = 0
    if guard and rule not in ("none", "gem"):
        from firmware_py.guard import guard_bytes, snapshot_bytes
        learned = list(range(len(dims))) if rule == "solsa" and params.get("learn_all") else [len(dims) - 1]
        g = snapshot_bytes(dims, learned) + guard_bytes(n_cls)
    model = w + s + traces + buffers + g
    return {"weights": w, "state": s, "traces": traces, "buffers": buffers, "guard": g, "model": model,
            "firmware": firmware, "headroom": HEADROOM, "total": model + firmware + HEADROOM}


def choose_solsa_variant(dims, params, heap, slots=DEFAULT_SLOTS, tables=0, firmware=FIRMWARE_BYTES,
                         n_steps=STEPS_BOUND, guard=False):
    """Full traces when they fit the heap, else factorised; None when neither fits."""
    for fact in (0, 1):
        if breakdown(dims, "solsa", params, fact, slots, tables, 1, firmware, n_steps, guard)["total"] <= heap:
            return fact
    return None


def plan(dims, rule, params, heap, slots=DEFAULT_SLOTS, tables=0, compartments=1, firmware=FIRMWARE_BYTES,
         n_steps=STEPS_BOUND, guard=False):
    """(fits, breakdown, chosen variant) for a heap size in bytes; SOLSA picks full vs factorised. `guard`:
    count the self-training guard's snapshot and state (firmware_py/guard.py)."""
    fact = None
    if rule == "solsa":
        fact = choose_solsa_variant(dims, params, heap, slots, tables, firmware, n_steps, guard)
        b = breakdown(dims, rule, params, 1 if fact is None else fact, slots, tables, 1, firmware, n_steps, guard)
        return fact is not None, b, ("factorised" if fact else "full") if fact is not None else "factorised"
    b = breakdown(dims, rule, params, None, slots, tables, compartments, firmware, n_steps, guard)
    return b["total"] <= heap, b, None


def format_bytes(n):
    if n >= 10 * 1024:
        return "%dK" % ((n + 512) // 1024)
    return "%d" % n


def check_fit(dims, rule, params, available, slots=DEFAULT_SLOTS, factorised=None, compartments=1, n_steps=None):
    """Raise E_NO_MEMORY when the model's arrays for the layers seen so far (weights, state, their rule's
    traces, the event buffer) exceed `available` bytes (the device: its free heap when the model loads)."""
    b = breakdown(dims, rule, params, factorised, slots, 0, compartments, 0, n_steps or STEPS_BOUND)
    if b["model"] > available:
        raise DeviceError(E_NO_MEMORY, "model needs %d bytes (weights %d, state %d, traces %d, buffers %d), "
                                       "the heap has %d free" % (b["model"], b["weights"], b["state"], b["traces"],
                                                       b["buffers"], available))


def held(net, rule=None, binner=None, guard=False):
    """What a running Network (and its rule, binner and self-training guard) holds, by the same formulas."""
    dims = [(L.n_in, L.n_out, L.per_input) for L in net.model.layers]
    tables = 0
    for t in net.model.tables.values():
        tables += 2 * len(t) + OBJ_OVERHEAD
    name = "none" if rule is None else rule.name
    if net.model.probabilistic:
        name = "gem"
    fact = getattr(rule, "factorised", None)
    slots = binner.slots if binner is not None else DEFAULT_SLOTS
    steps = binner.spec.n_steps if binner is not None else STEPS_BOUND
    b = breakdown(dims, name, net.model.params, fact, slots, tables, net.model.compartments, n_steps=steps,
                  guard=guard)
    b["total"] = b["weights"] + b["state"] + b["traces"] + b["buffers"] + b["guard"] + b["firmware"]
    return b


def reserved_arrays(dims, rule="none", params=None, n_steps=STEPS_BOUND, slots=DEFAULT_SLOTS, compartments=1):
    """(typecode, length) of the model's arrays big enough to be worth reserving at power-on, before the
    code is imported (firmware_py/prealloc.py): every array above prealloc.GROW bytes that loading the
    model allocates: the weights of each layer, the learning rule's traces and accumulators, the
    binner's arrays (binning.binner_arrays, the list its constructor allocates)."""
    from firmware_py.prealloc import GROW, ITEMSIZE
    params = params or {}
    out = [("b", n_in * n_out) for n_in, n_out, _ in dims]
    n_in, n_out, per_input = dims[-1]
    if rule == "solsa":
        out.append(("i", n_in * n_out))                                     # G
        out.append(("i", n_in if params.get("factorised", 0) else n_in * n_out))   # p or e
        if params.get("learn_all"):                                         # each hidden layer's window
            k = params.get("k_update", 1)
            for a, b, _ in dims[:-1]:
                out += [("i", k * a), ("i", k * b)]
    elif rule == "gem":
        for a, b, _ in dims:
            out += [("i", compartments * a * b), ("i", a * b)]                 # eW, GW
    from firmware_py.binning import binner_arrays
    out += [(tc, n) for _, tc, n in binner_arrays(dims[0][0], n_steps, slots)]
    return [(tc, n) for tc, n in out if n * ITEMSIZE[tc] > GROW]
