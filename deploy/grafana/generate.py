#!/usr/bin/env python3
"""Generates iotflow's Grafana dashboards (Python 3 standard library only).

    python3 deploy/grafana/generate.py              # writes deploy/grafana/dashboards/*.json
    python3 deploy/grafana/generate.py --out DIR    # writes them into DIR (check.sh compares)

The JSON files are generated, never edited by hand: change this script, run it, commit both.
deploy/grafana/check.sh fails when the committed JSON differs from what this script writes.

Panels are laid out left to right on Grafana's 24-column grid; ids are assigned in order, so
the output is deterministic. Every query names a datasource by the uid provisioned in
provisioning/datasources/iotflow.yml.
"""

import argparse
import json
import os
import sys

# Datasources (uids fixed by provisioning/datasources/iotflow.yml).
PROM = {"type": "prometheus", "uid": "iotflow-prometheus"}
MYSQL = {"type": "mysql", "uid": "iotflow-mysql"}

# Grafana 10.4 / 11.x dashboard model. Grafana migrates older schema versions on load.
SCHEMA_VERSION = 39

# The Pushgateway job the daily work-time analysis pushes its run metrics under.
WORKTIME_JOB = 'job="iotflow-worktime"'

# The device publisher's job_name label (jobs/publisher: Metrics::new("publish-devices", ..)).
PUBLISHER = 'job_name="publish-devices"'

# The MQTT bridge's job_name label (jobs/mqtt-bridge: Metrics::new("mqtt-bridge", ..)).
MQTT_BRIDGE = 'job_name="mqtt-bridge"'

RATE = "$__rate_interval"


def sel(*extra):
    """Label matchers of the streaming job's series, filtered by the template variables."""
    return "{" + ", ".join(['job_name=~"$job_name"', 'worker=~"$worker"', *extra]) + "}"


class Board:
    """Collects panels and places them on the 24-column grid, row by row."""

    def __init__(self):
        self.panels = []
        self.next_id = 1
        self.x = 0
        self.y = 0
        self.line_height = 0

    def _place(self, w, h):
        if self.x + w > 24:
            self.newline()
        pos = {"h": h, "w": w, "x": self.x, "y": self.y}
        self.x += w
        self.line_height = max(self.line_height, h)
        return pos

    def newline(self):
        self.y += self.line_height
        self.x = 0
        self.line_height = 0

    def _id(self):
        i = self.next_id
        self.next_id += 1
        return i

    def row(self, title):
        self.newline()
        self.panels.append(
            {
                "id": self._id(),
                "type": "row",
                "title": title,
                "collapsed": False,
                "gridPos": {"h": 1, "w": 24, "x": 0, "y": self.y},
                "panels": [],
            }
        )
        self.y += 1

    def add(self, panel, w, h):
        panel = dict(panel)
        panel["id"] = self._id()
        panel["gridPos"] = self._place(w, h)
        # Stable key order: id and type first, as Grafana writes them.
        ordered = {k: panel[k] for k in ("id", "type", "title", "description") if k in panel}
        ordered.update({k: v for k, v in panel.items() if k not in ordered})
        self.panels.append(ordered)


def prom(expr, legend="__auto", ref="A", instant=False):
    return {
        "refId": ref,
        "datasource": PROM,
        "editorMode": "code",
        "expr": expr,
        "legendFormat": legend,
        "range": not instant,
        "instant": instant,
    }


def sql(raw, fmt="table", ref="A"):
    return {
        "refId": ref,
        "datasource": MYSQL,
        "editorMode": "code",
        "format": fmt,
        "rawQuery": True,
        "rawSql": raw,
    }


def with_refs(targets):
    return [dict(t, refId=chr(ord("A") + i)) for i, t in enumerate(targets)]


def thresholds(*steps):
    """steps: (value or None, colour) pairs, the first with None."""
    return {
        "mode": "absolute",
        "steps": [{"color": c, "value": v} for v, c in steps],
    }


def timeseries(title, description, targets, unit="short", stack=False, draw="line", minimum=0,
               overrides=None, datasource=PROM):
    custom = {
        "drawStyle": draw,
        "lineWidth": 1,
        "fillOpacity": 10 if draw == "line" else 80,
        "showPoints": "never",
        "spanNulls": False,
        "stacking": {"mode": "normal" if stack else "none", "group": "A"},
        "axisPlacement": "auto",
    }
    defaults = {"unit": unit, "custom": custom, "color": {"mode": "palette-classic"}}
    if minimum is not None:
        defaults["min"] = minimum
    return {
        "type": "timeseries",
        "title": title,
        "description": description,
        "datasource": datasource,
        "targets": with_refs(targets),
        "fieldConfig": {"defaults": defaults, "overrides": overrides or []},
        "options": {
            "legend": {
                "showLegend": True,
                "displayMode": "table",
                "placement": "bottom",
                "calcs": ["mean", "max", "lastNotNull"],
            },
            "tooltip": {"mode": "multi", "sort": "desc"},
        },
    }


