"""The chart's alert rules and Grafana dashboard, checked with Prometheus's own tools
(scripts/prometheus-tools builds promtool and promql-check from github.com/prometheus/prometheus;
scripts/test passes their directory in PROMETHEUS_TOOLS). The e2e checks that every metric the
dashboard and the rules name is exported by the running operator."""

import json
import os
import pathlib
import shutil
import subprocess

import pytest
import yaml

from test_chart import CHART, by_kind, render

HERE = pathlib.Path(__file__).resolve().parent
DASHBOARD = CHART / "dashboards" / "dx-macsec-operator.json"


def tool(name):
    tools = os.environ.get("PROMETHEUS_TOOLS")
    if not tools:
        if os.environ.get("CI"):
            pytest.fail("PROMETHEUS_TOOLS is not set; run the tests through scripts/test")
        pytest.skip("PROMETHEUS_TOOLS is not set (scripts/test sets it)")
    return str(pathlib.Path(tools) / name)


def rules_file(tmp_path, values=None):
    docs = render({"prometheusRule": {"enabled": True}, **(values or {})})
    rule = by_kind(docs, "PrometheusRule")[0]
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    return path


def test_promtool_checks_the_rendered_rules(tmp_path):
    path = rules_file(tmp_path)
    out = subprocess.run([tool("promtool"), "check", "rules", str(path)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS: 11 rules found" in out.stdout, out.stdout


def test_promtool_unit_tests_every_alert(tmp_path):
    rules_file(tmp_path)
    shutil.copy(HERE / "alerts_test.yaml", tmp_path / "alerts_test.yaml")
    out = subprocess.run([tool("promtool"), "test", "rules", "alerts_test.yaml"],
                         cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    # Every alert of the chart has at least one firing case in the unit tests.
    rules = yaml.safe_load((tmp_path / "rules.yaml").read_text())["groups"][0]["rules"]
    tests = yaml.safe_load((HERE / "alerts_test.yaml").read_text())["tests"]
    fired = {c["alertname"] for t in tests for c in t["alert_rule_test"] if c["exp_alerts"]}
    assert fired == {r["alert"] for r in rules}


def test_promtool_unit_tests_fail_on_a_wrong_expectation(tmp_path):
    """The unit tests can fail: a rule whose threshold moved makes promtool say so."""
    rules_file(tmp_path, {"prometheusRule": {"enabled": True, "notReadyFor": "2h"}})
    shutil.copy(HERE / "alerts_test.yaml", tmp_path / "alerts_test.yaml")
    out = subprocess.run([tool("promtool"), "test", "rules", "alerts_test.yaml"],
                         cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode != 0
    assert "DxMacsecNotReady" in out.stdout + out.stderr


def test_the_key_age_alert_can_be_turned_off(tmp_path):
    rules = by_kind(render({"prometheusRule": {"enabled": True, "keyMaxAgeDays": 0}}), "PrometheusRule")[0]
    alerts = {r["alert"] for r in rules["spec"]["groups"][0]["rules"]}
    assert "DxMacsecKeyOlderThanRotationPeriod" not in alerts and len(alerts) == 10


def dashboard_exprs():
    """Every query of the dashboard, with Grafana's variables replaced as Grafana would."""
    panels = json.loads(DASHBOARD.read_text())["panels"]
    exprs = [t["expr"] for p in panels for t in p.get("targets", [])]
    return [e.replace("$__rate_interval", "5m").replace("$namespace", ".*") for e in exprs]


def promql_check(exprs):
    out = subprocess.run([tool("promql-check")], input=json.dumps(exprs), capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_every_dashboard_query_parses():
    results = promql_check(dashboard_exprs())
    assert len(results) >= 9
    for r in results:
        assert not r.get("error"), r
        assert r["metrics"] and all(m.startswith("dxmacsec_") for m in r["metrics"]), r


def test_the_parser_rejects_a_broken_query():
    [r] = promql_check(["sum by (operation (rate(dxmacsec_aws_calls_total[5m]))"])
    assert r.get("error"), r


def test_dashboard_panels_cover_what_an_operator_watches():
    names = {m for r in promql_check(dashboard_exprs()) for m in r["metrics"]}
    assert {
        "dxmacsec_port_encryption_up", "dxmacsec_keys", "dxmacsec_ready", "dxmacsec_aws_calls_total",
        "dxmacsec_aws_throttles_total", "dxmacsec_reconcile_duration_seconds_bucket",
        "dxmacsec_reconcile_errors_total", "dxmacsec_leader",
        "dxmacsec_rotation_next_timestamp_seconds", "dxmacsec_rotation_stage",
    } <= names


def test_dashboard_configmap_for_the_grafana_sidecar():
    assert not by_kind(render(), "ConfigMap")
    docs = render({"grafanaDashboard": {"enabled": True, "namespace": "monitoring",
                                        "annotations": {"grafana_folder": "Network"}}})
    [cm] = by_kind(docs, "ConfigMap")
    assert cm["metadata"]["namespace"] == "monitoring"
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["metadata"]["annotations"] == {"grafana_folder": "Network"}
    assert json.loads(cm["data"]["dx-macsec-operator.json"]) == json.loads(DASHBOARD.read_text())
