"""Real-server test infrastructure: a single-node KRaft Kafka broker and a redis-server.

Both run as plain local processes (no Docker) on free loopback ports:

* :class:`tests.infra.kafka_broker.KafkaBroker` runs ``kafka.Kafka`` from the jars that
  ``scripts/kafka_jars.sh`` copies out of Maven Central into ``infra/kafka/target/lib``.
* :class:`tests.infra.redis_server.RedisServer` runs Debian's ``redis-server``.
* ``python -m tests.infra.servers start|stop --state-dir DIR`` starts/stops both for
  ``make demo``.
"""
