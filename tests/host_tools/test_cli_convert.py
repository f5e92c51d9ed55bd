"""`snn-edge quantize / export / verify` through the real CLI entry point, on real recordings."""
import numpy as np
import onnx
import pytest
from onnx import helper

from host_tools.cli import main


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A float checkpoint as `snn-edge train` writes it (random weights: the CLI plumbing is under test)."""
    from edge.data import NMNIST_SPEC
    from edge.model import NetworkSpec, init_params, save_checkpoint
    spec = NetworkSpec(sizes=(578, 32, 10), binning=NMNIST_SPEC.as_tuple(), theta=0.5)
    params = init_params(spec, np.random.default_rng(0))
    path = tmp_path_factory.mktemp("cli") / "m.ckpt"
    save_checkpoint(path, spec, params)
    return path


def test_quantize_export_verify(checkpoint, nmnist_small, tmp_path, capsys):
    data = str(nmnist_small)
    npz = tmp_path / "m.int.npz"
    assert main(["quantize", str(checkpoint), "-o", str(npz), "--data", data, "--limit", "60", "--calib", "20",
                 "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "int8 accuracy" in out and "layer 0 spike agreement" in out and npz.exists()
    onnx_path = tmp_path / "m.onnx"
    assert main(["export", str(npz), "-o", str(onnx_path), "--rule", "readout_delta", "--nir",
                 str(tmp_path / "m.nir"), "--blob", str(tmp_path / "m.blob")]) == 0
    assert onnx_path.exists() and (tmp_path / "m.nir").exists() and (tmp_path / "m.blob").exists()
    capsys.readouterr()
    assert main(["verify", str(onnx_path), "--data", data, "--limit", "5"]) == 0
    out = capsys.readouterr().out
    assert "numpy-int vs onnxruntime" in out and "numpy-int vs firmware_py" in out
    assert "re-export byte-identical: yes" in out and out.strip().endswith("bit-exact")


def test_export_float_checkpoint_without_data_is_an_error(checkpoint, tmp_path, capsys):
    assert main(["export", str(checkpoint), "-o", str(tmp_path / "x.onnx")]) == 2
    assert "needs --data for calibration" in capsys.readouterr().err
    assert not (tmp_path / "x.onnx").exists()


def test_verify_refuses_a_graph_outside_the_subset(checkpoint, nmnist_small, tmp_path, capsys):
    from converters import onnx_export as ox
    from converters.intmodel import IntLayer, IntModel
    model = IntModel([IntLayer(np.ones((578, 10), np.int8), np.array(100, np.int32), 3000, 50, 2, 0)],
                     binning=(34, 34, 10000, 30, 2, (0, 0, 34, 34), 0))
    proto = ox.to_onnx(model)
    proto.graph.node.append(helper.make_node("Softmax", ["scores"], ["p"], name="sm"))
    proto.graph.output.append(helper.make_tensor_value_info("p", onnx.TensorProto.INT64, ["B", 10]))
    path = tmp_path / "bad.onnx"
    path.write_bytes(proto.SerializeToString())
    assert main(["verify", str(path), "--data", str(nmnist_small), "--limit", "2"]) == 2
    err = capsys.readouterr().err
    assert "bad.onnx: node sm in graph: op Softmax is outside the snn-edge integer subset" in err
