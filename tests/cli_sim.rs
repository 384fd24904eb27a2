//! `plan` and `apply` end to end: the real binary, the real AWS SDK, dx-sim as Direct
//! Connect. Each test starts its own emulator and asserts on exit codes, output, the
//! emulator's state and its call log.

use std::path::PathBuf;
use std::time::Duration;

mod common;

use common::{
    MUTATING, connection, dxc_manifest, key_ckns, key_manifest, lag, mode_of,
    must_encrypt_with_key_a,
};
use dx_sim::{CallRecord, Fault, Seed, Sim};
use serde_json::Value;

const CKN_A: &str = "aaaa000000000000000000000000000000000000000000000000000000000001";
const CKN_B: &str = "bbbb000000000000000000000000000000000000000000000000000000000002";
/// Distinct, easily searched CAKs (no test output may contain them).
const CAK_A: &str = "cafe0000000000000000000000000000000000000000000000000000deadbee1";
const CAK_B: &str = "cafe0000000000000000000000000000000000000000000000000000deadbee2";

/// The owner tag `apply` gives DxConnection default/conn: a seed connection with keys that
/// carries it was set up by an earlier `apply` (one without it would need `adopt`).
const OWNED_BY_CONN: &str = "tags: {dxmacsec.io/owner: cli/default/conn}";

async fn sim(seed: &str) -> Sim {
    Sim::start(Seed::from_yaml(seed).unwrap()).await.unwrap()
}

fn dir() -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "dxm-cli-{}-{}",
        std::process::id(),
        rand::random::<u64>()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn write(text: &str) -> PathBuf {
    let d = dir();
    let f = d.join("manifests.yaml");
    std::fs::write(&f, text).unwrap();
    f
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn all(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }
}

fn command(sim: &Sim, args: &[&str]) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_dx-macsec-operator"));
    cmd.args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("AWS_ACCESS_KEY_ID", "AKIDCLI")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ENDPOINT_URL", sim.endpoint())
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .kill_on_drop(true);
    cmd
}

async fn cli(sim: &Sim, args: &[&str]) -> Run {
    let out = command(sim, args).output().await.unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

async fn apply(sim: &Sim, file: &std::path::Path, timeout: &str) -> Run {
    cli(
        sim,
        &[
            "apply",
            "-f",
            file.to_str().unwrap(),
            "--timeout",
            timeout,
            "--interval",
            "200ms",
        ],
    )
    .await
}

async fn apply_json(sim: &Sim, file: &std::path::Path, timeout: &str) -> Run {
    let file = file.to_str().unwrap();
    let args = ["apply", "-f", file, "-o", "json", "--timeout", timeout];
    cli(sim, &[&args[..], &["--interval", "200ms"]].concat()).await
}

fn ok_calls<'a>(calls: &'a [CallRecord], op: &str) -> Vec<&'a CallRecord> {
    calls
        .iter()
        .filter(|c| c.operation == op && c.outcome == "ok")
        .collect()
}

fn assert_no_cak(run: &Run) {
    for cak in [CAK_A, CAK_B] {
        assert!(
            !run.all().contains(cak),
            "a CAK was printed:\n{}",
            run.all()
        );
    }
}

const BASIC: &str = r#"
delays: { associateMs: 300, disassociateMs: 300 }
connections:
  - { id: dxcon-c1, macSecCapable: true, router: [aaaa000000000000000000000000000000000000000000000000000000000001] }
  - { id: dxcon-m1, bandwidth: 100Gbps, macSecCapable: true, router: [aaaa000000000000000000000000000000000000000000000000000000000001] }
  - { id: dxcon-m2, bandwidth: 100Gbps, macSecCapable: true, router: [aaaa000000000000000000000000000000000000000000000000000000000001] }
  - { id: dxcon-plain, bandwidth: 1Gbps, macSecCapable: false }
lags:
  - { id: dxlag-l1, bandwidth: 100Gbps, macSecCapable: true, members: [dxcon-m1, dxcon-m2] }
"#;

/// Key `k-a`, and must_encrypt with it on connection dxcon-c1 and LAG dxlag-l1 of `BASIC`.
fn connection_and_lag() -> String {
    format!(
        "{}{}",
        must_encrypt_with_key_a("conn", "dxcon-c1", CKN_A, CAK_A),
        dxc_manifest("core", "dxlag-l1", "must_encrypt", &["k-a"], "")
    )
}

/// `apply -o json` over resources that converge and one that cannot: stdout is only the
/// JSON reports, what happens and paced progress lines (counts, the slowest waits) go to
/// stderr, and the exit code says not everything converged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_json_reports_and_progress_on_stderr() {
    let sim = sim(BASIC).await;
    let f = write(&format!(
        "{}{}",
        connection_and_lag(),
        dxc_manifest("plain", "dxcon-plain", "must_encrypt", &["k-a"], "")
    ));
    let run = apply_json(&sim, &f, "60s").await;
    assert_eq!(run.code, 1, "{}", run.all());
    assert_no_cak(&run);
    let reports: serde_json::Value = serde_json::from_str(&run.stdout)
        .unwrap_or_else(|e| panic!("stdout is not only JSON ({e}):\n{}", run.stdout));
    let ready: Vec<(&str, bool)> = reports
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["name"].as_str().unwrap(), r["ready"].as_bool().unwrap()))
        .collect();
    assert_eq!(
        ready,
        [
            ("default/conn", true),
            ("default/core", true),
            ("default/plain", false)
        ]
    );
    let progress: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.starts_with("progress: "))
        .collect();
    assert!(progress.len() >= 2, "{}", run.stderr);
    assert!(
        progress[0].starts_with("progress: 0/3 Ready, 2 progressing, 1 failed; slowest: default/"),
        "{}",
        run.stderr
    );
    assert_eq!(
        progress.last().copied(),
        Some("progress: 2/3 Ready, 0 progressing, 1 failed")
    );
    assert!(
        run.stderr.contains("default/conn: AssociateMacSecKey"),
        "{}",
        run.stderr
    );
}

/// Enabling MACsec on a connection and on a LAG: key first, must_encrypt last, members
/// mirror the LAG, the CAK is sent once and never printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enables_macsec_on_a_connection_and_a_lag() {
    let sim = sim(BASIC).await;
    let f = write(&connection_and_lag());
    let run = apply(&sim, &f, "60s").await;
    assert_eq!(run.code, 0, "{}", run.all());
    assert_no_cak(&run);
    assert!(run.stdout.contains("default/conn") && run.stdout.contains("Converged"));
    // Not a terminal: progress is plain lines on stderr, the last one final.
    assert!(
        run.stderr
            .lines()
            .last()
            .is_some_and(|l| l == "progress: 2/2 Ready, 0 progressing, 0 failed"),
        "{}",
        run.stderr
    );

    let state = sim.shared.state();
    let c = connection(&state, "dxcon-c1");
    assert_eq!(c["encryptionMode"], "must_encrypt");
    assert_eq!(c["portEncryptionStatus"], "Encryption Up");
    assert_eq!(c["macSecKeys"][0]["ckn"], CKN_A);
    assert_eq!(c["macSecKeys"][0]["state"], "associated");
    assert_no_outage(&sim);
    let l = lag(&state, "dxlag-l1");
    assert_eq!(l["encryptionMode"], "must_encrypt");
    for m in l["connections"].as_array().unwrap() {
        assert_eq!(m["encryptionMode"], "must_encrypt");
        assert_eq!(m["portEncryptionStatus"], "Encryption Up");
    }

    // Per target: the key is associated before must_encrypt is set.
    let calls = sim.shared.calls();
    for (target, update) in [("dxcon-c1", "UpdateConnection"), ("dxlag-l1", "UpdateLag")] {
        let seq_of = |op: &str| {
            calls
                .iter()
                .filter(|c| {
                    c.operation == op && c.outcome == "ok" && c.target.as_deref() == Some(target)
                })
                .map(|c| c.seq)
                .collect::<Vec<_>>()
        };
        let assoc = seq_of("AssociateMacSecKey");
        let updates = seq_of(update);
        assert_eq!(assoc.len(), 1, "{target}: {calls:?}");
        assert!(
            updates.iter().all(|u| *u > assoc[0]),
            "{target}: mode changed before the key: {calls:?}"
        );
    }
    // Converging again changes nothing.
    let before = calls.len();
    let run = apply(&sim, &f, "10s").await;
    assert_eq!(run.code, 0, "{}", run.all());
    let after = sim.shared.calls();
    assert!(
        after[before..]
            .iter()
            .all(|c| !MUTATING.contains(&c.operation.as_str())),
        "{:?}",
        &after[before..]
    );
}

