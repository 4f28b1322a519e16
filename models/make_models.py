#!/usr/bin/python3
"""make_models.py trains two small sklearn classifiers on sklearn's bundled
data sets and writes them out as ONNX with onnx.helper (no skl2onnx), plus a
handful of test rows with the labels sklearn itself predicts for them.

    /usr/bin/python3 models/make_models.py      # Debian: python3-sklearn python3-onnx

Writes, next to this script:
    digits.onnx, digits_rows.json   64-64-10 MLP on the 8x8 digits images
    iris.onnx,   iris_rows.json     multinomial logistic regression on iris

Both models take one FP32 input "input" of shape [-1, features] and give
"label" (INT64, [-1]) and "probabilities" (FP32, [-1, classes]). The
results are deterministic (fixed random_state), so rerunning the script
rewrites the same files.
"""
import json
import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from sklearn.datasets import load_digits, load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier

HERE = os.path.dirname(os.path.abspath(__file__))
N_ROWS = 8


def dense(name, x, w, b, nodes, inits):
    """Appends Gemm(x, w, b) and returns its output name."""
    inits.append(numpy_helper.from_array(w.astype(np.float32), name + "_w"))
    inits.append(numpy_helper.from_array(b.astype(np.float32), name + "_b"))
    out = name + "_out"
    nodes.append(helper.make_node("Gemm", [x, name + "_w", name + "_b"], [out], name=name))
    return out


def write_model(path, graph_name, n_features, n_classes, layers):
    """layers is a list of (w, b, activation) with activation "relu" or None."""
    nodes, inits = [], []
    x = "input"
    for i, (w, b, act) in enumerate(layers):
        x = dense("dense%d" % i, x, w, b, nodes, inits)
        if act == "relu":
            nodes.append(helper.make_node("Relu", [x], [x + "_relu"], name="relu%d" % i))
            x = x + "_relu"
    nodes.append(helper.make_node("Softmax", [x], ["probabilities"], axis=1, name="softmax"))
    nodes.append(helper.make_node("ArgMax", [x], ["label"], axis=1, keepdims=0, name="argmax"))
    graph = helper.make_graph(
        nodes,
        graph_name,
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [None, n_features])],
        [
            helper.make_tensor_value_info("label", TensorProto.INT64, [None]),
            helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [None, n_classes]),
        ],
        initializer=inits,
    )
    # Name the dynamic batch dimension the way exporters usually do.
    for vi in list(graph.input) + list(graph.output):
        vi.type.tensor_type.shape.dim[0].dim_param = "batch"
    model = helper.make_model(graph, producer_name="tandem-models",
                              opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)


def forward32(x, layers):
    """The ONNX graph's arithmetic in float32, to pick rows whose label is
    the same in float32 as in sklearn's float64."""
    h = x.astype(np.float32)
    for w, b, act in layers:
        h = h @ w.astype(np.float32) + b.astype(np.float32)
        if act == "relu":
            h = np.maximum(h, 0)
    return h


def pick_rows(x, want, layers):
    """Returns N_ROWS row indices whose float32 label equals sklearn's, with
    a clear margin between the two best scores, covering many labels."""
    logits = forward32(x, layers)
    top2 = np.sort(logits, axis=1)[:, -2:]
    margin = top2[:, 1] - top2[:, 0]
    ok = (logits.argmax(axis=1) == want) & (margin > 0.5)
    picked, seen = [], set()
    for i in np.flatnonzero(ok):  # first one row per label, then any
        if want[i] not in seen:
            picked.append(int(i))
            seen.add(want[i])
    for i in np.flatnonzero(ok):
        if len(picked) >= N_ROWS:
            break
        if int(i) not in picked:
            picked.append(int(i))
    return picked[:N_ROWS]


def write_rows(path, model, x, labels, classes):
    """Writes the rows one to a line, so that the file reads well in a diff."""
    rows = ",\n  ".join(json.dumps([float(v) for v in row]) for row in x)
    with open(path, "w") as f:
        f.write("{\n")
        f.write(' "model": %s,\n' % json.dumps(model))
        f.write(' "about": "test rows (held out from training) and the labels sklearn predicts for them",\n')
        f.write(' "classes": %s,\n' % json.dumps(classes))
        f.write(' "labels": %s,\n' % json.dumps([int(v) for v in labels]))
        f.write(' "rows": [\n  %s\n ]\n}\n' % rows)


def digits():
    d = load_digits()
    x_tr, x_te, y_tr, _ = train_test_split(d.data / 16.0, d.target, test_size=0.25, random_state=0)
    clf = MLPClassifier(hidden_layer_sizes=(64,), max_iter=400, random_state=0).fit(x_tr, y_tr)
    layers = [(clf.coefs_[0], clf.intercepts_[0], "relu"), (clf.coefs_[1], clf.intercepts_[1], None)]
    want = clf.predict(x_te)
    rows = pick_rows(x_te, want, layers)
    write_model(os.path.join(HERE, "digits.onnx"), "digits_mlp", 64, 10, layers)
    write_rows(os.path.join(HERE, "digits_rows.json"), "digits", x_te[rows], want[rows],
               [str(c) for c in clf.classes_])
    print("digits: test accuracy %.3f" % clf.score(x_te, _))


def iris():
    d = load_iris()
    x_tr, x_te, y_tr, y_te = train_test_split(d.data, d.target, test_size=0.3, random_state=0)
    clf = LogisticRegression(max_iter=1000).fit(x_tr, y_tr)
    layers = [(clf.coef_.T, clf.intercept_, None)]
    want = clf.predict(x_te)
    rows = pick_rows(x_te, want, layers)
    write_model(os.path.join(HERE, "iris.onnx"), "iris_logreg", 4, 3, layers)
    write_rows(os.path.join(HERE, "iris_rows.json"), "iris", x_te[rows], want[rows],
               [str(n) for n in d.target_names])
    print("iris: test accuracy %.3f" % clf.score(x_te, y_te))


if __name__ == "__main__":
    digits()
    iris()
