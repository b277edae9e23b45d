"""The detector contract and its bundle format (JSON + ``.npz``/``.safetensors`` arrays, no pickle).

Every detector follows the scikit-learn shape: the constructor stores parameters, ``fit``
learns (attributes ending in ``_``), ``predict_proba`` returns P(fake). This module writes the
shared logic once: input validation, the threshold chosen on validation data, and the bundle
folder, whose loading never executes code from the files.
"""

from __future__ import annotations

import abc
import importlib
import importlib.metadata
import datetime
import platform
import io
import json
import os
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import numpy as np
import safetensors
import safetensors.numpy
import forensics
from crashsafe.files import (ChecksumError, atomic_write_bytes, is_sha256_hex, read_checked,
                             recover_files, replace_files, sha256_hex)
from forensics.features.spectrum import check_rgb_image

__all__ = [
    "BUNDLE_FORMAT",
    "BUNDLE_FORMAT_VERSION",
    "MANIFEST_NAME",
    "BundleError",
    "Detector",
    "register_detector",
    "registered_detectors",
    "read_manifest",
    "load_arrays",
]

BUNDLE_FORMAT = "gan-forensics-detector"
# 2: detector.json records the SHA-256 of every file of the bundle ("sha256") and the
# library versions that wrote it ("environment").
BUNDLE_FORMAT_VERSION = 2
MANIFEST_NAME = "detector.json"

_REGISTRY: dict[str, type[Detector]] = {}
D = TypeVar("D", bound="Detector")


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


def register_detector(kind: str):
    """Class decorator that registers a Detector subclass under ``kind`` and sets ``cls.kind``."""

    def decorate(cls: type[D]) -> type[D]:
        if not (isinstance(cls, type) and issubclass(cls, Detector)):
            raise TypeError(f"register_detector({kind!r}) expects a Detector subclass, got {cls!r}")
        if kind in _REGISTRY and _REGISTRY[kind] is not cls:
            raise ValueError(f"detector kind {kind!r} is already registered by {_REGISTRY[kind]!r}")
        cls.kind = kind
        _REGISTRY[kind] = cls
        return cls

    return decorate


# Kinds whose module imports torch: registered on first use, so that scanning with a spectral
# bundle never pays for importing torch and timm.
_LAZY_KINDS = {"cnn": "forensics.detectors.cnn"}


def registered_detectors(kind: str | None = None) -> dict[str, type[Detector]]:
    """A copy of the registry: kind -> Detector subclass.

    With ``kind``, only that kind's module is imported if it is a lazy one; without, all are.
    """
    for lazy_kind, module in _LAZY_KINDS.items():
        if lazy_kind not in _REGISTRY and kind in (None, lazy_kind):
            importlib.import_module(module)
    return dict(_REGISTRY)


# ----------------------------------------------------------------------------- bundle files


# Array file formats a bundle may hold; neither can carry a pickle.
ARRAY_SUFFIXES = (".npz", ".safetensors")


def _check_array_file_name(folder: Path, name: object) -> str:
    """Array files are plain ``*.npz`` or ``*.safetensors`` names inside the bundle folder."""
    if not isinstance(name, str) or not name.endswith(ARRAY_SUFFIXES) or Path(name).name != name:
        raise BundleError(
            folder, f"array file entry {name!r} is not a plain '*.npz' or '*.safetensors' file name"
        )
    return name


