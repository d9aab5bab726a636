# linewatch: every target installs what it needs itself (Python deps, Kafka jars, redis-server, IS-Net).
VENV   ?= .venv
PYTHON ?= python3
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
CAMERA_STAMP := $(VENV)/.camera-installed
PYTEST_ARGS ?=

.PHONY: all install camera system-deps k8s-tools chart-check models models-pull lint docs docs-serve reference-docs test test-prerequisites test-unit test-precisions demo bench bench-kafka bench-scale bench-dashboard dashboard-screenshots chaos clean

all: test

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[worker,dashboard,line,test,docs]'
	touch $(STAMP)

# The GenICam camera extra (PyGObject) builds against system headers: system-deps first.
$(CAMERA_STAMP): $(STAMP) | system-deps
	$(PY) -m pip install --quiet -c constraints.txt -e '.[camera]'
	touch $(CAMERA_STAMP)

camera: system-deps $(CAMERA_STAMP)

install: $(STAMP)

system-deps:
	bash scripts/install_system_deps.sh

models: $(STAMP)
	$(PY) scripts/fetch_isnet.py

# Lint, format and type check (ruff and mypy, configured in pyproject.toml); .gitignore'd paths excluded.
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

# The documentation site (mkdocs.yml, docs/): strict, so a broken link or a page missing from the nav fails.
docs: install
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict --site-dir build/site

docs-serve: install
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs serve

# The command line and settings reference pages, rendered from the argparse parsers and the settings models.
reference-docs: install
	$(PY) scripts/gen_reference_docs.py

# The whole suite: lint, then unit tests plus integration tests against a real Kafka broker and a
# real Redis, both started by the test session itself (one of each per pytest-xdist process; each
# file's tests stay in one process), in random order, with branch coverage and its floor
# (pyproject.toml). Then the in-process model tests again with models.precision=auto forced to the
# answers this CPU does not give (test-precisions).
# The installs run side by side first: the Go tools and PyGObject compile while pip and apt download.
# (The tests that need those build them too, so a lone pytest run never depends on this.)
# One process more than cores: the integration tests spend much of their time waiting on brokers and workers.
PYTEST_WORKERS ?= $(shell echo $$(( $$(nproc) + 1 )))
test:
	$(MAKE) --no-print-directory -j 4 --output-sync=target test-prerequisites
	$(PY) -m pytest -q -ra -n $(PYTEST_WORKERS) --dist loadfile --cov --cov-report=term:skip-covered $(PYTEST_ARGS)
	$(MAKE) --no-print-directory test-precisions

test-prerequisites: install system-deps camera k8s-tools models lint docs

# The tests marked `models` again with models.precision=auto forced to each answer this CPU does not give by
# itself (fp32, and bf16 where the CPU has bf16 kernels).
test-precisions: $(STAMP)
	@answers=$$($(PY) scripts/auto_precisions_left.py) || exit 1; for answer in $$answers; do \
	  echo "models.precision=auto forced to $$answer:"; \
	  $(PY) -m pytest -q -ra -n $(PYTEST_WORKERS) --dist loadfile -m models --auto-precision=$$answer $(PYTEST_ARGS) || exit 1; \
	done

test-unit: $(STAMP)
	$(PY) -m pytest -q -ra tests/unit $(PYTEST_ARGS)

demo: install system-deps models
	bash scripts/demo.sh

bench: install models
	$(PY) -m worker.cli bench --profile base --frames 8 --batch 8 --naive-frames 1

bench-kafka: install system-deps models
	bash scripts/bench_kafka.sh

# The consumer group at 1, 2, 4 and 8 workers (emulated Inspector), rebalance pauses, a live 2 -> 4 scale-up.
bench-scale: install system-deps
	bash -c 'set -e; S=.state/bench-scale; trap "$(PY) -m infra.servers stop --state-dir $$S" EXIT; \
	  $(PY) -m infra.servers start --state-dir $$S; set -a; . $$S/env; set +a; \
	  $(PY) -m worker.bench.scale.run --json $$S/report.json'

# helm and kubeconform (pinned, built once with `go install`), rules-check (scripts/rules-check:
# Prometheus's rule-file and PromQL parsers) and psa-check (scripts/psa-check: the Pod Security admission
# library), both at pinned versions; then the chart linted, rendered and validated offline for every
# values file.
k8s-tools:
	bash scripts/install_k8s_tools.sh

chart-check: install k8s-tools
	$(PY) -m pytest -q tests/unit/test_helm_chart*.py

# The operator dashboard under 50 cameras x 5 results/s (synthetic results, no models): lag and page delay.
bench-dashboard: install system-deps
	bash -c 'set -e; S=.state/bench-dashboard; trap "$(PY) -m infra.servers stop --state-dir $$S" EXIT; \
	  $(PY) -m infra.servers start --state-dir $$S; . $$S/env; \
	  $(PY) -m worker.dashboard.bench --bootstrap-servers "$$LINEWATCH_KAFKA__BOOTSTRAP_SERVERS"'

# The dashboard guide's screenshots, from a run of the browser test (docs/images/dashboard-*.png).
dashboard-screenshots: install system-deps
	LINEWATCH_SCREENSHOTS=docs/images $(PY) -m pytest -q -p no:cacheprovider tests/integration/test_dashboard.py

chaos: install system-deps models
	$(PY) -m infra.chaos.report

clean:
	rm -rf $(VENV) infra/kafka/target .pytest_cache

# Real CLIP, CLIPSeg and SAM weights (needs internet; pinned revisions, digests checked). SAM=vit_l|vit_h for bigger SAMs.
SAM ?= vit_b
models-pull: models
	$(VENV)/bin/linewatch-worker models pull --sam $(SAM)
	$(VENV)/bin/linewatch-worker models check
