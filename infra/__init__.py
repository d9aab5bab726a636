"""Local servers for the tests and the make targets: a single-node KRaft Kafka broker and a redis-server.

A supported package (not test code): the pytest fixtures (tests/conftest.py), ``make demo``,
``make bench-kafka`` and ``make chaos`` all start their servers with it. Run it from the
repository root; it is not part of the installed distribution.

Both run as plain local processes (no Docker) on free loopback ports:

* :class:`infra.kafka_broker.KafkaBroker` runs ``kafka.Kafka`` from the jars that
  ``scripts/kafka_jars.sh`` copies out of Maven Central into ``infra/kafka/target/lib``.
* :class:`infra.redis_server.RedisServer` runs Debian's ``redis-server``.
* ``python -m infra.servers start|stop --state-dir DIR`` starts/stops both for
  ``make demo`` and ``make bench-kafka``.
* :mod:`infra.chaos` holds the fault scenarios of ``make chaos`` (``python -m infra.chaos.report``).
"""
