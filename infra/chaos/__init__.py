"""Fault scenarios with real processes: a real broker, a real Redis, worker subprocesses killed with SIGKILL.

`harness` starts and watches the processes and counts what came out, `scenarios` holds one
function per fault, `report` runs them all and prints the table (`make chaos`), and
`tests/integration/test_chaos.py` asserts on the same rows. Tooling, not tests: `make chaos`
runs it without importing anything from tests/.
"""
