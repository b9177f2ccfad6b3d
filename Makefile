# A thin wrapper over Meson: every target installs what is missing first.
PREFIX ?= /usr/local
BUILD ?= build

.PHONY: all deps build install test demo bench fuzz format format-check clean deb

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

# Debian packages, built by dpkg-buildpackage from a copy of the tracked files in
# $(DEB_OUT)/src; the .debs land in $(DEB_OUT), checked by lintian.
DEB_OUT ?= build-deb
deb:
	@./scripts/install-deps deb
	rm -rf $(DEB_OUT) && mkdir -p $(DEB_OUT)/src
	git ls-files -z --cached --others --exclude-standard | xargs -0 tar -cf - | tar -xf - -C $(DEB_OUT)/src
	# the console's chart library, which install-deps copied from the npm registry's package
	cp -r console/vendor $(DEB_OUT)/src/console/
	cd $(DEB_OUT)/src && dpkg-buildpackage -us -uc -b -j$$(nproc) >../build.log 2>&1 || { tail -40 ../build.log; exit 1; }
	lintian --fail-on error $(DEB_OUT)/*.changes
	@echo "make deb: packages in $(abspath $(DEB_OUT)):"; ls -1 $(DEB_OUT)/*.deb

format:
	clang-format -i $$(git ls-files '*.c' '*.h')

format-check:
	clang-format --dry-run -Werror $$(git ls-files '*.c' '*.h')

clean:
	rm -rf build build-asan build-fuzz build-deb