def stat(title, description, targets, unit="short", steps=None, mappings=None, graph=True,
         datasource=PROM, decimals=None, text_mode="auto"):
    defaults = {
        "unit": unit,
        "color": {"mode": "thresholds"},
        "thresholds": thresholds(*(steps or [(None, "green")])),
        "mappings": mappings or [],
    }
    if decimals is not None:
        defaults["decimals"] = decimals
    if not graph:
        # No sparkline: only the current value counts, so ask Prometheus for an instant vector
        # (series that ended earlier in the range, e.g. a previous day's push, do not linger).
        targets = [dict(t, range=False, instant=True) if "expr" in t else t for t in targets]
    return {
        "type": "stat",
        "title": title,
        "description": description,
        "datasource": datasource,
        "targets": with_refs(targets),
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "colorMode": "value",
            "graphMode": "area" if graph else "none",
            "justifyMode": "auto",
            "orientation": "auto",
            "textMode": text_mode,
        },
    }


def value_map(pairs):
    """pairs: (value, text, colour)."""
    return [
        {
            "type": "value",
            "options": {
                str(v): {"text": t, "color": c, "index": i} for i, (v, t, c) in enumerate(pairs)
            },
        }
    ]


def right_axis(name, unit):
    return {
        "matcher": {"id": "byName", "options": name},
        "properties": [
            {"id": "custom.axisPlacement", "value": "right"},
            {"id": "unit", "value": unit},
        ],
    }


def query_var(name, label, datasource, query, multi, include_all, refresh=2, sort=1):
    var = {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": datasource,
        "query": query,
        "definition": query,
        "refresh": refresh,
        "regex": "",
        "sort": sort,
        "multi": multi,
        "includeAll": include_all,
        "current": {},
        "options": [],
        "hide": 0,
    }
    if include_all:
        var["allValue"] = ".*"
    return var


def dashboard(uid, title, description, board, variables, time_from, refresh):
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["iotflow"],
        "editable": True,
        "graphTooltip": 1,
        "timezone": "browser",
        "refresh": refresh,
        "time": {"from": time_from, "to": "now"},
        "timepicker": {},
        "fiscalYearStartMonth": 0,
        "liveNow": False,
        "links": [
            {
                "type": "dashboards",
                "title": "iotflow",
                "tags": ["iotflow"],
                "asDropdown": False,
                "includeVars": False,
                "keepTime": True,
                "targetBlank": False,
                "icon": "external link",
            }
        ],
        "annotations": {
            "list": [
                {
                    "builtIn": 1,
                    "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                    "enable": True,
                    "hide": True,
                    "iconColor": "rgba(0, 211, 255, 1)",
                    "name": "Annotations & Alerts",
                    "type": "dashboard",
                }
            ]
        },
        "templating": {"list": variables},
        "panels": board.panels,
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
    }


