# The README's commands. Every target that runs code creates .venv first (once; re-done when setup.cfg changes).
#   make demo   sample, inspect, export and run an architecture of each space; profile this CPU (--quick), fit a
#               predictor, predict and measure the samples, evaluate the predictor; AdaBERT teacher + search on
#               the bundled sample
#   make test   lint, then the whole test suite
#   make lint   ruff only
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.hwnas-installed
TORCH := torch==2.13.0
# the onnxruntime the shipped profiles were measured with: a profile is this machine's only with the same version
ORT := onnxruntime==1.31.1
DEMO := runs/demo

.PHONY: venv test lint demo

venv: $(STAMP)

# torch first, pinned (a CPU wheel), so that the editable install does not pull another build of it; onnxruntime
# pinned to the shipped profiles' version so that they match this machine's fingerprint
$(STAMP): setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet $(TORCH) $(ORT)
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

lint: venv
	$(BIN)/ruff check .

test: venv
	$(BIN)/ruff check .
	OMP_NUM_THREADS=2 $(BIN)/python -m pytest -q

demo: venv
	@mkdir -p $(DEMO)
	$(BIN)/hwnas env
	$(BIN)/hwnas list spaces
	for space in adabert nasbert; do \
	  $(BIN)/hwnas sample --space $$space --seed 0 --out $(DEMO)/$$space.json; \
	  $(BIN)/hwnas info $(DEMO)/$$space.json --batch 1 --seq-len 128; \
	  $(BIN)/hwnas export $(DEMO)/$$space.json --out $(DEMO)/$$space.onnx; \
	  $(BIN)/python -c "import sys; from nas.arch import Architecture; from nas.export import ort_session, space_inputs; \
	    sess = ort_session(sys.argv[2]); x = space_inputs(Architecture.load(sys.argv[1]).get_space(), batch=2, seq_len=32); \
	    names = [i.name for i in sess.get_inputs()]; \
	    print(sys.argv[2], \"in onnxruntime: logits\", sess.run([\"logits\"], {k: x[k].numpy() for k in names})[0].round(4))" \
	    $(DEMO)/$$space.json $(DEMO)/$$space.onnx; \
	done
	# profile this CPU quickly (about a minute; a second run finds the folder complete), fit, predict (with the quick
	# profile and with the shipped full profile of the development machine), measure, evaluate
	$(BIN)/hwnas profile --backend onnxruntime --threads 1 --space adabert,nasbert --out $(DEMO)/profile --quick
	$(BIN)/hwnas fit $(DEMO)/profile
	for space in adabert nasbert; do \
	  $(BIN)/hwnas predict $(DEMO)/profile $(DEMO)/$$space.json --batch 1 --seq-len 128; \
	  $(BIN)/hwnas predict intel-xeon-2c_ort-1.31_t1 $(DEMO)/$$space.json --batch 1 --seq-len 128; \
	  $(BIN)/hwnas measure $(DEMO)/$$space.json --backend onnxruntime --threads 1 --batch 1 --seq-len 128; \
	done
	$(BIN)/hwnas evaluate-predictor $(DEMO)/profile --plot $(DEMO)/predictor.png
	# AdaBERT on the bundled BBC News sample (5 topics, no network, no ../shared): a teacher with probes and cache,
	# then search, derive, retrain, export and measure a student under a budget 40% of the way from this CPU's
	# fastest to its slowest architecture (quick profile above)
	$(BIN)/hwnas teacher --task demo --out $(DEMO)/teacher --epochs 2 --max-len 64
	$(BIN)/hwnas search adabert --task demo --teacher $(DEMO)/teacher --profile $(DEMO)/profile --budget-frac 0.4 \
	  --epochs 4 --retrain-epochs 6 --max-len 64 --out $(DEMO)/adabert
	# NAS-BERT, task-agnostic: the supernet distilled block-wise from all-MiniLM-L6-v2 on the sample's sentences
	# (the tiny recipe: a minute), one model per budget (20 % and 50 % of the way from this CPU's fastest to its
	# slowest architecture), then each model fine-tuned on the sample with KD from the AdaBERT demo's teacher
	$(BIN)/hwnas search nasbert --corpus demo --profile $(DEMO)/profile --budgets-frac 0.2,0.5 --recipe tiny \
	  --groups-per-block 2 --out $(DEMO)/nasbert
	for m in $(DEMO)/nasbert/model_*ms; do \
	  $(BIN)/hwnas finetune $$m --task demo --teacher $(DEMO)/teacher --epochs 2 --max-len 64; \
	done
	# ---- later demo steps go below this line ----
