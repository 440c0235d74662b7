"""A fitted scikit-learn estimator from the file a user brings: skops, joblib or pickle.

- skops (``.skops``): loaded with an explicit list of trusted types, scikit-learn's, NumPy's and SciPy's.
  Any other type in the file (a custom function, a class from the user's package) is refused by name, so
  that loading the file runs no code the file chose.
- joblib (``.joblib``, ``.jbl``) and pickle (``.pkl``, ``.pickle``): unpickling runs whatever the file
  says; these are the user's own files, loaded on their own machine by ``jobs publish``.

Every refusal is an ``EstimatorFileError`` naming the file and the problem: not a model file, no
``predict_proba``, not fitted, saved by another scikit-learn version (both versions named).
"""

from __future__ import annotations

import pickle
import warnings
import zipfile
from pathlib import Path
from typing import Any

TRUSTED_MODULES = ("sklearn.", "numpy.", "scipy.", "builtins.", "collections.")


class EstimatorFileError(ValueError):
    """The file cannot be served as a model; the message says why."""


def untrusted_skops_types(types: list[str]) -> list[str]:
    return sorted(t for t in types if not t.startswith(TRUSTED_MODULES))


def _load_skops(path: Path) -> Any:
    import skops.io

    try:
        types = skops.io.get_untrusted_types(file=path)
    except Exception as exc:  # a zip that is not a skops file, a truncated file, ...
        raise EstimatorFileError(f"{path}: not a skops model file: {exc}") from exc
    refused = untrusted_skops_types(types)
    if refused:
        raise EstimatorFileError(
            f"{path}: the skops file holds types outside scikit-learn, NumPy and SciPy, which are not loaded: "
            f"{', '.join(refused)}"
        )
    return skops.io.load(path, trusted=types)


def _load_pickle(path: Path) -> Any:
    if path.suffix in (".joblib", ".jbl"):
        import joblib

        return joblib.load(path)
    with path.open("rb") as f:
        return pickle.load(f)


def load_estimator_file(path: str | Path) -> Any:
    """The fitted estimator in ``path``, checked: it has ``predict_proba``, it is fitted, and it was saved by
    this scikit-learn."""
    import sklearn
    from sklearn.exceptions import InconsistentVersionWarning, NotFittedError
    from sklearn.utils.validation import check_is_fitted

    p = Path(path)
    if not p.is_file():
        raise EstimatorFileError(f"{p}: no such file")
    with warnings.catch_warnings():
        warnings.simplefilter("error", InconsistentVersionWarning)
        try:
            estimator = _load_skops(p) if p.suffix == ".skops" or zipfile.is_zipfile(p) else _load_pickle(p)
        except InconsistentVersionWarning as w:
            raise EstimatorFileError(
                f"{p}: saved by scikit-learn {w.original_sklearn_version}, this is scikit-learn "
                f"{sklearn.__version__}: re-save the model with scikit-learn {sklearn.__version__} (or publish "
                f"from an environment with {w.original_sklearn_version}) so that it predicts as it was trained"
            ) from None
        except EstimatorFileError:
            raise
        except Exception as exc:  # pickle, joblib and skops raise many types for a file that is not a model
            raise EstimatorFileError(f"{p}: not a model file (skops, joblib or pickle): {exc}") from exc
    if not hasattr(estimator, "predict_proba"):
        raise EstimatorFileError(
            f"{p}: {type(estimator).__name__} has no predict_proba: the platform serves classifiers' probabilities"
        )
    try:
        check_is_fitted(estimator)
    except (NotFittedError, TypeError) as exc:
        raise EstimatorFileError(f"{p}: {type(estimator).__name__} is not fitted: {exc}") from exc
    return estimator
