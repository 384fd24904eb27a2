"""Benchmark of the controller across many AWS accounts and regions (scopes), through the real
kube-apiserver of scripts/with-cluster, against dx-sim with STS.

For S in the sizes (scopes: (account, region) pairs), dx-sim holds ceil(S / 2) accounts, each
with a role the operator may assume and each in us-east-1 and us-west-2 (S scopes in all),
and 10 MACsec-capable connections per scope. One DxAccess per account grants the role in both
regions; 10 DxConnections per scope (must_encrypt with one key) name it. Role credentials last
CREDENTIAL_S seconds. Once every connection is must_encrypt, it measures over steady state:

  Describe calls per resync per scope  (one resync window; target: one call per kind of
                                        resource, connections, LAGs and interconnects: 3)
  AssumeRole calls per role per credential lifetime  (a window of CREDENTIAL_S; target 1)
  peak RSS of the operator (VmHWM; target < 64 MiB at 100 scopes)

and the time to converge. Writes JSON results for bench/report.py.

Usage (with the cluster's environment): python3 bench/scopes_bench.py [--sizes 1,10,100] [--rate 100]
"""

import os
import subprocess
import time

from apply_bench import CAK, CKN, OPERATOR, SIM, get, run_sizes
from controller_bench import kubectl, proc_figures, teardown

RESYNC_S = 30
CREDENTIAL_S = 60
PER_SCOPE = 10
REGIONS = ("us-east-1", "us-west-2")


def account(j):
    return f"{200000000000 + j:012d}"


