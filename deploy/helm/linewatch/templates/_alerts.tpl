{{/* The fleet's alerts, on the workers' own metrics (and kube-state-metrics for restarts). The chart
     tests check every linewatch_* name here against what a worker exports, and check them as promtool does. */}}
{{- define "linewatch.alertRules" -}}
{{- $r := .Values.metrics.prometheusRule -}}
{{- $job := printf "%s-worker" (include "linewatch.fullname" .) -}}
{{- $w := printf "job=%q, namespace=%q" $job .Release.Namespace -}}
groups:
  - name: linewatch.workers
    rules:
      - alert: LinewatchConsumerLagGrowing
        expr: >-
          sum(linewatch_consumer_lag{ {{- $w -}} }) > {{ $r.lagFrames }}
          and sum(deriv(linewatch_consumer_lag{ {{- $w -}} }[10m])) > 0
        for: 15m
        labels: {severity: warning}
        annotations:
          summary: The workers fall behind the cameras
          description: >-
            The group's lag is above {{ $r.lagFrames }} frames and still growing: more workers are needed
            (is the autoscaler at maxReplicaCount?) or a worker is slow.
      - alert: LinewatchFramesSkipped
        expr: >-
          sum(rate(linewatch_frames_processed_total{ {{- $w -}}, outcome="skipped"}[10m]))
          / sum(rate(linewatch_frames_processed_total{ {{- $w -}} }[10m])) > {{ $r.skippedFraction }}
        for: 10m
        labels: {severity: warning}
        annotations:
          summary: Frames arrive too late and are skipped uninspected
          description: More than {{ mulf $r.skippedFraction 100 }}% of frames were stale when a worker reached them.
      - alert: LinewatchLatencyHigh
        expr: >-
          histogram_quantile(0.99, sum by (le) (rate(linewatch_frame_latency_seconds_bucket{ {{- $w -}} }[5m])))
          > {{ $r.latencyP99Seconds }}
        for: 10m
        labels: {severity: warning}
        annotations:
          summary: Capture to result takes too long
          description: The 99th percentile from capture to acknowledged result is above {{ $r.latencyP99Seconds }} s.
      - alert: LinewatchDeadLetters
        expr: sum(increase(linewatch_dead_letters_total{ {{- $w -}} }[15m])) > 0
        labels: {severity: warning}
        annotations:
          summary: Frames went to the dead-letter topic
          description: Read them with their reasons on the dead-letter topic; a person decides what to replay.
      - alert: LinewatchWorkerRestarting
        expr: >-
          increase(kube_pod_container_status_restarts_total{namespace={{ .Release.Namespace | quote }},
          container="worker", pod=~{{ printf "%s-.*" $job | quote }} }[30m]) > 2
        labels: {severity: warning}
        annotations:
          summary: A worker keeps restarting
          description: Liveness failures (a wedged GPU), OOM kills or crashes; see the pod's last state and logs.
      - alert: LinewatchWorkersDown
        expr: sum(up{ {{- $w -}} }) == 0 or absent(up{ {{- $w -}} })
        for: 10m
        labels: {severity: critical}
        annotations:
          summary: No worker answers its metrics scrape
          description: Nothing is inspected; frames wait in Kafka.
{{- end -}}