def overview():
    b = Board()
    src = 'operator="kafka-source"'

    b.row("At a glance")
    b.add(stat("Readings received/s",
               "Messages read from the readings topic by the Kafka source, per second.",
               [prom(f"sum(rate(iotflow_kafka_messages_received_total{sel(src)}[{RATE}]))",
                     "received/s")],
               unit="mps"), 4, 4)
    b.add(stat("Parse failure ratio",
               "Rejected readings over readings received (each rejected reading is dead-lettered).",
               [prom(f"sum(rate(iotflow_parse_failure_total{sel()}[{RATE}])) / "
                     f"clamp_min(sum(rate(iotflow_kafka_messages_received_total{sel(src)}[{RATE}])), 1e-9)",
                     "failure ratio")],
               unit="percentunit", decimals=2,
               steps=[(None, "green"), (0.01, "orange"), (0.05, "red")]), 4, 4)
    b.add(stat("Rows written/s (all sinks)",
               "Rows durably written, summed over every enabled sink.",
               [prom(f"sum(rate(iotflow_sink_rows_written_total{sel()}[{RATE}]))", "rows/s")],
               unit="rowsps"), 4, 4)
    b.add(stat("Consumer lag",
               "Messages between the high watermark and the consumer position, summed over the "
               "readings topic's partitions (librdkafka statistics, every kafka.stats_interval_secs).",
               [prom(f"sum(max by (partition) (iotflow_kafka_consumer_lag{sel(src)}))", "lag")],
               steps=[(None, "green"), (10000, "orange"), (100000, "red")]), 4, 4)
    b.add(stat("End-to-end p99 (worst sink)",
               "99th percentile of Kafka message timestamp to durable write, the slowest sink.",
               [prom("max(histogram_quantile(0.99, sum by (sink, le) "
                     f"(rate(iotflow_end_to_end_latency_seconds_bucket{sel()}[{RATE}]))))", "p99")],
               unit="s", steps=[(None, "green"), (1, "orange"), (5, "red")]), 4, 4)
    definite = sel('kind="definite"')
    b.add(stat("Definite sink errors",
               "Write errors that stop the job, over the dashboard's time range.",
               [prom(f"sum(increase(iotflow_sink_errors_total{definite}[$__range])) or vector(0)",
                     "definite errors")],
               steps=[(None, "green"), (1, "red")], graph=False, decimals=0), 4, 4)

    b.row("Throughput")
    b.add(timeseries("Kafka messages received/s",
                     "Messages read per second, by source operator (kafka-source: readings; "
                     "broadcast-source: device business records).",
                     [prom(f"sum by (operator) (rate(iotflow_kafka_messages_received_total{sel()}[{RATE}]))",
                           "{{operator}}")],
                     unit="mps"), 8, 8)
    b.add(timeseries("Parse successes/s",
                     "Readings that parsed and validated, per worker.",
                     [prom(f"sum by (worker) (rate(iotflow_parse_success_total{sel()}[{RATE}]))",
                           "worker {{worker}}")],
                     unit="recps", stack=True), 8, 8)
    b.add(timeseries("Rows written/s per sink",
                     "Rows durably written per second, by sink.",
                     [prom(f"sum by (sink) (rate(iotflow_sink_rows_written_total{sel()}[{RATE}]))",
                           "{{sink}}")],
                     unit="rowsps"), 8, 8)

    b.row("Parsing, enrichment and dead letters")
    b.add(timeseries("Parse failures/s by reason",
                     "Rejected readings per second by reason code (invalid_json, missing_field, "
                     "wrong_type, out_of_range, bad_event_time, bad_pboxid, too_large, empty).",
                     [prom(f"sum by (reason) (rate(iotflow_parse_failure_total{sel()}[{RATE}]))",
                           "{{reason}}")],
                     unit="recps", stack=True, draw="bars"), 8, 8)
    b.add(timeseries("Dead letters/s",
                     "Dead letters acknowledged by the dead-letter topic (rejected readings and rows "
                     "a store refused definitely).",
                     [prom(f"sum(rate(iotflow_dlq_records_total{sel()}[{RATE}]))", "dead letters"),
                      prom(f"sum(rate(iotflow_parse_failure_total{sel()}[{RATE}]))", "parse failures"),
                      prom(f"sum(rate(iotflow_sink_items_rejected_total{sel()}[{RATE}]))",
                           "rows refused by a sink")],
                     unit="recps"), 8, 8)
    b.add(timeseries("Enrichment/s",
                     "Readings joined with the device dimension, and those of devices without a "
                     "business record (stored with empty business columns).",
                     [prom(f"sum(rate(iotflow_enriched_readings_total{sel()}[{RATE}]))", "enriched"),
                      prom(f"sum(rate(iotflow_unknown_device_readings_total{sel()}[{RATE}]))",
                           "unknown device")],
                     unit="recps"), 8, 8)

    b.row("Kafka")
    b.add(timeseries("Consumer lag per partition",
                     "High watermark minus consumer position per partition, by source operator.",
                     [prom(f"max by (operator, partition) (iotflow_kafka_consumer_lag{sel()})",
                           "{{operator}} p{{partition}}")]), 12, 8)
    b.add(timeseries("Offset commits/s",
                     "Commits of completed epochs acknowledged by the broker, and refused commits "
                     "(retried with the next epoch).",
                     [prom(f"sum by (operator) (rate(iotflow_kafka_offset_commits_total{sel()}[{RATE}]))",
                           "{{operator}} commits"),
                      prom(f"sum by (operator) (rate(iotflow_kafka_offset_commit_failures_total{sel()}[{RATE}]))",
                           "{{operator}} failures")],
                     unit="ops"), 12, 8)

    b.row("Latency")
    e2e = f"rate(iotflow_end_to_end_latency_seconds_bucket{sel()}[{RATE}])"
    b.add(timeseries("End-to-end latency p50 / p99 per sink",
                     "Kafka message timestamp to the durable write of the row.",
                     [prom(f"histogram_quantile(0.5, sum by (sink, le) ({e2e}))", "{{sink}} p50"),
                      prom(f"histogram_quantile(0.99, sum by (sink, le) ({e2e}))", "{{sink}} p99")],
                     unit="s"), 12, 8)
    batch = f"rate(iotflow_sink_batch_write_seconds_bucket{sel()}[{RATE}])"
    b.add(timeseries("Batch write latency p50 / p99 per sink",
                     "Time to write one batch, retries included.",
                     [prom(f"histogram_quantile(0.5, sum by (sink, le) ({batch}))", "{{sink}} p50"),
                      prom(f"histogram_quantile(0.99, sum by (sink, le) ({batch}))", "{{sink}} p99")],
                     unit="s"), 12, 8)

    b.row("Sink health per worker")
    b.add(timeseries("Sink errors/s by kind",
                     "Failed write attempts: transient (retried) or definite (the job stops).",
                     [prom(f"sum by (sink, kind, worker) (rate(iotflow_sink_errors_total{sel()}[{RATE}]))",
                           "{{sink}} {{kind}} w{{worker}}")],
                     unit="ops"), 8, 8)
    b.add(timeseries("Sink retries/s",
                     "Batch write retries after transient errors.",
                     [prom(f"sum by (sink, worker) (rate(iotflow_sink_retries_total{sel()}[{RATE}]))",
                           "{{sink}} w{{worker}}")],
                     unit="ops"), 8, 8)
    b.add(timeseries("Batches in flight",
                     "Batches handed to a sink's writer and not yet acknowledged.",
                     [prom(f"sum by (sink, worker) (iotflow_sink_batches_in_flight{sel()})",
                           "{{sink}} w{{worker}}")]), 8, 8)
    b.add(timeseries("Items rejected/s (dead-lettered)",
                     "Rows the store refused definitely (e.g. an Elasticsearch mapping error); each "
                     "went to the dead-letter topic.",
                     [prom(f"sum by (sink, worker) (rate(iotflow_sink_items_rejected_total{sel()}[{RATE}]))",
                           "{{sink}} w{{worker}}")],
                     unit="recps"), 12, 8)
    b.add(timeseries("Items retried alone/s",
                     "Rows sent again alone after a for-now refusal (Elasticsearch bulk item 429/5xx).",
                     [prom(f"sum by (sink, worker) (rate(iotflow_sink_items_retried_total{sel()}[{RATE}]))",
                           "{{sink}} w{{worker}}")],
                     unit="recps"), 12, 8)

    b.row("Device dimension")
    b.add(timeseries("Devices in the dimension per worker",
                     "Devices in the replicated device dimension as seen by each worker (all workers "
                     "should agree).",
                     [prom(f"max by (worker) (iotflow_dimension_devices{sel()})", "worker {{worker}}")]),
          12, 8)
    b.add(timeseries("Dimension updates/s",
                     "Device business record changes applied to the dimension, per worker.",
                     [prom(f"sum by (worker) (rate(iotflow_dimension_updates_total{sel()}[{RATE}]))",
                           "worker {{worker}}")],
                     unit="ops"), 12, 8)

    # Device alarms (docs/alarms.md). The active gauge and the event counter have no worker
    # label (one series per process, rule and severity or kind), so they are filtered by job
    # only; the reading counters and the held gauge are per worker.
    b.row("Alarms")
    alarm_job = '{job_name=~"$job_name"}'
    active = f"sum by (rule, severity) (iotflow_alarms_active{alarm_job})"
    active_now = stat("Active alarms now",
                      "Device alarms in effect now (raised, not cleared) by rule and severity, "
                      "summed over the job's processes. The devices are listed at /api/alarms "
                      "and in device_alarms.",
                      [prom(active, "{{rule}} ({{severity}})")],
                      steps=[(None, "green"), (1, "orange")], graph=False, decimals=0,
                      text_mode="value_and_name")
    active_now["fieldConfig"]["defaults"]["noValue"] = "none active"
    b.add(active_now, 12, 4)
    b.add(stat("Late readings",
               "Readings that came more than alarms.lateness_ms behind their partition's newest, "
               "over the dashboard's time range: counted, never applied to an alarm.",
               [prom(f"sum(increase(iotflow_alarm_late_readings_total{sel()}[$__range])) or vector(0)",
                     "late readings")],
               steps=[(None, "green"), (1, "orange")], graph=False, decimals=0), 4, 4)
    b.add(stat("Readings held",
               "Readings in the alarm operators' lateness buffers, waiting for event time to pass "
               "them.",
               [prom(f"sum(iotflow_alarm_held_readings{sel()})", "held")]), 4, 4)
    b.add(stat("Replayed readings",
               "Readings read again after a restart that the restored alarm state already covered "
               "(skipped), over the dashboard's time range.",
               [prom(f"sum(increase(iotflow_alarm_replayed_readings_total{sel()}[$__range])) "
                     "or vector(0)", "replayed")],
               graph=False, decimals=0), 4, 4)
    b.add(timeseries("Active alarms by rule and severity",
                     "Device alarms in effect (raised, not cleared), by rule and severity.",
                     [prom(active, "{{rule}} ({{severity}})")]), 8, 8)
    b.add(timeseries("Alarm events/s by rule and kind",
                     "Alarm transitions produced: raised and cleared, by rule.",
                     [prom(f"sum by (rule, kind) (rate(iotflow_alarm_events_total{alarm_job}[{RATE}]))",
                           "{{rule}} {{kind}}")],
                     unit="ops"), 8, 8)
    b.add(timeseries("Late readings/s per worker",
                     "Readings later than alarms.lateness_ms, per worker: counted and logged with "
                     "their partition and offset, never applied to an alarm.",
                     [prom(f"sum by (worker) (rate(iotflow_alarm_late_readings_total{sel()}[{RATE}]))",
                           "worker {{worker}}")],
                     unit="recps"), 8, 8)

    # Rollups (docs/rollups.md): kept by the MySQL sink in one transaction after each stored
    # batch (minute/hour/day buckets, heat-map device-hours, day tracks), copied to ClickHouse.
    # The iotflow_rollup_* series are per process (job_name, job_id; no worker label), so they
    # are filtered by job only.
    b.row("Rollups")
    rollup_job = '{job_name=~"$job_name"}'
    updated = f"sum(rate(iotflow_rollup_rows_updated_total{rollup_job}[{RATE}]))"
    recomputed = f"sum(rate(iotflow_rollup_rows_recomputed_total{rollup_job}[{RATE}]))"
    b.add(timeseries("Rollup rows updated/s",
                     "Rollup rows brought up to date after stored batches: buckets of every grain "
                     "(minute, hour, day), heat-map device-hours and day tracks, per second.",
                     [prom(updated, "updated")],
                     unit="rowsps"), 8, 8)
    b.add(timeseries("Rollup rows recomputed/s",
                     "Rollup rows recomputed from the stored readings because a batch brought late "
                     "or replayed readings (left axis), and their share of the rows updated (right "
                     "axis). Replays after a restart or Kafka rebalance raise it briefly.",
                     [prom(recomputed, "recomputed"),
                      prom(f"{recomputed} / clamp_min({updated}, 1e-9)", "recomputed share")],
                     unit="rowsps", overrides=[right_axis("recomputed share", "percentunit")]),
          8, 8)
    rollup = f"rate(iotflow_rollup_seconds_bucket{rollup_job}[{RATE}])"
    mysql_sink = sel('sink="mysql"')
    mysql_batch = f"rate(iotflow_sink_batch_write_seconds_bucket{mysql_sink}[{RATE}])"
    b.add(timeseries("Rollup transaction time p50 / p99",
                     "Time of one rollup transaction after a stored batch, its ClickHouse copy "
                     "included. It is part of the MySQL sink's batch write time (shown for "
                     "comparison) and delays its acknowledgements, hence offset commits "
                     "(IotflowRollupsSlow: p99 above 1 s for 10 minutes).",
                     [prom(f"histogram_quantile(0.5, sum by (le) ({rollup}))", "rollup p50"),
                      prom(f"histogram_quantile(0.99, sum by (le) ({rollup}))", "rollup p99"),
                      prom(f"histogram_quantile(0.99, sum by (le) ({mysql_batch}))",
                           "MySQL batch write p99")],
                     unit="s"), 8, 8)

    b.row("Device publisher (MySQL device_info -> broadcast topic)")
    b.add(stat("Publisher backlog",
               "Changes in device_info_changes not yet published.",
               [prom(f"max(iotflow_publisher_backlog{{{PUBLISHER}}})", "backlog")],
               steps=[(None, "green"), (1000, "orange"), (10000, "red")]), 4, 4)
    b.add(stat("Publisher lag",
               "Age of the oldest change of the last round, from its commit in MySQL to the "
               "broker's acknowledgement (0 when idle).",
               [prom(f"max(iotflow_publisher_lag_seconds{{{PUBLISHER}}})", "lag")],
               unit="s", steps=[(None, "green"), (5, "orange"), (60, "red")]), 4, 4)
    b.add(stat("Snapshot devices",
               "Devices in the full snapshot the publisher published at start.",
               [prom(f"max(iotflow_publisher_snapshot_devices{{{PUBLISHER}}})", "devices")],
               graph=False), 4, 4)
    b.add(timeseries("Records published/s by kind",
                     "Device records acknowledged by the broker: upserts and tombstones (deletes).",
                     [prom(f"sum by (kind) (rate(iotflow_publisher_records_total{{{PUBLISHER}}}[{RATE}]))",
                           "{{kind}}")],
                     unit="recps"), 12, 8)
    b.newline()
    b.add(timeseries("Publisher lag and backlog",
                     "Lag of the last round (left axis) and changes waiting in the outbox (right axis).",
                     [prom(f"max(iotflow_publisher_lag_seconds{{{PUBLISHER}}})", "lag"),
                      prom(f"max(iotflow_publisher_backlog{{{PUBLISHER}}})", "backlog")],
                     unit="s", overrides=[right_axis("backlog", "short")]), 12, 8)
    b.add(timeseries("Publisher errors/s",
                     "Publishing rounds that failed (MySQL or broker trouble; retried with backoff).",
                     [prom(f"sum(rate(iotflow_publisher_errors_total{{{PUBLISHER}}}[{RATE}]))",
                           "failed rounds")],
                     unit="ops"), 12, 8)

    # The MQTT bridge (docs/mqtt.md): its series carry job_name="mqtt-bridge" and job_id only
    # (no worker), so they are not filtered by the dashboard variables; sums and maxima merge a
    # restarted bridge's series (new job_id).
    b.row("MQTT bridge (MQTT -> readings topic)")
    bridge = "{" + MQTT_BRIDGE + "}"
    b.add(stat("Bridge connection",
               "connected: 1 while the bridge is connected to the MQTT broker; subscribed: 1 once "
               "the broker acknowledged its subscriptions on that connection. While disconnected "
               "the broker queues the readings for the bridge's persistent session "
               "(IotflowMqttBridgeDisconnected fires after 2 minutes).",
               [prom(f"min(iotflow_mqtt_connected{bridge})", "connected"),
                prom(f"min(iotflow_mqtt_subscribed{bridge})", "subscribed")],
               steps=[(None, "red"), (1, "green")], graph=False, text_mode="value_and_name",
               mappings=value_map([(0, "NO", "red"), (1, "YES", "green")])), 4, 8)
    b.add(timeseries("MQTT messages/s",
                     "Messages received from MQTT (redeliveries included), forwarded (acknowledged "
                     "by Kafka) and acknowledged to the MQTT broker (each after Kafka), per second.",
                     [prom(f"sum(rate(iotflow_mqtt_messages_received_total{bridge}[{RATE}]))",
                           "received"),
                      prom(f"sum(rate(iotflow_mqtt_messages_forwarded_total{bridge}[{RATE}]))",
                           "forwarded to Kafka"),
                      prom(f"sum(rate(iotflow_mqtt_messages_acknowledged_total{bridge}[{RATE}]))",
                           "acknowledged to MQTT")],
                     unit="mps"), 10, 8)
    b.add(timeseries("Messages in flight",
                     "Messages received from MQTT and not yet acknowledged by Kafka (they stay "
                     "unacknowledged at MQTT until then). Grows while Kafka refuses messages.",
                     [prom(f"sum(iotflow_mqtt_in_flight{bridge})", "in flight")]), 10, 8)
    b.add(timeseries("Redelivered and duplicates dropped/s",
                     "Messages the broker sent again (DUP flag: unacknowledged when the bridge lost "
                     "its connection or stopped), and redeliveries the bridge's ledger knew Kafka "
                     "already had (acknowledged without sending them again).",
                     [prom(f"sum(rate(iotflow_mqtt_messages_redelivered_total{bridge}[{RATE}]))",
                           "redelivered"),
                      prom(f"sum(rate(iotflow_mqtt_duplicates_dropped_total{bridge}[{RATE}]))",
                           "duplicates dropped")],
                     unit="mps"), 8, 8)
    fwd = f"rate(iotflow_mqtt_forward_seconds_bucket{bridge}[{RATE}])"
    b.add(timeseries("Forward latency p50 / p99",
                     "From receiving an MQTT message to Kafka's acknowledgement of it, retries "
                     "included.",
                     [prom(f"histogram_quantile(0.5, sum by (le) ({fwd}))", "p50"),
                      prom(f"histogram_quantile(0.99, sum by (le) ({fwd}))", "p99")],
                     unit="s"), 8, 8)
    b.add(timeseries("Kafka and connection errors/s",
                     "Kafka sends that failed (each is sent again; IotflowMqttBridgeKafkaErrors) and "
                     "failed or lost connections to the MQTT broker (each is retried).",
                     [prom(f"sum(rate(iotflow_mqtt_produce_errors_total{bridge}[{RATE}]))",
                           "Kafka send errors"),
                      prom(f"sum(rate(iotflow_mqtt_connection_errors_total{bridge}[{RATE}]))",
                           "MQTT connection errors")],
                     unit="ops"), 8, 8)

    b.row("Alerts and scrape targets")
    alerts = stat("Firing alerts",
                  "iotflow alerts firing now (deploy/prometheus/rules/alerts.yml), by name and "
                  "severity.",
                  [prom('sum by (alertname, severity) (ALERTS{alertstate="firing", '
                        'alertname=~"Iotflow.*"})', "{{alertname}} ({{severity}})")],
                  steps=[(None, "orange")], graph=False, decimals=0)
    alerts["fieldConfig"]["defaults"]["noValue"] = "none firing"
    b.add(alerts, 12, 4)
    b.add(stat("Targets up",
               "Prometheus scrape health of every target (1 = up).",
               [prom("up", "{{job}} {{instance}}")],
               steps=[(None, "red"), (1, "green")],
               mappings=value_map([(0, "DOWN", "red"), (1, "UP", "green")]), graph=False), 12, 4)

    variables = [
        query_var("job_name", "Job", PROM,
                  "label_values(iotflow_parse_success_total, job_name)", True, True),
        query_var("worker", "Worker", PROM,
                  'label_values(iotflow_parse_success_total{job_name=~"$job_name"}, worker)',
                  True, True, sort=3),
    ]
    return dashboard(
        "iotflow-overview", "iotflow: streaming job overview",
        "Throughput, parsing, Kafka lag, latency, sink health, device alarms and rollups of the "
        "iotflow streaming job, the device publisher and the MQTT bridge. Generated by "
        "deploy/grafana/generate.py: do not edit by hand.",
        b, variables, "now-1h", "10s")


