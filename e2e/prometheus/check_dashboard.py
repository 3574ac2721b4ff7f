#!/usr/bin/env python3
"""Checks a Grafana dashboard against the metrics this project exports (run by `make rules`).

    check_dashboard.py [--promtool PATH] DASHBOARD.json

Fails, naming the panel, when the file is not JSON, a query uses a metric name that no binary of
this repository exports (histograms also as _bucket, _sum, _count), a panel has no Prometheus
query or does not use the $datasource variable, a $variable is not defined, panel ids repeat, or
the datasource, namespace and bridge variables are missing. With --promtool, every query is also
parsed by Prometheus itself: promtool 2.42 has no PromQL command, so the queries become recording
rules of a scratch rule file for `promtool check rules`. Standard library only.
"""

import argparse
import json
import re
import subprocess
import sys
import tempfile

# Names from operator/src/metrics.rs and bridge/src/metrics.rs, plus the operator's Bridge gauges.
COUNTERS_AND_GAUGES = {
    "oms_operator_reconcile_total",
    "oms_operator_resources",
    "oms_operator_certificate_expiry_timestamp_seconds",
    "oms_operator_bridge_stalled",
    "oms_operator_bridge_lag_messages",
    "oms_bridge_messages_received_total",
    "oms_bridge_messages_sent_total",
    "oms_bridge_bytes_sent_total",
    "oms_bridge_messages_failed_total",
    "oms_bridge_messages_skipped_total",
    "oms_bridge_messages_deduplicated_total",
    "oms_bridge_messages_resent_total",
    "oms_bridge_messages_redelivered_total",
    "oms_bridge_link_up",
    "oms_bridge_worker_active",
    "oms_bridge_source_lag_messages",
    "oms_bridge_gap_detected_total",
    "oms_gateway_messages_published_total",
    "oms_gateway_messages_consumed_total",
    "oms_gateway_messages_deduplicated_total",
    "oms_gateway_denied_total",
    "oms_gateway_tls_handshake_failures_total",
    "oms_gateway_streams",
}
HISTOGRAMS = {"oms_operator_reconcile_duration_seconds", "oms_bridge_replication_latency_seconds"}
KNOWN_METRICS = COUNTERS_AND_GAUGES | {h + s for h in HISTOGRAMS for s in ("_bucket", "_sum", "_count")}

# PromQL words that are not metric names where they stand (functions are recognised by their "(").
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless",
            "offset", "inf", "nan"}
# Grafana's built-in variables and what they stand for when promtool parses a query.
BUILTIN_VARIABLES = {"__rate_interval": "5m", "__interval": "1m", "__range": "1h"}
REQUIRED_VARIABLES = ("datasource", "namespace", "bridge")

VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)")
STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
IDENTIFIER = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")


