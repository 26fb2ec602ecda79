# The README's commands. `make test` and (with the book issue) `make book` set up on their own.
PY := .venv/bin/python

PROFILE ?= full

.PHONY: setup test book reference lock clean

setup:
	@bash scripts/setup.sh

test: setup
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	$(PY) -m pytest -q -m "not book"
	$(PY) scripts/build_book.py --profile ci
	$(PY) -m pytest -q -m book
	$(PY) -m pytest -q --nbval-lax --nbval-sanitize-with tests/nbval_sanitize.cfg --nbval-kernel-name python3 --nbval-cell-timeout 600 -o addopts="-p no:cacheprovider" book/generated

# Execute every notebook of the book with papermill at PROFILE (full or ci) and build the HTML.
book: setup
	$(PY) scripts/build_book.py --profile $(PROFILE)

# Recompute one chapter at the full profile and store it as its committed reference (results/).
reference: setup
	@test -n "$(CHAPTER)" || { echo "usage: make reference CHAPTER=<slug> (a notebook stem, e.g. vision)"; exit 2; }
	FRESH=1 $(PY) scripts/build_book.py --profile full --only $(CHAPTER)
	$(PY) scripts/save_reference.py --profile full --only $(CHAPTER)

# Re-pin every transitive dependency after changing requirements.txt.
lock: setup
	@{ echo "# Every package of the environment, pinned (pip freeze of a working setup); used as pip -c."; \
	   echo "# Regenerate with: make lock"; \
	   $(PY) -m pip freeze --exclude-editable | sed -E 's/^torch==([0-9.]+)\+cpu$$/torch==\1/'; } > constraints.txt

clean:
	rm -rf .venv build *.egg-info .hypothesis book/_build book/generated
