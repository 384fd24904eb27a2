"""Prints how the Helm chart's default render runs the operator's container, as JSON, so the
end-to-end tests can run the image under Docker exactly so: the user and group, a read-only
root filesystem, the dropped capabilities, no privilege escalation, the seccomp profile, the
args and the literal environment (fieldRef variables are left to the caller).
Usage: container.py"""

import json
import pathlib

import helm_python as helm
import yaml

CHART = pathlib.Path(__file__).resolve().parents[2] / "charts" / "dx-macsec-operator"

with helm.Chart.load(str(CHART)) as chart:
    out = chart.render({}, name="dx-macsec-operator", namespace="dx-macsec-operator")
deployment = next(
    d
    for path, text in out.items()
    if path.endswith("deployment.yaml")
    for d in yaml.safe_load_all(text)
    if d and d.get("kind") == "Deployment"
)
pod = deployment["spec"]["template"]["spec"]
(container,) = pod["containers"]
pod_sc = pod.get("securityContext", {})
sc = container.get("securityContext", {})
flags = [f"--user={pod_sc['runAsUser']}:{pod_sc['runAsGroup']}"]
if sc.get("readOnlyRootFilesystem"):
    flags.append("--read-only")
for cap in sc.get("capabilities", {}).get("drop", []):
    flags.append(f"--cap-drop={cap}")
if sc.get("allowPrivilegeEscalation") is False:
    flags.append("--security-opt=no-new-privileges")
# RuntimeDefault is Docker's default seccomp profile too.
assert pod_sc.get("seccompProfile", {}).get("type") == "RuntimeDefault"
env = {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}
print(json.dumps({"flags": flags, "args": container.get("args", []), "env": env}))