# The work-time analysis writes one row per device and day into this table (see README.md).
WORK_TIME = "device_work_time"
WORK_TIME_RUNS = "device_work_time_runs"
DAY = "day = '$day'"


def devices():
    b = Board()

    b.row("Work time on $day")
    b.add(stat("Devices analysed",
               "Devices with a row in device_work_time for the chosen day.",
               [sql(f"SELECT COUNT(*) AS devices FROM {WORK_TIME} WHERE {DAY}")],
               datasource=MYSQL, graph=False, decimals=0), 6, 4)
    b.add(stat("Fleet working hours",
               "Sum of working time over all devices on the chosen day.",
               [sql(f"SELECT COALESCE(SUM(working_seconds), 0) / 3600 AS working_hours "
                    f"FROM {WORK_TIME} WHERE {DAY}")],
               unit="h", datasource=MYSQL, graph=False, decimals=1), 6, 4)
    b.add(stat("Mean utilisation",
               "Mean over devices of working time / observed time (first to last reading).",
               [sql(f"SELECT AVG(utilisation) AS mean_utilisation FROM {WORK_TIME} WHERE {DAY}")],
               unit="percentunit", datasource=MYSQL, graph=False, decimals=1,
               steps=[(None, "red"), (0.2, "orange"), (0.5, "green")]), 6, 4)
    b.add(stat("Devices that never worked",
               "Devices with readings on the chosen day but no working segment.",
               [sql(f"SELECT COALESCE(SUM(CASE WHEN working_seconds = 0 THEN 1 ELSE 0 END), 0) "
                    f"AS idle_devices FROM {WORK_TIME} WHERE {DAY}")],
               datasource=MYSQL, graph=False, decimals=0,
               steps=[(None, "green"), (1, "orange")]), 6, 4)

    seconds = ("working_seconds", "observed_seconds")
    ratios = ("utilisation", "day_share")
    overrides = [
        {"matcher": {"id": "byName", "options": c},
         "properties": [{"id": "unit", "value": "s"}]} for c in seconds
    ] + [
        {"matcher": {"id": "byName", "options": c},
         "properties": [{"id": "unit", "value": "percentunit"},
                        {"id": "min", "value": 0}, {"id": "max", "value": 1},
                        {"id": "custom.cellOptions", "value": {"type": "gauge", "mode": "basic"}}]}
        for c in ratios
    ]
    b.add({
        "type": "table",
        "title": "Work time per device on $day",
        "description": "One row per device: working segments (runs of metric above the work "
                       "threshold), working time, first and last reading, observed time (last - "
                       "first reading), utilisation (working / observed), day share (working / "
                       "24 h), readings analysed and the threshold used.",
        "datasource": MYSQL,
        "targets": [sql(
            "SELECT pboxid, segments, working_seconds, first_reading, last_reading, "
            "observed_seconds, utilisation, day_share, readings, threshold "
            f"FROM {WORK_TIME} WHERE {DAY} ORDER BY working_seconds DESC, pboxid LIMIT 5000")],
        "fieldConfig": {
            "defaults": {"custom": {"align": "auto", "filterable": True,
                                    "cellOptions": {"type": "auto"}}},
            "overrides": overrides,
        },
        "options": {"showHeader": True, "cellHeight": "sm",
                    "sortBy": [{"displayName": "working_seconds", "desc": True}],
                    "footer": {"show": False, "reducer": ["sum"], "fields": ""}},
    }, 24, 12)

    def barchart(title, description, raw, x_field, unit):
        return {
            "type": "barchart",
            "title": title,
            "description": description,
            "datasource": MYSQL,
            "targets": [sql(raw)],
            "fieldConfig": {
                "defaults": {"unit": unit, "min": 0, "color": {"mode": "palette-classic"},
                             "custom": {"fillOpacity": 80, "lineWidth": 1}},
                "overrides": [],
            },
            "options": {
                "orientation": "horizontal" if x_field == "pboxid" else "vertical",
                "xField": x_field,
                "showValue": "auto",
                "barWidth": 0.8,
                "groupWidth": 0.7,
                "stacking": "none",
                "legend": {"showLegend": False, "displayMode": "list", "placement": "bottom",
                           "calcs": []},
                "tooltip": {"mode": "single", "sort": "none"},
            },
        }

    b.add(barchart("Top $top devices by working hours on $day",
                   "Devices with the most working time on the chosen day.",
                   f"SELECT pboxid, working_seconds / 3600 AS working_hours FROM {WORK_TIME} "
                   f"WHERE {DAY} ORDER BY working_seconds DESC, pboxid LIMIT $top",
                   "pboxid", "h"), 12, 12)
    buckets = " UNION ALL ".join(f"SELECT {i} AS b" for i in range(10))
    b.add(barchart("Utilisation distribution on $day",
                   "Number of devices per 10 % utilisation band (working / observed time).",
                   f"SELECT CONCAT(k.b * 10, '-', k.b * 10 + 10, ' %') AS utilisation, "
                   f"COUNT(w.pboxid) AS devices FROM ({buckets}) AS k "
                   f"LEFT JOIN {WORK_TIME} AS w ON w.{DAY} "
                   "AND LEAST(GREATEST(FLOOR(w.utilisation * 10), 0), 9) = k.b "
                   "GROUP BY k.b ORDER BY k.b",
                   "utilisation", "short"), 12, 12)

    b.row("Trend over the dashboard's time range")
    b.add(timeseries("Fleet working hours per day",
                     "Sum of working time over all devices, per analysed day.",
                     [sql(f"SELECT TIMESTAMP(day) AS time, SUM(working_seconds) / 3600 AS working_hours "
                          f"FROM {WORK_TIME} WHERE $__timeFilter(day) GROUP BY day ORDER BY day",
                          fmt="time_series")],
                     unit="h", draw="bars", datasource=MYSQL), 12, 8)
    b.add(timeseries("Mean utilisation and day share per day",
                     "Mean over devices of utilisation (working / observed) and day share "
                     "(working / 24 h), per analysed day.",
                     [sql(f"SELECT TIMESTAMP(day) AS time, AVG(utilisation) AS mean_utilisation, "
                          f"AVG(day_share) AS mean_day_share FROM {WORK_TIME} "
                          "WHERE $__timeFilter(day) GROUP BY day ORDER BY day",
                          fmt="time_series")],
                     unit="percentunit", datasource=MYSQL), 12, 8)

    b.row("Work-time analysis runs")
    b.add(stat("Since last successful run",
               "Time since the last run that finished successfully; the analysis runs daily.",
               [prom(f"time() - max(iotflow_worktime_last_success_timestamp_seconds{{{WORKTIME_JOB}}})",
                     "since success")],
               unit="s", graph=False,
               steps=[(None, "green"), (26 * 3600, "orange"), (50 * 3600, "red")]), 6, 4)
    b.add(stat("Last run",
               "Outcome of the last run (1 = succeeded, 0 = failed) and the day it analysed.",
               [prom(f"max by (day) (iotflow_worktime_success{{{WORKTIME_JOB}}})", "{{day}}")],
               graph=False, steps=[(None, "red"), (1, "green")], text_mode="value_and_name",
               mappings=value_map([(0, "FAILED", "red"), (1, "OK", "green")])), 4, 4)
    b.add(stat("Run duration",
               "Wall time of the last run.",
               [prom(f"max(iotflow_worktime_duration_seconds{{{WORKTIME_JOB}}})", "duration")],
               unit="s", graph=False), 4, 4)
    b.add(stat("Devices analysed (last run)",
               "Devices the last run wrote a row for.",
               [prom(f"max(iotflow_worktime_devices_analysed{{{WORKTIME_JOB}}})", "devices")],
               graph=False, decimals=0), 5, 4)
    b.add(stat("Rows read (last run)",
               "Readings the last run read from the readings table.",
               [prom(f"max(iotflow_worktime_rows_read{{{WORKTIME_JOB}}})", "rows")],
               graph=False, decimals=0), 5, 4)
    b.add({
        "type": "table",
        "title": "Recent runs",
        "description": "The last runs recorded in device_work_time_runs (one row per analysed day: "
                       "its last run), newest first.",
        "datasource": MYSQL,
        "targets": [sql(
            "SELECT day, status, started_at, finished_at, rows_read, devices, message "
            f"FROM {WORK_TIME_RUNS} ORDER BY started_at DESC LIMIT 30")],
        "fieldConfig": {
            "defaults": {"custom": {"align": "auto", "filterable": False,
                                    "cellOptions": {"type": "auto"}}},
            "overrides": [{
                "matcher": {"id": "byName", "options": "status"},
                "properties": [
                    {"id": "custom.cellOptions", "value": {"type": "color-text"}},
                    {"id": "mappings", "value": value_map([("succeeded", "succeeded", "green"),
                                                           ("running", "running", "blue"),
                                                           ("failed", "failed", "red")])},
                ],
            }],
        },
        "options": {"showHeader": True, "cellHeight": "sm",
                    "footer": {"show": False, "reducer": ["sum"], "fields": ""}},
    }, 24, 8)
    b.add(timeseries("Run duration",
                     "Wall time of each run, as pushed to the Pushgateway.",
                     [prom(f"max(iotflow_worktime_duration_seconds{{{WORKTIME_JOB}}})", "duration")],
                     unit="s"), 12, 8)
    b.add(timeseries("Devices analysed and rows read",
                     "Devices analysed (left axis) and readings read (right axis) per run.",
                     [prom(f"max(iotflow_worktime_devices_analysed{{{WORKTIME_JOB}}})", "devices"),
                      prom(f"max(iotflow_worktime_rows_read{{{WORKTIME_JOB}}})", "rows read")],
                     overrides=[right_axis("rows read", "short")]), 12, 8)

    variables = [
        query_var("day", "Day", MYSQL,
                  f"SELECT DISTINCT DATE_FORMAT(day, '%Y-%m-%d') AS d FROM {WORK_TIME} "
                  "ORDER BY d DESC LIMIT 400",
                  False, False, refresh=1, sort=0),
        {
            "name": "top",
            "label": "Top",
            "type": "custom",
            "query": "10,25,50,100",
            "current": {"selected": True, "text": "25", "value": "25"},
            "options": [{"selected": v == "25", "text": v, "value": v}
                        for v in ("10", "25", "50", "100")],
            "multi": False,
            "includeAll": False,
            "hide": 0,
        },
    ]
    return dashboard(
        "iotflow-devices", "iotflow: device work time",
        "Results of the daily work-time analysis (MySQL table device_work_time) and the health of "
        "its runs (Pushgateway). Generated by deploy/grafana/generate.py: do not edit by hand.",
        b, variables, "now-30d", "5m")


DASHBOARDS = {"iotflow-overview.json": overview, "iotflow-devices.json": devices}


def render(build):
    return json.dumps(build(), indent=2, ensure_ascii=False) + "\n"


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=os.path.join(here, "dashboards"),
                        help="directory to write the dashboards into")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    for name, build in DASHBOARDS.items():
        with open(os.path.join(args.out, name), "w", encoding="utf-8") as f:
            f.write(render(build))
    return 0


if __name__ == "__main__":
    sys.exit(main())
