"""Error codes of the device runtime (firmware_py imports nothing from the host packages).

A DeviceError carries a small integer code (sent back over the serial link) and a one-line message
naming the field, expected vs got. The board's main loop catches it and keeps running.
"""

E_OK = 0
E_MODEL_FORMAT = 1      # bad magic, truncated, wrong version, malformed field
E_MODEL_CRC = 2         # the checksum does not match: corrupt file or transfer
E_UNSUPPORTED = 3       # unknown op, function, rule or layer kind
E_NO_MEMORY = 4         # the model (plus its learning state) does not fit the heap
E_BAD_EVENT = 5         # event outside the sensor, bad polarity, negative time
E_BAD_LABEL = 6         # label outside the classes
E_NO_MODEL = 7          # a sample or weight request before any model was loaded
E_BAD_ARGUMENT = 8      # a request with an out-of-range argument (layer index, weight size)
E_STORAGE = 9           # the filesystem refused a write or rename
E_STATE = 10            # a call out of order (end_sample without begin_sample)
E_INTERNAL = 99         # anything unexpected (the message has the exception text)

NAMES = {
    E_OK: "ok", E_MODEL_FORMAT: "model_format", E_MODEL_CRC: "model_crc", E_UNSUPPORTED: "unsupported",
    E_NO_MEMORY: "no_memory", E_BAD_EVENT: "bad_event", E_BAD_LABEL: "bad_label", E_NO_MODEL: "no_model",
    E_BAD_ARGUMENT: "bad_argument", E_STORAGE: "storage", E_STATE: "state", E_INTERNAL: "internal",
}


class DeviceError(Exception):
    """An error the device reports back instead of crashing: .code (int) and .msg (str)."""

    def __init__(self, code, msg):
        super().__init__(msg)
        self.code = code
        self.msg = msg

    def __str__(self):
        return "%s (%d): %s" % (NAMES.get(self.code, "error"), self.code, self.msg)
