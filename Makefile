# servicebus: the front door.
#
#   make demo   the main job: build (installing what is missing), start the
#               bundled emulator, send from Python and receive in Lua and the
#               other way round, print what crossed, stop the emulator
#   make test   every test: C (ctest), Python (pytest, incl. interop with
#               Microsoft's SDK), Lua 5.4 and LuaJIT (busted)
#
# Other targets: deps, build, python, test-c, test-python, test-lua,
# test-sanitize, bench, clean.

BUILD   ?= build
JOBS    ?= $(shell nproc 2>/dev/null || echo 2)
VENV    := .venv
PY      := $(VENV)/bin/python
CMAKE_FLAGS ?= -DCMAKE_BUILD_TYPE=RelWithDebInfo $(if $(CI),-DSBUS_WERROR=ON)

ENGINE_SRC := $(shell find core bindings/python -name '*.c' -o -name '*.h' -o -name '*.py' -o -name 'sources.txt' 2>/dev/null)

.PHONY: all deps build python test test-c test-python test-lua test-sanitize demo bench clean

all: build python

deps: .deps.stamp
.deps.stamp: scripts/deps.sh scripts/debian-packages.txt $(wildcard bindings/lua/DEPS)
	./scripts/deps.sh
	@touch $@

build: deps
	@mkdir -p $(BUILD)
	@echo "building into $(BUILD)/ (log: $(BUILD)/build.log)"
	@cmake -S . -B $(BUILD) $(CMAKE_FLAGS) >$(BUILD)/build.log 2>&1 || { cat $(BUILD)/build.log; exit 1; }
	@cmake --build $(BUILD) -j $(JOBS) >>$(BUILD)/build.log 2>&1 || { tail -60 $(BUILD)/build.log; exit 1; }

python: deps $(VENV)/.sbus-installed
$(VENV)/.sbus-installed: setup.py $(ENGINE_SRC)
	@echo "installing the servicebus package into $(VENV)/"
	@$(PY) -m pip install -q --no-build-isolation --no-index --no-deps --force-reinstall . >$(VENV)/pip.log 2>&1 || { tail -60 $(VENV)/pip.log; exit 1; }
	@touch $@

test: build python
	@./scripts/run-tests.sh $(BUILD)

test-c: build
	ctest --test-dir $(BUILD) --output-on-failure

test-python: build python
	SBUS_EMULATOR=$(BUILD)/emulator/sbus-emulator $(PY) -m pytest -q

test-lua: build
	SBUS_EMULATOR=$(BUILD)/emulator/sbus-emulator ./tests/lua/run.sh $(BUILD)

demo: build python
	@./examples/demo/demo.sh $(BUILD)

bench: build python
	@./bench/run.sh $(BUILD)

clean:
	rm -rf $(BUILD) build-* $(VENV) .deps.stamp *.egg-info

# fuzz: every libFuzzer target in tests/fuzz for 60 s each on its seed corpus
# (clang-14, ASan+UBSan; scripts/fuzz.sh, docs/reliability.md).
.PHONY: fuzz
fuzz:
	@./scripts/fuzz.sh --seconds $${FUZZ_SECONDS:-60}
