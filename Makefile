# The README's commands. `make test` and (with the book issue) `make book` set up on their own.
PY := .venv/bin/python

.PHONY: setup test lock clean

setup:
	@bash scripts/setup.sh

test: setup
	$(PY) -m pytest -q

# Re-pin every transitive dependency after changing requirements.txt.
lock: setup
	@{ echo "# Every package of the environment, pinned (pip freeze of a working setup); used as pip -c."; \
	   echo "# Regenerate with: make lock"; \
	   $(PY) -m pip freeze --exclude-editable | sed -E 's/^torch==([0-9.]+)\+cpu$$/torch==\1/'; } > constraints.txt

clean:
	rm -rf .venv build *.egg-info .hypothesis
