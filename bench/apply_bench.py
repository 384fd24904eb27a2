"""Benchmark of `dx-macsec-operator apply` at scale against dx-sim.

For each N it seeds dx-sim with N MACsec-capable dedicated connections and N/10 LAGs (two
members each), all in no_encrypt with no key, their routers already holding the key; sets the
emulator's global rate limit to R requests per second; and converges N + N/10 DxConnections
(must_encrypt with one key) with one `apply`. Key delays are zero, so the floor below is what
bounds the run:

  floor          = mutating calls needed / R   (4 per resource: the owner tag, associate,
                                                should_encrypt, must_encrypt)
  time / floor   = wall time of apply / floor
  describes per resync = Describe calls of one `plan` over all of them once converged
  calls to converge    = every successful AWS call apply made (Describes included)
  Describes to converge = Describe calls apply made (throttled ones included)
  first call     = from starting apply to its first AWS call

A latency axis runs N = --latency-size again with every call --latencies ms slower (dx-sim's
latency fault), as Direct Connect answers in roughly 100 to 300 ms: the floor is the same, so
time / floor shows what latency costs.

Peak RSS and CPU seconds are the apply process's own (wait4). Writes JSON results for
bench/report.py.

Usage: python3 bench/apply_bench.py [--sizes 10,100,1000] [--rate 100] [--latencies 100,250] [--latency-size 1000]
"""

import argparse
import json
import os
import pathlib
import subprocess
import tempfile
import time
import urllib.request

ROOT = pathlib.Path(__file__).resolve().parents[1]
OPERATOR = ROOT / "target" / "release" / "dx-macsec-operator"
SIM = ROOT / "target" / "release" / "dx-sim"
CKN = "be" * 32
CAK = "ef" * 32
MUTATING = ("AssociateMacSecKey", "DisassociateMacSecKey", "UpdateConnection", "UpdateLag",
            "TagResource", "UntagResource")


def seed(n, lags, rate):
    return (
        "delays: { associateMs: 0, disassociateMs: 0 }\n"
        f"rateLimit: {rate}\n"
        f"generate: {{ connections: {n}, lags: {lags}, membersPerLag: 2, encryptionMode: no_encrypt, "
        f"routerCkns: [\"{CKN}\"] }}\n"
    )


def manifests(n, lags):
    docs = [
        "apiVersion: v1\nkind: Secret\nmetadata: {name: k1, namespace: bench, labels: {dxmacsec.io/key-material: \"true\"}}\n"
        f"stringData: {{ckn: \"{CKN}\", cak: \"{CAK}\"}}\n",
        "apiVersion: dxmacsec.io/v1alpha1\nkind: MacSecKey\nmetadata: {name: k1, namespace: bench, labels: {dxmacsec.io/key-material: \"true\"}}\n"
        "spec: {secretRef: {name: k1}}\n",
    ]
    ids = [f"dxcon-gen{i:05}" for i in range(n)] + [f"dxlag-gen{i:05}" for i in range(lags)]
    for i, cid in enumerate(ids):
        docs.append(
            "apiVersion: dxmacsec.io/v1alpha1\nkind: DxConnection\n"
            f"metadata: {{name: c{i}, namespace: bench}}\n"
            f"spec: {{connectionId: {cid}, region: us-east-1, encryptionMode: must_encrypt, keys: [{{name: k1}}]}}\n"
        )
    return "---\n".join(docs), len(ids)


def get(endpoint, path):
    with urllib.request.urlopen(endpoint + path) as r:
        return json.load(r)


def post(endpoint, path, body):
    req = urllib.request.Request(endpoint + path, data=json.dumps(body).encode(), method="POST")
    urllib.request.urlopen(req).close()


def add_latency(endpoint, latency_ms):
    """Every call to the emulator takes `latency_ms` more from now on."""
    if latency_ms:
        post(endpoint, "/_sim/faults", {"operation": "*", "latencyMs": latency_ms})


def describes(calls):
    return sum(1 for c in calls if c["operation"].startswith("Describe"))