/// dxcon-c1 must_encrypt on key A with `router` CKNs on the router, and manifests that rotate
/// it to key B with `rotation`.
async fn rotation_to_b(router: &[&str], rotation: &str) -> (Sim, PathBuf) {
    let router: Vec<String> = router.iter().map(|c| format!("\"{c}\"")).collect();
    let sim = sim(&format!(
        "delays: {{ associateMs: 300, disassociateMs: 300 }}\nconnections:\n  - {{ id: dxcon-c1, macSecCapable: true, encryptionMode: must_encrypt, keys: [{{ckn: \"{CKN_A}\", cak: \"{CAK_A}\"}}], router: [{}], {OWNED_BY_CONN} }}\n",
        router.join(", ")
    ))
    .await;
    (sim, write(&rotate_conn_to_b(rotation)))
}

/// Key `k-b`, and DxConnection default/conn on dxcon-c1 with only `k-b`, rotating as
/// `rotation` says.
fn rotate_conn_to_b(rotation: &str) -> String {
    format!(
        "{}{}",
        key_manifest("k-b", CKN_B, CAK_B),
        dxc_manifest(
            "conn",
            "dxcon-c1",
            "must_encrypt",
            &["k-b"],
            &format!(", rotation: {rotation}")
        )
    )
}

/// Rotation: the new key is associated first and the old one is removed only after the
/// overlap has passed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_keeps_the_old_key_for_the_overlap() {
    let (sim, f) = rotation_to_b(&[CKN_A, CKN_B], "{overlapSeconds: 3}").await;
    let run = apply(&sim, &f, "60s").await;
    assert_eq!(run.code, 0, "{}", run.all());
    assert_no_cak(&run);
    let calls = sim.shared.calls();
    let assoc = ok_calls(&calls, "AssociateMacSecKey");
    let removed = ok_calls(&calls, "DisassociateMacSecKey");
    assert_eq!((assoc.len(), removed.len()), (1, 1), "{calls:?}");
    // associated after ~300 ms, then 3 s of overlap.
    let gap = removed[0].at_ms - assoc[0].at_ms;
    assert!(
        gap >= 3_000,
        "old key removed {gap} ms after the new one was associated"
    );
    let state = sim.shared.state();
    let keys = connection(&state, "dxcon-c1")["macSecKeys"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0]["ckn"], CKN_B);
    assert_eq!(mode_of(&state, "dxcon-c1"), "must_encrypt");
    assert!(
        !calls.iter().any(|c| c.operation == "UpdateConnection"),
        "mode never touched: {calls:?}"
    );
    assert_no_outage(&sim);
}

/// dx-sim counted no second of dropped traffic and none of clear text after encryption.
fn assert_no_outage(sim: &Sim) {
    let outages = sim.shared.outages();
    assert_eq!(outages["downSeconds"], 0.0, "{outages}");
    assert_eq!(outages["clearTextSeconds"], 0.0, "{outages}");
}

/// Turning encryption off: the mode goes to no_encrypt before the keys are removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn turning_off_sets_the_mode_before_removing_keys() {
    let sim = sim(&format!(
        "delays: {{ associateMs: 300, disassociateMs: 300 }}\nconnections:\n  - {{ id: dxcon-c1, macSecCapable: true, encryptionMode: must_encrypt, keys: [{{ckn: \"{CKN_A}\", cak: \"{CAK_A}\"}}], router: [\"{CKN_A}\"], {OWNED_BY_CONN} }}\n"
    ))
    .await;
    let f = write(&dxc_manifest("conn", "dxcon-c1", "no_encrypt", &[], ""));
    let run = apply(&sim, &f, "30s").await;
    assert_eq!(run.code, 0, "{}", run.all());
    let calls = sim.shared.calls();
    let update = ok_calls(&calls, "UpdateConnection");
    let removed = ok_calls(&calls, "DisassociateMacSecKey");
    assert_eq!((update.len(), removed.len()), (1, 1), "{calls:?}");
    assert!(update[0].seq < removed[0].seq);
    let state = sim.shared.state();
    assert_eq!(mode_of(&state, "dxcon-c1"), "no_encrypt");
    assert!(
        connection(&state, "dxcon-c1")["macSecKeys"]
            .as_array()
            .unwrap()
            .is_empty()
    );
}

/// The customer router lacks the key: must_encrypt is withheld, with a message that says
/// what to do, and apply fails at its timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn must_encrypt_is_withheld_until_the_router_has_the_key() {
    let sim = sim(
        "delays: { associateMs: 200 }\nconnections:\n  - { id: dxcon-c1, macSecCapable: true }\n",
    )
    .await;
    let f = write(&must_encrypt_with_key_a("conn", "dxcon-c1", CKN_A, CAK_A));
    let run = apply(&sim, &f, "3s").await;
    assert_eq!(run.code, 1, "{}", run.all());
    assert!(
        run.stdout.contains("WaitingForEncryptionUp"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("configure the same CKN/CAK on your router"),
        "{}",
        run.stdout
    );
    assert!(
        run.stderr.contains("not converged within 3s"),
        "{}",
        run.stderr
    );
    let state = sim.shared.state();
    assert_eq!(mode_of(&state, "dxcon-c1"), "should_encrypt");

    // plan says what is pending: exit 2.
    let run = cli(&sim, &["plan", "-f", f.to_str().unwrap()]).await;
    assert_eq!(run.code, 2, "{}", run.all());
    // Once the router has the key, apply finishes the job.
    sim.shared
        .set_router("dxcon-c1", &[CKN_A.to_string()])
        .unwrap();
    let run = apply(&sim, &f, "20s").await;
    assert_eq!(run.code, 0, "{}", run.all());
    assert_eq!(mode_of(&sim.shared.state(), "dxcon-c1"), "must_encrypt");
}

/// Half of all calls throttled: apply still converges, with exactly one association.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_storm_converges_without_duplicate_association() {
    let sim = sim(BASIC).await;
    sim.shared.add_fault(Fault {
        operation: "*".into(),
        error: Some("ThrottlingException".into()),
        message: None,
        count: None,
        rate: Some(0.5),
        latency_ms: 0,
    });
    let f = write(&must_encrypt_with_key_a("conn", "dxcon-c1", CKN_A, CAK_A));
    let run = apply(&sim, &f, "90s").await;
    assert_eq!(run.code, 0, "{}", run.all());
    let calls = sim.shared.calls();
    let throttled = calls
        .iter()
        .filter(|c| c.outcome == "ThrottlingException")
        .count();
    assert!(throttled > 0, "the storm did not happen");
    assert_eq!(ok_calls(&calls, "AssociateMacSecKey").len(), 1, "{calls:?}");
    assert_eq!(mode_of(&sim.shared.state(), "dxcon-c1"), "must_encrypt");
    assert_no_outage(&sim);
}

