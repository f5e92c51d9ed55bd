"""Dependency floors, tested: install the lowest versions pyproject.toml declares for numpy, onnx and onnxruntime
into a throwaway virtualenv and run the integer/ONNX tests there (export, onnxruntime bit-exactness, import,
byte-identical round trip). Prints ONE JSON line. Needs network access to PyPI; takes about a minute.

    python benchmarks/dependency_floors.py [--onnxruntime 1.19.2]   # --onnxruntime: try another version

With `--onnxruntime` below the floor the run shows why the floor is where it is (1.17-1.19 have no int64
ArgMax and refuse the exported model).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHECKED = ("numpy", "onnx", "onnxruntime")
TESTS = ["tests/converters/test_onnx.py", "tests/converters/test_intsim.py", "tests/converters/test_fixedpoint.py"]


def declared_floors() -> dict[str, str]:
    """{name: lowest version} of the core dependencies in CHECKED, from pyproject.toml's `name>=version`."""
    text = (ROOT / "pyproject.toml").read_text()
    deps = text[text.index("dependencies = ["):text.index("]", text.index("dependencies = ["))]
    floors = {m.group(1): m.group(2) for m in re.finditer(r'"([A-Za-z0-9_.-]+)>=([0-9.]+)', deps)}
    return {name: floors[name] for name in CHECKED}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--onnxruntime", default=None, help="install this onnxruntime instead of the declared floor")
    args = ap.parse_args()
    pins = declared_floors()
    if args.onnxruntime:
        pins["onnxruntime"] = args.onnxruntime
    with tempfile.TemporaryDirectory(prefix="snn-edge-floors-") as tmp:
        venv = Path(tmp) / "venv"
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        py = str(venv / "bin" / "python")
        install = subprocess.run([py, "-m", "pip", "install", "-q", *(f"{k}=={v}" for k, v in pins.items()),
                                  "pytest", "hypothesis", "tqdm"], capture_output=True, text=True)
        if install.returncode != 0:
            print(json.dumps({"pins": pins, "installed": False, "error": install.stderr.strip()[-400:]}))
            return 1
        versions = subprocess.run([py, "-c", "import numpy, onnx, onnxruntime; print(numpy.__version__, "
                                   "onnx.__version__, onnxruntime.__version__)"],
                                  capture_output=True, text=True, check=True).stdout.split()
        run = subprocess.run([py, "-m", "pytest", "-q", "-p", "no:cacheprovider", *TESTS], cwd=ROOT,
                             capture_output=True, text=True,
                             env={**os.environ, "PYTHONPATH": str(ROOT), "OPENBLAS_NUM_THREADS": "1",
                                  "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"})
    tail = run.stdout.strip().splitlines()[-1] if run.stdout.strip() else ""
    count = lambda word: int(m.group(1)) if (m := re.search(rf"(\d+) {word}", tail)) else 0  # noqa: E731
    failed = sorted(set(re.findall(r"^FAILED (\S+)", run.stdout, re.M)))
    errors = sorted(set(re.findall(r"(NOT_IMPLEMENTED[^\n]{0,160})", run.stdout)))
    print(json.dumps({"pins": pins, "installed": dict(zip(CHECKED, versions)), "passed": count("passed"),
                      "failed": count("failed"), "failures": failed, "errors": errors[:3]}))
    return 0 if run.returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
