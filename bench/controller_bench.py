"""Benchmark of the controller (`dx-macsec-operator run`) at scale, through the real
kube-apiserver of scripts/with-cluster, against dx-sim.

Same workload as apply_bench.py. Per N: a fresh dx-sim at rate limit R, N + N/10
DxConnections applied with kubectl, then one operator process started (release build, the
chart's RBAC through its ServiceAccount token, resync 30 s). Measures the time from the
operator's start to every resource converged on the emulator (over the floor), every AWS
call it took, the Describe
calls of one steady-state resync, the time from a spec change to the first AWS call for that
resource, and the operator's peak RSS (VmHWM) and CPU seconds (/proc).

Usage (with the cluster's environment): python3 bench/controller_bench.py [--sizes ...] [--rate 100]
"""

import os
import subprocess
import time

from apply_bench import MUTATING, SIM, OPERATOR, add_latency, describes, get, manifests, run_sizes, seed

RESYNC_S = 30


def kubectl(*args, stdin=None):
    return subprocess.run(["kubectl", *args], input=stdin, capture_output=True, text=True,
                          env=dict(os.environ, KUBECONFIG=os.environ["E2E_ADMIN_KUBECONFIG"]), check=True)


def proc_figures(pid):
    hwm = 0
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmHWM"):
            hwm = int(line.split()[1]) / 1024
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(fields[11]) + int(fields[12])) / ticks
    return round(hwm, 1), round(cpu, 2)


# Verbs that change something on the API server.
WRITES = {"POST", "PUT", "PATCH", "DELETE", "APPLY"}


def api_requests():
    """apiserver_request_total by (verb, resource[/subresource]) from the harness's
    kube-apiserver, summed over codes and scopes."""
    out = kubectl("get", "--raw", "/metrics").stdout
    totals = {}
    for line in out.splitlines():
        if not line.startswith("apiserver_request_total{"):
            continue
        labels_text, value = line[len("apiserver_request_total{"):].rsplit("} ", 1)
        labels = dict(part.split("=", 1) for part in labels_text.split('",') if "=" in part)
        labels = {k: v.strip('"') for k, v in labels.items()}
        resource = labels.get("resource", "")
        if labels.get("subresource"):
            resource += "/" + labels["subresource"]
        key = (labels.get("verb", ""), resource)
        totals[key] = totals.get(key, 0) + float(value)
    return totals


# What the operator reads or writes (leases only with leader election, which the benchmark
# turns off: the Lease writes the API server serves meanwhile are its own identity Lease,
# renewed every 10 s, and are left out).
OPERATOR_RESOURCES = {"dxconnections", "macseckeys", "dxaccesses", "secrets", "events"}


def api_share(before, after):
    """The requests on the operator's resources between two api_requests() readings, by
    "VERB resource[/subresource]"."""
    share = {}
    for key, value in after.items():
        moved = value - before.get(key, 0)
        if moved >= 1 and key[1].split("/")[0] in OPERATOR_RESOURCES:
            share[f"{key[0]} {key[1]}"] = int(moved)
    return dict(sorted(share.items()))


def converged(endpoint, ids):
    state = get(endpoint, "/_sim/state")
    modes = {c["connectionId"]: c.get("encryptionMode") for c in state["connections"]}
    modes.update({l["lagId"]: l.get("encryptionMode") for l in state["lags"]})
    return all(modes.get(i) == "must_encrypt" for i in ids)


def grant_secret_watch():
    """Applies the chart's RBAC as rendered with watchSecrets: true (list and watch on
    Secrets) over the harness's default one; the Deployment is left out."""
    rendered = subprocess.run(
        [os.environ["E2E_PYTHON"], "tests/chart/render.py", "--namespace", "dx-macsec-operator",
         "--values", '{"watchSecrets": true}', "--skip-kind", "Deployment"],
        capture_output=True, text=True, check=True).stdout
    kubectl("apply", "--server-side", "--force-conflicts", "-f", "-", stdin=rendered)


def operator_env(endpoint):
    return dict(os.environ, KUBECONFIG=os.environ["E2E_OPERATOR_KUBECONFIG"], AWS_ACCESS_KEY_ID="bench",
                AWS_SECRET_ACCESS_KEY="bench", AWS_REGION="us-east-1", AWS_EC2_METADATA_DISABLED="true",
                AWS_ENDPOINT_URL=endpoint, DXM_RESYNC=f"{RESYNC_S}s", DXM_REQUEUE="2s",
                DXM_OBSERVATION_MAX_AGE=f"{RESYNC_S}s", DXM_LEADER_ELECTION="false", DXM_LOG_LEVEL="warn",
                # The chart's watchSecrets: true (list/watch on Secrets), so that a steady
                # resync can read no Secret; without it each MacSecKey reads its Secret once
                # per resync.
                DXM_WATCH_SECRETS="true",
                # A cluster of the benchmark alone: its namespaces may use the operator's credentials.
                DXM_DEFAULT_ACCESS_NAMESPACES="*")


