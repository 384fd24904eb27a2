"""Benchmark of a replica hand-over: how long resources go unattended when the leader goes,
through the real kube-apiserver of scripts/with-cluster, against dx-sim.

Two operator processes (release build, leader election on, the chart's Lease timings: 15 s
duration, 5 s renewal; each with its own AWS access key ID, so dx-sim's call log says which
replica made each call) converge N + N/10 DxConnections at rate R (low, so that convergence
outlasts every hand-over). While it runs, the leader is stopped TRIALS times, alternately:

  killed (SIGKILL): time from the kill to the standby's first AWS call
                    (target: under the Lease duration plus 2 s)
  stopped (SIGTERM): time from the signal to the process's exit, by which it has released the
                    Lease (target: under 3 s), and to the standby's first AWS call

After each hand-over a fresh replica is started as the new standby. Also counted: AWS calls a
standby made before it led (must be 0), and calls a stopped leader made after the next one's
first call (must be 0: the two never overlap). Writes JSON results for bench/report.py.

Usage (with the cluster's environment): python3 bench/handover_bench.py [--sizes 1000] [--rate 20]
"""

import os
import subprocess
import time

from apply_bench import MUTATING, OPERATOR, SIM, get, manifests, run_sizes, seed
from controller_bench import converged, grant_secret_watch, kubectl

LEASE_S = 15
RENEW_S = 5
TRIALS = ("kill", "stop", "kill", "stop", "kill", "stop")
NAMESPACE = "dx-macsec-operator"
LEASE = "bench-handover-leader"


class Replicas:
    """Operator processes, each named by the access key ID it signs its AWS calls with."""

    def __init__(self, endpoint, workdir, sim_ready):
        self.endpoint, self.workdir, self.sim_ready = endpoint, workdir, sim_ready
        self.procs, self.count, self.seen = {}, 0, 0

    def start(self):
        self.count += 1
        name = f"REPLICA{self.count}"
        env = dict(os.environ, KUBECONFIG=os.environ["E2E_OPERATOR_KUBECONFIG"], AWS_ACCESS_KEY_ID=name,
                   AWS_SECRET_ACCESS_KEY="bench", AWS_REGION="us-east-1", AWS_EC2_METADATA_DISABLED="true",
                   AWS_ENDPOINT_URL=self.endpoint, DXM_RESYNC="30s", DXM_REQUEUE="2s",
                   DXM_OBSERVATION_MAX_AGE="30s", DXM_LEADER_ELECTION="true", DXM_LEASE_NAME=LEASE,
                   POD_NAMESPACE=NAMESPACE, POD_NAME=name.lower(), DXM_LEASE_DURATION=f"{LEASE_S}s",
                   DXM_LEASE_RENEW=f"{RENEW_S}s", DXM_DEFAULT_ACCESS_NAMESPACES="*", DXM_LOG_LEVEL="info", DXM_WATCH_SECRETS="true")
        log = open(self.workdir / f"{name}.log", "w")
        self.procs[name] = subprocess.Popen([str(OPERATOR), "run", "--http-addr", "127.0.0.1:0"], env=env,
                                            stdout=subprocess.DEVNULL, stderr=log)
        return name

    def sim_ms(self, t):
        """A monotonic time as dx-sim's call clock (ms since it started)."""
        return (t - self.sim_ready) * 1000

    def calls(self):
        return get(self.endpoint, "/_sim/calls")["calls"]

    def first_call(self, caller, after_ms, timeout_s, operations=None):
        """dx-sim's time of `caller`'s first call (of `operations`, default any) after
        `after_ms`, waiting for it."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for c in self.calls():
                if c["caller"] == caller and c["atMs"] >= after_ms and (
                        operations is None or c["operation"] in operations):
                    return c["atMs"]
            time.sleep(0.05)
        raise SystemExit(f"{caller} made no {operations or 'AWS'} call within {timeout_s} s")

    def stop_all(self):
        for p in self.procs.values():
            if p.poll() is None:
                p.terminate()
                p.wait()


def holder():
    """The Lease's holder, "" when released or not yet created."""
    found = kubectl("get", "lease", LEASE, "-n", NAMESPACE, "--ignore-not-found", "-o",
                    "jsonpath={.spec.holderIdentity}")
    return found.stdout.strip()


