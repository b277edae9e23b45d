"""The detector contract and its bundle format (JSON, ``.npz``/``.safetensors`` arrays and
``.skops`` estimators; no pickle is ever executed).

Every detector is a scikit-learn estimator (``BaseEstimator``): the constructor stores its
arguments unchanged, so ``sklearn.base.clone``, ``get_params`` and ``set_params`` work; ``fit``
learns (attributes ending in ``_``), ``predict_proba`` returns P(fake). This module writes the
shared logic once: input validation, the threshold chosen on validation data, and the bundle
folder, whose loading never executes code from the files.
"""

from __future__ import annotations

import abc
import importlib.metadata
import datetime
import platform
import io
import json
import os
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import safetensors
import safetensors.numpy
from sklearn.base import BaseEstimator, ClassifierMixin

import forensics
from crashsafe.documents import (BAD_VERSION, MISSING, NEWER, NOT_JSON, OLDER, WRONG_FORMAT,
                                 DocumentError, read_document)
from crashsafe.files import (ChecksumError, atomic_write_bytes, is_sha256_hex, read_checked,
                             recover_files, replace_files, sha256_hex)
from forensics.features.spectrum import check_rgb_image

__all__ = [
    "BUNDLE_FORMAT",
    "BUNDLE_FORMAT_VERSION",
    "BUNDLE_CONFIG_NAME",
    "BundleError",
    "Detector",
    "read_bundle_config",
    "load_arrays",
    "load_estimator",
]

BUNDLE_FORMAT = "gan-forensics-detector"
# 2: detector.json records the SHA-256 of every file of the bundle ("sha256") and the
# library versions that wrote it ("environment").
BUNDLE_FORMAT_VERSION = 2
# The bundle's configuration: kind, params, threshold, file list with checksums.
BUNDLE_CONFIG_NAME = "detector.json"


# What to do about a bundle that cannot be loaded, unless a more specific remedy applies.
BUNDLE_ADVICE = ("re-create it with `forensics detector train` or get an intact copy of the "
                 "bundle folder")


class BundleError(ValueError):
    """A detector bundle folder that cannot be loaded; the message names the folder and why."""

    def __init__(self, folder: str | os.PathLike, reason: str, advice: str = BUNDLE_ADVICE) -> None:
        super().__init__(f"cannot load detector bundle {os.fspath(folder)!r}: {reason}; {advice}")
        self.folder = Path(folder)
        self.reason = reason
        self.advice = advice

    def __reduce__(self):
        # Rebuild from every field, so the error survives a trip through a process pool.
        return (type(self), (self.folder, self.reason, self.advice))


# ----------------------------------------------------------------------------- bundle files


# Array file formats a bundle may hold; neither can carry a pickle.
ARRAY_SUFFIXES = (".npz", ".safetensors")
# Fitted scikit-learn estimators, written by skops: loading builds only allow-listed types.
ESTIMATOR_SUFFIX = ".skops"
# detector.json's list of each kind of file: (key, "what" in messages, allowed suffixes).
_FILE_LISTS = (("arrays", "array", ARRAY_SUFFIXES),
               ("estimators", "estimator", (ESTIMATOR_SUFFIX,)))


def _check_file_name(folder: Path, name: object, what: str = "array",
                     suffixes: tuple[str, ...] = ARRAY_SUFFIXES) -> str:
    """Listed files are plain names with one of ``suffixes`` inside the bundle folder."""
    if not isinstance(name, str) or not name.endswith(suffixes) or Path(name).name != name:
        allowed = " or ".join(f"'*{suffix}'" for suffix in suffixes)
        raise BundleError(folder, f"{what} file entry {name!r} is not a plain {allowed} file name")
    return name


