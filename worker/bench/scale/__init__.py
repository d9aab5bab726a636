"""`make bench-scale`: how the consumer group scales and how long rebalances pause partitions.

Workers are real `WorkerService` processes on a real broker; only the Inspector is emulated
(a fixed, sleeping service time per batch), so what is measured is the plumbing: Kafka, the
group protocol, the worker's poll/publish/commit path. See `worker.bench.scale.run`.
"""
