"""MES alarm service: InspectionResults -> rules -> alarm events (Kafka) -> signed MES webhook.

- `config`  the rules YAML, validated by pydantic (errors name file, rule index and field)
- `rules`   the pure rule engine (debounce N of M, cooldown, threshold override, silence, dedup)
- `events`  the `AlarmEvent` published to `linewatch.alarms` and POSTed to the MES
- `webhook` signed, idempotent, retried delivery; refused events go to `linewatch.alarms.dlq`
- `service` the Kafka adapters (evaluator and MES deliverer)
- `cli`     `linewatch-worker alarms --rules rules.yaml`
"""
