"""The Helm chart and deploy/: lint, render, schema, Kubernetes validation, and agreement
with crds/ and with each other. Run by scripts/test (pytest in target/py)."""

import copy
import json
import pathlib
import subprocess

import helm_python as helm
import kubernetes_validate
import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "dx-macsec-operator"
NAME = NAMESPACE = "dx-macsec-operator"
# Kinds that need the Prometheus Operator's CRDs: kubernetes-validate has no schema for them.
CUSTOM = {"ServiceMonitor", "PrometheusRule"}

NON_DEFAULT = {
    "replicaCount": 3,
    "image": {"repository": "registry.example.com/dxm", "tag": "9.9.9", "pullPolicy": "Always",
              "digest": "sha256:" + "ab" * 32},
    "commonLabels": {"cost-center": "net-42"},
    "podSecurityContext": {"runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001, "fsGroup": 10001,
                           "seccompProfile": {"type": "RuntimeDefault"}},
    "containerSecurityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                 "capabilities": {"drop": ["ALL"]}, "runAsUser": 10001},
    "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"cpu": 1, "memory": "512Mi"}},
    "podAntiAffinity": "required",
    "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
                                   "whenUnsatisfiable": "ScheduleAnyway"}],
    "imagePullSecrets": [{"name": "pull"}],
    "aws": {"region": "eu-west-1", "endpointUrl": "http://dx-sim.test:4599", "timeout": "1m"},
    "clusterName": "prod-eu-1",
    "watchNamespaces": ["network", "network-lab"],
    "watchSecrets": True,
    "access": {"defaultNamespaces": ["network", "network-lab"]},
    "rbac": {"aggregateToDefaultRoles": False},
    "operator": {"logFormat": "text", "logLevel": "debug", "resync": "10m", "requeue": "5s",
                 "observationMaxAge": "1m", "leaderElection": False, "concurrency": 64,
                 "describeRereadsPerSecond": 2.5, "leaseDuration": "30s", "leaseRenew": "10s"},
    "extraArgs": ["--aws-timeout", "45s"],
    "serviceAccount": {"create": True, "name": "dxm", "annotations": {"eks.amazonaws.com/role-arn": "arn:aws:iam::123456789012:role/dxm"}},
    "podAnnotations": {"a": "b"},
    "podLabels": {"team": "network"},
    "nodeSelector": {"kubernetes.io/os": "linux"},
    "tolerations": [{"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"}],
    "priorityClassName": "system-cluster-critical",
    "hostNetwork": True,
    "extraEnv": [{"name": "RUST_LOG", "value": "debug"}],
    "podDisruptionBudget": {"enabled": True, "minAvailable": 1},
    "serviceMonitor": {"enabled": True, "labels": {"release": "prom"}, "namespace": "monitoring", "scrapeTimeout": "10s",
                       "relabelings": [{"action": "replace", "sourceLabels": ["__meta_kubernetes_pod_node_name"],
                                        "targetLabel": "node"}],
                       "metricRelabelings": [{"action": "drop", "regex": "dxmacsec_build_info",
                                              "sourceLabels": ["__name__"]}]},
    "prometheusRule": {"enabled": True, "notReadyFor": "1h", "absentFor": "10m", "throttledRatio": 0.25},
    "grafanaDashboard": {"enabled": True, "namespace": "monitoring", "labels": {"dashboards": "network"}},
}


def render(values=None):
    with helm.Chart.load(str(CHART)) as chart:
        out = chart.render(values or {}, name=NAME, namespace=NAMESPACE)
    docs = []
    for path, text in sorted(out.items()):
        if path.endswith("NOTES.txt"):
            continue
        docs.extend(d for d in yaml.safe_load_all(text) if d)
    return docs


def by_kind(docs, kind):
    return [d for d in docs if d["kind"] == kind]


def test_lint_has_no_errors():
    result = helm.lint(str(CHART), strict=True)
    assert result["errors"] == [], result
    # Only informational findings remain.
    assert all(m["severity"] <= 1 for m in result["messages"]), result


