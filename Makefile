# `make demo` and `make test` build .venv from scratch when it is missing, then run.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: demo test campaign venv browser clean

$(BIN)/forensics: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -e ".[app,dev]"
	touch $(BIN)/forensics

venv: $(BIN)/forensics

demo: venv
	$(BIN)/forensics demo

# The app's browser tests drive Debian's Chromium through Playwright (a Playwright browser
# download is not possible offline). Installed here when missing and we are root; otherwise
# one line says what to install, and those tests fail (they never skip).
CHROMIUM ?= /usr/bin/chromium
browser:
	@if [ -x $(CHROMIUM) ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "make: installing Debian's chromium for the browser tests (apt-get)"; \
		DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	else \
		echo "make: $(CHROMIUM) is missing: install Debian's chromium (sudo apt-get install chromium) or the browser tests will fail" >&2; \
	fi

test: venv browser
	$(BIN)/python -m pytest -q

# The reliability campaign at its opt-in long size (CI runs the same tests at --campaign ci).
CAMPAIGN_TESTS := tests/test_hostile_inputs.py tests/test_kill_resume.py \
	tests/test_tampered_bundles.py tests/test_app_hostile_uploads.py tests/test_app_concurrency.py \
	tests/test_failure_messages.py tests/test_cnn_resume.py \
	tests/test_robustness.py::test_resume_after_kill_equals_uninterrupted_run \
	tests/test_generators_training.py::test_a_crash_anywhere_in_a_checkpoint_save_leaves_old_or_new_whole \
	tests/test_ensemble.py::test_a_crash_anywhere_in_a_save_leaves_the_old_or_the_new_bundle
campaign: venv browser
	$(BIN)/python -m pytest -q -s --campaign long $(CAMPAIGN_TESTS)

clean:
	rm -rf $(VENV) runs/demo