SM_CONNECTIONS = 200
CREATE_SECRET = """
import boto3, json, sys
sm = boto3.client("secretsmanager", endpoint_url=sys.argv[1], region_name="us-east-1",
                  aws_access_key_id="bench", aws_secret_access_key="bench")
sm.create_secret(Name="bench/k1", SecretString=json.dumps({"ckn": sys.argv[2], "cak": sys.argv[3]}))
"""


def secrets_manager_key(rate, workdir):
    """SM_CONNECTIONS DxConnections sharing one MacSecKey from Secrets Manager, converged by
    the controller: the Secrets Manager calls that took (one look per key per change is the
    aim, not one per DxConnection), and the Direct Connect calls throttled meanwhile."""
    from apply_bench import CAK, CKN
    n, ns = SM_CONNECTIONS, "bench-sm"
    seed_file = workdir / "seed-sm.yaml"
    seed_file.write_text(seed(n, 0, rate))
    ids = [f"dxcon-gen{i:05}" for i in range(n)]
    docs = ["apiVersion: dxmacsec.io/v1alpha1\nkind: MacSecKey\n"
            f"metadata: {{name: k1, namespace: {ns}}}\n"
            "spec: {secretsManager: {secretId: bench/k1, region: us-east-1}}\n"]
    docs += ["apiVersion: dxmacsec.io/v1alpha1\nkind: DxConnection\n"
             f"metadata: {{name: c{i}, namespace: {ns}}}\n"
             f"spec: {{connectionId: {cid}, region: us-east-1, encryptionMode: must_encrypt, keys: [{{name: k1}}]}}\n"
             for i, cid in enumerate(ids)]
    sim = subprocess.Popen([str(SIM), "--seed", str(seed_file), "--listen", "127.0.0.1:0"],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    endpoint = sim.stdout.readline().strip().rsplit(" ", 1)[-1]
    subprocess.run([os.environ["E2E_PYTHON"], "-c", CREATE_SECRET, endpoint, CKN, CAK], check=True)
    op = None
    try:
        kubectl("create", "namespace", ns)
        kubectl("apply", "--server-side", "-f", "-", stdin="---\n".join(docs))
        started = time.monotonic()
        op = subprocess.Popen([str(OPERATOR), "run", "--http-addr", "127.0.0.1:0"], env=operator_env(endpoint),
                              stdout=subprocess.DEVNULL, stderr=open(workdir / "operator-sm.log", "w"))
        while not converged(endpoint, ids):
            if time.monotonic() - started > 900:
                raise SystemExit("Secrets Manager key: not converged in 15 min")
            time.sleep(0.5)
        wall = time.monotonic() - started
        calls = [c for c in get(endpoint, "/_sim/calls")["calls"] if c["operation"] != "CreateSecret"]
        count = lambda op, outcome=None: sum(
            1 for c in calls if c["operation"] == op and (outcome is None or c["outcome"] == outcome))
        return {
            "connections": n, "wall_s": round(wall, 2),
            "describe_secret": count("DescribeSecret"), "get_secret_value": count("GetSecretValue"),
            "throttled_associate": count("AssociateMacSecKey", "ThrottlingException"),
            "throttled_tag": count("TagResource", "ThrottlingException"),
        }
    finally:
        teardown(ns, op, sim)


def run_one(n, rate, workdir, latency_ms=0):
    lags = max(1, n // 10)
    ns = f"bench-{n}-{latency_ms}"
    seed_file = workdir / f"seed-{n}.yaml"
    seed_file.write_text(seed(n, lags, rate))
    text, resources = manifests(n, lags)
    manifest_file = workdir / f"manifests-{n}.yaml"
    manifest_file.write_text(text.replace("namespace: bench", f"namespace: {ns}"))
    ids = [f"dxcon-gen{i:05}" for i in range(n)] + [f"dxlag-gen{i:05}" for i in range(lags)]

    grant_secret_watch()
    sim = subprocess.Popen([str(SIM), "--seed", str(seed_file), "--listen", "127.0.0.1:0"],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    endpoint = sim.stdout.readline().strip().rsplit(" ", 1)[-1]
    sim_ready = time.monotonic()
    add_latency(endpoint, latency_ms)
    env = operator_env(endpoint)
    log = open(workdir / f"operator-{n}.log", "w")
    op = None
    try:
        # Every object is in place before the operator starts, as every resource is in
        # `apply`'s files: kubectl creates them one request at a time (2,200 objects take
        # 20 to 60 s on a 2-core machine), which would otherwise bound the time measured.
        kubectl("create", "namespace", ns)
        t = time.monotonic()
        kubectl("apply", "--server-side", "-f", str(manifest_file))
        create_s = time.monotonic() - t
        started = time.monotonic()
        op = subprocess.Popen([str(OPERATOR), "run", "--http-addr", "127.0.0.1:0"], env=env,
                              stdout=subprocess.DEVNULL, stderr=log)
        while not converged(endpoint, ids):
            if time.monotonic() - started > 1800:
                raise SystemExit(f"N={n}: not converged in 30 min")
            time.sleep(0.5)
        wall = time.monotonic() - started
        calls = get(endpoint, "/_sim/calls")["calls"]
        ok = [c for c in calls if c["outcome"] == "ok"]
        mutating = [c for c in ok if c["operation"] in MUTATING]
        throttled = sum(1 for c in calls if c["outcome"] == "ThrottlingException")
        by_operation = {}
        for c in ok:
            by_operation[c["operation"]] = by_operation.get(c["operation"], 0) + 1

        # Steady state: the Describe calls and the API server's requests of one resync
        # window, once everything settled (statuses written, finalizers added).
        time.sleep(RESYNC_S / 2)
        before = len(get(endpoint, "/_sim/calls")["calls"])
        api_before = api_requests()
        time.sleep(RESYNC_S + 5)
        share = api_share(api_before, api_requests())
        window = get(endpoint, "/_sim/calls")["calls"][before:]
        resync_describes = sum(1 for c in window if c["operation"].startswith("Describe"))
        resync_mutations = sum(1 for c in window if c["operation"] in MUTATING)

        # Spec change to first AWS call for that resource.
        t_change = time.monotonic()
        kubectl("patch", "dxc", "c0", "-n", ns, "--type", "merge", "-p", '{"spec":{"encryptionMode":"should_encrypt"}}')
        change_ms = None
        while time.monotonic() - t_change < 30:
            for c in get(endpoint, "/_sim/calls")["calls"][before:]:
                if c.get("target") == ids[0] and c["operation"] in MUTATING:
                    change_ms = round(c["atMs"] - (t_change - sim_ready) * 1000)
                    break
            if change_ms is not None:
                break
            time.sleep(0.05)
        rss, cpu = proc_figures(op.pid)
        floor = len(mutating) / rate
        return {
            "n": n, "lags": lags, "resources": resources, "rate": rate, "latency_ms": latency_ms,
            "describes_to_converge": describes(calls),
            "create_s": round(create_s, 1), "wall_s": round(wall, 2), "mutating": len(mutating), "expected_mutating": 4 * resources,
            "calls_ok": len(ok), "calls_by_operation": dict(sorted(by_operation.items())), "throttled": throttled, "floor_s": round(floor, 2),
            "time_over_floor": round(wall / floor, 2),
            "resync_describes": resync_describes, "resync_describes_per_n": round(resync_describes / resources, 4),
            "resync_mutations": resync_mutations,
            "peak_rss_mib": rss, "cpu_s": cpu, "change_to_call_ms": change_ms,
            "resync_api": share,
            "resync_api_writes": sum(v for k, v in share.items() if k.split()[0] in WRITES),
            "resync_secret_reads": sum(v for k, v in share.items() if k.split()[1] == "secrets"),
        }
    finally:
        teardown(ns, op, sim)


def teardown(ns, op, sim):
    """Lets the operator drop its finalizers in `ns` (deletionPolicy Retain), then stops it
    and the emulator."""
    subprocess.run(["kubectl", "delete", "dxc,mskey", "--all", "-n", ns, "--timeout=120s"],
                   env=dict(os.environ, KUBECONFIG=os.environ["E2E_ADMIN_KUBECONFIG"]), capture_output=True)
    if op is not None:
        op.terminate()
        op.wait()
    sim.terminate()
    sim.wait()


def main():
    run_sizes(run_one, "bench-controller.json", latency_axis=True)
    import pathlib
    import json
    import tempfile
    from apply_bench import ROOT
    with tempfile.TemporaryDirectory() as d:
        r = secrets_manager_key(100, pathlib.Path(d))
    print(json.dumps(r), flush=True)
    (ROOT / "target" / "bench-secrets-manager.json").write_text(json.dumps(r))


if __name__ == "__main__":
    main()
