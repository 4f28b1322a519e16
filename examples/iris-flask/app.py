#!/usr/bin/python3
"""The classic "deploy your model" Flask app, serving the iris classifier.

Environment:
  PORT        port to listen on, on 127.0.0.1 (default 5000)
  MODEL_PATH  the pickled model train.py writes (default model.pkl next to
              this file; a relative path is taken from the working folder)

Routes:
  GET  /health   200 {"status": "ok"} once the model is loaded
  POST /predict  {"instances": [[5.1, 3.5, 1.4, 0.2], ...]} or
                 {"features": [5.1, 3.5, 1.4, 0.2]} for one row;
                 answers {"predictions": [0, ...], "labels": ["setosa", ...]}
Every error is JSON: {"error": "what went wrong"}, 400 for a bad request.
"""
import logging
import math
import os
import sys

import joblib
import numpy as np
from flask import Flask, jsonify, request
from werkzeug.exceptions import HTTPException

HERE = os.path.dirname(os.path.abspath(__file__))
LABELS = ["setosa", "versicolor", "virginica"]
N_FEATURES = 4

app = Flask(__name__)
model = None


class BadRequest(Exception):
    """A request the model cannot answer; the message says why."""


def load_model(path):
    m = joblib.load(path)
    n = getattr(m, "n_features_in_", N_FEATURES)
    if n != N_FEATURES:
        raise SystemExit("%s expects %d features, not the %d of iris" % (path, n, N_FEATURES))
    return m


def parse_rows(body):
    if not isinstance(body, dict):
        raise BadRequest('body must be a JSON object with "instances" (a list of rows) or "features" (one row)')
    if "instances" in body:
        rows, field = body["instances"], "instances"
        if not isinstance(rows, list) or not rows:
            raise BadRequest('"instances" must be a non-empty list of rows of %d numbers' % N_FEATURES)
    elif "features" in body:
        rows, field = [body["features"]], "features"
    else:
        raise BadRequest('body needs "instances" (a list of rows) or "features" (one row)')
    for i, row in enumerate(rows):
        where = field if field == "features" else "instances[%d]" % i
        if not isinstance(row, list):
            raise BadRequest("%s must be a list of %d numbers" % (where, N_FEATURES))
        if len(row) != N_FEATURES:
            raise BadRequest("%s has %d values; iris rows have %d (sepal length, sepal width, petal length, petal width)"
                             % (where, len(row), N_FEATURES))
        for v in row:
            # bool is an int in Python; a JSON true is not a measurement.
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise BadRequest("%s must hold only finite numbers, got %s" % (where, repr(v)))
    return np.asarray(rows, dtype=float)


@app.get("/health")
def health():
    return jsonify(status="ok")


@app.post("/predict")
def predict():
    body = request.get_json(force=True, silent=True)
    if body is None:
        return jsonify(error="body is not valid JSON"), 400
    try:
        x = parse_rows(body)
    except BadRequest as e:
        return jsonify(error=str(e)), 400
    preds = [int(p) for p in model.predict(x)]
    return jsonify(predictions=preds, labels=[LABELS[p] for p in preds])


@app.errorhandler(HTTPException)
def http_error(e):
    return jsonify(error=e.description), e.code


def main():
    global model
    port = int(os.environ.get("PORT", "5000"))
    path = os.environ.get("MODEL_PATH") or os.path.join(HERE, "model.pkl")
    if not os.path.exists(path):
        sys.exit("model %s not found: run /usr/bin/python3 train.py first" % path)
    model = load_model(path)
    # Quiet per-request lines: tandem keeps each instance's output, and a log
    # line per request would dominate it (and slow a benchmark).
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    # Werkzeug's development server, as in the tutorials. It answers
    # "Connection: close" to every request (no keep-alive), so a proxy in front
    # opens a connection per request.
    print("iris: serving %s on 127.0.0.1:%d" % (path, port), flush=True)
    app.run(host="127.0.0.1", port=port, threaded=True)


if __name__ == "__main__":
    main()
