#!/usr/bin/env python3
"""Tree-ensemble corpus models (`ai.onnx.ml` TreeEnsembleClassifier / TreeEnsembleRegressor), trained on
datasets that ship with scikit-learn and exported by their usual converters, with onnxruntime's outputs
as the expected outputs (the exporters compare float32 features with float32 thresholds; the models'
own float64 predictions can differ on a feature equal to a rounded threshold):

- tree_cancer_skl: DecisionTreeClassifier(max_depth=4) on breast cancer (skl2onnx; two classes scored);
- forest_wine_skl: RandomForestClassifier(10 trees, max_depth=4) on wine (skl2onnx; 3 classes);
- gbr_diabetes_skl: GradientBoostingRegressor(20 trees, max_depth=3) on diabetes (skl2onnx; a base value);
- xgb_cancer: XGBClassifier(50 trees, max_depth=4) on breast cancer (onnxmltools; one class scored,
  LOGISTIC, a base value);
- xgbrf_wine: XGBRFClassifier(8 trees per class, max_depth=3), a random forest, on wine (onnxmltools;
  SOFTMAX, base values; its class ids fixed, see below);
- lgbm_iris: LGBMClassifier(20 trees, 8 leaves) on iris (onnxmltools; SOFTMAX, missing values tracked).

Needs, beside requirements.txt: xgboost, lightgbm, onnxmltools (versions in requirements-trees.txt).
Run after generate.py: `python testsuite/gen/trees.py` (about 10 s). It rewrites its own rows of
testsuite/models/README.md.
"""
import os
import sys

import numpy as np
import onnxruntime as ort

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import generate as g  # noqa: E402

CASES = ["tree_cancer_skl", "forest_wine_skl", "gbr_diabetes_skl", "xgb_cancer", "xgbrf_wine", "lgbm_iris"]


def data(name):
    X, y = g.load(name)
    return g.split(X.astype(np.float32), y, 0.25)


def case(name, m, Xte, yte, *, exporter, version, dataset, description, regression=False):
    m.graph.name = name  # onnxmltools names the graph with a random uuid
    expected = [o.astype(np.int64) if o.dtype == np.int64 else o.astype(np.float32).reshape(len(Xte), -1)
                for o in g.ort_run_per_sample(m, Xte)]
    node = next(n for n in m.graph.node if n.op_type.startswith("TreeEnsemble"))
    modes = next(a.strings for a in node.attribute if a.name == "nodes_modes")
    trees = len(set(next(a.ints for a in node.attribute if a.name == "nodes_treeids")))
    # One bootstrap per node and one per leaf: the count a node-by-node lowering would need.
    extra = {"trees": trees, "tree_nodes": len(modes), "tree_leaves": sum(m == b"LEAF" for m in modes)}
    if regression:
        from sklearn.metrics import r2_score
        score = r2_score(yte, expected[0][:, 0])
        labels = yte.astype(np.float32)
    else:
        score = (expected[0] == yte).mean()
        labels = yte.astype(np.int64)
    g.write_case(name, m, Xte, expected, exporter=exporter, exporter_version=version, dataset=dataset,
                 task="regression" if regression else "classification", labels=labels, float_accuracy=score,
                 description=description + " Expected outputs are onnxruntime's.", extra=extra)


def sklearn_cases():
    import skl2onnx
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.ensemble import GradientBoostingRegressor, RandomForestClassifier
    from sklearn.tree import DecisionTreeClassifier

    def convert(est, nfeat, clf=True):
        opts = {id(est): {"zipmap": False}} if clf else None
        return to_onnx(est, initial_types=[("input", FloatTensorType([1, nfeat]))], options=opts,
                       target_opset={"": 17, "ai.onnx.ml": 3})

    v = skl2onnx.__version__
    g.seed_all(0)
    Xtr, Xte, ytr, yte = data("breast_cancer")
    est = DecisionTreeClassifier(max_depth=4, random_state=0).fit(Xtr, ytr)
    case("tree_cancer_skl", convert(est, 30), Xte, yte, exporter="skl2onnx", version=v,
         dataset="sklearn.datasets.load_breast_cancer (test_size=0.25, random_state=0)",
         description="DecisionTreeClassifier(max_depth=4), zipmap off. Outputs: label int64 [1], probabilities [1,2].")

    g.seed_all(0)
    Xtr, Xte, ytr, yte = data("wine")
    est = RandomForestClassifier(n_estimators=10, max_depth=4, random_state=0).fit(Xtr, ytr)
    case("forest_wine_skl", convert(est, 13), Xte, yte, exporter="skl2onnx", version=v,
         dataset="sklearn.datasets.load_wine (test_size=0.25, random_state=0)",
         description="RandomForestClassifier(n_estimators=10, max_depth=4), zipmap off. Outputs: label int64 [1], "
                     "probabilities [1,3].")

    g.seed_all(0)
    Xtr, Xte, ytr, yte = data("diabetes")
    est = GradientBoostingRegressor(n_estimators=20, max_depth=3, random_state=0).fit(Xtr, ytr)
    case("gbr_diabetes_skl", convert(est, 10, clf=False), Xte, yte, exporter="skl2onnx", version=v,
         dataset="sklearn.datasets.load_diabetes (test_size=0.25, random_state=0)",
         description="GradientBoostingRegressor(n_estimators=20, max_depth=3): base value and a learning rate. "
                     "Output variable [1,1]; float_accuracy is R^2.", regression=True)


