# The two commands a newcomer needs: `make demo` and `make test`.
.PHONY: demo test test-sqlite test-postgres lint setup

PY := .venv/bin/python
PG_URL ?= postgres://postgres@127.0.0.1:5432/kizuna

setup:
	@scripts/setup.sh

demo: setup
	@.venv/bin/kizuna demo

# Every test, on SQLite and then on PostgreSQL.
test:
	@scripts/setup.sh --test
	@scripts/test.sh

lint:
	@scripts/setup.sh --test
	@.venv/bin/ruff check kizuna tests bench