def scopes(s):
    """The (account, region) pairs of S scopes."""
    return [(account(i // 2), REGIONS[i % 2]) for i in range(s)]


def connection_id(i, k):
    return f"dxcon-s{i:03}c{k:02}"


def seed(s, rate):
    lines = [f"rateLimit: {rate}", f"credentialSeconds: {CREDENTIAL_S}", "accounts:"]
    for i, (acct, region) in enumerate(scopes(s)):
        conns = ", ".join(
            f"{{ id: {connection_id(i, k)}, macSecCapable: true, router: [\"{CKN}\"] }}"
            for k in range(PER_SCOPE))
        lines.append(f"  - {{ account: \"{acct}\", region: {region}, "
                     f"delays: {{ associateMs: 0, disassociateMs: 0 }}, connections: [{conns}] }}")
    roles = sorted({f"arn:aws:iam::{acct}:role/dx" for acct, _ in scopes(s)})
    lines.append("roles: [" + ", ".join(f'"{r}"' for r in roles) + "]")
    return "\n".join(lines) + "\n"


def manifests(s, ns):
    docs = [
        f"apiVersion: v1\nkind: Secret\nmetadata: {{name: k1, namespace: {ns}, labels: {{dxmacsec.io/key-material: \"true\"}}}}\n"
        f"stringData: {{ckn: \"{CKN}\", cak: \"{CAK}\"}}\n",
        f"apiVersion: dxmacsec.io/v1alpha1\nkind: MacSecKey\nmetadata: {{name: k1, namespace: {ns}, labels: {{dxmacsec.io/key-material: \"true\"}}}}\n"
        "spec: {secretRef: {name: k1}}\n",
    ]
    for acct in sorted({a for a, _ in scopes(s)}):
        docs.append(
            f"apiVersion: dxmacsec.io/v1alpha1\nkind: DxAccess\nmetadata: {{name: acct-{acct}}}\n"
            f"spec: {{namespaces: [{ns}], roleArn: \"arn:aws:iam::{acct}:role/dx\", regions: [{', '.join(REGIONS)}]}}\n")
    for i, (acct, region) in enumerate(scopes(s)):
        for k in range(PER_SCOPE):
            docs.append(
                "apiVersion: dxmacsec.io/v1alpha1\nkind: DxConnection\n"
                f"metadata: {{name: s{i}c{k}, namespace: {ns}}}\n"
                f"spec: {{connectionId: {connection_id(i, k)}, region: {region}, accessRef: {{name: acct-{acct}}}, "
                "encryptionMode: must_encrypt, keys: [{name: k1}]}\n")
    return "---\n".join(docs)


def converged(endpoint, s):
    for acct, region in sorted(set(scopes(s))):
        state = get(endpoint, f"/_sim/state?account={acct}&region={region}")
        if not all(c.get("encryptionMode") == "must_encrypt" for c in state["connections"]):
            return False
    return True


def run_one(s, rate, workdir):
    ns = f"scopes-{s}"
    seed_file = workdir / f"scopes-seed-{s}.yaml"
    seed_file.write_text(seed(s, rate))
    manifest_file = workdir / f"scopes-{s}.yaml"
    manifest_file.write_text(manifests(s, ns))
    sim = subprocess.Popen([str(SIM), "--seed", str(seed_file), "--listen", "127.0.0.1:0"],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    endpoint = sim.stdout.readline().strip().rsplit(" ", 1)[-1]
    env = dict(os.environ, KUBECONFIG=os.environ["E2E_OPERATOR_KUBECONFIG"], AWS_ACCESS_KEY_ID="bench",
               AWS_SECRET_ACCESS_KEY="bench", AWS_REGION="us-east-1", AWS_EC2_METADATA_DISABLED="true",
               AWS_ENDPOINT_URL=endpoint, DXM_RESYNC=f"{RESYNC_S}s", DXM_REQUEUE="2s",
               DXM_OBSERVATION_MAX_AGE=f"{RESYNC_S}s", DXM_LEADER_ELECTION="false", DXM_LOG_LEVEL="warn")
    log = open(workdir / f"operator-scopes-{s}.log", "w")
    op = subprocess.Popen([str(OPERATOR), "run", "--http-addr", "127.0.0.1:0"], env=env,
                          stdout=subprocess.DEVNULL, stderr=log)
    try:
        kubectl("create", "namespace", ns)
        time.sleep(2)
        started = time.monotonic()
        kubectl("apply", "--server-side", "-f", str(manifest_file))
        while not converged(endpoint, s):
            if time.monotonic() - started > 1800:
                raise SystemExit(f"S={s}: not converged in 30 min")
            time.sleep(0.5)
        wall = time.monotonic() - started
        time.sleep(RESYNC_S / 2)
        before = len(get(endpoint, "/_sim/calls")["calls"])
        time.sleep(RESYNC_S + 5)
        window = get(endpoint, "/_sim/calls")["calls"][before:]
        describes = sum(1 for c in window if c["operation"].startswith("Describe"))
        before = len(get(endpoint, "/_sim/calls")["calls"])
        time.sleep(CREDENTIAL_S)
        window = get(endpoint, "/_sim/calls")["calls"][before:]
        assumed = sum(1 for c in window if c["operation"] == "AssumeRole" and c["outcome"] == "ok")
        expired = sum(1 for c in get(endpoint, "/_sim/calls")["calls"]
                      if c["outcome"] == "ExpiredTokenException")
        rss, cpu = proc_figures(op.pid)
        roles = len({a for a, _ in scopes(s)})
        return {
            "scopes": s, "roles": roles, "resources": s * PER_SCOPE, "rate": rate,
            "wall_s": round(wall, 2), "resync_describes": describes,
            "describes_per_scope": round(describes / s, 2),
            "assume_role_per_lifetime": assumed, "assume_role_per_role": round(assumed / roles, 2),
            "expired_calls": expired, "peak_rss_mib": rss, "cpu_s": cpu,
        }
    finally:
        teardown(ns, op, sim)
        subprocess.run(["kubectl", "delete", "dxa", "--all"],
                       env=dict(os.environ, KUBECONFIG=os.environ["E2E_ADMIN_KUBECONFIG"]), capture_output=True)


def main():
    run_sizes(run_one, "bench-scopes.json", default_sizes="1,10,100")


if __name__ == "__main__":
    main()
