//! The operator as a platform team runs it: its image in pods on a real kubelet, installed,
//! upgraded and uninstalled with the real helm. Started by `scripts/e2e-pods`, which runs
//! `scripts/with-cluster` with a node (DXM_E2E_NODE=1) and the image (E2E_OPERATOR_IMAGE);
//! dx-sim is AWS. Built only with `--features e2e`.

mod common;

use std::collections::BTreeSet;
use std::process::Stdio;
use std::time::Duration;

use common::{dxc_manifest, key_ckns, key_manifest, must_encrypt_with_key_a, ok_calls, wait_for};
use dx_sim::{CallRecord, Seed, Sim};
use serde_json::Value;
use tokio::process::Command;

const CKN_A: &str = "aaaa0000000000000000000000000000000000000000000000000000000000f1";
const CAK_A: &str = "c0c0000000000000000000000000000000000000000000000000000000000fa1";
const CKN_B: &str = "bbbb0000000000000000000000000000000000000000000000000000000000f2";
const CAK_B: &str = "c0c0000000000000000000000000000000000000000000000000000000000fb2";
const NS: &str = "dxm";
const CHART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/charts/dx-macsec-operator");

fn env(name: &str) -> String {
    std::env::var(name)
        .unwrap_or_else(|_| panic!("{name} is not set: run these tests with scripts/e2e-pods"))
}

