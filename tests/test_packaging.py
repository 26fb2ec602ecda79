"""Packaging: one pinned list shared by pip, pyproject extras and environment.yml; CI wiring; README example."""

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
import zipfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def parse_pins(lines) -> dict[str, str]:
    pins = {}
    for line in lines:
        line = line.split("#", 1)[0].strip()
        if not line or line.startswith("-"):
            continue
        name, sep, version = line.partition("==")
        assert sep, f"unpinned requirement: {line!r}"
        pins[normalise(name)] = version
    return pins


def requirements() -> dict[str, str]:
    return parse_pins((ROOT / "requirements.txt").read_text().splitlines())


def test_pyproject_dependencies_and_extras_equal_requirements():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    runtime = parse_pins(project["dependencies"])
    assert set(runtime) == {"torch", "numpy"}, "the library alone needs only torch and numpy"
    union = dict(runtime)
    for extra, pins in project["optional-dependencies"].items():
        for name, version in parse_pins(pins).items():
            assert union.setdefault(name, version) == version, f"{name} pinned twice differently ({extra})"
    assert union == requirements()
    assert requirements()["torch"] == "2.13.0"


def test_constraints_pin_every_requirement_at_the_same_version():
    constraints = parse_pins((ROOT / "constraints.txt").read_text().splitlines())
    for name, version in requirements().items():
        assert constraints.get(name) == version, f"constraints.txt pins {name}=={constraints.get(name)}, requirements.txt {version}"
    assert not any("+cpu" in v for v in constraints.values()), "a local version tag does not resolve from the registry"


def test_environment_yml_reuses_the_pinned_list():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    deps = env["dependencies"]
    assert "python=3.11" in deps
    pip_section = next(d["pip"] for d in deps if isinstance(d, dict) and "pip" in d)
    assert "-r requirements.txt" in pip_section and "-c constraints.txt" in pip_section
    assert not [d for d in pip_section if not d.startswith("-")], "packages must come from requirements.txt only"


def test_ci_runs_the_readme_test_command():
    assert "make test" in (ROOT / ".ci" / "run").read_text()
    assert "make test" in (ROOT / "README.md").read_text()


# Loaded by neither `import qattn` nor any library module: the book side and the extras' packages.
NOT_LOADED_BY_THE_LIBRARY = ("qattn.book", "sympy", "matplotlib", "papermill", "scipy", "pesq", "pystoi", "PIL", "easy_vqa")