def run_one(n, rate, workdir):
    lags = max(1, n // 10)
    ns = f"handover-{n}"
    seed_file = workdir / f"seed-{n}.yaml"
    seed_file.write_text(seed(n, lags, rate))
    text, resources = manifests(n, lags)
    manifest_file = workdir / f"manifests-{n}.yaml"
    manifest_file.write_text(text.replace("namespace: bench", f"namespace: {ns}"))
    ids = [f"dxcon-gen{i:05}" for i in range(n)] + [f"dxlag-gen{i:05}" for i in range(lags)]

    sim = subprocess.Popen([str(SIM), "--seed", str(seed_file), "--listen", "127.0.0.1:0"],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    endpoint = sim.stdout.readline().strip().rsplit(" ", 1)[-1]
    replicas = Replicas(endpoint, workdir, time.monotonic())
    trials = []
    try:
        grant_secret_watch()
        kubectl("create", "namespace", ns)
        leader = replicas.start()
        deadline = time.monotonic() + 60
        while holder() != leader.lower():
            if time.monotonic() > deadline:
                raise SystemExit(f"{leader} did not take the Lease {LEASE} within 60 s (holder: {holder()!r})")
            time.sleep(0.2)
        standby = replicas.start()
        time.sleep(2)  # the standby has read the Lease
        started = time.monotonic()
        kubectl("apply", "--server-side", "-f", str(manifest_file))
        since_ms = replicas.sim_ms(started)
        for kind in TRIALS:
            # The leader is at work: it has changed something, and goes on for a while.
            replicas.first_call(leader, since_ms, 60, MUTATING)
            time.sleep(3)
            if converged(endpoint, ids):
                raise SystemExit("converged before every hand-over was made: lower --rate")
            t = time.monotonic()
            proc = replicas.procs[leader]
            if kind == "kill":
                proc.kill()
                proc.wait()
                exit_s = None
            else:
                proc.terminate()
                proc.wait()
                exit_s = round(time.monotonic() - t, 2)
                released = holder() in ("", standby.lower())
            first = replicas.first_call(standby, replicas.sim_ms(t), 120)
            calls = replicas.calls()
            trial = {
                "kind": kind,
                "to_first_call_s": round((first - replicas.sim_ms(t)) / 1000, 2),
                "exit_s": exit_s,
                "lease_released": released if kind == "stop" else None,
                # Before it led, the standby called AWS this many times (from its start).
                "standby_calls_before": sum(1 for c in calls if c["caller"] == standby and c["atMs"] < first),
                "old_leader_calls_after": sum(1 for c in calls if c["caller"] == leader and c["atMs"] >= first),
            }
            print(trial, flush=True)
            trials.append(trial)
            leader, standby = standby, replicas.start()
            since_ms = first
        while not converged(endpoint, ids):
            if time.monotonic() - started > 1800:
                raise SystemExit(f"N={n}: not converged in 30 min")
            time.sleep(0.5)
        wall = time.monotonic() - started
        kills = [t["to_first_call_s"] for t in trials if t["kind"] == "kill"]
        stops = [t for t in trials if t["kind"] == "stop"]
        return {
            "n": n, "resources": resources, "rate": rate, "lease_s": LEASE_S, "renew_s": RENEW_S,
            "converge_s": round(wall, 1), "trials": trials,
            "kill_to_first_call_max_s": max(kills),
            "stop_exit_max_s": max(t["exit_s"] for t in stops),
            "stop_to_first_call_max_s": max(t["to_first_call_s"] for t in stops),
            "leases_released": sum(1 for t in stops if t["lease_released"]),
            "standby_calls": sum(t["standby_calls_before"] for t in trials),
            "overlapping_calls": sum(t["old_leader_calls_after"] for t in trials),
        }
    finally:
        subprocess.run(["kubectl", "delete", "dxc,mskey", "--all", "-n", ns, "--timeout=120s"],
                       env=dict(os.environ, KUBECONFIG=os.environ["E2E_ADMIN_KUBECONFIG"]), capture_output=True)
        replicas.stop_all()
        sim.terminate()
        sim.wait()


def main():
    run_sizes(run_one, "bench-handover.json", default_sizes="1000", default_rate=20)


if __name__ == "__main__":
    main()
