# Set-up and the two everyday commands. Each target installs what is missing, nothing more.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-all lint data browser clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

# Fashion-MNIST from Debian's package where apt is there; elsewhere the toolkit downloads
# the official files (checksum-verified) on first use.
data:
	@test -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz \
	  || (command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] \
	      && (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist) >/dev/null) \
	  || echo "note: dataset-fashion-mnist not installed; noisystudent will download Fashion-MNIST"

# Debian's Chromium, for the test that opens report.html in a browser (it skips without one).
browser:
	@command -v chromium >/dev/null \
	  || (command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] \
	      && (apt-get update -qq && apt-get install -y -qq chromium) >/dev/null) \
	  || echo "note: chromium not installed; the browser test will skip"

# Noisy Student on Fashion-MNIST, 100 labels per class, with no YAML: the plan fits the run into
# DEMO_BUDGET on this machine (the teacher, the students and their lengths), and prints its table.
DEMO_BUDGET ?= 8m
demo: $(STAMP) data
	$(BIN)/noisystudent self-train --budget $(DEMO_BUDGET) --out runs/demo-$$(date +%Y%m%d-%H%M%S)

# The fast tier: every test but the end-to-end runs marked slow (a contributor's check).
test: $(STAMP) data browser
	$(BIN)/python -m pytest -q -m "not slow"

# Every test, the slow ones included: what CI runs (.ci/run).
test-all: $(STAMP) data browser
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check noisystudent tests

clean:
	rm -rf $(VENV) runs .pytest_cache