/// `apply --concurrency` works on that many DxConnections at once: with every call 300 ms
/// slow, the eight associations of eight connections overlap, where one at a time they are
/// at least 300 ms apart each (the call's own latency lies between them). Each
/// connection's calls stay in order and none is made twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_works_on_connections_concurrently() {
    let ids: Vec<String> = (1..=8).map(|i| format!("dxcon-p{i}")).collect();
    let seed = format!(
        "delays: {{ associateMs: 0, disassociateMs: 0 }}\nconnections:\n{}",
        ids.iter()
            .map(|id| format!("  - {{ id: {id}, macSecCapable: true, router: [{CKN_A}] }}\n"))
            .collect::<String>()
    );
    let manifests = common::key_manifest("k-a", CKN_A, CAK_A)
        + &ids
            .iter()
            .enumerate()
            .map(|(i, id)| dxc_manifest(&format!("c{i}"), id, "must_encrypt", &["k-a"], ""))
            .collect::<String>();
    let f = write(&manifests);
    let span_of_associations = |sim: &Sim| {
        let at: Vec<u64> = ok_calls(&sim.shared.calls(), "AssociateMacSecKey")
            .iter()
            .map(|c| c.at_ms)
            .collect();
        assert_eq!(at.len(), ids.len(), "one association per connection");
        at.iter().max().unwrap() - at.iter().min().unwrap()
    };
    let slow = || Fault {
        operation: "*".into(),
        error: None,
        message: None,
        count: None,
        rate: None,
        latency_ms: 300,
    };
    let file = f.to_str().unwrap();
    let mut spans = Vec::new();
    for concurrency in ["8", "1"] {
        let sim = sim(&seed).await;
        sim.shared.add_fault(slow());
        let args = [
            "apply",
            "-f",
            file,
            "--timeout",
            "120s",
            "--interval",
            "200ms",
        ];
        let run = cli(&sim, &[&args[..], &["--concurrency", concurrency]].concat()).await;
        assert_eq!(run.code, 0, "{}", run.all());
        for id in &ids {
            assert_eq!(mode_of(&sim.shared.state(), id), "must_encrypt");
            let ops: Vec<String> = sim
                .shared
                .calls()
                .into_iter()
                .filter(|c| {
                    c.target.as_deref() == Some(id.as_str())
                        && MUTATING.contains(&c.operation.as_str())
                })
                .map(|c| c.operation)
                .collect();
            assert_eq!(
                ops,
                [
                    "TagResource",
                    "AssociateMacSecKey",
                    "UpdateConnection",
                    "UpdateConnection"
                ],
                "{id}"
            );
        }
        spans.push(span_of_associations(&sim));
    }
    let (together, one_at_a_time) = (spans[0], spans[1]);
    assert!(
        one_at_a_time >= 7 * 300,
        "one at a time: {one_at_a_time} ms"
    );
    assert!(together < 4 * 300, "eight at once: {together} ms");
}

/// `apply -f file` killed with SIGKILL right after the emulator accepted its `k`-th
/// mutating call; returns once it is dead.
async fn apply_killed_after(sim: &Sim, file: &std::path::Path, k: usize) {
    let mut child = command(
        sim,
        &["apply", "-f", file.to_str().unwrap(), "--interval", "100ms"],
    )
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::null())
    .spawn()
    .unwrap();
    let mutations = || {
        sim.shared
            .calls()
            .iter()
            .filter(|c| c.outcome == "ok" && MUTATING.contains(&c.operation.as_str()))
            .count()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while mutations() < k {
        assert!(
            tokio::time::Instant::now() < deadline,
            "apply never made mutation {k}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    child.kill().await.unwrap();
}

/// Chaos at every step: enabling, rotating and disabling, `apply` killed (SIGKILL) after
/// each of the plan's mutating calls in turn and run again. Every run converges to the
/// same end, with one association per key, the key the spec keeps never removed, the
/// mutations in the safe order, and no second of dropped traffic or clear text (the
/// router holds both keys, so nothing the spec asks for drops the link).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_at_every_step_converges_without_harm() {
    let router = format!("router: [\"{CKN_A}\", \"{CKN_B}\"]");
    let with_a = format!(
        "encryptionMode: must_encrypt, keys: [{{ckn: \"{CKN_A}\", cak: \"{CAK_A}\"}}], {OWNED_BY_CONN}"
    );
    let scenarios = [
        (
            "enable",
            format!("{{ id: dxcon-c1, macSecCapable: true, {router} }}"),
            must_encrypt_with_key_a("conn", "dxcon-c1", CKN_A, CAK_A),
            vec![
                "TagResource",
                "AssociateMacSecKey",
                "UpdateConnection",
                "UpdateConnection",
            ],
            ("must_encrypt", vec![CKN_A]),
        ),
        (
            "rotate",
            format!("{{ id: dxcon-c1, macSecCapable: true, {with_a}, {router} }}"),
            rotate_conn_to_b("{overlapSeconds: 1}"),
            vec!["AssociateMacSecKey", "DisassociateMacSecKey"],
            ("must_encrypt", vec![CKN_B]),
        ),
        (
            "disable",
            format!("{{ id: dxcon-c1, macSecCapable: true, {with_a}, {router} }}"),
            dxc_manifest("conn", "dxcon-c1", "no_encrypt", &[], ""),
            vec!["UpdateConnection", "DisassociateMacSecKey"],
            ("no_encrypt", vec![]),
        ),
    ];
    let mut kills = 0;
    for (name, connection_seed, manifest, steps, (mode, ckns)) in scenarios {
        let f = write(&manifest);
        for k in 1..=steps.len() {
            let sim = sim(&format!(
                "delays: {{ associateMs: 300, disassociateMs: 300 }}\nconnections:\n  - {connection_seed}\n"
            ))
            .await;
            apply_killed_after(&sim, &f, k).await;
            kills += 1;
            let run = apply(&sim, &f, "30s").await;
            assert_eq!(run.code, 0, "{name}, killed after step {k}: {}", run.all());
            let state = sim.shared.state();
            assert_eq!(mode_of(&state, "dxcon-c1"), mode, "{name}/{k}");
            assert_eq!(key_ckns(&state, "dxcon-c1"), ckns, "{name}/{k}");
            let calls = sim.shared.calls();
            let made: Vec<&str> = calls
                .iter()
                .filter(|c| c.outcome == "ok" && MUTATING.contains(&c.operation.as_str()))
                .map(|c| c.operation.as_str())
                .collect();
            assert_eq!(
                made, steps,
                "{name}, killed after step {k}: once each, in order"
            );
            assert_no_outage(&sim);
        }
    }
    assert_eq!(kills, 8);
}

/// Bad inputs: a clear error, exit 1, and no mutating call in the emulator's log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_inputs_fail_cleanly_without_mutations() {
    let sim = sim(BASIC).await;
    let bad_cak = "cafe0000000000000000000000000000000000000000000000000000deadbeeZ";
    let cases: Vec<(String, &[&str])> = vec![
        (
            must_encrypt_with_key_a("conn", "dxcon-c1", "abc", CAK_A),
            &[
                "KeyNotReady",
                "Secret default/k-a key \"ckn\" has 3 characters",
                "64 hexadecimal",
            ],
        ),
        (
            must_encrypt_with_key_a("conn", "dxcon-c1", CKN_A, bad_cak),
            &[
                "Secret default/k-a key \"cak\" has a character that is not hexadecimal at position 64",
            ],
        ),
        (
            format!(
                "apiVersion: v1\nkind: Secret\nmetadata: {{name: k-a, labels: {{dxmacsec.io/key-material: \"true\"}}}}\nstringData: {{ckn: \"{CKN_A}\"}}\n---\napiVersion: dxmacsec.io/v1alpha1\nkind: MacSecKey\nmetadata: {{name: k-a}}\nspec: {{secretRef: {{name: k-a}}}}\n---\n{}",
                dxc_manifest("conn", "dxcon-c1", "must_encrypt", &["k-a"], "")
            ),
            &["Secret default/k-a has no key \"cak\" (spec.secretRef.cakKey)"],
        ),
        (
            dxc_manifest("conn", "dxcon-c1", "should_encrypt", &["missing"], ""),
            &["MacSecKey default/missing (spec.keys[0].name) not found"],
        ),
        (
            must_encrypt_with_key_a("conn", "dxcon-nope", CKN_A, CAK_A),
            &[
                "NotFound",
                "Direct Connect has no connection or LAG dxcon-nope",
            ],
        ),
        (
            format!(
                "{}{}",
                key_manifest("k-a", CKN_A, CAK_A),
                dxc_manifest("conn", "dxcon-plain", "should_encrypt", &["k-a"], "")
            ),
            &["NotMacSecCapable", "cannot be enabled later"],
        ),
        (
            must_encrypt_with_key_a("conn", "dxcon-m1", CKN_A, CAK_A),
            &["ManagedByLag", "set spec.connectionId to dxlag-l1"],
        ),
        (
            "apiVersion: v1\nkind: [unclosed\n".to_string(),
            &[".yaml: not valid YAML"],
        ),
        (
            // A typo of `keys`: without strict fields this planned nothing and exited 0.
            "apiVersion: dxmacsec.io/v1alpha1\nkind: DxConnection\nmetadata: {name: conn}\nspec: {connectionId: dxcon-c1, encryptionMode: should_encrypt, keyz: []}\n".to_string(),
            &["document 1: DxConnection conn: unknown field spec.keyz: check the spelling"],
        ),
        (
            dxc_manifest("conn", "dxcon-c1", "always_encrypt", &[], ""),
            &[
                "document 1: DxConnection conn: spec.encryptionMode: unknown variant `always_encrypt`",
            ],
        ),
    ];
    for (text, needles) in cases {
        let f = write(&text);
        for run in [
            apply(&sim, &f, "5s").await,
            cli(&sim, &["plan", "-f", f.to_str().unwrap()]).await,
        ] {
            assert_eq!(run.code, 1, "{}", run.all());
            for n in needles {
                assert!(run.all().contains(n), "output lacks {n:?}:\n{}", run.all());
            }
            assert!(
                !run.all().contains(bad_cak) && !run.all().contains(CAK_A),
                "a CAK was printed:\n{}",
                run.all()
            );
        }
    }
    let calls = sim.shared.calls();
    assert!(
        calls
            .iter()
            .all(|c| !MUTATING.contains(&c.operation.as_str())),
        "{calls:?}"
    );
}