@pytest.mark.parametrize("values", [None, NON_DEFAULT], ids=["default", "non-default"])
@pytest.mark.parametrize("version", ["1.30.0", "1.37.0"])
def test_every_object_is_valid_kubernetes(values, version):
    docs = render(values)
    assert docs
    for d in docs:
        if d["kind"] in CUSTOM:
            continue
        kubernetes_validate.validate(d, version, strict=True)


def test_non_default_values_reach_the_objects():
    docs = render(NON_DEFAULT)
    dep = by_kind(docs, "Deployment")[0]
    pod = dep["spec"]["template"]["spec"]
    c = pod["containers"][0]
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert dep["spec"]["replicas"] == 3
    assert c["image"] == "registry.example.com/dxm@sha256:" + "ab" * 32, "the digest wins over the tag"
    assert all(d["metadata"]["labels"]["cost-center"] == "net-42" for d in docs if d["kind"] != "CustomResourceDefinition")
    assert pod["securityContext"]["fsGroup"] == 10001 and c["securityContext"]["runAsUser"] == 10001
    assert c["resources"]["limits"] == {"cpu": 1, "memory": "512Mi"}
    anti = pod["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][0]
    assert anti["topologyKey"] == "kubernetes.io/hostname"
    assert anti["labelSelector"]["matchLabels"] == dep["spec"]["selector"]["matchLabels"]
    [spread] = pod["topologySpreadConstraints"]
    assert spread["topologyKey"] == "topology.kubernetes.io/zone"
    assert spread["labelSelector"]["matchLabels"] == dep["spec"]["selector"]["matchLabels"], "defaults to the chart's pods"
    assert by_kind(docs, "PodDisruptionBudget")[0]["spec"] == {
        "minAvailable": 1, "selector": {"matchLabels": dep["spec"]["selector"]["matchLabels"]}}
    assert env["AWS_REGION"] == "eu-west-1" and env["AWS_ENDPOINT_URL"] == "http://dx-sim.test:4599"
    assert env["DXM_LEADER_ELECTION"] == "false" and env["DXM_RESYNC"] == "10m" and env["RUST_LOG"] == "debug"
    assert (env["DXM_CONCURRENCY"], env["DXM_DESCRIBE_REREADS_PER_SECOND"], env["DXM_AWS_TIMEOUT"]) == ("64", "2.5", "1m")
    assert (env["DXM_LEASE_DURATION"], env["DXM_LEASE_RENEW"]) == ("30s", "10s")
    assert env["DXM_DEFAULT_ACCESS_NAMESPACES"] == "network,network-lab"
    assert env["DXM_CLUSTER_NAME"] == "prod-eu-1"
    assert env["DXM_WATCH_NAMESPACES"] == "network,network-lab"
    # Namespaced mode: Roles in the watched namespaces; cluster-wide only read-only DxAccess
    # and the kube-system namespace, never Secrets.
    [cluster] = by_kind(docs, "ClusterRole")
    assert {r for rule in cluster["rules"] for r in rule["resources"]} == {"dxaccesses", "namespaces"}
    roles = {(r["metadata"]["namespace"], r["metadata"]["name"]): r for r in by_kind(docs, "Role")}
    assert set(roles) == {("network", NAME), ("network-lab", NAME)}
    # watchSecrets: list and watch on Secrets for the metadata-only watch, and the operator told so.
    assert {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "list", "watch"]} in roles[("network", NAME)]["rules"]
    assert env["DXM_WATCH_SECRETS"] == "true"
    bindings = [b for b in by_kind(docs, "RoleBinding") if b["metadata"]["namespace"] in ("network", "network-lab")]
    assert all(b["subjects"][0] == {"kind": "ServiceAccount", "name": "dxm", "namespace": NAMESPACE} for b in bindings)
    assert len(bindings) == 2
    assert [r["metadata"]["name"] for r in by_kind(docs, "ClusterRole")] == [NAME], "no aggregated roles"
    assert c["args"] == ["run", "--aws-timeout", "45s"]
    assert pod["serviceAccountName"] == "dxm"
    assert pod["tolerations"][0]["key"] == "dedicated"
    assert pod["hostNetwork"] is True and pod["dnsPolicy"] == "ClusterFirstWithHostNet"
    assert dep["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 0, "maxUnavailable": 1}
    sa = by_kind(docs, "ServiceAccount")[0]
    assert sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].endswith(":role/dxm")
    assert not [r for r in by_kind(docs, "Role") if r["metadata"]["namespace"] == NAMESPACE], "no Lease RBAC without leader election"
    sm = by_kind(docs, "ServiceMonitor")[0]
    assert sm["metadata"]["labels"]["release"] == "prom" and sm["metadata"]["namespace"] == "monitoring"
    assert sm["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}, "it still finds the release's Service"
    [endpoint] = sm["spec"]["endpoints"]
    assert endpoint["scrapeTimeout"] == "10s" and endpoint["relabelings"][0]["targetLabel"] == "node"
    assert endpoint["metricRelabelings"][0]["action"] == "drop"
    rules = by_kind(docs, "PrometheusRule")[0]["spec"]["groups"][0]["rules"]
    alerts = {r["alert"]: r for r in rules}
    assert alerts["DxMacsecEncryptionDownUnderMustEncrypt"]["expr"] == 'dxmacsec_port_encryption_up{encryption_mode="must_encrypt"} == 0'
    assert alerts["DxMacsecNotReady"]["for"] == "1h"
    assert set(alerts) == {"DxMacsecEncryptionDownUnderMustEncrypt", "DxMacsecKeyStuckAssociating", "DxMacsecReconcileErrors",
                           "DxMacsecNotReady", "DxMacsecOperatorAbsent", "DxMacsecNoLeader", "DxMacsecAwsThrottled",
                           "DxMacsecKeychainFull", "DxMacsecKeyOlderThanRotationPeriod",
                           "DxMacsecRotationWaitingForRouter", "DxMacsecRotationOverdue"}
    assert alerts["DxMacsecOperatorAbsent"]["for"] == "10m"
    assert alerts["DxMacsecAwsThrottled"]["expr"].endswith("> 0.25")
    cm = by_kind(docs, "ConfigMap")[0]
    assert cm["metadata"]["namespace"] == "monitoring" and cm["metadata"]["labels"]["dashboards"] == "network"


def test_default_render_is_restricted_and_least_privilege():
    docs = render()
    pod = by_kind(docs, "Deployment")[0]["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert "hostNetwork" not in pod, "the pod network unless asked"
    anti = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0]["podAffinityTerm"]
    assert anti["topologyKey"] == "kubernetes.io/hostname", "replicas preferably on different nodes"
    assert "topologySpreadConstraints" not in pod
    assert by_kind(docs, "PodDisruptionBudget")[0]["spec"]["maxUnavailable"] == 1
    sc = pod["containers"][0]["securityContext"]
    assert sc == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]}}
    env = {e["name"]: e for e in pod["containers"][0]["env"]}
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert {p["httpGet"]["path"] for p in [pod["containers"][0]["livenessProbe"], pod["containers"][0]["readinessProbe"]]} == {"/healthz", "/readyz"}
    # The operator's own namespace only (the binary's default), not every namespace.
    assert "DXM_DEFAULT_ACCESS_NAMESPACES" not in env, "own namespace only by default"
    assert "DXM_CLUSTER_NAME" not in env, "the kube-system UID by default"
    roles = {r["metadata"]["name"]: r for r in by_kind(docs, "ClusterRole")}
    rules = roles[NAME]["rules"]
    secrets = [r for r in rules if "secrets" in r["resources"]]
    assert secrets == [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}], "Secrets: get only"
    assert env["DXM_WATCH_SECRETS"]["value"] == "false"
    granted = {(g, r) for rule in rules for g in rule["apiGroups"] for r in rule["resources"]}
    assert granted == {
        ("dxmacsec.io", "dxconnections"), ("dxmacsec.io", "macseckeys"),
        ("dxmacsec.io", "dxconnections/status"), ("dxmacsec.io", "macseckeys/status"),
        ("dxmacsec.io", "dxconnections/finalizers"), ("dxmacsec.io", "macseckeys/finalizers"),
        ("", "secrets"), ("events.k8s.io", "events"), ("dxmacsec.io", "dxaccesses"),
        ("", "namespaces"),
    }
    assert [r for r in rules if "namespaces" in r["resources"]] == [
        {"apiGroups": [""], "resources": ["namespaces"], "resourceNames": ["kube-system"], "verbs": ["get"]}]
    access = [r for r in rules if "dxaccesses" in r["resources"]]
    assert access == [{"apiGroups": ["dxmacsec.io"], "resources": ["dxaccesses"], "verbs": ["get", "list", "watch"]}]
    # Namespace users write their DxConnections and MacSecKeys through the built-in roles,
    # and no built-in role reaches DxAccess.
    edit, view = roles[f"{NAME}-edit"], roles[f"{NAME}-view"]
    assert edit["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-edit"] == "true"
    assert view["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-view"] == "true"
    assert "create" in edit["rules"][0]["verbs"] and view["rules"][0]["verbs"] == ["get", "list", "watch"]
    for role in (edit, view):
        assert all(set(r["resources"]) == {"dxconnections", "macseckeys"} for r in role["rules"])
    lease = by_kind(docs, "Role")[0]["rules"]
    assert lease == [{"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["get", "create", "update"]}]


def test_key_generation_is_opt_in_and_grants_only_what_it_needs():
    """keyGeneration.enabled adds create and delete on Secrets and MacSecKeys (no list, no
    update, nothing else), in a Role per watched namespace when namespaced, and the router's
    ClusterRole; the default render has none of it."""
    def rules_of(docs, kind, name):
        return [r for d in by_kind(docs, kind) if d["metadata"]["name"] == name for r in d["rules"]]

    default = render()
    assert not [r for r in rules_of(default, "ClusterRole", NAME) if "delete" in r["verbs"]
                or ("create" in r["verbs"] and r["resources"] != ["events"])]
    assert f"{NAME}-router" not in {r["metadata"]["name"] for r in by_kind(default, "ClusterRole")}

    docs = render({"keyGeneration": {"enabled": True}})
    added = [r for r in rules_of(docs, "ClusterRole", NAME) if r not in rules_of(default, "ClusterRole", NAME)]
    assert added == [
        {"apiGroups": [""], "resources": ["secrets"], "verbs": ["create", "delete"]},
        {"apiGroups": ["dxmacsec.io"], "resources": ["macseckeys"], "verbs": ["create", "delete"]},
    ]
    router = rules_of(docs, "ClusterRole", f"{NAME}-router")
    assert router == [
        {"apiGroups": ["dxmacsec.io"], "resources": ["dxconnections"], "verbs": ["get", "list", "watch"]},
        {"apiGroups": ["dxmacsec.io"], "resources": ["dxconnections/status"], "verbs": ["get", "patch"]},
    ], "the router may confirm through the status and edit no spec"

    namespaced = render({"keyGeneration": {"enabled": True}, "watchNamespaces": ["network"]})
    [cluster] = [d for d in by_kind(namespaced, "ClusterRole") if d["metadata"]["name"] == NAME]
    assert not [r for r in cluster["rules"] if "delete" in r["verbs"]], "never cluster-wide when namespaced"
    [role] = [d for d in by_kind(namespaced, "Role") if d["metadata"].get("namespace") == "network"]
    assert {"apiGroups": [""], "resources": ["secrets"], "verbs": ["create", "delete"]} in role["rules"]


@pytest.mark.parametrize("bad", [
    {"keyGeneration": {"enabled": "yes"}},
    {"prometheusRule": {"routerConfirmationFor": "an hour"}},
    {"replicaCount": 0},
    {"operator": {"logFormat": "xml"}},
    {"operator": {"resync": "five minutes"}},
    {"aws": {"region": "US-EAST"}},
    {"image": {"pullPolicy": "Sometimes"}},
    {"serviceMonitor": {"enabled": "yes"}},
    {"hostNetwork": "yes"},
    {"prometheusRule": {"throttledRatio": 2}},
    {"operator": {"concurrency": 0}},
    {"operator": {"describeRereadsPerSecond": 0}},
    {"operator": {"leaseDuration": "15"}},
    {"aws": {"timeout": 30}},
    {"extraArgs": "--aws-timeout 1m"},
    {"resources": {"foo": "bar"}},
    {"resources": {"limits": {"memory": "lots"}}},
    {"affinity": {"nodeAfinity": {}}},
    {"tolerations": [{"key": "a", "operator": "Maybe"}]},
    {"topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "zone"}]},
    {"podAntiAffinity": "soft"},
    {"image": {"repository": "r", "digest": "latest"}},
    {"commonLabels": {"a": 1}},
    {"podDisruptionBudget": {"minAvailable": "half"}},
    {"serviceMonitor": {"relabelings": [{"action": "drop", "sourceLabel": "x"}]}},
    {"containerSecurityContext": {"capabilities": {"drop": "ALL"}}},
    {"prometheusRule": {"absentFor": "soon"}},
    {"prometheusRule": {"keyMaxAgeDays": "1y"}},
    {"grafanaDashboard": {"enabled": "true"}},
    {"access": {"defaultNamespaces": "*"}},
    {"access": {"defaultNamespaces": ""}},
    {"clusterName": "has spaces"},
    {"watchNamespaces": "network"},
    {"access": {"defaultNamespaces": ["Net Prod"]}},
    {"unknownTopLevel": 1},
])
def test_schema_rejects_bad_values(bad):
    with pytest.raises(helm.HelmError):
        render(bad)


def test_chart_crds_equal_crds_dir():
    assert (CHART / "crds" / "dxmacsec.io.yaml").read_text() == (ROOT / "crds" / "dxmacsec.io.yaml").read_text()
    with helm.Chart.load(str(CHART)) as chart:
        assert len(chart.crds) == 1


def substance(docs):
    """What must agree between deploy/ and the chart: names, specs and rules, not the
    chart-only labels (helm.sh/chart, version, managed-by)."""
    out = {}
    for d in docs:
        if d["kind"] in {"CustomResourceDefinition", "Namespace"}:
            continue
        d = copy.deepcopy(d)
        meta = d.get("metadata", {})
        labels = meta.get("labels", {})
        for k in ["helm.sh/chart", "app.kubernetes.io/version", "app.kubernetes.io/managed-by"]:
            labels.pop(k, None)
        meta.pop("annotations", None)
        if d["kind"] == "Deployment":
            c = d["spec"]["template"]["spec"]["containers"][0]
            c.pop("image", None)
            c.pop("imagePullPolicy", None)
        out[(d["kind"], meta["name"])] = d
    return out


def test_kustomize_matches_the_default_render():
    text = subprocess.run(["kubectl", "kustomize", str(ROOT / "deploy")], check=True, capture_output=True, text=True).stdout
    plain = substance([d for d in yaml.safe_load_all(text) if d])
    chart = substance(render())
    assert sorted(plain) == sorted(chart)
    for key in chart:
        assert plain[key] == chart[key], f"{key} differs:\n{json.dumps(plain[key], indent=1)}\n{json.dumps(chart[key], indent=1)}"


def test_every_value_is_documented_in_the_chart_readme():
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    readme = (CHART / "README.md").read_text()
    groups = {"image", "aws", "access", "keyGeneration", "rbac", "operator", "serviceAccount", "service", "podDisruptionBudget",
              "serviceMonitor", "prometheusRule", "grafanaDashboard"}
    paths = [f"{k}.{c}" for k in groups for c in values[k]] + [k for k in values if k not in groups]
    missing = [p for p in paths if f"`{p}`" not in readme]
    assert not missing, f"values without a row in the chart README: {missing}"


def test_deploy_key_generation_rbac_matches_the_chart():
    """deploy/key-generation-rbac.yaml grants what keyGeneration.enabled adds to the chart."""
    plain = {d["metadata"]["name"]: d for d in yaml.safe_load_all((ROOT / "deploy" / "key-generation-rbac.yaml").read_text())
             if d and d["kind"] == "ClusterRole"}
    default = render()
    docs = render({"keyGeneration": {"enabled": True}})
    [base] = [d for d in by_kind(default, "ClusterRole") if d["metadata"]["name"] == NAME]
    [full] = [d for d in by_kind(docs, "ClusterRole") if d["metadata"]["name"] == NAME]
    added = [r for r in full["rules"] if r not in base["rules"]]
    assert plain["dx-macsec-operator-key-generation"]["rules"] == added
    [router] = [d for d in by_kind(docs, "ClusterRole") if d["metadata"]["name"] == f"{NAME}-router"]
    assert plain["dx-macsec-operator-router"]["rules"] == router["rules"]
