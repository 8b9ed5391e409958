"""Training sets for `fhec train` (testsuite/train/): scikit-learn's bundled breast-cancer, wine
(three classes, for one-vs-rest) and diabetes data, raw features, split 70/30 with random_state=0
(the classification sets stratified), as the training issue specifies. Also prints scikit-learn's reference scores, recorded in
testsuite/train/README.md.

    /work/venv-train/bin/python testsuite/gen/train_data.py   # numpy, scikit-learn (requirements.txt)
"""
import json
import os

import numpy as np
from sklearn import datasets
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

OUT = os.path.join(os.path.dirname(__file__), "..", "train")


def write(name, X, y, stratify):
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.3, random_state=0,
                                          stratify=y if stratify else None)
    d = os.path.join(OUT, name)
    os.makedirs(d, exist_ok=True)
    for f, a in [("train_x", Xtr), ("train_y", ytr), ("test_x", Xte), ("test_y", yte)]:
        np.save(os.path.join(d, f + ".npy"), np.ascontiguousarray(a, dtype=np.int64 if f.endswith("_y") and stratify else np.float64))
    return Xtr, Xte, ytr, yte


X, y = datasets.load_breast_cancer(return_X_y=True)
Xtr, Xte, ytr, yte = write("breast_cancer", X, y, True)
s = StandardScaler().fit(Xtr)
acc = LogisticRegression(max_iter=1000).fit(s.transform(Xtr), ytr).score(s.transform(Xte), yte)
X, y = datasets.load_wine(return_X_y=True)
Xtr3, Xte3, ytr3, yte3 = write("wine", X, y, True)
s3 = StandardScaler().fit(Xtr3)
acc3 = LogisticRegression(max_iter=1000).fit(s3.transform(Xtr3), ytr3).score(s3.transform(Xte3), yte3)
X, y = datasets.load_diabetes(return_X_y=True)
Xtr2, Xte2, ytr2, yte2 = write("diabetes", X, y, False)
r2 = LinearRegression().fit(Xtr2, ytr2).score(Xte2, yte2)
ref = {"breast_cancer": {"train": len(Xtr), "test": len(Xte), "sklearn_logistic_standardized_accuracy": acc},
       "wine": {"train": len(Xtr3), "test": len(Xte3), "sklearn_logistic_standardized_accuracy": acc3},
       "diabetes": {"train": len(Xtr2), "test": len(Xte2), "sklearn_least_squares_r2": r2}}
print(json.dumps(ref, indent=1))
with open(os.path.join(OUT, "reference.json"), "w") as f:
    json.dump(ref, f, indent=1)
    f.write("\n")