/// plan: exit codes 2 / 0, JSON output with the planned step, and no change to AWS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_reports_without_changing_anything() {
    let sim = sim(BASIC).await;
    let f = write(&must_encrypt_with_key_a("conn", "dxcon-c1", CKN_A, CAK_A));
    let run = cli(&sim, &["plan", "-f", f.to_str().unwrap(), "-o", "json"]).await;
    assert_eq!(run.code, 2, "{}", run.all());
    let reports: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(reports[0]["name"], "default/conn");
    assert_eq!(reports[0]["ready"], false);
    let steps = &reports[0]["plannedActions"];
    assert!(
        steps[0]
            .as_str()
            .unwrap()
            .starts_with("TagResource: tag dxcon-c1 dxmacsec.io/owner=cli/default/conn"),
        "{steps}"
    );
    assert!(
        steps[1]
            .as_str()
            .unwrap()
            .starts_with("AssociateMacSecKey: associate MacSecKey k-a"),
        "{steps}"
    );
    assert_eq!(reports[0]["status"]["connectionState"], "available");
    assert!(
        sim.shared
            .calls()
            .iter()
            .all(|c| !MUTATING.contains(&c.operation.as_str()))
    );
    assert_no_cak(&run);

    assert_eq!(apply(&sim, &f, "30s").await.code, 0);
    let run = cli(&sim, &["plan", "-f", f.to_str().unwrap()]).await;
    assert_eq!(run.code, 0, "{}", run.all());
    assert!(run.stdout.contains("Converged"));
}

/// A DxConnection with a rotation schedule: `plan` says when the next rotation is due (from
/// the status the manifest carries, as `kubectl get -o yaml` writes it) and what it will do;
/// `apply` keeps the keys the status says are in use and says why it does not rotate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_shows_the_next_rotation_and_apply_leaves_it_to_the_controller() {
    let sim = sim(&format!(
        "connections:\n  - {{ id: dxcon-c1, macSecCapable: true, router: [{CKN_B}] }}\n"
    ))
    .await;
    let manifest = format!(
        "{}{}{}",
        key_manifest("k-a", CKN_A, CAK_A),
        key_manifest("k-b", CKN_B, CAK_B),
        "apiVersion: dxmacsec.io/v1alpha1\nkind: DxConnection\nmetadata: {name: conn}\n\
         spec: {connectionId: dxcon-c1, encryptionMode: must_encrypt, keys: [{name: k-a}],\n\
         \x20 rotation: {schedule: {every: 90d, routerLeadTime: 7d}}}\n\
         status:\n  schedule: {stage: Idle, nextRotation: \"2031-01-01T00:00:00Z\", sequence: 3}\n\
         \x20 router:\n    keys: [{macSecKey: k-b, state: active, since: \"2030-10-03T00:00:00Z\"}]\n"
    );
    let f = write(&manifest);
    let run = cli(&sim, &["plan", "-f", f.to_str().unwrap()]).await;
    assert_eq!(run.code, 2, "{}", run.all());
    assert!(
        run.stdout.contains("rotation every 90d: the next rotation is due at 2031-01-01T00:00:00Z; then it makes MacSecKey conn-k4 7d before it is due"),
        "{}",
        run.stdout
    );
    // The key in use is the status's (k-b), not spec.keys' starting set.
    assert!(
        run.stdout.contains("associate MacSecKey k-b"),
        "{}",
        run.stdout
    );
    assert!(
        !run.stdout.contains("associate MacSecKey k-a"),
        "{}",
        run.stdout
    );

    let run = apply(&sim, &f, "30s").await;
    assert_eq!(run.code, 0, "{}", run.all());
    assert!(
        run.stdout
            .contains("apply does not rotate: a rotation waits for the router's confirmation")
            && run
                .stdout
                .contains("dx-macsec-operator rotate -n default conn"),
        "{}",
        run.stdout
    );
    assert_eq!(key_ckns(&sim.shared.state(), "dxcon-c1"), [CKN_B]);
    assert_no_cak(&run);
}

/// The CAK appears in no output at the most verbose log level, in text or JSON logs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cak_never_reaches_output_or_logs() {
    let sim = sim(BASIC).await;
    let f = write(&connection_and_lag());
    for format in ["text", "json"] {
        sim.shared.reset();
        let mut cmd = command(
            &sim,
            &[
                "apply",
                "-f",
                f.to_str().unwrap(),
                "--interval",
                "200ms",
                "--log-format",
                format,
            ],
        );
        cmd.env("RUST_LOG", "trace");
        let out = cmd.output().await.unwrap();
        let run = Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        };
        assert_eq!(run.code, 0, "{}", run.stdout);
        assert!(
            run.stderr.len() > 10_000,
            "trace logging produced little: {} bytes",
            run.stderr.len()
        );
        assert_no_cak(&run);
    }
}

