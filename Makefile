# Two commands: `make demo` and `make test`. Both create .venv on first use.
# `make test-fast` runs the fast tier alone: the tests not marked `slow`.
PYTHON ?= python3
VENV   ?= .venv
# The torch build to install before everything else. The default is the CPU build this
# project is developed on; on a GPU machine use e.g. `make TORCH="torch==2.13.0" demo`
# with your CUDA wheel index configured in pip, or install torch into .venv yourself first.
TORCH  ?= torch==2.13.0
BIN    := $(VENV)/bin

.PHONY: demo test test-fast setup clean bench browser

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install --quiet "$(TORCH)"
	$(BIN)/pip install --quiet -e ".[test]"
	touch $@

setup: $(BIN)/.installed

demo: $(BIN)/.installed
	$(BIN)/rayrag demo

# The browser tests of `rayrag serve`'s page drive Debian's headless Chromium: installed here when missing (as root
# or with sudo; elsewhere those tests are skipped with a line that says so).
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium chromium-driver >/dev/null \
	  || echo "make: could not install chromium and chromium-driver; the browser test will be skipped"; }

# Everything: fast unit tests and the end-to-end tests marked `slow` (the README's command, and CI).
test: $(BIN)/.installed browser
	$(BIN)/python -m pytest -q

# The fast tier alone: in-process unit tests, no training, no Ray, no subprocess runs of the CLI.
test-fast: $(BIN)/.installed
	$(BIN)/python -m pytest -q -m "not slow"

bench: $(BIN)/.installed
	$(BIN)/rayrag bench retrieval --out runs/bench

clean:
	rm -rf $(VENV) runs
