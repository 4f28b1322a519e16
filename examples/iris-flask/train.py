#!/usr/bin/python3
"""Fit a classifier on sklearn's bundled iris data and write model.pkl.

Also writes testdata.json: a few rows covering all three classes with the
labels this model predicts, so tests can check tandem's answers against
sklearn's. Run it with Debian's interpreter: /usr/bin/python3 train.py
"""
import json
import os

import joblib
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

HERE = os.path.dirname(os.path.abspath(__file__))


def main():
    iris = load_iris()
    model = LogisticRegression(max_iter=1000)
    model.fit(iris.data, iris.target)
    model_path = os.path.join(HERE, "model.pkl")
    # Write then rename, so a server starting meanwhile never reads half a file.
    tmp = model_path + ".tmp"
    joblib.dump(model, tmp)
    os.replace(tmp, model_path)

    # Two rows of each class: the first and last of each 50-row block.
    rows = [0, 49, 50, 99, 100, 149]
    instances = [[float(v) for v in iris.data[i]] for i in rows]
    predictions = [int(p) for p in model.predict(instances)]
    labels = [str(iris.target_names[p]) for p in predictions]
    # One row per line keeps the committed file easy to read and diff.
    lines = ",\n".join("    " + json.dumps(r) for r in instances)
    with open(os.path.join(HERE, "testdata.json"), "w") as f:
        f.write('{\n  "instances": [\n%s\n  ],\n' % lines)
        f.write('  "predictions": %s,\n' % json.dumps(predictions))
        f.write('  "labels": %s\n}\n' % json.dumps(labels))
    print("wrote %s (train accuracy %.3f)" % (model_path, model.score(iris.data, iris.target)))


if __name__ == "__main__":
    main()