def read_manifest(folder: str | os.PathLike) -> dict:
    """Read and validate ``detector.json`` of a bundle folder; raise BundleError if unusable."""
    folder = Path(folder)
    try:
        recover_files(folder)  # a save a crash cut short: finish it or drop it
    except OSError as error:
        raise BundleError(folder, f"a save interrupted by a crash cannot be finished ({error})",
                          "make the folder writable and load it again") from None
    path = folder / MANIFEST_NAME
    if not path.is_file():
        raise BundleError(folder, f"missing {MANIFEST_NAME} (is this a detector bundle folder?)")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise BundleError(folder, f"{MANIFEST_NAME} is not valid JSON ({error})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != BUNDLE_FORMAT:
        raise BundleError(folder, f"{MANIFEST_NAME} does not declare format {BUNDLE_FORMAT!r}")
    version = manifest.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise BundleError(folder, f"format_version {version!r} is not a positive integer")
    if version < BUNDLE_FORMAT_VERSION:
        raise BundleError(
            folder,
            f"format_version {version} predates the SHA-256 checksums of format "
            f"{BUNDLE_FORMAT_VERSION}, so its files cannot be checked",
            "retrain it with `forensics detector train` (this is "
            f"gan-forensics {forensics.__version__})",
        )
    if version > BUNDLE_FORMAT_VERSION:
        raise BundleError(
            folder,
            f"format_version {version} is newer than the supported {BUNDLE_FORMAT_VERSION}",
            f"upgrade gan-forensics (this is {forensics.__version__})",
        )
    if not isinstance(manifest.get("kind"), str):
        raise BundleError(folder, f"{MANIFEST_NAME} has no detector 'kind'")
    arrays = manifest.setdefault("arrays", [])
    if not isinstance(arrays, list):
        raise BundleError(folder, "'arrays' must be a list of .npz/.safetensors file names")
    for name in arrays:
        _check_array_file_name(folder, name)
        if not (folder / name).is_file():
            raise BundleError(folder, f"missing array file {name} listed in {MANIFEST_NAME}")
    checksums = manifest.get("sha256")
    if not isinstance(checksums, dict) or not all(
            isinstance(name, str) and is_sha256_hex(value) for name, value in checksums.items()):
        raise BundleError(folder, f"{MANIFEST_NAME} has no 'sha256' object mapping each file "
                                  "of the bundle to its SHA-256")
    unlisted = sorted(set(arrays) - set(checksums))
    if unlisted:
        raise BundleError(folder, f"{MANIFEST_NAME} records no SHA-256 for {', '.join(unlisted)}")
    return manifest


def _bundle_file(folder: Path, relative: str) -> Path:
    """``folder/relative`` for a path a manifest lists, refused when it leaves the folder."""
    path = folder / relative
    if Path(relative).is_absolute() or ".." in Path(relative).parts or path.is_symlink():
        raise BundleError(folder, f"{MANIFEST_NAME} lists {relative!r}, which is not a plain "
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
                                  f"{MANIFEST_NAME} (a corrupted or altered file: a flipped "
                                  "bit, a truncated copy or a file swapped in)",
                          "get an intact copy of the bundle folder or retrain it with "
                          "`forensics detector train`") from None
    except OSError as error:
        raise BundleError(folder, f"{relative} listed in {MANIFEST_NAME} cannot be read "
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
    name = _check_array_file_name(folder, name)
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


def _json_default(value: object) -> object:
    """JSON form of numpy scalars/arrays and paths that callers put in ``training_info_``."""
    if isinstance(value, (np.generic, np.ndarray)):
        return value.tolist()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"{type(value).__name__} {value!r} cannot be written to {MANIFEST_NAME}")


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


class Detector(abc.ABC):
    """Base class of all detectors: images in, P(fake) out, saved as a bundle folder.

    Subclasses implement ``get_params``, ``preprocessing``, ``_fit``, ``_predict_proba``,
    ``_arrays`` and ``_restore``; the public methods here validate inputs once and keep
    the threshold, training summary and bundle format identical across detectors.

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
    make several thread teams that spin against each other).

    ``train_state_dir`` (not a parameter: set it on the instance before ``fit``): a folder
    where detectors that train for long (the CNN) keep their state after every epoch, and
    from whose state ``fit`` continues when it holds one for the same data and parameters
    (``forensics.detectors.train_state``); ``resumes_training()`` says whether it does. The
    caller removes the folder once the bundle is saved. Detectors that fit in seconds ignore
    it and simply fit again.
    """

    kind: ClassVar[str] = ""
    known_failure_modes: ClassVar[tuple[str, ...]] = ()
    variant_param: ClassVar[str | None] = None
    needs_fakes: ClassVar[bool] = True
    scores_in_threads: ClassVar[bool] = True
    calibration_: dict[str, Any] | None = None
    saved_with_: Mapping[str, Any] = {}  # a loaded bundle's "environment"
    train_state_dir: str | os.PathLike | None = None

    @abc.abstractmethod
    def get_params(self) -> dict[str, Any]:
        """Constructor parameters as a JSON-ready dict (``type(self)(**params)`` rebuilds it)."""

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
            f"{MANIFEST_NAME}): these libraries compute other numbers than the ones that saved "
            f"it ({'; '.join(differ) or 'the same versions are installed'})",
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
        manifest = {
            "format": BUNDLE_FORMAT,
            "format_version": BUNDLE_FORMAT_VERSION,
            "kind": self.kind,
            "params": self.get_params(),
            "threshold": float(self.threshold_),
            "preprocessing": self.preprocessing,
            "training": self.training_info_,
            "validation": self.validation_metrics_,
            "calibration": self.calibration_,
            "known_failure_modes": list(self.known_failure_modes),
            "arrays": sorted(arrays),
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "library_version": forensics.__version__,
            "environment": library_versions(),
        }
        # Serialise everything before writing anything, so a bad value leaves no partial bundle.
        json.dumps(manifest, allow_nan=False, default=_json_default)
        files = {
            _check_array_file_name(folder, n): _array_file_bytes(n, a) for n, a in arrays.items()
        }

        def write(stage: Path) -> None:
            for name, data in files.items():
                atomic_write_bytes(stage / name, data)
            self._save_parts(stage)
            # Every file written above (an ensemble's members included), by its SHA-256.
            manifest["sha256"] = _checksums(stage)
            text = json.dumps(manifest, indent=2, allow_nan=False, default=_json_default)
            atomic_write_bytes(stage / MANIFEST_NAME, (text + "\n").encode("utf-8"))

        replace_files(folder, write, last=MANIFEST_NAME)
        return folder

    @classmethod
    def load(cls, folder: str | os.PathLike) -> Detector:
        """Rebuild a fitted detector from a bundle folder written by ``save``.

        Reads only JSON, ``.npz`` (``allow_pickle=False``) and ``.safetensors``; raises BundleError
        when the folder is not a bundle of this kind or a file is missing, unreadable or refused.
        """
        folder = Path(folder)
        manifest = read_manifest(folder)
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
        verify_bundle_files(folder, manifest, skip=manifest["arrays"])  # arrays: as they load
        detector._restore(folder, {name: load_arrays(folder, name, manifest)
                                   for name in manifest["arrays"]})
        detector.threshold_ = float(threshold)
        detector.training_info_ = manifest.get("training") or {}
        detector.validation_metrics_ = manifest.get("validation")
        return detector
