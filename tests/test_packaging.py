"""Packaging: one pinned list shared by pip, pyproject extras and environment.yml; CI wiring; README example."""

import re
import subprocess
import sys
import tomllib
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


def test_library_import_is_light():
    code = "import sys, qattn; print(sorted(m for m in ('sympy', 'matplotlib', 'papermill', 'scipy') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"


def test_readme_usage_example_runs():
    text = (ROOT / "README.md").read_text()
    section = text.split("## Minimal usage", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    exec(compile(code, "README.md", "exec"), {})
