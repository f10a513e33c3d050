# Two commands do all the set-up: `make demo` and `make test` (see README.md).
PYTHON ?= python3
VENV   ?= .venv
EXTRA  ?= cpu# `make EXTRA=gpu ...` installs the CUDA build of TensorFlow instead
BIN    := $(VENV)/bin
DEMO   := .demo
LITE0_SIZE := 96# the digits are 32 pixels: validation accuracy 0.944 at 96 and at 224, its default, which is 5x the work
STAMP  := $(VENV)/.installed-$(EXTRA)

.PHONY: install browser demo test test-quick clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	@# A .venv made before the distribution was renamed keras-transfer still maps top-level cli and datasets.
	$(BIN)/python -m pip uninstall --quiet --yes transfer 2>/dev/null || true
	@# The cpu extra was tensorflow-cpu; it is now tensorflow itself (keras-hub's tensorflow-text requires it): never both.
	$(BIN)/python -m pip uninstall --quiet --yes tensorflow-cpu 2>/dev/null || true
	$(BIN)/python -m pip install --quiet -e ".[$(EXTRA),dev]"
	touch $@

# The report test opens report.html in a real headless browser: Debian's chromium and its driver.
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || { \
	  echo "Installing Debian's chromium and chromium-driver (for the report test)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; }

# Test files run side by side on the CPU cores (at most 4 processes, each with its own TensorFlow):
# 8.5 minutes on 2 cores where one process took over 12.
test: install browser
	$(BIN)/python -m pytest -n auto --maxprocesses 4 --dist loadfile

# The inner-loop subset: no training of real backbones, no browser, no cluster, no shared photos; the
# command-line errors answered before the long work (marked quick in tests/test_bad_input.py) are in it.
test-quick: install
	$(BIN)/python -m pytest -m "not slow and not browser and not multiworker and not shared_data"

demo: install
	$(BIN)/transfer dataset digits $(DEMO)/digits --force
	@echo
	@echo "== Transfer learning: EfficientNet-Lite0 with ImageNet weights from the package index, a new head on its frozen features =="
	$(BIN)/transfer train $(DEMO)/digits --backbone efficientnet_lite0 --image-size $(LITE0_SIZE) --flip none --out $(DEMO)/lite0 --force
	$(BIN)/transfer predict $(DEMO)/lite0 $(DEMO)/digits/3/0003.png $(DEMO)/digits/5/0005.png $(DEMO)/digits/8/0008.png
	$(BIN)/transfer export $(DEMO)/lite0 --out $(DEMO)/lite0-savedmodel --force
	$(BIN)/transfer predict $(DEMO)/lite0-savedmodel $(DEMO)/digits --format csv > $(DEMO)/predictions.csv
	$(BIN)/transfer report $(DEMO)/lite0
	@echo
	@echo "== From scratch: LeNet-5 on the same digits, its learning rate swept first =="
	$(BIN)/transfer lr-find $(DEMO)/digits --backbone lenet --flip none --out $(DEMO)/lr-find --force
	$(BIN)/transfer train $(DEMO)/digits --backbone lenet --epochs 20 --flip none --out $(DEMO)/lenet --force
	$(BIN)/transfer export $(DEMO)/lenet --format litert --quantize int8 --out $(DEMO)/lenet-int8 --force
	$(BIN)/transfer predict $(DEMO)/lenet-int8/model.tflite $(DEMO)/digits/3/0003.png $(DEMO)/digits/5/0005.png
	$(BIN)/transfer report $(DEMO)/lenet
	@echo
	@echo "== Demo outputs =="
	@echo "EfficientNet-Lite0 run (model, labels, config, history, metrics, report.html): $(DEMO)/lite0"
	@$(BIN)/python -c 'import json, sys; print("metrics:", json.dumps(json.load(open(sys.argv[1])), separators=(",", ":")))' $(DEMO)/lite0/metrics.json
	@echo "LeNet-5 run, from scratch: $(DEMO)/lenet"
	@$(BIN)/python -c 'import json, sys; print("metrics:", json.dumps(json.load(open(sys.argv[1])), separators=(",", ":")))' $(DEMO)/lenet/metrics.json
	@echo "learning-rate sweep (loss against rate, the suggestion marked): $(DEMO)/lr-find/lr_find.png"
	@echo "reports (curves, metrics, confusion matrix, errors, Grad-CAM): $(DEMO)/lite0/report.html, $(DEMO)/lenet/report.html"
	@echo "predictions for every digit image, from the SavedModel:  $(DEMO)/predictions.csv"
	@echo "SavedModel serving raw image bytes:                        $(DEMO)/lite0-savedmodel"
	@echo "LiteRT, full-integer int8 (checked against the Keras model): $(DEMO)/lenet-int8/model.tflite"
	@echo "try it in a browser: $(BIN)/transfer serve $(DEMO)/lite0, then open http://127.0.0.1:8501/"

clean:
	rm -rf $(DEMO) $(VENV) *.egg-info
