# A thin wrapper over Meson: every target installs what is missing first.
PREFIX ?= /usr/local
BUILD ?= build

.PHONY: all deps build install test demo bench fuzz format format-check clean

all: build

deps:
	@./scripts/install-deps

$(BUILD)/build.ninja: | deps
	meson setup $(BUILD) >/dev/null

build: deps $(BUILD)/build.ninja
	ninja -C $(BUILD)

install: build
	meson configure $(BUILD) -Dprefix=$(abspath $(PREFIX)) >/dev/null
	meson install -C $(BUILD) --quiet

test: deps
	./scripts/test

demo: build
	./scripts/demo

bench: build
	./bench/run

format:
	clang-format -i $$(git ls-files '*.c' '*.h')

format-check:
	clang-format --dry-run -Werror $$(git ls-files '*.c' '*.h')

clean:
	rm -rf build build-asan build-fuzz