def _bundle_config_error(folder: Path, error: DocumentError) -> BundleError:
    """What is wrong with a bundle's ``detector.json`` and what to do about it."""
    version = error.version
    if error.problem == OLDER:
        return BundleError(folder, f"format_version {version} predates the SHA-256 checksums "
                                   f"of format {BUNDLE_FORMAT_VERSION}, so its files cannot be "
                                   "checked",
                           "retrain it with `forensics detector train` (this is "
                           f"gan-forensics {forensics.__version__})")
    if error.problem == NEWER:
        return BundleError(folder, f"format_version {version} is newer than the supported "
                                   f"{BUNDLE_FORMAT_VERSION}",
                           f"upgrade gan-forensics (this is {forensics.__version__})")
    reason = {MISSING: f"missing {BUNDLE_CONFIG_NAME} (is this a detector bundle folder?)",
              NOT_JSON: f"{BUNDLE_CONFIG_NAME} is not valid JSON ({error.detail})",
              WRONG_FORMAT: f"{BUNDLE_CONFIG_NAME} does not declare format {BUNDLE_FORMAT!r}",
              BAD_VERSION: f"format_version {version!r} is not a positive integer"}
    return BundleError(folder, reason[error.problem])


def read_bundle_config(folder: str | os.PathLike) -> dict:
    """Read and validate ``detector.json`` of a bundle folder; raise BundleError if unusable."""
    folder = Path(folder)
    try:
        recover_files(folder)  # a save a crash cut short: finish it or drop it
    except OSError as error:
        raise BundleError(folder, f"a save interrupted by a crash cannot be finished ({error})",
                          "make the folder writable and load it again") from None
    try:
        manifest = read_document(folder / BUNDLE_CONFIG_NAME, format=BUNDLE_FORMAT,
                                 version=BUNDLE_FORMAT_VERSION, version_key="format_version")
    except DocumentError as error:
        raise _bundle_config_error(folder, error) from None
    if not isinstance(manifest.get("kind"), str):
        raise BundleError(folder, f"{BUNDLE_CONFIG_NAME} has no detector 'kind'")
    listed = []
    for key, what, suffixes in _FILE_LISTS:
        names = manifest.setdefault(key, [])
        if not isinstance(names, list):
            raise BundleError(folder, f"{key!r} must be a list of "
                                      f"{'/'.join(suffixes)} file names")
        for name in names:
            _check_file_name(folder, name, what, suffixes)
            if not (folder / name).is_file():
                raise BundleError(folder, f"missing {what} file {name} listed in "
                                          f"{BUNDLE_CONFIG_NAME}")
        listed += names
    checksums = manifest.get("sha256")
    if not isinstance(checksums, dict) or not all(
            isinstance(name, str) and is_sha256_hex(value) for name, value in checksums.items()):
        raise BundleError(folder, f"{BUNDLE_CONFIG_NAME} has no 'sha256' object mapping each file "
                                  "of the bundle to its SHA-256")
    unlisted = sorted(set(listed) - set(checksums))
    if unlisted:
        raise BundleError(folder, f"{BUNDLE_CONFIG_NAME} records no SHA-256 for "
                                  f"{', '.join(unlisted)}")
    return manifest


def _bundle_file(folder: Path, relative: str) -> Path:
    """``folder/relative`` for a path a manifest lists, refused when it leaves the folder."""
    path = folder / relative
    if Path(relative).is_absolute() or ".." in Path(relative).parts or path.is_symlink():
        raise BundleError(folder, f"{BUNDLE_CONFIG_NAME} lists {relative!r}, which is not a plain "
                                  "file inside the bundle folder")
    return path


def read_bundle_file(folder: str | os.PathLike, relative: str, manifest: Mapping) -> bytes:
    """The bytes of a file the bundle's ``sha256`` lists, after checking them against it."""
    folder = Path(folder)
    path = _bundle_file(folder, relative)
    try:
        return read_checked(path, manifest["sha256"][relative])
    except ChecksumError:
        raise BundleError(folder, f"{relative} does not match the SHA-256 recorded in "
                                  f"{BUNDLE_CONFIG_NAME} (a corrupted or altered file: a flipped "
                                  "bit, a truncated copy or a file swapped in)",
                          "get an intact copy of the bundle folder or retrain it with "
                          "`forensics detector train`") from None
    except OSError as error:
        raise BundleError(folder, f"{relative} listed in {BUNDLE_CONFIG_NAME} cannot be read "
                                  f"({error.strerror or error})") from None


