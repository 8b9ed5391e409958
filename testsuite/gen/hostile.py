"""Hostile ONNX files: a few bytes that declare tensors of 10^10 to 10^12 elements (issue 30).

Writes testsuite/invalid/huge_*.onnx; fhec must refuse each before allocating (`corpus.rs`).
Needs only the `onnx` package: python testsuite/gen/hostile.py
"""
from pathlib import Path

import onnx
from onnx import TensorProto as T
from onnx import helper as h

OUT = Path(__file__).resolve().parent.parent / "invalid"


def save(nodes, inits, ins, outs, name):
    g = h.make_graph(nodes, "g", ins, outs, initializer=inits)
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 13)])
    m.ir_version = 8
    onnx.save(m, OUT / name)


def vi(name, shape):
    return h.make_tensor_value_info(name, T.FLOAT, shape)


big = [1_000_000, 1_000_000]
# A weight declared as 10^12 floats, with no data.
w = T()
w.name, w.data_type = "W", T.FLOAT
w.dims.extend(big)
save([h.make_node("MatMul", ["x", "W"], ["y"])], [w], [vi("x", [1, big[0]])], [vi("y", None)],
     "huge_initializer.onnx")
# An input of 10^12 elements.
save([h.make_node("Relu", ["x"], ["y"])], [], [vi("x", big)], [vi("y", None)], "huge_input.onnx")
# ConstantOfShape([10^6, 10^6]).
s = h.make_tensor("s", T.INT64, [2], big)
save([h.make_node("ConstantOfShape", ["s"], ["c"]), h.make_node("Add", ["x", "c"], ["y"])], [s],
     [vi("x", [1, 1])], [vi("y", None)], "huge_constant_of_shape.onnx")
# Tile of a [1,4] input 10^5 x 10^5 times.
r = h.make_tensor("r", T.INT64, [2], [100_000, 100_000])
save([h.make_node("Tile", ["x", "r"], ["y"])], [r], [vi("x", [1, 4])], [vi("y", None)], "huge_tile.onnx")
# Range(0, 10^12, 1).
args = [h.make_tensor(n, T.FLOAT, [], [v]) for n, v in [("a", 0.0), ("b", 1e12), ("d", 1.0)]]
save([h.make_node("Range", ["a", "b", "d"], ["r"]), h.make_node("Add", ["x", "r"], ["y"])], args,
     [vi("x", [1])], [vi("y", None)], "huge_range.onnx")

# The line of invalid/README.md (kept when generate.py rewrites it: run this script after it).
LINE = (
    "- `huge_*.onnx` (written by `hostile.py`): a few dozen bytes each that declare 10^10 to 10^12 elements: "
    "a weight with no data (`huge_initializer`), an input (`huge_input`), `ConstantOfShape`, `Tile` and `Range` "
    "(`huge_constant_of_shape`, `huge_tile`, `huge_range`). Each is refused before anything of that size is "
    "allocated (`--max-tensor-elements`)."
)
readme = OUT / "README.md"
text = readme.read_text()
if LINE not in text:
    readme.write_text(text.rstrip("\n") + "\n" + LINE + "\n")