/// The router holds key A only; apply with keys [A], then [A, B], then [B] and no overlap.
/// Removing A takes the must_encrypt link down: the last apply fails at once with
/// EncryptionDown (not at its timeout), plan exits 1 with the same reason, and once the
/// router has key B, plan finds the link Converged with nothing to do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn must_encrypt_left_encryption_down_is_not_converged() {
    let sim = sim(&format!(
        "delays: {{ associateMs: 200, disassociateMs: 200 }}\nconnections:\n  - {{ id: dxcon-fgq1a2b3, macSecCapable: true, router: [\"{CKN_A}\"] }}\n"
    ))
    .await;
    let keys = format!(
        "{}{}",
        key_manifest("k-a", CKN_A, CAK_A),
        key_manifest("k-b", CKN_B, CAK_B)
    );
    let step = |names: &[&str]| {
        write(&format!(
            "{keys}{}",
            dxc_manifest(
                "conn",
                "dxcon-fgq1a2b3",
                "must_encrypt",
                names,
                // The guard off: the link is left down, and that must not read Converged.
                ", rotation: {overlapSeconds: 0, guardSeconds: 0}"
            )
        ))
    };
    for names in [&["k-a"][..], &["k-a", "k-b"]] {
        let run = apply(&sim, &step(names), "60s").await;
        assert_eq!(run.code, 0, "{names:?}: {}", run.all());
        assert!(run.stdout.contains("Converged"), "{}", run.stdout);
    }
    let last = step(&["k-b"]);
    let started = std::time::Instant::now();
    let run = apply(&sim, &last, "60s").await;
    assert_eq!(run.code, 1, "{}", run.all());
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "apply waited for its timeout"
    );
    assert!(
        !run.stderr.contains("not converged within"),
        "{}",
        run.stderr
    );
    for needle in [
        "EncryptionDown",
        "dxcon-fgq1a2b3 (must_encrypt) reports Encryption Down",
        "carries no traffic",
        CKN_B,
        "router",
    ] {
        assert!(
            run.stdout.contains(needle),
            "lacks {needle}:\n{}",
            run.stdout
        );
    }
    assert!(!run.stdout.contains("Converged"), "{}", run.stdout);
    assert_no_cak(&run);
    let state = sim.shared.state();
    let c = connection(&state, "dxcon-fgq1a2b3");
    assert_eq!(c["encryptionMode"], "must_encrypt");
    assert_eq!(c["portEncryptionStatus"], "Encryption Down");
    // The spec asked for it (no overlap, no guard, a router without B), and dx-sim counts it.
    let down = sim.shared.outages()["ports"]["dxcon-fgq1a2b3"]["downSeconds"]
        .as_f64()
        .unwrap();
    assert!(down > 0.0, "the dropped link was not counted");

    let run = cli(&sim, &["plan", "-f", last.to_str().unwrap()]).await;
    assert_eq!(run.code, 1, "{}", run.all());
    assert!(run.stdout.contains("EncryptionDown"), "{}", run.stdout);

    sim.shared
        .set_router("dxcon-fgq1a2b3", &[CKN_B.to_string()])
        .unwrap();
    let run = cli(&sim, &["plan", "-f", last.to_str().unwrap()]).await;
    assert_eq!(run.code, 0, "{}", run.all());
    assert!(run.stdout.contains("Converged"), "{}", run.stdout);
}

/// Runs `args` with `env` changes; returns the run and how long it took.
async fn timed(cmd: &mut tokio::process::Command) -> (Run, Duration) {
    let started = std::time::Instant::now();
    let out = cmd.output().await.unwrap();
    let run = Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    (run, started.elapsed())
}

/// `plan -f file` and `apply -f file` without the environment variables `unset`: both exit
/// 1 in under 5 s. Returns both runs.
async fn both_fail_fast(sim: &Sim, file: &std::path::Path, unset: &[&str]) -> Vec<Run> {
    let file = file.to_str().unwrap();
    let mut runs = Vec::new();
    for args in [
        &["plan", "-f", file][..],
        &["apply", "-f", file, "--interval", "200ms"],
    ] {
        let mut cmd = command(sim, args);
        for var in unset {
            cmd.env_remove(var);
        }
        let (run, took) = timed(&mut cmd).await;
        assert_eq!(run.code, 1, "{args:?}: {}", run.all());
        assert!(took < Duration::from_secs(5), "{args:?} took {took:?}");
        runs.push(run);
    }
    runs
}

/// No credentials anywhere: plan and apply fail at once (exit 1, under 5 s), in one line
/// that names the cause and what to set, without the SDK's debug dump.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_credentials_fail_fast_with_what_to_set() {
    let sim = sim(BASIC).await;
    let f = write(&must_encrypt_with_key_a("conn", "dxcon-c1", CKN_A, CAK_A));
    for run in both_fail_fast(&sim, &f, &["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"]).await {
        for needle in [
            "AwsCredentials",
            "no AWS credentials were found",
            "AWS_PROFILE",
        ] {
            assert!(run.all().contains(needle), "lacks {needle}: {}", run.all());
        }
        for noise in ["DispatchFailure", "ConnectorError", "ProviderError", "WARN"] {
            assert!(!run.all().contains(noise), "shows {noise}: {}", run.all());
        }
    }
    assert!(sim.shared.calls().is_empty(), "nothing reached AWS");
}

/// AWS refuses the call (IAM): exit 1 at once, naming the IAM action and the policy file;
/// credentials AWS rejects say so; an endpoint that does not answer makes plan exit 1,
/// never "changes pending".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_calls_and_unreachable_aws_are_errors_that_say_what_to_fix() {
    let sim = sim(BASIC).await;
    let f = write(&must_encrypt_with_key_a("conn", "dxcon-c1", CKN_A, CAK_A));
    let file = f.to_str().unwrap();
    for (code, needles) in [
        (
            "AccessDeniedException",
            &[
                "AccessDenied",
                "directconnect:DescribeConnections",
                "deploy/iam-policy.json",
            ][..],
        ),
        (
            "UnrecognizedClientException",
            &["AwsCredentials", "AWS rejected the credentials"],
        ),
    ] {
        for args in [
            &["plan", "-f", file][..],
            &["apply", "-f", file, "--interval", "200ms"],
        ] {
            sim.shared.clear_faults();
            sim.shared.add_fault(Fault {
                operation: "*".into(),
                error: Some(code.into()),
                message: None,
                count: None,
                rate: None,
                latency_ms: 0,
            });
            let (run, took) = timed(&mut command(&sim, args)).await;
            assert_eq!(run.code, 1, "{code} {args:?}: {}", run.all());
            assert!(
                took < Duration::from_secs(10),
                "{code} {args:?} took {took:?}"
            );
            for n in needles {
                assert!(
                    run.all().contains(n),
                    "{code} {args:?} lacks {n}: {}",
                    run.all()
                );
            }
        }
    }
    sim.shared.clear_faults();
    let mut cmd = command(&sim, &["plan", "-f", file]);
    cmd.env("AWS_ENDPOINT_URL", "http://127.0.0.1:1");
    let (run, _) = timed(&mut cmd).await;
    assert_eq!(run.code, 1, "{}", run.all());
    assert!(
        run.all().contains("could not reach the endpoint"),
        "{}",
        run.all()
    );
    assert!(!run.all().contains("DispatchFailure"), "{}", run.all());
}

/// No region anywhere: plan and apply fail at once naming what to set, and nothing reaches
/// AWS. Throttling that does not stop: plan exits 1 saying so (not "changes pending"), and
/// apply keeps backing off until its timeout, then says what it was waiting for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_region_and_endless_throttling_say_what_happened() {
    let sim = sim(BASIC).await;
    let f = write(&must_encrypt_with_key_a("conn", "dxcon-c1", CKN_A, CAK_A));
    let file = f.to_str().unwrap();
    for run in both_fail_fast(&sim, &f, &["AWS_REGION"]).await {
        for needle in ["spec.region is not set", "AWS_REGION", "--region"] {
            assert!(run.all().contains(needle), "lacks {needle}: {}", run.all());
        }
    }
    assert!(sim.shared.calls().is_empty(), "nothing reached AWS");

    sim.shared.add_fault(Fault {
        operation: "*".into(),
        error: Some("ThrottlingException".into()),
        message: Some("Rate exceeded".into()),
        count: None,
        rate: None,
        latency_ms: 0,
    });
    let (run, _) = timed(&mut command(&sim, &["plan", "-f", file])).await;
    assert_eq!(run.code, 1, "{}", run.all());
    assert!(run.stdout.contains("Throttled"), "{}", run.all());
    assert!(run.stdout.contains("ThrottlingException"), "{}", run.all());
    let (run, took) = timed(&mut command(
        &sim,
        &[
            "apply",
            "-f",
            file,
            "--interval",
            "200ms",
            "--timeout",
            "4s",
        ],
    ))
    .await;
    assert_eq!(run.code, 1, "{}", run.all());
    assert!(
        took >= Duration::from_secs(4),
        "gave up before its timeout: {took:?}"
    );
    assert!(
        run.stderr.contains("not converged within 4s"),
        "{}",
        run.stderr
    );
    assert!(run.stdout.contains("Throttled"), "{}", run.all());
    let calls = sim.shared.calls();
    assert!(
        calls.len() < 20,
        "throttled calls were retried hot: {} calls in 4 s",
        calls.len()
    );
    assert!(ok_calls(&calls, "AssociateMacSecKey").is_empty());
}