def panels_of(dashboard):
    """Every panel, including those nested in collapsed rows."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def metric_names(expr):
    """Metric names an expression selects: identifiers outside strings, label matchers, grouping
    lists and durations that are neither a function call nor a keyword."""
    text = STRING.sub('""', expr)
    text = VARIABLE.sub("5m", text)
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    # Grouping and matching lists go with their keyword, so "sum by (le) (...)" reads "sum (...)".
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)  # ranges and subqueries
    names = set()
    for match in IDENTIFIER.finditer(text):
        word = match.group(0)
        rest = text[match.end():].lstrip()
        if rest.startswith("(") or word.lower() in KEYWORDS:
            continue
        if text[max(0, match.start() - 1)].isdigit():  # e.g. the "e" of 1e3, the "m" of 5m
            continue
        names.add(word)
    return names


def label_values_metric(query):
    """The series selector of a Grafana label_values(selector, label) query, or None."""
    match = re.fullmatch(r"\s*label_values\((.*),\s*\w+\s*\)\s*", query)
    return match.group(1) if match else None


def for_promtool(expr):
    return VARIABLE.sub(lambda m: BUILTIN_VARIABLES.get(m.group(1) or m.group(2), "x"), expr)


def check(dashboard, errors):
    variables = {v.get("name"): v for v in dashboard.get("templating", {}).get("list", [])}
    for name in REQUIRED_VARIABLES:
        if name not in variables:
            errors.append(f"templating: no variable {name}")
    datasource = variables.get("datasource", {})
    if datasource and (datasource.get("type") != "datasource" or datasource.get("query") != "prometheus"):
        errors.append("templating: variable datasource must be of type datasource with query prometheus")
    defined = set(variables) | set(BUILTIN_VARIABLES)

    exprs = []  # (where, PromQL expression)
    for name, variable in variables.items():
        if variable.get("type") != "query":
            continue
        query = variable.get("query")
        query = query.get("query", "") if isinstance(query, dict) else query or ""
        selector = label_values_metric(query)
        if selector is None:
            errors.append(f"variable {name}: expected label_values(<metric>, <label>), got {query!r}")
        else:
            exprs.append((f"variable {name}", selector))

    ids = set()
    for panel in panels_of(dashboard):
        title = panel.get("title", "?")
        if panel.get("id") in ids:
            errors.append(f"panel {title!r}: id {panel.get('id')} repeats")
        ids.add(panel.get("id"))
        if "gridPos" not in panel:
            errors.append(f"panel {title!r}: no gridPos")
        if panel.get("type") == "row":
            continue
        if panel.get("datasource", {}).get("uid") != "${datasource}":
            errors.append(f"panel {title!r}: datasource is not ${{datasource}}")
        targets = panel.get("targets", [])
        if not targets:
            errors.append(f"panel {title!r}: no queries")
        for target in targets:
            expr = target.get("expr", "")
            if not expr.strip():
                errors.append(f"panel {title!r}, query {target.get('refId')}: empty expr")
                continue
            exprs.append((f"panel {title!r}, query {target.get('refId')}", expr))

    for where, expr in exprs:
        for match in VARIABLE.finditer(expr):
            name = match.group(1) or match.group(2)
            if name not in defined:
                errors.append(f"{where}: undefined variable ${name}")
        names = metric_names(expr)
        if not names:
            errors.append(f"{where}: selects no metric: {expr}")
        for name in sorted(names - KNOWN_METRICS):
            errors.append(f"{where}: {name} is not a metric this project exports")
    return exprs


def promtool_parse(promtool, exprs, errors):
    """Parses each expression with Prometheus' own parser, one scratch recording rule each."""
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", prefix="dashboard-exprs-") as rules:
        rules.write("groups:\n  - name: dashboard\n    rules:\n")
        for i, (_, expr) in enumerate(exprs):
            rules.write(f"      - record: dashboard:expr_{i}\n        expr: {json.dumps(for_promtool(expr))}\n")
        rules.flush()
        result = subprocess.run([promtool, "check", "rules", rules.name], capture_output=True, text=True)
    if result.returncode != 0:
        errors.append("promtool could not parse every query:\n" + result.stdout + result.stderr)
        for i, (where, expr) in enumerate(exprs):
            if f"expr_{i}" in result.stdout + result.stderr:
                errors.append(f"  dashboard:expr_{i} is {where}: {expr}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dashboard")
    parser.add_argument("--promtool", help="parse every query with this promtool")
    args = parser.parse_args()
    try:
        with open(args.dashboard, encoding="utf-8") as f:
            dashboard = json.load(f)
    except (OSError, json.JSONDecodeError) as error:
        print(f"check_dashboard: {args.dashboard}: {error}", file=sys.stderr)
        return 1
    errors = []
    exprs = check(dashboard, errors)
    if args.promtool and not errors:
        promtool_parse(args.promtool, exprs, errors)
    if errors:
        for error in errors:
            print(f"check_dashboard: {args.dashboard}: {error}", file=sys.stderr)
        return 1
    parsed = " and parsed by promtool" if args.promtool else ""
    panels = sum(1 for p in panels_of(dashboard) if p.get("type") != "row")
    print(f"check_dashboard: {args.dashboard}: {panels} panels, {len(exprs)} queries use known metrics{parsed}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