def verify_bundle_files(folder: str | os.PathLike, manifest: Mapping,
                        skip: Sequence[str] = ()) -> None:
    """Check every file the bundle's ``sha256`` lists (but ``skip``, checked where read)."""
    for relative in sorted(manifest["sha256"]):
        if relative not in skip:
            read_bundle_file(folder, relative, manifest)


def _checksums(stage: Path) -> dict[str, str]:
    """SHA-256 of every file written into a staged bundle, by path relative to it."""
    return {path.relative_to(stage).as_posix(): sha256_hex(path.read_bytes())
            for path in sorted(stage.rglob("*"))
            if path.is_file() and not path.name.endswith(".tmp")}


RECORDED_PACKAGES = ("numpy", "scikit-learn", "scipy", "torch", "timm")


def library_versions() -> dict[str, str | None]:
    """Python's and the numeric libraries' versions (None when not installed), read without
    importing them: a bundle records them so that a reload computing other numbers can say
    which versions differ."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for package in RECORDED_PACKAGES:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    return versions


def load_arrays(folder: str | os.PathLike, name: str, manifest: Mapping) -> dict[str, np.ndarray]:
    """Load every array of ``folder/name``: .npz with ``allow_pickle=False``, or .safetensors.

    The bytes are first checked against the SHA-256 that ``manifest`` (the bundle's
    detector.json) records for the file. Object arrays and pickle payloads are refused before
    anything is unpickled (safetensors holds only a JSON header and raw numbers), so loading
    never runs code from the file; this and any other unreadable file raises BundleError.
    """
    folder = Path(folder)
    name = _check_file_name(folder, name)
    if not (folder / name).is_file():
        raise BundleError(folder, f"missing array file {name}")
    data = read_bundle_file(folder, name, manifest)
    if name.endswith(".safetensors"):
        try:
            return safetensors.numpy.load(data)
        except (safetensors.SafetensorError, OSError, ValueError) as error:
            raise BundleError(
                folder,
                f"array file {name} is not a valid .safetensors file ({error}); "
                "nothing from it was executed",
            ) from None
    arrays = None
    try:
        loaded = np.load(io.BytesIO(data), allow_pickle=False)
        if isinstance(loaded, np.lib.npyio.NpzFile):
            with loaded:
                arrays = {key: loaded[key] for key in loaded.files}
    except ValueError as error:
        if "pickle" not in str(error).lower():
            raise BundleError(folder, f"array file {name} is not a valid .npz ({error})") from None
        raise BundleError(
            folder,
            f"array file {name} holds pickled data (an object array or a pickle payload); "
            "loading it was refused and nothing from it was executed",
        ) from None
    except (OSError, EOFError, zipfile.BadZipFile, KeyError) as error:
        raise BundleError(folder, f"array file {name} is not a valid .npz ({error})") from None
    if arrays is None:
        raise BundleError(folder, f"array file {name} holds a bare array, not an .npz archive")
    return arrays


def load_estimator(folder: str | os.PathLike, name: str, manifest: Mapping,
                   trusted: Sequence[str]) -> BaseEstimator:
    """The scikit-learn estimator a bundle's ``.skops`` file holds, built by ``skops.io``.

    The bytes are first checked against their SHA-256 in ``manifest``; then every type the
    file names that skops does not trust by default must be in ``trusted`` (full dotted names),
    else BundleError before anything is built. skops never unpickles, so no code from the file
    runs either way.
    """
    import skops.io  # only bundles holding estimators pay for importing it

    folder = Path(folder)
    name = _check_file_name(folder, name, "estimator", (ESTIMATOR_SUFFIX,))
    data = read_bundle_file(folder, name, manifest)
    try:
        untrusted = sorted(set(skops.io.get_untrusted_types(data=data)) - set(trusted))
        if untrusted:
            raise BundleError(folder, f"estimator file {name} names types outside the allow-list "
                                      f"({', '.join(untrusted)}); loading it was refused and "
                                      "nothing from it was executed")
        return skops.io.loads(data, trusted=list(trusted))
    except BundleError:
        raise
    except Exception as error:  # skops reports a malformed file by many exception types
        raise BundleError(folder, f"estimator file {name} is not a valid .skops file "
                                  f"({type(error).__name__}: {error})") from None


def _estimator_file_bytes(estimator: BaseEstimator) -> bytes:
    """A fitted estimator as ``.skops`` bytes."""
    import skops.io

    return skops.io.dumps(estimator)


def _json_default(value: object) -> object:
    """JSON form of numpy scalars/arrays and paths that callers put in ``training_info_``."""
    if isinstance(value, (np.generic, np.ndarray)):
        return value.tolist()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"{type(value).__name__} {value!r} cannot be written to {BUNDLE_CONFIG_NAME}")


def _array_file_bytes(name: str, arrays: Mapping[str, np.ndarray]) -> bytes:
    """Serialise arrays to .npz or .safetensors bytes (by ``name``), refusing object arrays."""
    for key, value in arrays.items():
        if np.asarray(value).dtype.hasobject:
            raise TypeError(f"array {key!r} has dtype object, which a bundle cannot hold")
    if name.endswith(".safetensors"):
        return safetensors.numpy.save(
            {key: np.ascontiguousarray(value) for key, value in arrays.items()}
        )
    buffer = io.BytesIO()
    np.savez(buffer, **{key: np.asarray(value) for key, value in arrays.items()})
    return buffer.getvalue()


# ----------------------------------------------------------------------------- detector


def _check_images(images: Sequence[np.ndarray], what: str = "images") -> None:
    """Raise ValueError unless ``images`` is a non-empty sequence of RGB uint8 (H, W, 3) arrays."""
    if isinstance(images, np.ndarray) and images.ndim == 3:
        raise ValueError(f"{what} must be a sequence of images; wrap a single image in a list")
    if len(images) == 0:
        raise ValueError(f"{what} is empty; expected at least one RGB uint8 (H, W, 3) image")
    for index, image in enumerate(images):
        check_rgb_image(image, f"{what}[{index}]")


def _check_labels(labels: Sequence[int], n_images: int, what: str = "labels") -> np.ndarray:
    """Labels as an int array of 0 (real) / 1 (fake), one per image."""
    y = np.asarray(labels)
    if y.ndim != 1 or len(y) != n_images:
        raise ValueError(
            f"{what} must be 1-D with one label per image: {n_images} images, shape {y.shape}"
        )
    if not np.isin(y, (0, 1)).all():
        raise ValueError(f"{what} must be 0 (real) or 1 (fake), got values {np.unique(y)[:10]}")
    return y.astype(np.int64)


class Detector(ClassifierMixin, BaseEstimator, abc.ABC):
    """Base class of all detectors: images in, P(fake) out, saved as a bundle folder.

    A scikit-learn classifier: the constructor stores every argument unchanged under its own
    name (no checks there: ``fit`` and ``load`` validate), so ``get_params``, ``set_params``
    and ``sklearn.base.clone`` work and ``GridSearchCV`` can tune a detector on a list of
    images. Unlike scikit-learn's, ``predict_proba`` returns P(fake) alone, shape (N,).

    Subclasses implement ``preprocessing``, ``_fit``, ``_predict_proba``, ``_arrays`` and
    ``_restore`` (and ``_estimators`` with ``_restore_estimators`` to keep fitted
    scikit-learn estimators); the public methods here validate inputs once and keep the
    threshold, training summary and bundle format identical across detectors.

    Learned attributes: ``threshold_`` (scores >= it are called fake), ``training_info_``
    (a free-form JSON-ready summary the caller may extend, e.g. corpora and counts per
    generator), ``validation_metrics_`` (``binary_metrics`` on the validation data, or None)
    and ``calibration_`` (how scores became probabilities, JSON-ready, or None; saved in
    detector.json and set again before ``_restore`` runs).

    Class data: ``known_failure_modes`` (short sentences for the model card),
    ``variant_param`` (the parameter an ensemble member spec ``kind:variant`` sets, or None)
    ``needs_fakes`` (False for one-class detectors, which model real images alone and fit
    without any fake) and ``scores_in_threads`` (False where scoring runs torch, whose CPU
    threads belong to the thread that first called it: images scored from several threads
    make several thread teams that spin against each other), ``trusted_estimator_types``
    (the types, beyond skops' defaults, that its ``.skops`` files may name).

    Kinds that train for long (the CNN, and ensembles holding one) take a ``train_state_dir``
    constructor parameter: a folder where they keep their state after every epoch, and from
    whose state ``fit`` continues when it holds one for the same data and parameters
    (``forensics.detectors.train_state``); ``resumes_training()`` says whether they do. The
    caller removes the folder once the bundle is saved. It is where this machine keeps work
    in progress, not part of the model, so bundles do not record it.
    """

    kind: ClassVar[str] = ""
    known_failure_modes: ClassVar[tuple[str, ...]] = ()
    variant_param: ClassVar[str | None] = None
    needs_fakes: ClassVar[bool] = True
    scores_in_threads: ClassVar[bool] = True
    trusted_estimator_types: ClassVar[tuple[str, ...]] = ()
    calibration_: dict[str, Any] | None = None
    saved_with_: Mapping[str, Any] = {}  # a loaded bundle's "environment"

    def resolved_params(self) -> dict[str, Any]:
        """The parameters as a bundle records them: JSON-ready, with the defaults that depend
        on other parameters filled in (kinds override this), without ``train_state_dir``.

        ``type(self)(**resolved_params())`` builds a detector that fits and scores the same.
        """
        params = self.get_params(deep=False)
        params.pop("train_state_dir", None)
        return params

    @property
    @abc.abstractmethod
    def preprocessing(self) -> dict[str, Any]:
        """How images are turned into model input, as plain data for callers and the bundle."""

    @abc.abstractmethod
    def _fit(
        self,
        images: Sequence[np.ndarray],
        labels: np.ndarray,
        validation: tuple[Sequence[np.ndarray], np.ndarray] | None,
    ) -> None:
        """Learn the model from validated training images and 0/1 labels.

        ``validation`` is the validated (images, labels) pair passed to ``fit``, or None;
        detectors that early-stop or calibrate use it (``fit`` picks the threshold on it after).
        """

    @abc.abstractmethod
    def _predict_proba(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """P(fake) float64 (N,) for validated images."""

    @abc.abstractmethod
    def _arrays(self) -> dict[str, dict[str, np.ndarray]]:
        """Learned arrays to save: .npz or .safetensors file name -> {array name: array}."""

    @abc.abstractmethod
    def _restore(self, folder: Path, arrays: dict[str, dict[str, np.ndarray]]) -> None:
        """Set the learned model from loaded arrays; raise BundleError if they do not fit."""

    def _estimators(self) -> dict[str, BaseEstimator]:
        """Fitted scikit-learn estimators to save: ``.skops`` file name -> estimator; none."""
        return {}

    def _restore_estimators(self, folder: Path, estimators: dict[str, BaseEstimator]) -> None:
        """Keep the estimators loaded from the bundle's ``.skops`` files (called before
        ``_restore``); kinds that save none refuse any."""
        if estimators:
            raise BundleError(folder, f"a {self.kind} bundle holds no estimator files, but "
                                      f"{BUNDLE_CONFIG_NAME} lists {', '.join(sorted(estimators))}")

    def incompatible(self, folder: Path, what: str) -> BundleError:
        """The refusal of a bundle whose files are intact (each matched its SHA-256) but whose
        model computes other numbers here than where it was saved: ``what`` says which numbers;
        the message names the library versions that differ."""
        now = library_versions()
        differ = [f"{name} {saved} then, {now.get(name)} now"
                  for name, saved in sorted(self.saved_with_.items()) if now.get(name) != saved]
        return BundleError(
            folder,
            f"{what}, although its files are intact (each matches its SHA-256 in "
            f"{BUNDLE_CONFIG_NAME}): these libraries compute other numbers than the ones that "
            f"saved it ({'; '.join(differ) or 'the same versions are installed'})",
            "install the versions it was saved with, or retrain it here with "
            "`forensics detector train`",
        )

    def resumes_training(self) -> bool:
        """Whether ``fit`` keeps a state in ``train_state_dir`` and continues from it."""
        return False

    def fit(
        self,
        images: Sequence[np.ndarray],
        labels: Sequence[int],
        *,
        val_images: Sequence[np.ndarray] | None = None,
        val_labels: Sequence[int] | None = None,
    ) -> Detector:
        """Fit on images with labels 1 = fake, 0 = real; pick ``threshold_`` on validation data.

        Without validation data (or with a single class in it) the threshold is 0.5. Returns
        self.
        """
        _check_images(images)
        y = _check_labels(labels, len(images))
        y_val = None
        if len(np.unique(y)) < 2 and (self.needs_fakes or y[0] == 1):
            needs = ("both real (0) and fake (1) images" if self.needs_fakes
                     else "real (0) images; fakes are optional")
            raise ValueError(
                f"training labels hold only class {int(y[0])} ({'fake' if y[0] else 'real'}); "
                f"a {self.kind or 'this'} detector needs {needs}"
            )
        if (val_images is None) != (val_labels is None):
            raise ValueError("pass both val_images and val_labels, or neither")
        if val_images is not None:
            _check_images(val_images, "val_images")
            y_val = _check_labels(val_labels, len(val_images), "val_labels")

        self.calibration_ = None
        self._fit(images, y, None if y_val is None else (val_images, y_val))
        self.classes_ = np.array([0, 1])  # scikit-learn's classifier contract
        self.threshold_ = 0.5
        self.validation_metrics_ = None
        if y_val is not None:
            from forensics.metrics import binary_metrics, choose_threshold

            scores = self._predict_proba(val_images)
            self.threshold_ = choose_threshold(y_val, scores)
            self.validation_metrics_ = binary_metrics(y_val, scores, self.threshold_)
        self.training_info_ = {
            "n_images": len(y),
            "n_real": int(np.sum(y == 0)),
            "n_fake": int(np.sum(y == 1)),
            "n_val_images": 0 if val_images is None else len(val_images),
        }
        return self

    def _check_fitted(self) -> None:
        """Raise NotFittedError before fit() or load()."""
        if not hasattr(self, "threshold_"):
            from sklearn.exceptions import NotFittedError

            raise NotFittedError(
                f"this {type(self).__name__} is not fitted yet; call fit() or load()"
            )

    def predict_proba(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """P(fake) for each image, float64 (N,) in [0, 1]."""
        self._check_fitted()
        _check_images(images)
        return np.asarray(self._predict_proba(images), dtype=np.float64)

    def predict(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """Verdict per image: 1 (fake) where P(fake) >= ``threshold_``, else 0 (real)."""
        return (self.predict_proba(images) >= self.threshold_).astype(np.int64)

    def predict_proba_with_members(
        self, images: Sequence[np.ndarray]
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """P(fake) and, for detectors made of members (ensembles), each member's P(fake).

        Plain detectors have no members: ``(predict_proba(images), {})``.
        """
        return self.predict_proba(images), {}

    def _save_parts(self, folder: Path) -> None:
        """Write what lives beside the array files (an ensemble's member bundles); default none."""

    def save(self, folder: str | os.PathLike) -> Path:
        """Write the bundle folder (created if missing): array files first, detector.json last.

        The files replace an earlier bundle in the folder as one unit
        (``crashsafe.files.replace_files``): after a crash at any moment the folder loads as
        the old bundle or the new one, never a mix of the two.
        """
        self._check_fitted()
        folder = Path(folder)
        arrays = self._arrays()
        estimators = self._estimators()
        manifest = {
            "format": BUNDLE_FORMAT,
            "format_version": BUNDLE_FORMAT_VERSION,
            "kind": self.kind,
            "params": self.resolved_params(),
            "threshold": float(self.threshold_),
            "preprocessing": self.preprocessing,
            "training": self.training_info_,
            "validation": self.validation_metrics_,
            "calibration": self.calibration_,
            "known_failure_modes": list(self.known_failure_modes),
            "arrays": sorted(arrays),
            "estimators": sorted(estimators),
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "library_version": forensics.__version__,
            "environment": library_versions(),
        }
        # Serialise everything before writing anything, so a bad value leaves no partial bundle.
        json.dumps(manifest, allow_nan=False, default=_json_default)
        files = {
            _check_file_name(folder, n): _array_file_bytes(n, a) for n, a in arrays.items()
        }
        files.update({_check_file_name(folder, n, "estimator", (ESTIMATOR_SUFFIX,)):
                      _estimator_file_bytes(e) for n, e in estimators.items()})

        def write(stage: Path) -> None:
            for name, data in files.items():
                atomic_write_bytes(stage / name, data)
            self._save_parts(stage)
            # Every file written above (an ensemble's members included), by its SHA-256.
            manifest["sha256"] = _checksums(stage)
            text = json.dumps(manifest, indent=2, allow_nan=False, default=_json_default)
            atomic_write_bytes(stage / BUNDLE_CONFIG_NAME, (text + "\n").encode("utf-8"))

        replace_files(folder, write, last=BUNDLE_CONFIG_NAME)
        return folder

    @classmethod
    def load(cls, folder: str | os.PathLike) -> Detector:
        """Rebuild a fitted detector from a bundle folder written by ``save``.

        Reads only JSON, ``.npz`` (``allow_pickle=False``), ``.safetensors`` and allow-listed
        ``.skops`` estimators (``load_estimator``); raises BundleError
        when the folder is not a bundle of this kind or a file is missing, unreadable or refused.
        """
        folder = Path(folder)
        manifest = read_bundle_config(folder)
        if manifest["kind"] != cls.kind:
            raise BundleError(folder, f"bundle kind {manifest['kind']!r} is not {cls.kind!r}")
        params = manifest.get("params", {})
        threshold = manifest.get("threshold")
        if not isinstance(params, dict):
            raise BundleError(folder, "'params' must be a JSON object")
        if not isinstance(threshold, (int, float)) or isinstance(threshold, bool):
            raise BundleError(folder, f"'threshold' must be a number, got {threshold!r}")
        try:
            detector = cls(**params)
        except (TypeError, ValueError) as error:
            raise BundleError(folder, f"'params' do not fit {cls.__name__} ({error})") from None
        detector.calibration_ = manifest.get("calibration")
        detector.saved_with_ = manifest.get("environment") or {}
        loaded_files = manifest["arrays"] + manifest["estimators"]
        verify_bundle_files(folder, manifest, skip=loaded_files)  # those: as they load
        detector._restore_estimators(folder, {
            name: load_estimator(folder, name, manifest, cls.trusted_estimator_types)
            for name in manifest["estimators"]})
        detector._restore(folder, {name: load_arrays(folder, name, manifest)
                                   for name in manifest["arrays"]})
        detector.classes_ = np.array([0, 1])
        detector.threshold_ = float(threshold)
        detector.training_info_ = manifest.get("training") or {}
        detector.validation_metrics_ = manifest.get("validation")
        return detector
