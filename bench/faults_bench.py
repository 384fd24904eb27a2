"""Reliability under faults: what the operator costs and risks when AWS misbehaves or the
operator dies mid-way. Figures for docs/benchmarks.md, next to the speed figures.

1. The storm: 100 resources (90 connections, 10 LAGs of 2 members) from no_encrypt to
   must_encrypt with one key while every call takes 500 ms more, half are throttled and the
   first 20 fail with DirectConnectServerException, through `apply` and through the
   controller (`run`, real kube-apiserver of scripts/with-cluster, resync 30 s).
2. Kills: `apply` killed (SIGKILL) right after each mutating call of enabling (4), rotating (2)
   and disabling (2) one connection, and run again each time.

Each reports the faults injected, the time to converge, associations made per resource (1 is
right; more is a duplicate) and dx-sim's down and clear-text seconds (/_sim/outages).

Usage (with the cluster's environment for the controller part): python3 bench/faults_bench.py
"""

import json
import os
import signal
import subprocess
import tempfile
import time
import pathlib

from apply_bench import MUTATING, OPERATOR, ROOT, SIM, get, post
from controller_bench import converged, kubectl, teardown

CKN_A = "aa" * 32
CAK_A = "a1" * 32
CKN_B = "bb" * 32
CAK_B = "b2" * 32
STORM = [
    # The burst first: a call both would fail answers with the first fault that hits.
    {"operation": "*", "error": "DirectConnectServerException", "count": 20},
    {"operation": "*", "error": "ThrottlingException", "rate": 0.5},
    {"operation": "*", "latencyMs": 500},
]
AWS_ENV = dict(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_REGION="us-east-1",
               AWS_EC2_METADATA_DISABLED="true")


