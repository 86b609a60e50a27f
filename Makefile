# `make demo` and `make test` bootstrap .venv from pyproject.toml and do everything else.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The datasets: the shared read-only copy when it is there, else ./data (downloaded
# on first use and checked against its SHA-256).
RENTALSTREAM_DATA_DIR ?= $(if $(wildcard ../shared/data/get_around_pricing_project.csv),$(abspath ../shared/data),$(abspath data))
export RENTALSTREAM_DATA_DIR

.PHONY: demo test lock audit audit-online system-packages chromium up down train replay simulate scorer bridge monitor dashboard drift-report bench-replay bench-sustained bench-bridge bench-baseline bench-drift bench-monitor bench-dashboard mutation compose-up compose-secrets compose-down clean

demo: $(VENV)/.installed
	$(BIN)/rentalstream demo

# The layers' import contracts (pyproject.toml: tool.importlinter) and the linter first: seconds, not minutes.
test: $(VENV)/.installed $(BIN)/osv-scanner
	$(BIN)/lint-imports
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest

# What the tests need from Debian besides Python: Chromium for the browser tests (driven
# through Playwright, whose own browser download needs hosts this kind of machine cannot
# reach), kcat, a Kafka client nobody here wrote, and Debian's PostgreSQL server, built
# with OpenSSL where the embedded one is not (tests/integration/test_postgres_tls.py).
# Needs root or sudo.
SYSTEM_PACKAGES := chromium kcat
POSTGRES_WITH_TLS := /usr/lib/postgresql/*/bin/postgres

system-packages:
	@missing=$$(for p in $(SYSTEM_PACKAGES); do command -v $$p >/dev/null 2>&1 || echo $$p; done); \
	ls $(POSTGRES_WITH_TLS) >/dev/null 2>&1 || missing="$$missing postgresql"; \
	if [ -n "$$missing" ]; then \
		SUDO=$$( [ "$$(id -u)" -eq 0 ] || echo sudo ); \
		DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing \
		|| { $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; }; \
	fi
	@for p in $(SYSTEM_PACKAGES); do echo "$$p: $$(command -v $$p)"; done
	@echo "postgres with TLS: $$(ls $(POSTGRES_WITH_TLS))"

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
compose-up: compose-secrets
	docker compose up --build --detach

# What compose hands the services as secrets, written once into $(SECRETS)/ (not committed;
# the folder is the owner's only, the files readable by the containers' user, which is not
# the host's): a random password per database role and per Kafka login (docs/operations.md,
# on compose.yaml), and, made with openssl, a CA of compose's own (its key never leaves the folder)
# that signs Kafka's and PostgreSQL's certificates, each for every name the server is
# reached by: its name on compose's network, and localhost and 127.0.0.1 from the host.
SECRETS := secrets
ROLE_SECRETS := $(addprefix $(SECRETS)/rentalstream_,migrator scorer monitor retrainer reader)
KAFKA_LOGINS := $(addprefix $(SECRETS)/kafka_,admin producer scorer monitor bridge dashboard)
KAFKA_ADMIN := $(addprefix $(SECRETS)/kafka_,jaas.conf admin.properties)
CERTIFICATES := $(SECRETS)/ca.pem $(SECRETS)/kafka_broker.pem $(SECRETS)/postgres_server.crt
SCRAM_LOGIN := org.apache.kafka.common.security.scram.ScramLoginModule required username="admin"
compose-secrets: $(ROLE_SECRETS) $(KAFKA_LOGINS) $(KAFKA_ADMIN) $(CERTIFICATES)
$(ROLE_SECRETS) $(KAFKA_LOGINS):
	@mkdir -p $(SECRETS) && chmod 700 $(SECRETS)
	@$(PYTHON) -c "import secrets; print(secrets.token_urlsafe(32))" > $@ && chmod 644 $@
	@echo "wrote $@"
$(SECRETS)/ca.pem:
	@mkdir -p $(SECRETS) && chmod 700 $(SECRETS)
	@openssl req -x509 -newkey rsa:2048 -nodes -days 825 -subj "/CN=rentalstream compose CA" \
		-keyout $(SECRETS)/ca.key -out $@ 2>/dev/null
	@chmod 600 $(SECRETS)/ca.key && chmod 644 $@
	@echo "wrote $@ (and its key, ca.key, which no container gets)"
# $(call certificate,FILE,CN,NAMES): FILE.key and FILE.crt, signed by the CA for the
# subjectAltName NAMES, usable by a server and, for mutual TLS, a client.
define certificate
	@printf '%s\n' "subjectAltName=$(3)" "basicConstraints=CA:FALSE" \
		"keyUsage=digitalSignature,keyEncipherment" "extendedKeyUsage=serverAuth,clientAuth" > $(1).ext
	@openssl req -new -newkey rsa:2048 -nodes -subj "/CN=$(2)" -keyout $(1).key -out $(1).csr 2>/dev/null
	@openssl x509 -req -in $(1).csr -CA $(SECRETS)/ca.pem -CAkey $(SECRETS)/ca.key -days 825 \
		-set_serial 0x$$(openssl rand -hex 16) -extfile $(1).ext -out $(1).crt 2>/dev/null
	@rm $(1).ext $(1).csr && chmod 644 $(1).key $(1).crt
endef
KAFKA_NAMES := DNS:kafka,DNS:localhost,IP:127.0.0.1
POSTGRES_NAMES := DNS:postgres,DNS:localhost,IP:127.0.0.1
# Kafka reads its key and certificate from one PEM file.
$(SECRETS)/kafka_broker.pem: $(SECRETS)/ca.pem
	$(call certificate,$(SECRETS)/kafka_broker,kafka,$(KAFKA_NAMES))
	@cat $(SECRETS)/kafka_broker.key $(SECRETS)/kafka_broker.crt > $@ && chmod 644 $@
	@rm $(SECRETS)/kafka_broker.key $(SECRETS)/kafka_broker.crt
	@echo "wrote $@ (the Kafka node's key and certificate, CN=kafka)"
$(SECRETS)/postgres_server.crt: $(SECRETS)/ca.pem
	$(call certificate,$(SECRETS)/postgres_server,postgres,$(POSTGRES_NAMES))
	@echo "wrote $@ and its key, postgres_server.key (CN=postgres)"
# The admin's login: the node's own (inter-broker, JAAS), and its healthcheck's.
$(SECRETS)/kafka_jaas.conf: $(SECRETS)/kafka_admin
	@printf 'KafkaServer {\n  %s password="%s";\n};\n' '$(SCRAM_LOGIN)' "$$(cat $<)" > $@ && chmod 644 $@
	@echo "wrote $@"
$(SECRETS)/kafka_admin.properties: $(SECRETS)/kafka_admin
	@printf 'security.protocol=SASL_SSL\nsasl.mechanism=SCRAM-SHA-512\nsasl.jaas.config=%s password="%s";\n' \
		'$(SCRAM_LOGIN)' "$$(cat $<)" > $@
	@printf 'ssl.truststore.type=PEM\nssl.truststore.location=/run/secrets/ca.pem\n' >> $@ && chmod 644 $@
	@echo "wrote $@"

compose-down:
	docker compose down

# Installs exactly the versions (and the files, by their hashes) of requirements-dev.lock,
# then the project itself. The locks are written from pyproject.toml by `make lock`.
$(VENV)/.installed: pyproject.toml requirements.lock requirements-dev.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --require-hashes --requirement requirements-dev.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $@

# After a change of the dependencies in pyproject.toml: the locks keep every pin they can.
# `make lock UPGRADE=--upgrade` moves every pin to the newest release pyproject.toml allows.
# requirements.lock is what the services need (the container image installs it);
# requirements-dev.lock adds the test and benchmark tools, at the same versions.
UV_PIN := uv==0.13.9
LOCK_OPTIONS := --python-version 3.11 --python-platform linux --generate-hashes --quiet $(UPGRADE)
lock: $(VENV)/.installed
	$(BIN)/python -m pip install --quiet "$(UV_PIN)"
	$(BIN)/uv pip compile pyproject.toml $(LOCK_OPTIONS) --output-file requirements.lock
	$(BIN)/uv pip compile pyproject.toml --extra test --extra bench $(LOCK_OPTIONS) \
		--constraint requirements.lock --output-file requirements-dev.lock

# osv-scanner, the OSV project's scanner, built from its pinned release into the venv:
# `make audit` and tests/unit/test_known_vulnerabilities.py run it offline. Its v2.6 needs
# Go 1.27, a toolchain the go command fetches from the Go module proxy (1 min 50 s in all
# on a new machine here, seconds after).
OSV_SCANNER := github.com/google/osv-scanner/v2/cmd/osv-scanner@v2.6.0
# Go keeps its caches under $HOME; without one, in the venv (writable, so `make clean` can remove them).
GO_CACHES := $(if $(HOME),,GOPATH=$(abspath $(VENV))/go GOCACHE=$(abspath $(VENV))/go-build GOFLAGS=-modcacherw)
$(BIN)/osv-scanner: Makefile | $(VENV)/.installed
	@command -v go >/dev/null || { echo "osv-scanner is built with Go (1.21 or newer): install it first"; exit 1; }
	GOTOOLCHAIN=go1.27.3 GOBIN=$(abspath $(BIN)) $(GO_CACHES) go install $(OSV_SCANNER)
	touch $@

# Known vulnerabilities in the locked versions, offline: osv-scanner against the committed
# snapshot of PyPI's advisories (security/; docs/development.md says how to refresh it).
# An advisory no release fixes yet is accepted only in security/osv-scanner.toml.
SCAN := scan source --offline --all-vulns --local-db-path security/osv-db --config security/osv-scanner.toml
audit: $(BIN)/osv-scanner
	@$(BIN)/python -c "import json; s = json.load(open('security/osv-db/snapshot.json')); \
		print(f\"advisories as of {s['as_of']}: {s['advisories']:,} from {s['source']}\")"
	$(BIN)/osv-scanner $(SCAN) -L requirements.txt:requirements.lock -L requirements.txt:requirements-dev.lock

# Against today's advisories where PyPI's per-release JSON API answers (not on this
# project's machines): pip-audit.
audit-online: $(VENV)/.installed
	$(BIN)/python -m pip install --quiet "pip-audit>=2.7"
	$(BIN)/pip-audit --requirement requirements-dev.lock --disable-pip --strict --progress-spinner off

clean:
	-$(BIN)/rentalstream down
	rm -rf $(VENV) .rentalstream