def run_one(n, rate, workdir, latency_ms=0):
    lags = max(1, n // 10)
    seed_file = workdir / f"seed-{n}.yaml"
    seed_file.write_text(seed(n, lags, rate))
    text, resources = manifests(n, lags)
    manifest_file = workdir / f"manifests-{n}.yaml"
    manifest_file.write_text(text)

    sim = subprocess.Popen([str(SIM), "--seed", str(seed_file), "--listen", "127.0.0.1:0"],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = sim.stdout.readline()
    sim_ready = time.monotonic()
    endpoint = line.strip().rsplit(" ", 1)[-1]
    env = dict(os.environ, AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_REGION="us-east-1",
               AWS_EC2_METADATA_DISABLED="true", AWS_ENDPOINT_URL=endpoint)
    add_latency(endpoint, latency_ms)
    try:
        started = time.monotonic()
        log = workdir / f"apply-{n}.log"
        apply = subprocess.Popen([str(OPERATOR), "apply", "-f", str(manifest_file), "--timeout", "30m", "--interval", "1s"],
                                 env=env, stdout=subprocess.DEVNULL, stderr=open(log, "w"))
        _, status, usage = os.wait4(apply.pid, 0)
        wall = time.monotonic() - started
        exit_code = os.waitstatus_to_exitcode(status)
        if exit_code != 0:
            # A failed run is no figure: say so rather than write a table of zeros.
            raise SystemExit(f"N={n}: apply exited {exit_code}:\n{log.read_text()[-2000:]}")
        calls = get(endpoint, "/_sim/calls")["calls"]
        ok = [c for c in calls if c["outcome"] == "ok"]
        mutating = [c for c in ok if c["operation"] in MUTATING]
        # The emulator's clock (atMs) starts with it, a little before apply did.
        first_call_ms = round(calls[0]["atMs"] - (started - sim_ready) * 1000) if calls else None
        throttled = sum(1 for c in calls if c["outcome"] == "ThrottlingException")

        # Steady state: one plan over everything, counting its Describe calls.
        before = len(calls)
        subprocess.run([str(OPERATOR), "plan", "-f", str(manifest_file)], env=env,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        # A resync may hit the rate limit too: count every Describe attempt, throttled or not.
        after = get(endpoint, "/_sim/calls")["calls"][before:]
        resync_describes = sum(1 for c in after if c["operation"].startswith("Describe") and c["outcome"] == "ok")
        floor = len(mutating) / rate
        return {
            "n": n,
            "lags": lags,
            "resources": resources,
            "rate": rate,
            "latency_ms": latency_ms,
            "describes_to_converge": describes(calls),
            "exit": exit_code,
            "wall_s": round(wall, 2),
            "mutating": len(mutating),
            "expected_mutating": 4 * resources,
            "calls_ok": len(ok),
            "throttled": throttled,
            "floor_s": round(floor, 2),
            "time_over_floor": round(wall / floor, 2) if floor else None,
            "resync_describes": resync_describes,
            "resync_describes_per_n": round(resync_describes / resources, 4),
            "peak_rss_mib": round(usage.ru_maxrss / 1024, 1),
            "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
            "first_call_ms": first_call_ms,
        }
    finally:
        sim.terminate()
        sim.wait()


def run_sizes(run_one, default_out, default_sizes="10,100,1000", default_rate=100, latency_axis=False):
    """Command line shared by the benchmarks: runs run_one(n, rate, workdir) per size and,
    with `latency_axis`, run_one(--latency-size, rate, workdir, latency_ms) per latency; writes
    the results as JSON for bench/report.py."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default=default_sizes)
    parser.add_argument("--rate", type=float, default=default_rate)
    if latency_axis:
        parser.add_argument("--latencies", default="100,250", help="ms per call; empty for none")
        parser.add_argument("--latency-size", type=int, default=1000)
    parser.add_argument("--out", default=str(ROOT / "target" / default_out))
    args = parser.parse_args()
    runs = [(int(x), ()) for x in args.sizes.split(",")]
    if latency_axis:
        runs += [(args.latency_size, (int(x),)) for x in args.latencies.split(",") if x.strip()]
    results = []
    with tempfile.TemporaryDirectory() as d:
        for n, latency in runs:
            r = run_one(n, args.rate, pathlib.Path(d), *latency)
            print(json.dumps(r), flush=True)
            results.append(r)
    pathlib.Path(args.out).write_text(json.dumps(results))


def main():
    run_sizes(run_one, "bench-apply.json", latency_axis=True)


if __name__ == "__main__":
    main()
