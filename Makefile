# Thin wrapper over CMake so that `make` and `make test` do what a reader expects.
BUILD ?= build
CMAKE_FLAGS ?=
PYTEST ?= /usr/bin/python3 -m pytest
# `make install`: where to (PREFIX, compiled into kohaku-loadgen's fixtures path and the
# unit's ExecStart, so it is set when configuring) and a staging root (DESTDIR).
PREFIX ?= /usr/local
DESTDIR ?=

.PHONY: all test unit integration clean deps run install package

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

install:
	@cmake -S . -B $(BUILD) $(CMAKE_FLAGS) -DCMAKE_INSTALL_PREFIX=$(PREFIX) >/dev/null
	@cmake --build $(BUILD) -j$$(nproc)
	@DESTDIR="$(DESTDIR)" cmake --install $(BUILD)

package:
	@scripts/package

run: all
	@./$(BUILD)/kohaku $(if $(CONFIG),-C $(CONFIG))

clean:
	rm -rf $(BUILD)
