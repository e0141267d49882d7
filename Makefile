# Two commands do all the set-up on a fresh Debian/Ubuntu machine:
#   make run    - the server on embedded defaults (SQLite, in-process state)
#   make test   - the whole test suite
# Both install what they need: Debian packages when missing, a virtualenv in .venv.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
STAMP  := $(VENV)/.installed

.PHONY: run test bench system-deps system-deps-test venv clean lint-dialplan

run: system-deps $(STAMP)
	$(BIN)/ivr run --demo-data

# The test files run on TEST_WORKERS processes (pytest-xdist, a file stays on one worker): most
# tests wait on Asterisk's real playback time, not on a core.  TEST_WORKERS=0 runs them in this one.
TEST_WORKERS ?= 2

test: system-deps-test $(STAMP)
	$(BIN)/lint-imports --no-cache
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

bench: system-deps-test $(STAMP)
	$(BIN)/python -m benchmarks.run $(BENCH_ARGS)

venv: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import venv' 2>/dev/null && $(PYTHON) -c 'import ensurepip' 2>/dev/null \
		|| $(MAKE) --no-print-directory apt PACKAGES="python3-venv"
	[ -x $(BIN)/python ] || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

# Debian packages the server needs at run time: eSpeak NG for synthesis.
system-deps:
	@missing=""; \
	ls /usr/lib/*/libespeak-ng.so.1 >/dev/null 2>&1 \
		|| missing="$$missing espeak-ng"; \
	if [ -n "$$missing" ]; then $(MAKE) --no-print-directory apt PACKAGES="$$missing"; fi

# ... and what the tests start or read for real: redis-server, PostgreSQL, Chromium, sox, iso-codes.
system-deps-test: system-deps
	@missing=""; \
	command -v redis-server >/dev/null || missing="$$missing redis-server"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	command -v initdb >/dev/null || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 \
		|| missing="$$missing postgresql"; \
	command -v sox >/dev/null || missing="$$missing sox"; \
	[ -f /usr/share/iso-codes/json/iso_639-2.json ] || missing="$$missing iso-codes"; \
	if [ -n "$$missing" ]; then $(MAKE) --no-print-directory apt PACKAGES="$$missing"; fi

apt:
	@echo "installing Debian packages:$(PACKAGES)"
	$(SUDO) apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $(PACKAGES)

clean:
	rm -rf $(VENV) var/ .pytest_cache build *.egg-info
