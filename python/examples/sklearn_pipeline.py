"""A scikit-learn pipeline (scaling, then logistic regression) on breast-cancer records, compiled
and run encrypted. The records are the corpus's (testsuite/models/logreg_cancer_skl): the pipeline
is fitted on the first half and scored on the second. Usage: python sklearn_pipeline.py [N]"""

import sys
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import fhec

CORPUS = Path(__file__).resolve().parents[2] / "testsuite" / "models" / "logreg_cancer_skl"
n = int(sys.argv[1]) if len(sys.argv) > 1 else 10

x, y = np.load(CORPUS / "inputs.npy"), np.load(CORPUS / "labels.npy")
half = len(x) // 2
pipeline = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(x[:half], y[:half])

model = fhec.compile(pipeline, calibration=x[:half])
print(model.report_text.split("\n\nlayers:")[0])
test_x, test_y = x[half:], y[half:]
print(f"scikit-learn {(pipeline.predict(test_x) == test_y).mean():.2%}, "
      f"compiled (clear) {(model.predict(test_x) == test_y).mean():.2%} on {len(test_x)} records")
enc = model.predict(test_x[:n], mode="fhe", all_outputs=True)
print(f"encrypted: labels {enc['label'].tolist()} (scikit-learn {pipeline.predict(test_x[:n]).tolist()}, true {test_y[:n].tolist()}), "
      f"{model.last_run['ms_per_sample']:.1f} ms/record")