def library_modules() -> list[str]:
    """Every module under ``qattn/`` except ``qattn/book/`` (from the tree, as tests/test_layout.py lists them)."""
    names = []
    for path in sorted((ROOT / "qattn").rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        if parts[1:2] != ("book",):
            names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def test_library_import_is_light():
    """``import qattn``, and then every library module, loads neither ``qattn.book`` nor matplotlib, scipy, sympy, papermill."""
    modules = library_modules()
    assert "qattn" in modules and "qattn.attention" in modules and not any(m.startswith("qattn.book") for m in modules)
    code = (
        "import importlib, json, sys\n"
        "def heavy():\n"
        f"    return sorted(m for m in sys.modules if any(m == h or m.startswith(h + '.') for h in {NOT_LOADED_BY_THE_LIBRARY!r}))\n"
        "import qattn\n"
        "after_qattn = heavy()\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "print(json.dumps([after_qattn, heavy()]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT).stdout
    after_qattn, after_all = json.loads(out.strip().splitlines()[-1])
    assert after_qattn == [], f"import qattn loads {after_qattn}"
    assert after_all == [], f"importing the library modules loads {after_all}"


def readme_example() -> str:
    """The python block of the README's "## Minimal usage" section."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## Minimal usage", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_usage_example_runs():
    exec(compile(readme_example(), "README.md", "exec"), {})


# What is not source: build state of the checkout, never copied for the wheel build.
_NOT_SOURCE_TOP = {".git", ".venv", "build", "dist", "data-cache", ".hypothesis", ".pytest_cache", "results", "notebooks"}
_NOT_SOURCE_ANYWHERE = {"__pycache__", ".ipynb_checkpoints"}


def _ignore_build_state(folder, names):
    rel = Path(folder).resolve().relative_to(ROOT).parts
    ignored = {n for n in names if n in _NOT_SOURCE_ANYWHERE or n.endswith(".egg-info")}
    if not rel:
        ignored |= _NOT_SOURCE_TOP & set(names)
    if rel == ("book",):
        ignored |= {"_build", "generated"} & set(names)
    return ignored


STAGE_TIMES: dict[str, float] = {}  # seconds per command of the wheel test, printed at its end (pytest -s)


def _run(cmd, stage: str | None = None, **kwargs) -> subprocess.CompletedProcess:
    t0 = time.monotonic()
    done = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kwargs)
    if stage:
        STAGE_TIMES[stage] = time.monotonic() - t0
    assert done.returncode == 0, f"{' '.join(map(str, cmd))} exited {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


PATHS_PROBE = """
import json, os, sys
import qattn
from qattn.book import paths
cases = json.loads(sys.argv[1])
report = {"qattn": qattn.__file__, "paths": paths.__file__, "prefix": sys.prefix, "path": sys.path,
          "checkout": str(paths.checkout()) if paths.checkout() else None,
          "editable": sorted(m for m in sys.modules if "editable" in m), "cases": {}}
for name, env in cases.items():
    for key in ("QATTN_HOME", "XDG_CACHE_HOME", "QATTN_DATA_DIR", "QATTN_RESULTS_DIR", "QATTN_MODELS_DIR"):
        os.environ.pop(key, None)
    os.environ.update(env)
    report["cases"][name] = {"results": str(paths.results_dir("ci")), "data": str(paths.data_cache_dir()),
                             "models": str(paths.models_dir("ci"))}
print(json.dumps(report))
"""


def _scratch_parent() -> str | None:
    """/dev/shm when it is a usable tmpfs (writing, then deleting, the ~1 GB venv on this project's
    virtual disks costs tens of seconds of I/O), else None: the usual temporary folder."""
    shm = "/dev/shm"
    try:
        st = os.statvfs(shm)
    except OSError:
        return None
    usable = os.access(shm, os.W_OK | os.X_OK) and not st.f_flag & (os.ST_NOEXEC | os.ST_RDONLY)
    return shm if usable and st.f_bavail * st.f_frsize > 4 * 2**30 else None


def test_wheel_installs_and_runs_outside_the_checkout():
    """Build the wheel of the checkout, install it into a fresh venv, use it from a folder outside the checkout.

    How: the checkout's source (without .venv, build state, results and notebooks) is copied to a
    temporary folder and built there with ``pip wheel --no-deps --no-build-isolation`` (setuptools of
    .venv; building in place would leave ``build/`` and a rewritten egg-info in the checkout). A fresh
    ``python -m venv --without-pip`` (the base interpreter of .venv) gets, by .venv's pip
    (``pip --python``), the wheel with its runtime dependencies resolved from the package index
    and pinned by ``-c constraints.txt`` (``--no-compile``: no .pyc for all of torch): torch
    2.13.0 from the CPU wheel on disk, numpy, and what torch itself requires. No extra is installed:
    ``python -m qattn.book.speech enhance --help`` needs nothing beyond torch and numpy (PESQ, STOI and
    scipy are imported only where metrics or resampling run), and installing the ``speech`` extra
    would compile PESQ. This is a real install, not the .venv's packages seen through a ``.pth``
    file (which would also expose every extra and hide a missing dependency); it needs the
    package index that ``make setup`` uses. The temporary folder is on /dev/shm where that is a
    usable tmpfs: on the virtual disk, writing and deleting the ~1 GB venv took 35 s + 34 s under
    load, on tmpfs 13 s + 0.5 s; the whole test took 25-30 s on a 2-core machine (pytest -s prints
    the time of each step).

    Then, with a clean environment (HOME in the temporary folder, no QATTN_* / XDG_* / PYTHONPATH)
    and the working directory outside the checkout: (a) the README's minimal usage block runs;
    (b) ``python -m qattn.book.speech enhance --help`` exits 0 with its usage; (c) ``qattn`` is
    imported from the fresh venv (not the editable checkout), and ``qattn.book.paths`` puts the
    data cache, results and models under ``~/.cache/qattn``, ``$XDG_CACHE_HOME/qattn`` or
    ``$QATTN_HOME``, and the folders of QATTN_DATA_DIR / QATTN_RESULTS_DIR / QATTN_MODELS_DIR.
    """
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="qattn-wheel-", dir=_scratch_parent()) as tmp:
        tmp = Path(tmp).resolve()
        t0 = time.monotonic()
        assert not tmp.is_relative_to(ROOT), f"the temporary folder {tmp} must lie outside the checkout"
        src, dist, venv, work, home = (tmp / n for n in ("src", "dist", "venv", "work", "home"))
        shutil.copytree(ROOT, src, ignore=_ignore_build_state)
        STAGE_TIMES["copy"] = time.monotonic() - t0
        _run(
            [
                sys.executable,
                "-m",
                "pip",
                "wheel",
                "-q",
                "--disable-pip-version-check",
                "--no-deps",
                "--no-build-isolation",
                "-w",
                dist,
                src,
            ],
            "wheel",
        )
        (wheel,) = dist.glob("qattn-*.whl")
        in_wheel = set(zipfile.ZipFile(wheel).namelist())
        sources = {p.relative_to(ROOT).as_posix() for p in (ROOT / "qattn").rglob("*.py")}
        assert sources - in_wheel == set(), "source files missing from the wheel"
        assert not any(n.startswith(("tests/", "notebooks/", "results/", "scripts/")) for n in in_wheel)

        pip_env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON") and k != "VIRTUAL_ENV"}
        _run([sys.executable, "-m", "venv", "--without-pip", venv], "venv", env=pip_env)
        python = venv / "bin" / "python"
        pip = [sys.executable, "-m", "pip", "--python", python, "--disable-pip-version-check"]  # .venv's pip, working on the fresh venv
        install = [*pip, "install", "-q", "--no-compile", "-c", ROOT / "constraints.txt", wheel]
        _run(install, "install", env=pip_env, timeout=420)
        (site,) = venv.glob("lib/python3.*/site-packages")
        names = {normalise(d.name.split("-")[0]) for d in site.glob("*.dist-info")}
        assert {"qattn", "torch", "numpy"} <= names
        assert not names & {"matplotlib", "scipy", "papermill", "pesq", "pystoi", "pillow"}, "the library alone pulled in an extra"

        work.mkdir()
        home.mkdir()
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), "LANG": "C.UTF-8", "PYTHONNOUSERSITE": "1"}
        if "TMPDIR" in os.environ:
            env["TMPDIR"] = os.environ["TMPDIR"]

        # (a) the README's minimal usage
        (work / "readme_example.py").write_text(readme_example())
        _run([python, "readme_example.py"], "readme", cwd=work, env=env, timeout=120)

        # (b) the speech command's help
        helped = _run([python, "-m", "qattn.book.speech", "enhance", "--help"], "help", cwd=work, env=env, timeout=120)
        assert helped.stdout.startswith("usage: python -m qattn.book.speech enhance") and "--model" in helped.stdout, helped.stdout

        # (c) where the files go, and which qattn was imported
        cases = {
            "default": {},
            "xdg": {"XDG_CACHE_HOME": str(tmp / "xdg")},
            "qattn_home": {"QATTN_HOME": str(tmp / "qh"), "XDG_CACHE_HOME": str(tmp / "xdg")},
            "each": {
                "QATTN_HOME": str(tmp / "qh"),
                "QATTN_DATA_DIR": str(tmp / "d"),
                "QATTN_RESULTS_DIR": str(tmp / "r"),
                "QATTN_MODELS_DIR": str(tmp / "m"),
            },
        }
        (work / "paths_probe.py").write_text(PATHS_PROBE)
        report = json.loads(
            _run([python, "paths_probe.py", json.dumps(cases)], "paths", cwd=work, env=env, timeout=120).stdout.strip().splitlines()[-1]
        )
        for key in ("qattn", "paths"):
            assert Path(report[key]).resolve().is_relative_to(venv), f"{key} imported from {report[key]}, not from the fresh venv"
            assert not Path(report[key]).resolve().is_relative_to(ROOT)
        assert Path(report["prefix"]).resolve() == venv
        assert not [p for p in report["path"] if p and Path(p).resolve().is_relative_to(ROOT)], "the checkout is on sys.path"
        assert report["editable"] == [] and report["checkout"] is None
        got = report["cases"]
        cache = home / ".cache" / "qattn"
        assert got["default"] == {
            "results": f"{cache}/build/results/ci",
            "data": f"{cache}/data-cache",
            "models": f"{cache}/build/results/ci/speech_models",
        }
        xdg = tmp / "xdg" / "qattn"
        assert got["xdg"] == {
            "results": f"{xdg}/build/results/ci",
            "data": f"{xdg}/data-cache",
            "models": f"{xdg}/build/results/ci/speech_models",
        }
        qh = tmp / "qh"
        assert got["qattn_home"] == {
            "results": f"{qh}/build/results/ci",
            "data": f"{qh}/data-cache",
            "models": f"{qh}/build/results/ci/speech_models",
        }
        assert got["each"] == {"results": f"{tmp}/r/ci", "data": f"{tmp}/d", "models": f"{tmp}/m/ci"}
        t0 = time.monotonic()
    STAGE_TIMES["cleanup"] = time.monotonic() - t0
    stages = ", ".join(f"{k} {v:.1f}" for k, v in STAGE_TIMES.items())
    print(f"wheel test: {time.monotonic() - started:.1f} s in all ({stages} s)")