def boosted_cases():
    import lightgbm
    import onnxmltools
    import xgboost
    from onnxmltools.convert.common.data_types import FloatTensorType

    types = lambda nfeat: [("input", FloatTensorType([1, nfeat]))]  # noqa: E731
    v = onnxmltools.__version__
    g.seed_all(0)
    Xtr, Xte, ytr, yte = data("breast_cancer")
    est = xgboost.XGBClassifier(n_estimators=50, max_depth=4, random_state=0, n_jobs=1).fit(Xtr, ytr)
    case("xgb_cancer", onnxmltools.convert_xgboost(est, initial_types=types(30), target_opset=15), Xte, yte,
         exporter="onnxmltools", version=f"{v} (xgboost {xgboost.__version__})",
         dataset="sklearn.datasets.load_breast_cancer (test_size=0.25, random_state=0)",
         description="XGBClassifier(n_estimators=50, max_depth=4): one class scored, LOGISTIC, a base value. "
                     "Outputs: label int64 [1], probabilities [1,2].")

    g.seed_all(0)
    Xtr, Xte, ytr, yte = data("wine")
    est = xgboost.XGBRFClassifier(n_estimators=8, max_depth=3, random_state=0, n_jobs=1).fit(Xtr, ytr)
    m = onnxmltools.convert_xgboost(est, initial_types=types(13), target_opset=15)
    # onnxmltools 1.16 gives tree t to class t % 3; with 8 parallel trees per class it is t // 8.
    # Without this fix onnxruntime scores 11% on the test set; with it, it equals predict_proba.
    attrs = {a.name: a for a in m.graph.node[0].attribute}
    attrs["class_ids"].ints[:] = [(t // 8) % 3 for t in attrs["class_treeids"].ints]
    assert np.abs(g.ort_run_per_sample(m, Xte)[1] - est.predict_proba(Xte)).max() < 1e-5
    case("xgbrf_wine", m, Xte, yte,
         exporter="onnxmltools", version=f"{v} (xgboost {xgboost.__version__})",
         dataset="sklearn.datasets.load_wine (test_size=0.25, random_state=0)",
         description="XGBRFClassifier(n_estimators=8, max_depth=3), a random forest per class, SOFTMAX; class_ids fixed "
                     "(onnxmltools 1.16 assigns tree t to class t % 3). "
                     "Outputs: label int64 [1], probabilities [1,3].")

    g.seed_all(0)
    Xtr, Xte, ytr, yte = data("iris")
    est = lightgbm.LGBMClassifier(n_estimators=20, num_leaves=8, random_state=0, n_jobs=1, verbose=-1).fit(Xtr, ytr)
    m = onnxmltools.convert_lightgbm(est, initial_types=types(4), target_opset=15, zipmap=False)
    case("lgbm_iris", m, Xte, yte, exporter="onnxmltools", version=f"{v} (lightgbm {lightgbm.__version__})",
         dataset="sklearn.datasets.load_iris (test_size=0.25, random_state=0)",
         description="LGBMClassifier(n_estimators=20, num_leaves=8), SOFTMAX, missing values tracked. "
                     "Outputs: label int64 [1], probabilities [1,3].")


def update_readme():
    path = os.path.join(g.MODELS, "README.md")
    lines = [ln for ln in open(path).read().splitlines() if not any(ln.startswith(f"| {c} |") for c in CASES)]
    rows = []
    for name, m in sorted(g.CASES):
        acc = "" if m["float_accuracy"] is None else f"{m['float_accuracy']:.4f}"
        imports = ", ".join(f"{k}:{v}" for k, v in m["opset_imports"].items())
        rows.append(f"| {name} | {m['exporter']} | {imports} | {m['input']['shape']} | {m['num_samples']} "
                    f"| {acc} | {', '.join(m['ops'])} |")
    first_op = next(i for i, ln in enumerate(lines) if ln.startswith("| op_"))
    lines[first_op:first_op] = rows
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


INVALID = [
    ("tree_branch_eq.onnx", "a TreeEnsembleRegressor (`my_trees`) whose root tests BRANCH_EQ", "BRANCH_EQ"),
    ("tree_cycle.onnx", "a TreeEnsembleRegressor (`my_trees`) whose node 2 names the root as its child", "cycle"),
    ("tree_bad_feature.onnx", "a TreeEnsembleRegressor (`my_trees`) that tests feature 7 of a 2-feature input",
     "feature"),
    ("tree_dag.onnx", "a TreeEnsembleRegressor (`my_trees`) of 40 branches each leading to the next on both sides: "
     "2^40 paths in 81 bytes of node ids", "paths"),
    ("tree_constant.onnx", "a TreeEnsembleRegressor (`my_trees`) whose leaves all weigh 0: its output is a constant",
     "constant"),
]


def invalid_trees():
    """Hand-made ensembles that must be refused with a clear error (testsuite/invalid)."""
    import onnx
    from onnx import TensorProto, helper

    def regressor(file, modes, features, trues, falses, scale=1.0):
        n = len(modes)
        leaves = [i for i, m in enumerate(modes) if m == "LEAF"]
        x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])
        y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1])
        node = helper.make_node(
            "TreeEnsembleRegressor", ["x"], ["y"], name="my_trees", domain="ai.onnx.ml", n_targets=1,
            nodes_treeids=[0] * n, nodes_nodeids=list(range(n)), nodes_featureids=features,
            nodes_values=[0.5 - 0.1 * i for i in range(n)], nodes_modes=modes, nodes_truenodeids=trues,
            nodes_falsenodeids=falses, target_treeids=[0] * len(leaves), target_nodeids=leaves,
            target_ids=[0] * len(leaves), target_weights=[scale * (i + 1) for i in range(len(leaves))])
        g = helper.make_graph([node], file, [x], [y])
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", 3)],
                              producer_name="fhec-testsuite-gen")
        m.ir_version = 8
        with open(os.path.join(g_invalid(), file), "wb") as f:
            f.write(m.SerializeToString())

    leq = ["BRANCH_LEQ", "LEAF", "BRANCH_LEQ", "LEAF", "LEAF"]
    regressor("tree_branch_eq.onnx", ["BRANCH_EQ"] + leq[1:], [0, 0, 1, 0, 0], [1, 0, 3, 0, 0], [2, 0, 4, 0, 0])
    regressor("tree_cycle.onnx", leq[:4], [0, 0, 1, 0], [1, 0, 3, 0], [2, 0, 0, 0])
    regressor("tree_bad_feature.onnx", leq, [0, 0, 7, 0, 0], [1, 0, 3, 0, 0], [2, 0, 4, 0, 0])
    regressor("tree_constant.onnx", leq, [0, 0, 1, 0, 0], [1, 0, 3, 0, 0], [2, 0, 4, 0, 0], scale=0.0)
    chain = list(range(1, 41)) + [0]
    regressor("tree_dag.onnx", ["BRANCH_LEQ"] * 40 + ["LEAF"], [0] * 41, chain, chain)
    readme = os.path.join(g_invalid(), "README.md")
    text = open(readme).read()
    for file, what, _ in INVALID:
        line = f"- `{file}`: {what} (written by `trees.py`)."
        if line not in text:
            text = text.rstrip("\n") + "\n" + line + "\n"
    with open(readme, "w") as f:
        f.write(text)


def g_invalid():
    return os.path.join(os.path.dirname(g.MODELS), "invalid")


def main():
    print(f"onnxruntime {ort.__version__}")
    sklearn_cases()
    boosted_cases()
    update_readme()
    invalid_trees()


if __name__ == "__main__":
    main()
