"""A small ONNX model with SCRFD's interface (det_10g / scrfd_10g_bnkps: input ``input.1`` (1, 3, H, W), nine
outputs: scores (N, 1), box distances (N, 4) and five-point offsets (N, 10) for strides 8, 16, 32, two anchors
per cell), built by the tests: insightface's weights are not on any package registry.

It "detects" red: the stride-32 score of a cell is ``sigmoid(20 * mean of the blob's first channel)`` (the
blob is RGB: insightface swaps the BGR photo), strides 8 and 16 score 0. Every anchor predicts the same box,
``anchor +- BOX_DISTANCE * 32``, and the same five points, ``anchor + POINT_OFFSETS * 32``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

#: det_10g.onnx's output names: scores, boxes, points, each for strides 8, 16, 32
OUTPUT_NAMES = ("448", "471", "494", "451", "474", "497", "454", "477", "500")
STRIDES = (8, 16, 32)
BOX_DISTANCE = 1.0
#: five points around the anchor, in strides: eyes, nose tip, mouth corners
POINT_OFFSETS = np.array([[-0.4, -0.3], [0.4, -0.3], [0.0, 0.05], [-0.3, 0.4], [0.3, 0.4]])


def write_scrfd_model(path: Path) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes, initializers = [], []

    def const(name: str, value, dtype=np.float32) -> None:
        initializers.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))

    for name, value in (("starts", [0]), ("ends", [1]), ("axes", [1]), ("minus_one_by_one", [-1, 1])):
        const(name, value, np.int64)

    nodes.append(helper.make_node("Slice", ["input.1", "starts", "ends", "axes"], ["red"]))
    const("gain", [20.0])
    const("zero", [0.0])
    const("box", [[BOX_DISTANCE] * 4])
    const("points", [POINT_OFFSETS.reshape(-1).tolist()])
    outputs = {}
    for stride in STRIDES:
        s = str(stride)
        nodes.append(helper.make_node("AveragePool", ["red"], [f"pool{s}"], kernel_shape=[stride, stride],
                                      strides=[stride, stride]))
        if stride == 32:
            nodes += [helper.make_node("Mul", [f"pool{s}", "gain"], [f"logit{s}"]),
                      helper.make_node("Sigmoid", [f"logit{s}"], [f"sig{s}"])]
        else:
            nodes.append(helper.make_node("Mul", [f"pool{s}", "zero"], [f"sig{s}"]))
        nodes += [
            helper.make_node("Reshape", [f"sig{s}", "minus_one_by_one"], [f"cell{s}"]),
            helper.make_node("Concat", [f"cell{s}", f"cell{s}"], [f"pair{s}"], axis=1),
            helper.make_node("Reshape", [f"pair{s}", "minus_one_by_one"], [f"score{s}"]),
            helper.make_node("Mul", [f"score{s}", "zero"], [f"nothing{s}"]),
            helper.make_node("Add", [f"nothing{s}", "box"], [f"boxes{s}"]),
            helper.make_node("Add", [f"nothing{s}", "points"], [f"kps{s}"]),
        ]
        outputs[("score", stride)], outputs[("boxes", stride)], outputs[("kps", stride)] = f"score{s}", f"boxes{s}", f"kps{s}"
    order = [("score", s) for s in STRIDES] + [("boxes", s) for s in STRIDES] + [("kps", s) for s in STRIDES]
    widths = {"score": 1, "boxes": 4, "kps": 10}
    graph_outputs = []
    for name, key in zip(OUTPUT_NAMES, order):
        nodes.append(helper.make_node("Identity", [outputs[key]], [name]))
        graph_outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, [f"n{key[1]}", widths[key[0]]]))
    graph = helper.make_graph(nodes, "scrfd_like", [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [1, 3, "h", "w"])],
                              graph_outputs, initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, path)
    return path