/// Admin-owned access, the escalation case: DxAccess `prod` grants namespace net-prod a role
/// and the production connection dxcon-m1; DxConnections in namespace sandbox that name it,
/// or name the role without a DxAccess, and one in net-prod outside its grant, are each
/// `Forbidden` with what to do, and nothing at all is sent to AWS for them (no AssumeRole,
/// no Describe of theirs, no change); the one the grant allows converges.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_namespace_reaches_only_what_a_dxaccess_grants_it() {
    let sim = sim(BASIC).await;
    let role = "arn:aws:iam::222222222222:role/dx-prod";
    let key = |ns: &str| {
        format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{name: k-a, namespace: {ns}, labels: {{dxmacsec.io/key-material: \"true\"}}}}\nstringData: {{ckn: \"{CKN_A}\", cak: \"{CAK_A}\"}}\n---\n\
             apiVersion: dxmacsec.io/v1alpha1\nkind: MacSecKey\nmetadata: {{name: k-a, namespace: {ns}}}\nspec: {{secretRef: {{name: k-a}}}}\n---\n"
        )
    };
    let dxc = |ns: &str, name: &str, id: &str, extra: &str| {
        format!(
            "apiVersion: dxmacsec.io/v1alpha1\nkind: DxConnection\nmetadata: {{name: {name}, namespace: {ns}}}\n\
             spec: {{connectionId: {id}, encryptionMode: must_encrypt, keys: [{{name: k-a}}]{extra}}}\n---\n"
        )
    };
    let text = [
        format!(
            "apiVersion: dxmacsec.io/v1alpha1\nkind: DxAccess\nmetadata: {{name: prod}}\n\
             spec: {{namespaces: [net-prod], roleArn: \"{role}\", connectionIds: [dxcon-m1]}}\n---\n"
        ),
        "apiVersion: dxmacsec.io/v1alpha1\nkind: DxAccess\nmetadata: {name: lab}\n\
         spec: {namespaces: [net-prod], regions: [us-east-1], connectionIds: [dxcon-c1]}\n---\n"
            .to_string(),
        key("sandbox"),
        key("net-prod"),
        dxc("sandbox", "steal", "dxcon-m1", ", accessRef: {name: prod}"),
        dxc("sandbox", "by-role", "dxcon-m2", &format!(", roleArn: \"{role}\"")),
        dxc("net-prod", "elsewhere", "dxlag-l1", ", accessRef: {name: lab}"),
        dxc("net-prod", "lab", "dxcon-c1", ", accessRef: {name: lab}"),
    ]
    .concat();
    let f = write(&text);
    let run = apply_json(&sim, &f, "30s").await;
    assert_eq!(run.code, 1, "{}", run.all());
    assert_no_cak(&run);
    let reports: Value = serde_json::from_str(&run.stdout).unwrap();
    let of = |name: &str| {
        reports
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == name)
            .unwrap_or_else(|| panic!("no report for {name}: {reports}"))
            .clone()
    };
    for (name, needle) in [
        (
            "sandbox/steal",
            "DxAccess prod (spec.accessRef.name) does not exist or does not grant namespace sandbox",
        ),
        ("sandbox/by-role", "spec.roleArn"),
        ("net-prod/elsewhere", "does not allow dxlag-l1"),
    ] {
        let r = of(name);
        assert_eq!(r["reason"], "Forbidden", "{r}");
        assert!(r["message"].as_str().unwrap().contains(needle), "{r}");
        assert_eq!(r["ready"], false);
    }
    assert_eq!(of("net-prod/lab")["ready"], true);
    let calls = sim.shared.calls();
    assert!(
        calls
            .iter()
            .all(|c| c.target.is_none() || c.target.as_deref() == Some("dxcon-c1")),
        "a call reached a connection no grant allows: {calls:?}"
    );
    let state = sim.shared.state();
    for id in ["dxcon-m1", "dxcon-m2"] {
        assert!(key_ckns(&state, id).is_empty(), "{id} changed");
    }
    assert_eq!(lag(&state, "dxlag-l1")["encryptionMode"], "no_encrypt");
    assert_eq!(mode_of(&state, "dxcon-c1"), "must_encrypt");
}

/// The router never got the new key: rotating from A to B, the old key A goes once B is
/// associated and the port is up (on A), the port goes Encryption Down, and the guard puts A
/// back at once by its managed secret (the CAK is not sent again). apply ends with
/// `RotationRolledBack` naming the key to configure; the link was down only for the guard's
/// reaction (dx-sim's outage accounting), not until someone noticed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_the_router_did_not_follow_is_rolled_back() {
    let (sim, f) = rotation_to_b(&[CKN_A], "{overlapSeconds: 0, guardSeconds: 60}").await;
    let run = apply_json(&sim, &f, "30s").await;
    assert_eq!(run.code, 1, "{}", run.all());
    assert_no_cak(&run);
    let reports: Value = serde_json::from_str(&run.stdout).unwrap();
    let report = &reports[0];
    assert_eq!(report["reason"], "RotationRolledBack", "{report}");
    let message = report["message"].as_str().unwrap();
    assert!(
        message.contains(&format!("does not use CKN {CKN_B} (MacSecKey k-b)"))
            && message.contains("dxmacsec.io/confirm-removal"),
        "{message}"
    );
    let state = sim.shared.state();
    let mut ckns = key_ckns(&state, "dxcon-c1");
    ckns.sort();
    assert_eq!(ckns, [CKN_A, CKN_B]);
    assert_eq!(mode_of(&state, "dxcon-c1"), "must_encrypt");
    let calls = sim.shared.calls();
    assert_eq!(
        ok_calls(&calls, "DisassociateMacSecKey").len(),
        1,
        "{calls:?}"
    );
    assert_eq!(ok_calls(&calls, "AssociateMacSecKey").len(), 2, "{calls:?}");
    let outages = sim.shared.outages();
    let down = outages["downSeconds"].as_f64().unwrap();
    assert!(
        down > 0.0 && down < 5.0,
        "down for {down} s: the guard should have reacted within a few passes: {outages}"
    );
}

/// Ownership on AWS, the handshake other tools see: a connection tagged by another cluster
/// is `Conflict` naming it, one that Terraform configured (keys, no tag) is `Conflict`
/// until the spec says `adopt: true`, a fresh one is claimed with its first step; nothing
/// is sent to AWS for the refused ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_owner_tag_keeps_two_owners_apart() {
    let sim = sim(&format!(
        "delays: {{ associateMs: 300, disassociateMs: 300 }}\nconnections:\n\
         \x20 - {{ id: dxcon-other, macSecCapable: true, router: [\"{CKN_A}\"], tags: {{dxmacsec.io/owner: cluster-b/net/x}} }}\n\
         \x20 - {{ id: dxcon-tf, macSecCapable: true, encryptionMode: must_encrypt, keys: [{{ckn: \"{CKN_A}\", cak: \"{CAK_A}\"}}], router: [\"{CKN_A}\"] }}\n\
         \x20 - {{ id: dxcon-new, macSecCapable: true, router: [\"{CKN_A}\"] }}\n"
    ))
    .await;
    let manifests = |adopt: &str| {
        format!(
            "{}{}{}{}",
            key_manifest("k-a", CKN_A, CAK_A),
            dxc_manifest("other", "dxcon-other", "must_encrypt", &["k-a"], ""),
            dxc_manifest("tf", "dxcon-tf", "must_encrypt", &["k-a"], adopt),
            dxc_manifest("new", "dxcon-new", "must_encrypt", &["k-a"], "")
        )
    };
    let run = apply_json(&sim, &write(&manifests("")), "30s").await;
    assert_eq!(run.code, 1, "{}", run.all());
    let reports: Value = serde_json::from_str(&run.stdout).unwrap();
    let by = |name: &str| {
        reports
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == name)
            .unwrap()
            .clone()
    };
    let other = by("default/other");
    assert_eq!(other["reason"], "Conflict");
    assert!(
        other["message"]
            .as_str()
            .unwrap()
            .contains("managed by cluster-b/net/x"),
        "{other}"
    );
    let tf = by("default/tf");
    assert_eq!(tf["reason"], "Conflict");
    assert!(
        tf["message"].as_str().unwrap().contains("spec.adopt: true"),
        "{tf}"
    );
    assert_eq!(by("default/new")["ready"], true);
    let calls = sim.shared.calls();
    for id in ["dxcon-other", "dxcon-tf"] {
        assert!(
            calls
                .iter()
                .all(|c| c.target.as_deref() != Some(id)
                    || !MUTATING.contains(&c.operation.as_str())),
            "{id} was changed: {calls:?}"
        );
    }
    let owner = |state: &Value, id: &str| connection(state, id)["tags"].clone();
    let state = sim.shared.state();
    assert_eq!(
        owner(&state, "dxcon-new"),
        serde_json::json!([{"key": "dxmacsec.io/owner", "value": "cli/default/new"}])
    );
    assert_eq!(owner(&state, "dxcon-tf"), serde_json::json!([]));

    // The spec takes the Terraform-made connection over: tagged, keys kept, converged.
    let run = apply_json(&sim, &write(&manifests(", adopt: true")), "30s").await;
    let reports: Value = serde_json::from_str(&run.stdout).unwrap();
    let tf = reports
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "default/tf")
        .unwrap();
    assert_eq!(tf["ready"], true, "{tf}");
    let state = sim.shared.state();
    assert_eq!(
        owner(&state, "dxcon-tf"),
        serde_json::json!([{"key": "dxmacsec.io/owner", "value": "cli/default/tf"}])
    );
    assert_eq!(key_ckns(&state, "dxcon-tf"), [CKN_A]);
    assert_eq!(
        ok_calls(&sim.shared.calls(), "AssociateMacSecKey").len(),
        1,
        "only dxcon-new's"
    );
}

