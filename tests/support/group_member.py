"""A consumer-group member in its own process, for tests that crash one (SIGKILL) or stop it (SIGTERM).

    python -m tests.support.group_member BOOTSTRAP TOPIC GROUP ASSIGNOR SESSION_MS [INSTANCE_ID]

Prints one JSON line per rebalance callback: {"event": "assigned"|"revoked"|"lost", "partitions": [...]};
on SIGTERM it closes as the worker does (`close_and_leave`) and prints {"event": "closed"}.
"""

from __future__ import annotations

import json
import signal
import sys
import threading

from kafka import ConsumerRebalanceListener

from common.kafka import build_consumer, close_and_leave, static_membership
from common.settings import KafkaSettings


class Printer(ConsumerRebalanceListener):
    @staticmethod
    def say(event: str, partitions) -> None:
        print(json.dumps({"event": event, "partitions": sorted(tp.partition for tp in partitions)}), flush=True)

    def on_partitions_assigned(self, assigned) -> None:
        self.say("assigned", assigned)

    def on_partitions_revoked(self, revoked) -> None:
        self.say("revoked", revoked)

    def on_partitions_lost(self, lost) -> None:
        self.say("lost", lost)


def main(argv: list[str]) -> int:
    bootstrap, topic, group, assignor, session_ms, *instance = argv
    settings = KafkaSettings(
        bootstrap_servers=bootstrap,
        group_id=group,
        assignor=assignor,
        session_timeout_ms=int(session_ms),
        group_instance_id=instance[0] if instance else None,
    )
    consumer = build_consumer(settings, **static_membership(settings))
    consumer.subscribe([topic], listener=Printer())
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    while not stop.is_set():
        consumer.poll(timeout_ms=100)
    close_and_leave(consumer)
    print(json.dumps({"event": "closed"}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