def start_sim(seed_text, workdir):
    seed_file = workdir / f"seed-{time.monotonic_ns()}.yaml"
    seed_file.write_text(seed_text)
    sim = subprocess.Popen([str(SIM), "--seed", str(seed_file), "--listen", "127.0.0.1:0"],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    return sim, sim.stdout.readline().strip().rsplit(" ", 1)[-1]


def key(name, ckn, cak, namespace):
    return (f"apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: {namespace}, labels: {{dxmacsec.io/key-material: \"true\"}}}}\n"
            f"stringData: {{ckn: \"{ckn}\", cak: \"{cak}\"}}\n---\n"
            f"apiVersion: dxmacsec.io/v1alpha1\nkind: MacSecKey\nmetadata: {{name: {name}, namespace: {namespace}, labels: {{dxmacsec.io/key-material: \"true\"}}}}\n"
            f"spec: {{secretRef: {{name: {name}}}}}\n---\n")


def dxc(name, cid, mode, keys, namespace, extra=""):
    refs = ", ".join(f"{{name: {k}}}" for k in keys)
    return (f"apiVersion: dxmacsec.io/v1alpha1\nkind: DxConnection\nmetadata: {{name: {name}, namespace: {namespace}, labels: {{dxmacsec.io/key-material: \"true\"}}}}\n"
            f"spec: {{connectionId: {cid}, region: us-east-1, encryptionMode: {mode}, keys: [{refs}]{extra}}}\n---\n")


def storm_workload(namespace):
    ids = [f"dxcon-gen{i:05}" for i in range(90)] + [f"dxlag-gen{i:05}" for i in range(10)]
    seed = ("delays: { associateMs: 0, disassociateMs: 0 }\n"
            f"generate: {{ connections: 90, lags: 10, membersPerLag: 2, encryptionMode: no_encrypt, routerCkns: [\"{CKN_A}\"] }}\n")
    text = key("k", CKN_A, CAK_A, namespace) + "".join(
        dxc(f"r{i}", cid, "must_encrypt", ["k"], namespace) for i, cid in enumerate(ids))
    return ids, seed, text


def storm_figures(variant, endpoint, ids, wall):
    calls = get(endpoint, "/_sim/calls")["calls"]
    outages = get(endpoint, "/_sim/outages")
    assoc = {}
    for c in calls:
        if c["operation"] == "AssociateMacSecKey" and c["outcome"] == "ok":
            assoc[c["target"]] = assoc.get(c["target"], 0) + 1
    return {
        "variant": variant, "resources": len(ids), "wall_s": round(wall, 1), "calls": len(calls),
        "throttled": sum(1 for c in calls if c["outcome"] == "ThrottlingException"),
        "server_errors": sum(1 for c in calls if c["outcome"] == "DirectConnectServerException"),
        "latency_ms": 500,
        "max_associations_per_resource": max(assoc.get(i, 0) for i in ids),
        "down_s": outages["downSeconds"], "clear_text_s": outages["clearTextSeconds"],
    }


def storm_apply(workdir):
    ids, seed, text = storm_workload("default")
    sim, endpoint = start_sim(seed, workdir)
    path = workdir / "storm.yaml"
    path.write_text(text)
    try:
        post(endpoint, "/_sim/faults", STORM)
        started = time.monotonic()
        run = subprocess.run([str(OPERATOR), "apply", "-f", str(path), "--timeout", "30m"],
                             env=dict(os.environ, AWS_ENDPOINT_URL=endpoint, **AWS_ENV),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wall = time.monotonic() - started
        if run.returncode != 0:
            raise SystemExit(f"storm through apply: exit {run.returncode}")
        assert converged(endpoint, ids)
        return storm_figures("apply", endpoint, ids, wall)
    finally:
        sim.terminate()
        sim.wait()


def storm_controller(workdir):
    ns = "bench-storm"
    ids, seed, text = storm_workload(ns)
    sim, endpoint = start_sim(seed, workdir)
    env = dict(os.environ, KUBECONFIG=os.environ["E2E_OPERATOR_KUBECONFIG"], AWS_ENDPOINT_URL=endpoint,
               DXM_RESYNC="30s", DXM_OBSERVATION_MAX_AGE="30s", DXM_LEADER_ELECTION="false",
               DXM_WATCH_NAMESPACES=ns, DXM_DEFAULT_ACCESS_NAMESPACES="*", DXM_LOG_LEVEL="warn", **AWS_ENV)
    op = subprocess.Popen([str(OPERATOR), "run", "--http-addr", "127.0.0.1:0"], env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        post(endpoint, "/_sim/faults", STORM)
        kubectl("create", "namespace", ns)
        time.sleep(2)  # the operator's watches are up
        started = time.monotonic()
        kubectl("apply", "--server-side", "-f", "-", stdin=text)
        kubectl("wait", "-n", ns, "--for=condition=Ready", "dxc", "--all", "--timeout=1800s")
        wall = time.monotonic() - started
        assert converged(endpoint, ids)
        return storm_figures("controller", endpoint, ids, wall)
    finally:
        teardown(ns, op, sim)


def mutations(endpoint, target):
    return [c["operation"] for c in get(endpoint, "/_sim/calls")["calls"]
            if c["outcome"] == "ok" and c["operation"] in MUTATING and c.get("target") == target]


def kills(workdir):
    """`apply` killed after each mutating call of enabling, rotating and disabling in turn."""
    owner = "dxmacsec.io/owner: cli/default/c"
    router = f"router: [\"{CKN_A}\", \"{CKN_B}\"]"
    with_a = f"encryptionMode: must_encrypt, keys: [{{ckn: \"{CKN_A}\", cak: \"{CAK_A}\"}}], tags: {{{owner}}}"
    keys = key("k-a", CKN_A, CAK_A, "default") + key("k-b", CKN_B, CAK_B, "default")
    phases = [
        ("enable", f"{{ id: dxcon-k1, macSecCapable: true, {router} }}",
         dxc("c", "dxcon-k1", "must_encrypt", ["k-a"], "default"), 4),
        ("rotate", f"{{ id: dxcon-k1, macSecCapable: true, {with_a}, {router} }}",
         dxc("c", "dxcon-k1", "must_encrypt", ["k-b"], "default", ", rotation: {overlapSeconds: 1}"), 2),
        ("disable", f"{{ id: dxcon-k1, macSecCapable: true, {with_a}, {router} }}",
         dxc("c", "dxcon-k1", "no_encrypt", [], "default"), 2),
    ]
    survived, runs, down, clear, duplicates = 0, 0, 0.0, 0.0, 0
    for _, connection, manifest, steps in phases:
        path = workdir / "kill.yaml"
        path.write_text(keys + manifest)
        for k in range(1, steps + 1):
            sim, endpoint = start_sim("delays: { associateMs: 300, disassociateMs: 300 }\n"
                                      f"connections:\n  - {connection}\n", workdir)
            env = dict(os.environ, AWS_ENDPOINT_URL=endpoint, **AWS_ENV)
            try:
                run = subprocess.Popen([str(OPERATOR), "apply", "-f", str(path), "--interval", "200ms"],
                                       env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                while len(mutations(endpoint, "dxcon-k1")) < k:
                    time.sleep(0.005)
                run.send_signal(signal.SIGKILL)
                run.wait()
                again = subprocess.run([str(OPERATOR), "apply", "-f", str(path), "--timeout", "60s", "--interval", "200ms"],
                                       env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                runs += 1
                made = mutations(endpoint, "dxcon-k1")
                survived += again.returncode == 0 and len(made) == steps
                duplicates += len(made) - steps
                outages = get(endpoint, "/_sim/outages")
                down += outages["downSeconds"]
                clear += outages["clearTextSeconds"]
            finally:
                sim.terminate()
                sim.wait()
    return {"kills": runs, "converged_after_kill": survived, "repeated_mutations": duplicates,
            "down_s": down, "clear_text_s": clear}


def main():
    results = {}
    with tempfile.TemporaryDirectory() as d:
        workdir = pathlib.Path(d)
        results["kills"] = kills(workdir)
        print(json.dumps(results["kills"]), flush=True)
        results["storm"] = [storm_apply(workdir)]
        print(json.dumps(results["storm"][-1]), flush=True)
        if "E2E_OPERATOR_KUBECONFIG" in os.environ:
            results["storm"].append(storm_controller(workdir))
            print(json.dumps(results["storm"][-1]), flush=True)
    (ROOT / "target" / "bench-faults.json").write_text(json.dumps(results))


if __name__ == "__main__":
    main()