/// A Partner's interconnect, a 10G LAG with a minimum of one link, and a connection that
/// joins it; `after` is dx-sim's choice for a connection leaving a LAG (`keep` or `reset`).
fn partner_seed(after: &str) -> String {
    let a = CKN_A;
    format!(
        r#"
afterLeavingLag: {after}
delays: {{ associateMs: 300, disassociateMs: 300, membershipMs: 300 }}
connections:
  - {{ id: dxcon-m1, macSecCapable: true, router: [{a}] }}
  - {{ id: dxcon-m2, macSecCapable: true, router: [{a}] }}
  - {{ id: dxcon-m3, macSecCapable: true, router: [{a}] }}
interconnects:
  - {{ id: dxcon-ic1, macSecCapable: true, router: [{a}] }}
lags:
  - {{ id: dxlag-l1, macSecCapable: true, minimumLinks: 1, members: [dxcon-m1, dxcon-m2] }}
"#
    )
}

/// Member dxcon-m2 (whose DxConnection `m2` has `m2_extra`), the interconnect and the LAG,
/// all must_encrypt with key `k-a`. `apply` passes over them in this order, so m2 has been
/// looked at before the LAG's first call.
fn partner_manifests(m2_extra: &str) -> String {
    format!(
        "{}{}{}{}",
        key_manifest("k-a", CKN_A, CAK_A),
        dxc_manifest("m2", "dxcon-m2", "must_encrypt", &["k-a"], m2_extra),
        dxc_manifest("ic", "dxcon-ic1", "must_encrypt", &["k-a"], ""),
        dxc_manifest("core", "dxlag-l1", "must_encrypt", &["k-a"], ""),
    )
}

/// Waits until dx-sim has seen a successful `op` on `target`.
async fn until_called(sim: &Sim, op: &str, target: &str) {
    for _ in 0..300 {
        if sim
            .shared
            .calls()
            .iter()
            .any(|c| c.operation == op && c.outcome == "ok" && c.target.as_deref() == Some(target))
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no {op} on {target}: {:?}", sim.shared.calls());
}

/// Runs `apply` on the partner's manifests while, once the LAG's key is associated, dxcon-m3
/// joins the LAG and dxcon-m2 leaves it (out of band, as from the console). Returns the
/// report of `apply -o json`.
async fn apply_while_membership_changes(sim: &Sim) -> Value {
    let f = write(&partner_manifests(""));
    let plan = cli(sim, &["plan", "-f", f.to_str().unwrap()]).await;
    // 1, not 2 (changes): m2 names a LAG member, which a person has to sort out.
    assert_eq!(plan.code, 1, "{}", plan.all());
    assert!(
        plan.stdout
            .contains("AWS: Interconnect available, mode no_encrypt"),
        "{}",
        plan.stdout
    );
    let args = ["apply", "-f", f.to_str().unwrap(), "-o", "json"];
    let child = command(
        sim,
        &[&args[..], &["--timeout", "60s", "--interval", "200ms"]].concat(),
    )
    .output();
    let change = async {
        until_called(sim, "AssociateMacSecKey", "dxlag-l1").await;
        let req = |id: &str| serde_json::json!({"connectionId": id, "lagId": "dxlag-l1"});
        sim.shared
            .call("AssociateConnectionWithLag", &req("dxcon-m3"))
            .unwrap();
        sim.shared
            .call("DisassociateConnectionFromLag", &req("dxcon-m2"))
            .unwrap();
    };
    let (out, ()) = tokio::join!(child, change);
    let out = out.unwrap();
    let run = Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    assert_no_cak(&run);
    // m2 was a member when it was looked at: ManagedByLag, which needs a person.
    assert_eq!(run.code, 1, "{}", run.all());
    serde_json::from_str(&run.stdout).unwrap()
}

fn report_of<'a>(reports: &'a Value, name: &str) -> &'a Value {
    reports
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == name)
        .unwrap_or_else(|| panic!("no report for {name}: {reports}"))
}

/// The interconnect converges like a connection, and the LAG converges over the members it
/// has after the change, each Encryption Up; the operator's calls were all accepted.
fn assert_interconnect_and_lag_converged(sim: &Sim, reports: &Value) {
    let ic = report_of(reports, "default/ic");
    assert_eq!(ic["ready"], true, "{ic}");
    assert_eq!(ic["status"]["resourceType"], "Interconnect");
    let core = report_of(reports, "default/core");
    assert_eq!(core["ready"], true, "{core}");
    let listed: Vec<&str> = core["status"]["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            assert_eq!(m["portEncryptionStatus"], "Encryption Up", "{m}");
            m["connectionId"].as_str().unwrap()
        })
        .collect();
    assert_eq!(listed, ["dxcon-m1", "dxcon-m3"]);
    let m2 = report_of(reports, "default/m2");
    assert_eq!(m2["reason"], "ManagedByLag", "{m2}");
    assert_eq!(m2["status"]["lagId"], "dxlag-l1");

    let state = sim.shared.state();
    let ic = common::interconnect(&state, "dxcon-ic1");
    assert_eq!(ic["encryptionMode"], "must_encrypt");
    assert_eq!(ic["portEncryptionStatus"], "Encryption Up");
    assert_eq!(ic["macSecKeys"][0]["ckn"], CKN_A);
    assert_eq!(
        common::members_of(&state, "dxlag-l1"),
        ["dxcon-m1", "dxcon-m3"]
    );
    assert_eq!(lag(&state, "dxlag-l1")["encryptionMode"], "must_encrypt");
    let calls = sim.shared.calls();
    let refused: Vec<_> = calls
        .iter()
        .filter(|c| c.caller == "AKIDCLI" && c.outcome != "ok")
        .collect();
    assert!(refused.is_empty(), "AWS refused: {refused:?}");
    assert!(
        !ok_calls(&calls, "DescribeInterconnects").is_empty(),
        "{calls:?}"
    );
    assert_eq!(common::mutations(&calls, "dxcon-m3"), Vec::<&str>::new());
}

