# `make demo` and `make test` bootstrap .venv from pyproject.toml and do everything else.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The datasets: the shared read-only copy when it is there, else ./data (downloaded
# on first use and checked against its SHA-256).
RENTALSTREAM_DATA_DIR ?= $(if $(wildcard ../shared/data/get_around_pricing_project.csv),$(abspath ../shared/data),$(abspath data))
export RENTALSTREAM_DATA_DIR

.PHONY: demo test system-packages chromium up down train replay simulate scorer bridge monitor dashboard drift-report bench-replay bench-sustained bench-bridge bench-baseline bench-drift bench-monitor bench-dashboard mutation compose-up compose-down clean

demo: $(VENV)/.installed
	$(BIN)/rentalstream demo

# The layers' import contracts (pyproject.toml: tool.importlinter) and the linter first: seconds, not minutes.
test: $(VENV)/.installed
	$(BIN)/lint-imports
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest

# What the tests need from Debian besides Python: Chromium for the browser tests (driven
# through Playwright, whose own browser download needs hosts this kind of machine cannot
# reach) and kcat, a Kafka client nobody here wrote. Needs root or sudo.
SYSTEM_PACKAGES := chromium kcat

system-packages:
	@missing=$$(for p in $(SYSTEM_PACKAGES); do command -v $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		SUDO=$$( [ "$$(id -u)" -eq 0 ] || echo sudo ); \
		DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing \
		|| { $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; }; \
	fi
	@for p in $(SYSTEM_PACKAGES); do echo "$$p: $$(command -v $$p)"; done

chromium: system-packages

up down train replay simulate scorer bridge monitor dashboard drift-report: $(VENV)/.installed
	$(BIN)/rentalstream $@

bench-replay: $(VENV)/.installed
	$(BIN)/python benchmarks/replay_throughput.py

bench-sustained: $(VENV)/.installed
	$(BIN)/python benchmarks/sustained_rate.py

bench-bridge: $(VENV)/.installed
	$(BIN)/python benchmarks/bridge_latency.py

bench-baseline: $(VENV)/.installed
	$(BIN)/python benchmarks/baseline_comparison.py

bench-drift: $(VENV)/.installed
	$(BIN)/python benchmarks/drift_detectors.py

bench-monitor: $(VENV)/.installed
	$(BIN)/python benchmarks/monitor_throughput.py

bench-dashboard: $(VENV)/.installed
	$(BIN)/python benchmarks/dashboard_responsiveness.py

mutation: $(VENV)/.installed
	$(BIN)/python benchmarks/mutation_score.py

# compose.yaml: Apache Kafka, PostgreSQL, an MLflow server and the services (needs a Docker engine).
compose-up:
	docker compose up --build --detach

compose-down:
	docker compose down

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test,bench]"
	touch $@

clean:
	-$(BIN)/rentalstream down
	rm -rf $(VENV) .rentalstream
