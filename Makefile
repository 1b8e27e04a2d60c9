# Thin wrapper over CMake so that `make` and `make test` do what a reader expects.
BUILD ?= build
CMAKE_FLAGS ?=
PYTEST ?= /usr/bin/python3 -m pytest

.PHONY: all test unit integration clean deps run

all:
	@cmake -S . -B $(BUILD) $(CMAKE_FLAGS) >/dev/null
	@cmake --build $(BUILD) -j$$(nproc)

deps:
	@scripts/install-deps

unit: all
	@cd $(BUILD) && ctest --output-on-failure

integration: all
	@$(PYTEST) -q tests/integration

test: unit integration

run: all
	@./$(BUILD)/kohaku $(if $(CONFIG),-C $(CONFIG))

clean:
	rm -rf $(BUILD)
