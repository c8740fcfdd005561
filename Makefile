# Set-up and the two everyday commands. Each target installs what is missing, nothing more.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint data browser clean

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

# Noisy Student on Fashion-MNIST, 100 labels per class, 2 iterations (about 10 min on a 2-core Zen 4;
# expect three times that on an AVX2-only CPU).
demo: $(STAMP) data
	$(BIN)/noisystudent self-train configs/demo.yaml --out runs/demo-$$(date +%Y%m%d-%H%M%S)

test: $(STAMP) data browser
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check noisystudent tests

clean:
	rm -rf $(VENV) runs .pytest_cache
