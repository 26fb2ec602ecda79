"""Where the book side keeps its files: the one place that defines every folder it reads or writes.

Nothing here is derived from where the package is installed. The folders hang off one *home*:

1. ``$QATTN_HOME`` when it is set;
2. otherwise the qattn checkout that contains the working directory (a folder, found by walking
   up from ``Path.cwd()``, that holds ``pyproject.toml`` of the project ``qattn`` and a
   ``notebooks/`` folder): running from a clone keeps everything in the clone;
3. otherwise ``$XDG_CACHE_HOME/qattn`` (by default ``~/.cache/qattn``), for an installed package.

Under the home (each one can also be set on its own):

=====================  ===========================================  ======================
what                   default                                      environment variable
=====================  ===========================================  ======================
data cache             ``<home>/data-cache``                        ``QATTN_DATA_DIR``
results of a profile   ``<home>/build/results/<profile>``           ``QATTN_RESULTS_DIR``
trained models         ``<results of the profile>/speech_models``   ``QATTN_MODELS_DIR``
=====================  ===========================================  ======================

The committed reference results (``results/`` and ``results/<profile>/``) and the source
notebooks exist only in a checkout: :func:`checkout` tells whether there is one.

>>> import os
>>> env = {"QATTN_HOME": "/srv/qattn"}
>>> str(results_dir("ci", env)), str(data_cache_dir(env)), str(models_dir("full", env))
('/srv/qattn/build/results/ci', '/srv/qattn/data-cache', '/srv/qattn/build/results/full/speech_models')
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path

__all__ = [
    "checkout",
    "home",
    "data_cache_dir",
    "results_dir",
    "models_dir",
    "reference_dir",
    "notebook_path",
]

PROFILES = ("full", "ci")


def _is_checkout(folder: Path) -> bool:
    project = folder / "pyproject.toml"
    if not (project.is_file() and (folder / "notebooks").is_dir()):
        return False
    try:
        return tomllib.loads(project.read_text()).get("project", {}).get("name") == "qattn"
    except (OSError, tomllib.TOMLDecodeError):
        return False


def checkout(start: str | Path | None = None) -> Path | None:
    """The qattn checkout that contains ``start`` (default: the working directory), or ``None``."""
    here = Path(start if start is not None else Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if _is_checkout(folder):
            return folder
    return None


def _env(environ: Mapping[str, str] | None) -> Mapping[str, str]:
    return os.environ if environ is None else environ


def home(environ: Mapping[str, str] | None = None) -> Path:
    """``$QATTN_HOME``, else the checkout around the working directory, else the user cache folder."""
    env = _env(environ)
    if env.get("QATTN_HOME"):
        return Path(env["QATTN_HOME"]).expanduser()
    found = checkout()
    if found is not None:
        return found
    cache = Path(env["XDG_CACHE_HOME"]).expanduser() if env.get("XDG_CACHE_HOME") else Path.home() / ".cache"
    return cache / "qattn"


def data_cache_dir(environ: Mapping[str, str] | None = None) -> Path:
    """Generated and cached data sets (``$QATTN_DATA_DIR`` or ``<home>/data-cache``)."""
    env = _env(environ)
    if env.get("QATTN_DATA_DIR"):
        return Path(env["QATTN_DATA_DIR"]).expanduser()
    return home(env) / "data-cache"


def _check_profile(profile: str) -> None:
    if profile not in PROFILES:
        raise ValueError(f"profile must be one of {PROFILES}, got {profile!r}")


def results_dir(profile: str, environ: Mapping[str, str] | None = None) -> Path:
    """Results JSON and chapter assets of one build profile (``$QATTN_RESULTS_DIR/<profile>`` if set)."""
    _check_profile(profile)
    env = _env(environ)
    if env.get("QATTN_RESULTS_DIR"):
        return Path(env["QATTN_RESULTS_DIR"]).expanduser() / profile
    return home(env) / "build" / "results" / profile


def models_dir(profile: str, environ: Mapping[str, str] | None = None) -> Path:
    """Trained speech models of one profile (``$QATTN_MODELS_DIR/<profile>`` if set)."""
    _check_profile(profile)
    env = _env(environ)
    if env.get("QATTN_MODELS_DIR"):
        return Path(env["QATTN_MODELS_DIR"]).expanduser() / profile
    return results_dir(profile, env) / "speech_models"


def reference_dir(profile: str, environ: Mapping[str, str] | None = None) -> Path:
    """The committed reference results: ``results/`` for ``full``, ``results/<profile>/`` otherwise.

    They live in the checkout around the working directory (else under :func:`home`, where an
    installed package has none unless they were copied there).
    """
    _check_profile(profile)
    base = (checkout() or home(environ)) / "results"
    return base if profile == "full" else base / profile


def notebook_path(slug: str) -> Path:
    """The source notebook of a chapter, ``<checkout>/notebooks/<slug>.ipynb``.

    Raises ``FileNotFoundError`` outside a checkout or for an unknown chapter.
    """
    root = checkout()
    if root is None:
        raise FileNotFoundError(f"the notebooks exist only in a qattn checkout; {Path.cwd()} is not inside one")
    path = root / "notebooks" / f"{slug}.ipynb"
    if not path.is_file():
        known = sorted(p.stem for p in (root / "notebooks").glob("*.ipynb"))
        raise FileNotFoundError(f"no chapter notebook {path.name}; the chapters are {known}")
    return path
