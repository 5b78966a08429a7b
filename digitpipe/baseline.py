"""The scikit-learn baseline: the book's multinomial logistic regression."""

from __future__ import annotations

import warnings

from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression

from digitpipe import interrupts
from digitpipe.data.dataset import Dataset
from digitpipe.records.specs import LogRegSpec


def fit_logreg(spec: LogRegSpec, train: Dataset) -> LogisticRegression:
    """Multinomial logistic regression on pixels/255, then folded to take raw pixels like every other model."""
    clf = LogisticRegression(C=spec.C, max_iter=spec.max_iter)
    with warnings.catch_warnings():  # the book's maxit=100 stops before lbfgs's tolerance; that is the baseline
        warnings.simplefilter("ignore", ConvergenceWarning)
        interrupts.reached("logreg fit")  # no check reaches into the fit: a stop ends it with the process
        clf.fit(train.flat() / 255.0, train.labels)
    clf.coef_ /= 255.0  # w . (x/255) == (w/255) . x: same model, raw-pixel input
    return clf