/// A program with the admin kubeconfig; returns (success, stdout, stderr).
async fn run(program: &str, args: &[&str], stdin: Option<&str>) -> (bool, String, String) {
    let mut child = Command::new(program)
        .args(args)
        .env("KUBECONFIG", env("E2E_ADMIN_KUBECONFIG"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(text) = stdin {
        use tokio::io::AsyncWriteExt;
        let mut input = child.stdin.take().unwrap();
        input.write_all(text.as_bytes()).await.unwrap();
    }
    drop(child.stdin.take());
    let out = child.wait_with_output().await.unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

async fn kubectl(args: &[&str]) -> String {
    let (ok, out, err) = run("kubectl", args, None).await;
    assert!(ok, "kubectl {args:?}: {out}{err}");
    out
}

async fn apply(ns: &str, yaml: &str) {
    let (ok, out, err) = run("kubectl", &["apply", "-n", ns, "-f", "-"], Some(yaml)).await;
    assert!(ok, "kubectl apply: {out}{err}");
}

async fn wait_ready(ns: &str, name: &str) {
    kubectl(&[
        "wait",
        "-n",
        ns,
        "--for=condition=Ready",
        &format!("dxc/{name}"),
        "--timeout=120s",
    ])
    .await;
}

/// The operator pods of the release, by name, with their restart counts.
async fn operator_pods() -> Vec<(String, i64)> {
    let out = kubectl(&[
        "get",
        "pods",
        "-n",
        NS,
        "-l",
        "app.kubernetes.io/name=dx-macsec-operator",
        "-o",
        "json",
    ])
    .await;
    let list: Value = serde_json::from_str(&out).unwrap();
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .map(|p| {
            let restarts = p["status"]["containerStatuses"][0]["restartCount"]
                .as_i64()
                .unwrap_or(0);
            (
                p["metadata"]["name"].as_str().unwrap().to_string(),
                restarts,
            )
        })
        .collect()
}

/// Who called AWS for `target` (each pod's name is its AWS access key).
fn callers(calls: &[CallRecord], target: &str) -> BTreeSet<String> {
    calls
        .iter()
        .filter(|c| c.target.as_deref() == Some(target) && !c.operation.starts_with("Describe"))
        .map(|c| c.caller.clone())
        .collect()
}

/// The spec that names the test's DxAccess.
const GRANTED: &str = ", accessRef: {name: network}";

/// As a cluster admin: DxAccess `network` lets the test's namespaces use the operator's own
/// credentials.
async fn grant_own_credentials() {
    let (ok, out, err) = run(
        "kubectl",
        &["apply", "-f", "-"],
        Some("apiVersion: dxmacsec.io/v1alpha1\nkind: DxAccess\nmetadata: {name: network}\nspec: {namespaces: [enable, rotate]}\n"),
    )
    .await;
    assert!(ok, "{out}{err}");
}

/// `helm install` or `helm upgrade` of the chart with what this test machine needs: the
/// image loaded on the node (never pulled), host networking (dx-sim and the API server listen
/// on loopback), the API server's loopback address (there is no kube-proxy for the
/// `kubernetes` Service here), dx-sim as AWS, and each pod's name as its AWS access key.
async fn helm(verb: &str, sim: &Sim, extra: &[&str]) {
    let image = env("E2E_OPERATOR_IMAGE");
    let (repository, tag) = image.rsplit_once(':').unwrap();
    let extra_env = serde_json::json!([
        {"name": "KUBERNETES_SERVICE_HOST", "value": "127.0.0.1"},
        {"name": "KUBERNETES_SERVICE_PORT", "value": env("E2E_API_PORT")},
        {"name": "AWS_ACCESS_KEY_ID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "AWS_SECRET_ACCESS_KEY", "value": "e2e"},
        {"name": "AWS_EC2_METADATA_DISABLED", "value": "true"},
    ]);
    let mut args = vec![
        verb.to_string(),
        "dxm".into(),
        CHART.into(),
        "-n".into(),
        NS.into(),
        "--create-namespace".into(),
        "--wait".into(),
        "--timeout".into(),
        "180s".into(),
        "--set".into(),
        format!("image.repository={repository},image.tag={tag},image.pullPolicy=Never"),
        "--set".into(),
        format!(
            "hostNetwork=true,replicaCount=1,aws.region=us-east-1,aws.endpointUrl={}",
            sim.endpoint()
        ),
        "--set".into(),
        "operator.requeue=1s,operator.resync=6s,operator.observationMaxAge=1s".into(),
        "--set-json".into(),
        format!("extraEnv={extra_env}"),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (ok, out, err) = run(&env("HELM"), &args, None).await;
    assert!(ok, "helm {verb}: {out}{err}");
}

fn seed() -> String {
    let conn = |id: &str, extra: &str| {
        format!(
            "  - {{ id: {id}, macSecCapable: true, router: [\"{CKN_A}\", \"{CKN_B}\"]{extra} }}\n"
        )
    };
    let mut s = String::from("delays: { associateMs: 500, disassociateMs: 500 }\nconnections:\n");
    s += &conn("dxcon-pod0001", "");
    s += &conn("dxcon-pod0002", "");
    s += &conn("dxcon-pod0003", "");
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_pods_installed_with_helm() {
    let sim = Sim::start(Seed::from_yaml(&seed()).unwrap()).await.unwrap();
    helm("install", &sim, &[]).await;
    let pods = operator_pods().await;
    assert_eq!(pods.len(), 1, "{pods:?}");
    let first = pods[0].0.clone();

    let started = std::time::Instant::now();
    enables_macsec_from_a_pod(&sim, &first).await;
    eprintln!("{:?} enabled from {first}", started.elapsed());
    a_pod_deleted_mid_rotation_is_replaced_without_a_second_association(&sim).await;
    eprintln!("{:?} rotated across a pod deletion", started.elapsed());
    helm_upgrade_rolls_the_pod_and_loses_no_reconcile(&sim).await;
    eprintln!("{:?} upgraded", started.elapsed());
    helm_uninstall_leaves_resources_and_aws_as_they_are(&sim).await;
    eprintln!("{:?} uninstalled", started.elapsed());
    the_default_pod_passes_the_restricted_pod_security_standard().await;
}

/// The chart's pod becomes Ready (its readiness probe passes), and brings a DxConnection to
/// Ready; the calls come from that pod.
///
/// Installed with defaults, the operator's own credentials serve its own namespace only: a
/// DxConnection elsewhere is Forbidden, naming the DxAccess a cluster admin must create, and
/// nothing reaches AWS for it; with that DxAccess named in spec.accessRef it converges.
async fn enables_macsec_from_a_pod(sim: &Sim, pod: &str) {
    kubectl(&["create", "namespace", "enable"]).await;
    apply(
        "enable",
        &must_encrypt_with_key_a("nyc", "dxcon-pod0001", CKN_A, CAK_A),
    )
    .await;
    wait_for("nyc Forbidden", Duration::from_secs(60), || async {
        kubectl(&["get", "dxc", "-n", "enable", "nyc", "-o", "json"])
            .await
            .contains("\"reason\": \"Forbidden\"")
    })
    .await;
    let out = kubectl(&["get", "dxc", "-n", "enable", "nyc", "-o", "json"]).await;
    assert!(
        out.contains("create a DxAccess whose spec.namespaces lists enable"),
        "{out}"
    );
    assert!(callers(&sim.shared.calls(), "dxcon-pod0001").is_empty());
    grant_own_credentials().await;
    apply(
        "enable",
        &dxc_manifest("nyc", "dxcon-pod0001", "must_encrypt", &["k-a"], GRANTED),
    )
    .await;
    wait_ready("enable", "nyc").await;
    let calls = sim.shared.calls();
    assert_eq!(
        callers(&calls, "dxcon-pod0001"),
        BTreeSet::from([pod.to_string()])
    );
    assert_eq!(
        ok_calls(&calls, "AssociateMacSecKey", "dxcon-pod0001").len(),
        1
    );
}

/// The pod is force-deleted right after it associated the new key of a rotation; the
/// Deployment's next pod takes the Lease over and finishes the rotation, with no second
/// association.
async fn a_pod_deleted_mid_rotation_is_replaced_without_a_second_association(sim: &Sim) {
    kubectl(&["create", "namespace", "rotate"]).await;
    let keys = format!(
        "{}{}",
        key_manifest("k-a", CKN_A, CAK_A),
        key_manifest("k-b", CKN_B, CAK_B)
    );
    let spec = |k: &str| {
        dxc_manifest(
            "r",
            "dxcon-pod0002",
            "must_encrypt",
            &[k],
            // Longer than the deleted pod lives: its successor removes the old key.
            &format!("{GRANTED}, rotation: {{overlapSeconds: 20}}"),
        )
    };
    apply("rotate", &format!("{keys}{}", spec("k-a"))).await;
    wait_ready("rotate", "r").await;
    let (old, _) = operator_pods().await.remove(0);
    apply("rotate", &spec("k-b")).await;
    wait_for("key B associated", Duration::from_secs(60), || async {
        key_ckns(&sim.shared.state(), "dxcon-pod0002").contains(&CKN_B.to_string())
    })
    .await;
    kubectl(&[
        "delete",
        "pod",
        "-n",
        NS,
        &old,
        "--grace-period=0",
        "--force",
    ])
    .await;
    wait_for("rotation finished", Duration::from_secs(120), || async {
        key_ckns(&sim.shared.state(), "dxcon-pod0002") == vec![CKN_B.to_string()]
    })
    .await;
    wait_ready("rotate", "r").await;
    let calls = sim.shared.calls();
    let associations = ok_calls(&calls, "AssociateMacSecKey", "dxcon-pod0002");
    assert_eq!(
        associations.len(),
        2,
        "A then B, once each: {associations:?}"
    );
    let removal = ok_calls(&calls, "DisassociateMacSecKey", "dxcon-pod0002");
    assert_eq!(removal.len(), 1, "{removal:?}");
    assert_ne!(removal[0].caller, old, "the next pod finished the rotation");
    let new = operator_pods().await;
    assert!(
        new.iter().all(|(name, _)| *name != old),
        "the deleted pod is gone: {new:?}"
    );
}

/// `helm upgrade` with another operator setting rolls the pod; a DxConnection created right
/// after is brought to Ready by the new pod.
async fn helm_upgrade_rolls_the_pod_and_loses_no_reconcile(sim: &Sim) {
    let before: Vec<String> = operator_pods().await.into_iter().map(|p| p.0).collect();
    helm("upgrade", sim, &["--set", "operator.logLevel=debug"]).await;
    let after = operator_pods().await;
    assert_eq!(after.len(), 1, "{after:?}");
    assert!(
        !before.contains(&after[0].0),
        "the pod rolled: {before:?} {after:?}"
    );
    apply(
        "enable",
        &dxc_manifest(
            "chicago",
            "dxcon-pod0003",
            "should_encrypt",
            &["k-a"],
            GRANTED,
        ),
    )
    .await;
    wait_ready("enable", "chicago").await;
    assert_eq!(
        callers(&sim.shared.calls(), "dxcon-pod0003"),
        BTreeSet::from([after[0].0.clone()])
    );
    // The probes held: the kubelet never restarted the container.
    assert_eq!(after[0].1, 0, "{after:?}");
}

/// `helm uninstall` removes the operator; the DxConnections, MacSecKeys and CRDs stay (the
/// chart's CRDs are not deleted by helm), and AWS is left as it was.
async fn helm_uninstall_leaves_resources_and_aws_as_they_are(sim: &Sim) {
    let before = sim.shared.state();
    let (ok, out, err) = run(
        &env("HELM"),
        &["uninstall", "dxm", "-n", NS, "--wait", "--timeout", "120s"],
        None,
    )
    .await;
    assert!(ok, "helm uninstall: {out}{err}");
    wait_for(
        "the operator pods gone",
        Duration::from_secs(60),
        || async { operator_pods().await.is_empty() },
    )
    .await;
    let left = kubectl(&["get", "dxc,mskey", "-A", "-o", "name"]).await;
    for name in [
        "dxconnection.dxmacsec.io/nyc",
        "dxconnection.dxmacsec.io/r",
        "macseckey.dxmacsec.io/k-b",
    ] {
        assert!(left.contains(name), "{name} is gone: {left}");
    }
    kubectl(&["get", "crd", "dxconnections.dxmacsec.io"]).await;
    for id in ["dxcon-pod0001", "dxcon-pod0002", "dxcon-pod0003"] {
        assert_eq!(
            key_ckns(&sim.shared.state(), id),
            key_ckns(&before, id),
            "{id}"
        );
    }
}

/// The chart's default pod (the pod network) is admitted where the API server enforces the
/// restricted Pod Security Standard; with host networking, as these tests need, it is
/// refused there, which is why they run in a namespace without that label.
async fn the_default_pod_passes_the_restricted_pod_security_standard() {
    kubectl(&["create", "namespace", "psa"]).await;
    kubectl(&[
        "label",
        "namespace",
        "psa",
        "pod-security.kubernetes.io/enforce=restricted",
    ])
    .await;
    let version: Value = serde_json::from_str(&kubectl(&["version", "-o", "json"]).await).unwrap();
    let version = version["serverVersion"]["gitVersion"]
        .as_str()
        .unwrap()
        .to_string();
    for (host_network, admitted) in [("false", true), ("true", false)] {
        let (ok, rendered, err) = run(
            &env("HELM"),
            &[
                "template",
                "dxm",
                CHART,
                "-n",
                "psa",
                "--kube-version",
                &version,
                "--show-only",
                "templates/deployment.yaml",
                "--set",
                &format!("hostNetwork={host_network}"),
            ],
            None,
        )
        .await;
        assert!(ok, "helm template: {err}");
        let deployment: Value = serde_saphyr::from_str(&rendered).unwrap();
        let mut spec = deployment["spec"]["template"]["spec"].clone();
        // Pod Security judges the pod, not its ServiceAccount (which exists in NS only).
        spec.as_object_mut().unwrap().remove("serviceAccountName");
        let pod = serde_json::json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "psa-check", "namespace": "psa"},
            "spec": spec,
        });
        let (ok, out, err) = run(
            "kubectl",
            &["create", "--dry-run=server", "-f", "-"],
            Some(&pod.to_string()),
        )
        .await;
        assert_eq!(ok, admitted, "hostNetwork={host_network}: {out}{err}");
        if !admitted {
            assert!(err.contains("restricted"), "{err}");
        }
    }
}