/// An interconnect and a LAG whose membership changes mid-way converge. The connection that
/// left kept the LAG's key and mode (dx-sim's `keep`): `apply` has no memory of it having
/// been a member, so it is a Conflict until `adopt: true`, and then it is only tagged and
/// raised to must_encrypt: its key is not associated again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interconnect_and_a_lag_whose_members_change_converge() {
    let sim = sim(&partner_seed("keep")).await;
    let reports = apply_while_membership_changes(&sim).await;
    assert_interconnect_and_lag_converged(&sim, &reports);

    let left = connection(&sim.shared.state(), "dxcon-m2").clone();
    assert!(left.get("lagId").is_none(), "{left}");
    assert_eq!(left["macSecKeys"][0]["ckn"], CKN_A, "it kept the LAG's key");
    let f = write(&partner_manifests(""));
    let run = apply_json(&sim, &f, "20s").await;
    let reports: Value = serde_json::from_str(&run.stdout).unwrap();
    let m2 = report_of(&reports, "default/m2");
    assert_eq!(m2["reason"], "Conflict", "{m2}");
    assert!(
        m2["message"].as_str().unwrap().contains("spec.adopt: true"),
        "{m2}"
    );
    let before = sim.shared.calls().len();
    let f = write(&partner_manifests(", adopt: true"));
    let run = apply_json(&sim, &f, "30s").await;
    assert_eq!(run.code, 0, "{}", run.all());
    let calls = sim.shared.calls();
    let m2_calls = common::mutations(&calls[before..], "dxcon-m2");
    assert_eq!(m2_calls[0], "TagResource", "{m2_calls:?}");
    assert!(!m2_calls.contains(&"AssociateMacSecKey"), "{m2_calls:?}");
    let m2 = connection(&sim.shared.state(), "dxcon-m2").clone();
    assert_eq!(m2["encryptionMode"], "must_encrypt");
    assert_eq!(m2["portEncryptionStatus"], "Encryption Up");
    assert_no_outage(&sim);
}

/// The same under dx-sim's other answer: the connection leaves bare (no keys, no_encrypt).
/// With no MACsec state it is claimed without asking and enabled from scratch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_leaves_a_lag_bare_is_enabled_on_its_own() {
    let sim = sim(&partner_seed("reset")).await;
    let reports = apply_while_membership_changes(&sim).await;
    assert_interconnect_and_lag_converged(&sim, &reports);
    let left = connection(&sim.shared.state(), "dxcon-m2").clone();
    assert_eq!(left["encryptionMode"], "no_encrypt", "{left}");
    let before = sim.shared.calls().len();
    let run = apply_json(&sim, &write(&partner_manifests("")), "30s").await;
    assert_eq!(run.code, 0, "{}", run.all());
    let calls = sim.shared.calls();
    assert_eq!(
        common::mutations(&calls[before..], "dxcon-m2"),
        [
            "TagResource",
            "AssociateMacSecKey",
            "UpdateConnection",
            "UpdateConnection"
        ]
    );
    let m2 = connection(&sim.shared.state(), "dxcon-m2").clone();
    assert_eq!(m2["encryptionMode"], "must_encrypt");
    assert_eq!(m2["portEncryptionStatus"], "Encryption Up");
}

/// DxConnections in two accounts and two regions: the operator's own account, and through a
/// DxAccess role another account in us-east-1 and us-west-2 (an interconnect there). Each
/// call acts in the right account and region; the role's credentials expire every few
/// seconds during the run and are renewed (no call is refused as expired); a role STS denies
/// is a clear AccessDenied on its DxConnection alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dxconnections_in_two_accounts_and_regions_converge_through_roles() {
    let a = CKN_A;
    let sim = sim(&format!(
        r#"
account: "111111111111"
delays: {{ associateMs: 12000 }}
connections: [{{ id: dxcon-home1, macSecCapable: true, router: [{a}] }}]
accounts:
  - account: "222222222222"
    region: us-east-1
    delays: {{ associateMs: 12000 }}
    connections: [{{ id: dxcon-east2, macSecCapable: true, router: [{a}] }}]
  - account: "222222222222"
    region: us-west-2
    delays: {{ associateMs: 12000 }}
    interconnects: [{{ id: dxcon-west2, macSecCapable: true, router: [{a}] }}]
  - account: "333333333333"
    region: us-east-1
    connections: [{{ id: dxcon-east3, macSecCapable: true, router: [{a}] }}]
roles: ["arn:aws:iam::222222222222:role/dx"]
credentialSeconds: 11
"#
    ))
    .await;
    let grant = |name: &str, role: &str| {
        format!(
            "apiVersion: dxmacsec.io/v1alpha1\nkind: DxAccess\nmetadata: {{name: {name}}}\n\
             spec: {{namespaces: [default], roleArn: \"{role}\", regions: [us-east-1, us-west-2]}}\n---\n"
        )
    };
    let text = [
        grant("acct2", "arn:aws:iam::222222222222:role/dx"),
        grant("acct3", "arn:aws:iam::333333333333:role/dx"),
        key_manifest("k-a", CKN_A, CAK_A),
        dxc_manifest("home", "dxcon-home1", "must_encrypt", &["k-a"], ""),
        dxc_manifest(
            "east2",
            "dxcon-east2",
            "must_encrypt",
            &["k-a"],
            ", accessRef: {name: acct2}",
        ),
        dxc_manifest(
            "west2",
            "dxcon-west2",
            "must_encrypt",
            &["k-a"],
            ", region: us-west-2, accessRef: {name: acct2}",
        ),
        dxc_manifest(
            "east3",
            "dxcon-east3",
            "must_encrypt",
            &["k-a"],
            ", accessRef: {name: acct3}",
        ),
    ]
    .concat();
    let run = apply_json(&sim, &write(&text), "60s").await;
    assert_eq!(run.code, 1, "{}", run.all());
    assert_no_cak(&run);
    let reports: Value = serde_json::from_str(&run.stdout).unwrap();
    for name in ["default/home", "default/east2", "default/west2"] {
        let r = report_of(&reports, name);
        assert_eq!(r["ready"], true, "{r}");
    }
    let denied = report_of(&reports, "default/east3");
    assert_eq!(denied["reason"], "AccessDenied", "{denied}");
    let message = denied["message"].as_str().unwrap();
    assert!(
        message.contains("sts:AssumeRole") && message.contains("arn:aws:iam::333333333333:role/dx"),
        "{message}"
    );

    let calls = sim.shared.calls();
    for (target, account, region) in [
        ("dxcon-home1", "111111111111", "us-east-1"),
        ("dxcon-east2", "222222222222", "us-east-1"),
        ("dxcon-west2", "222222222222", "us-west-2"),
    ] {
        let on: Vec<_> = calls
            .iter()
            .filter(|c| c.target.as_deref() == Some(target))
            .collect();
        assert!(!on.is_empty(), "no call on {target}");
        for c in on {
            assert_eq!(
                (c.account.as_str(), c.region.as_str()),
                (account, region),
                "{c:?}"
            );
        }
    }
    assert!(
        calls.iter().all(|c| c.account != "333333333333"),
        "nothing reached the denied account: {calls:?}"
    );
    let expired: Vec<_> = calls
        .iter()
        .filter(|c| c.outcome == "ExpiredTokenException")
        .collect();
    assert!(
        expired.is_empty(),
        "calls with expired credentials: {expired:?}"
    );
    // The run outlived the first credentials (11 s): they expired mid-run, and were renewed
    // before, as the SDK renews them ahead of their expiry.
    let last = calls.last().unwrap().at_ms;
    assert!(
        last > 11_000,
        "the run ended before the credentials expired: {last} ms"
    );
    let assumed = ok_calls(&calls, "AssumeRole");
    assert!(
        assumed.len() >= 2,
        "the role's credentials were never renewed: {calls:?}"
    );
    let east2 = sim.shared.state_of("222222222222", "us-east-1");
    assert_eq!(
        connection(&east2, "dxcon-east2")["encryptionMode"],
        "must_encrypt"
    );
    let west2 = sim.shared.state_of("222222222222", "us-west-2");
    assert_eq!(
        common::interconnect(&west2, "dxcon-west2")["portEncryptionStatus"],
        "Encryption Up"
    );
    assert_eq!(mode_of(&sim.shared.state(), "dxcon-home1"), "must_encrypt");
}
