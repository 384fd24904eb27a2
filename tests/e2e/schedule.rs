//! Scheduled rotation end to end: keys the operator makes, handed to a router stand-in
//! that reads only the documented status (`status.router`), configures dx-sim's router and
//! confirms through the status subresource with RBAC that grants no spec edit.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::*;

/// The generated CAKs the router stand-in read, written to `E2E_WORK/generated-caks` for
/// the check that no operator log holds one.
pub(super) const GENERATED_CAKS: &str = "generated-caks";

const NS: &str = "sched";

/// A kubeconfig for ServiceAccount `sa` of namespace `ns`: the admin one with its token.
async fn kubeconfig_of(ns: &str, sa: &str) -> String {
    let (ok, token, err) =
        kubectl(&["create", "token", sa, "-n", ns, "--duration", "2h"], None).await;
    assert!(ok, "{err}");
    kubeconfig_with_token(sa, &token)
}

/// `POST http://{addr}{path}` with a JSON body (dx-sim's controls).
async fn http_post(addr: &str, path: &str, body: &Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let body = body.to_string();
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(
            format!(
                "POST {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    assert!(
        response.starts_with("HTTP/1.") && response.contains(" 204 "),
        "{response}"
    );
}

/// What the router stand-in did.
#[derive(Default)]
struct Router {
    /// CAKs it read from the key material, by CKN.
    caks: BTreeMap<String, String>,
    /// CKNs it confirmed, per DxConnection, in order.
    confirmed: BTreeMap<String, Vec<String>>,
    /// DxConnections whose keys it holds back (a router whose automation is slow).
    paused: BTreeSet<String>,
}

/// Reads a key's CAK where `status.router.keys[].material` says it is.
async fn read_material(
    k8s: &Client,
    sm: &aws_sdk_secretsmanager::Client,
    material: &Value,
    ckn: &str,
) -> Option<String> {
    let (found_ckn, cak) = if let Some(s) = material.get("secret") {
        let secrets: Api<k8s_openapi::api::core::v1::Secret> =
            Api::namespaced(k8s.clone(), s["namespace"].as_str()?);
        let secret = secrets.get_opt(s["name"].as_str()?).await.ok()??;
        let data = secret.data?;
        let field = |k: &str| {
            data.get(s[k].as_str()?)
                .map(|b| String::from_utf8_lossy(&b.0).into_owned())
        };
        (field("cknKey")?, field("cakKey")?)
    } else {
        let s = material.get("secretsManager")?;
        let out = sm
            .get_secret_value()
            .secret_id(s["secretArn"].as_str()?)
            .send()
            .await
            .ok()?;
        let json: Value = serde_json::from_str(out.secret_string()?).ok()?;
        (
            json[s["cknField"].as_str()?].as_str()?.to_string(),
            json[s["cakField"].as_str()?].as_str()?.to_string(),
        )
    };
    assert_eq!(
        found_ckn, ckn,
        "the material holds the CKN the status lists"
    );
    assert!(
        cak.len() == 64 && cak.chars().all(|c| c.is_ascii_hexdigit()),
        "a 64-hex CAK"
    );
    Some(cak)
}

/// The router's automation, as docs/rotation.md describes it: for each DxConnection, hold
/// every key `status.router.keys` lists (read from where its material is), then confirm the
/// staged one. It runs as ServiceAccount `router` with the chart's router ClusterRole.
async fn router_stand_in(
    k8s: Client,
    sm: aws_sdk_secretsmanager::Client,
    sim: String,
    names: Vec<(String, String)>,
    seen: Arc<Mutex<Router>>,
) {
    // The status as JSON, as any automation reads it (not this crate's types).
    let resource = kube::core::ApiResource::erase::<DxConnection>(&());
    let api: Api<kube::core::DynamicObject> = Api::namespaced_with(k8s.clone(), NS, &resource);
    loop {
        for (name, resource) in &names {
            if seen.lock().unwrap().paused.contains(name) {
                continue;
            }
            let Ok(dxc) = api.get(name).await else {
                continue;
            };
            let status = dxc.data["status"].clone();
            let keys = status["router"]["keys"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let mut hold = Vec::new();
            let mut staged = None;
            for k in &keys {
                let Some(ckn) = k["ckn"].as_str() else {
                    continue;
                };
                let known = seen.lock().unwrap().caks.contains_key(ckn);
                if !known {
                    if k["material"].is_null() {
                        // A key the operator did not make: its CAK is the team's own.
                    } else if let Some(cak) = read_material(&k8s, &sm, &k["material"], ckn).await {
                        seen.lock().unwrap().caks.insert(ckn.to_string(), cak);
                    } else {
                        continue;
                    }
                }
                hold.push(ckn.to_string());
                if k["state"] == "staged" {
                    staged = Some(ckn.to_string());
                }
            }
            http_post(
                &sim,
                "/_sim/router",
                &serde_json::json!({"connectionId": resource, "ckns": hold}),
            )
            .await;
            let confirmed = status["router"]["confirmedCkn"].as_str();
            if let Some(ckn) = staged
                && confirmed != Some(ckn.as_str())
            {
                let patch = serde_json::json!({"status": {"router": {"confirmedCkn": ckn}}});
                api.patch_status(
                    name,
                    &kube::api::PatchParams::default(),
                    &kube::api::Patch::Merge(&patch),
                )
                .await
                .unwrap();
                seen.lock()
                    .unwrap()
                    .confirmed
                    .entry(name.clone())
                    .or_default()
                    .push(ckn);
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The router's ServiceAccount: the chart's router ClusterRole in namespace `sched`, and
/// `get` on its Secrets (the key material); a client as it.
async fn router_identity() -> Client {
    let rbac = format!(
        "apiVersion: v1\nkind: ServiceAccount\nmetadata: {{name: router, namespace: {NS}}}\n---\n\
         apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {{name: router, namespace: {NS}}}\n\
         roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: dx-macsec-operator-router}}\n\
         subjects: [{{kind: ServiceAccount, name: router, namespace: {NS}}}]\n---\n\
         apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {{name: router-key-material, namespace: {NS}}}\n\
         rules: [{{apiGroups: [\"\"], resources: [secrets], verbs: [get]}}]\n---\n\
         apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {{name: router-key-material, namespace: {NS}}}\n\
         roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: router-key-material}}\n\
         subjects: [{{kind: ServiceAccount, name: router, namespace: {NS}}}]\n"
    );
    apply(NS, &rbac).await;
    client(&kubeconfig_of(NS, "router").await).await
}

/// A Secrets Manager client of dx-sim in account 222222222222 (through its role), as the
/// router's automation there would have.
async fn secrets_manager_222(e: &E2e) -> aws_sdk_secretsmanager::Client {
    let base = e.sdk_config("AKIDROUTER").await;
    let role = aws_config::sts::AssumeRoleProvider::builder(ROLE_222)
        .session_name("router")
        .region(aws_config::Region::new("us-east-1"))
        .configure(&base)
        .build()
        .await;
    let config = aws_sdk_secretsmanager::config::Builder::from(&base)
        .credentials_provider(role)
        .build();
    aws_sdk_secretsmanager::Client::from_conf(config)
}

fn schedule(every: &str, lead: &str, store: &str) -> String {
    format!(
        ", rotation: {{overlapSeconds: 5, guardSeconds: 5, schedule: {{every: {every}, routerLeadTime: {lead}, retainFor: 10s, key: {store}}}}}"
    )
}

/// The `/metrics` text of the replica started last.
async fn metrics_of(e: &E2e) -> String {
    let (identity, _) = e.operators.last().unwrap();
    let log = format!("{}/operator-{identity}.log", env("E2E_WORK"));
    let addr = common::served_address(&std::fs::read_to_string(&log).unwrap())
        .unwrap_or_else(|| panic!("{log} names no address it serves on"));
    common::http_get(&addr, "/metrics").await
}

async fn status_of(ns: &str, name: &str) -> Value {
    let (ok, out, err) = kubectl(&["get", "dxc", "-n", ns, name, "-o", "json"], None).await;
    assert!(ok, "{err}");
    serde_json::from_str::<Value>(&out).unwrap()["status"].clone()
}

/// The router keys' (MacSecKey, state) of a status.
fn router_keys(status: &Value) -> Vec<(String, String)> {
    status["router"]["keys"]
        .as_array()
        .map(|keys| {
            keys.iter()
                .map(|k| {
                    (
                        k["macSecKey"].as_str().unwrap().to_string(),
                        k["state"].as_str().unwrap().to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Generation is refused with the fix while the operator may not create Secrets (the
/// chart's default); deploy/key-generation-rbac.yaml (keyGeneration.enabled) allows it.
async fn generation_needs_the_opt_in() {
    apply(
        NS,
        "apiVersion: dxmacsec.io/v1alpha1\nkind: MacSecKey\nmetadata: {name: denied}\nspec: {generate: {}}\n",
    )
    .await;
    wait_for("generation refused", Duration::from_secs(60), || async {
        let (_, out, _) = kubectl(&["get", "mskey", "-n", NS, "denied", "-o", "json"], None).await;
        let key: Value = serde_json::from_str(&out).unwrap_or_default();
        key["status"]["conditions"].as_array().is_some_and(|c| {
            c.iter().any(|c| {
                c["type"] == "Ready"
                    && c["reason"] == "KeyGenerationFailed"
                    && c["message"]
                        .as_str()
                        .unwrap()
                        .contains("keyGeneration.enabled")
            })
        })
    })
    .await;
    let (ok, _, err) = kubectl(
        &["delete", "mskey", "-n", NS, "denied", "--wait=false"],
        None,
    )
    .await;
    assert!(ok, "{err}");
    let (ok, out, err) = kubectl(
        &[
            "apply",
            "-f",
            concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/deploy/key-generation-rbac.yaml"
            ),
        ],
        None,
    )
    .await;
    assert!(ok, "{out}{err}");
}

/// Three scheduled rotations back to back, a minute apart, on a connection (keys in
/// Secrets) and on a LAG (keys in Secrets Manager in another account, through a DxAccess
/// role), each key handed to the router stand-in and associated once it confirmed; no
/// second down or in clear text; each generated key associated exactly once; the old
/// material gone after its retention. Meanwhile a router that never confirms: the rotation
/// `dx-macsec-operator rotate` started waits on the current key, with its reason, a Warning
/// and the alert's series.
pub(super) async fn scheduled_rotations_wait_for_the_router(e: &E2e) {
    namespace(NS).await;
    generation_needs_the_opt_in().await;
    apply(
        NS,
        &format!(
            "apiVersion: dxmacsec.io/v1alpha1\nkind: DxAccess\nmetadata: {{name: sched-xacct}}\nspec: {{namespaces: [{NS}], roleArn: \"{ROLE_222}\", regions: [us-east-1]}}\n"
        ),
    )
    .await;
    let router = router_identity().await;
    let seen = Arc::new(Mutex::new(Router::default()));
    let stand_in = tokio::spawn(router_stand_in(
        router.clone(),
        secrets_manager_222(e).await,
        e.sim.addr.to_string(),
        vec![
            ("con".into(), "dxcon-sched001".into()),
            ("lag".into(), "dxlag-sched01".into()),
        ],
        seen.clone(),
    ));
    let manifests = [
        dxc_manifest(
            "con",
            "dxcon-sched001",
            "must_encrypt",
            &[],
            &schedule("1m", "20s", "{}"),
        ),
        dxc_manifest(
            "lag",
            "dxlag-sched01",
            "must_encrypt",
            &[],
            &format!(
                "{}, accessRef: {{name: e2e}}",
                schedule(
                    "1m",
                    "20s",
                    "{store: SecretsManager, accessRef: {name: sched-xacct}}"
                )
            ),
        ),
        key_manifest("k-a", CKN_A, CAK_A),
        dxc_manifest(
            "silent",
            "dxcon-sched003",
            "must_encrypt",
            &["k-a"],
            &schedule("1h", "0s", "{}"),
        ),
    ];
    apply(NS, &manifests.concat()).await;

    // The router's identity may confirm through the status but not edit a spec.
    let as_router: Api<DxConnection> = Api::namespaced(router.clone(), NS);
    let denied = as_router
        .patch(
            "silent",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(serde_json::json!({"spec": {"encryptionMode": "no_encrypt"}})),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(denied, kube::Error::Api(ref s) if s.code == 403),
        "{denied}"
    );

    // A router that never confirms: a rotation started at once by the CLI waits.
    wait_ready(NS, "silent").await;
    let out = Command::new(env!("CARGO_BIN_EXE_dx-macsec-operator"))
        .args(["rotate", "-n", NS, "silent"])
        .env("KUBECONFIG", env("E2E_ADMIN_KUBECONFIG"))
        .output()
        .await
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && said.contains("rotation of DxConnection sched/silent requested"),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );

    wait_for(
        "three scheduled rotations on each",
        Duration::from_secs(330),
        || async {
            let mut done = true;
            for name in ["con", "lag"] {
                let status = status_of(NS, name).await;
                done &= status["schedule"]["sequence"].as_u64() >= Some(4)
                    && router_keys(&status) == [(format!("{name}-k4"), "active".to_string())];
            }
            done
        },
    )
    .await;
    stand_in.abort();

    let calls = e.calls();
    let outages = e.sim.shared.outages();
    for (name, resource, ports) in [
        ("con", "dxcon-sched001", vec!["dxcon-sched001"]),
        (
            "lag",
            "dxlag-sched01",
            vec!["dxcon-schedl01", "dxcon-schedl02"],
        ),
    ] {
        assert_eq!(
            ok_calls(&calls, "AssociateMacSecKey", resource).len(),
            4,
            "{name}: each generated key associated exactly once"
        );
        assert_eq!(
            ok_calls(&calls, "DisassociateMacSecKey", resource).len(),
            3,
            "{name}"
        );
        for port in ports {
            assert_eq!(
                outages["ports"][port]["downSeconds"], 0.0,
                "{port}: {outages}"
            );
            assert_eq!(
                outages["ports"][port]["clearTextSeconds"], 0.0,
                "{port}: {outages}"
            );
        }
        let confirmed = seen
            .lock()
            .unwrap()
            .confirmed
            .get(name)
            .cloned()
            .unwrap_or_default();
        assert_eq!(
            confirmed.len(),
            4,
            "{name}: the router confirmed each key once: {confirmed:?}"
        );
    }
    // The retired keys go: their MacSecKeys (deleted once listed no more; each finalizer
    // first deletes the material) and the material, the connection's Secrets and the LAG's
    // Secrets Manager secrets.
    wait_for(
        "the retired keys and their material gone",
        Duration::from_secs(60),
        || async {
            let mut gone = true;
            for old in 1..=3 {
                for (kind, name) in [
                    ("mskey", format!("con-k{old}")),
                    ("mskey", format!("lag-k{old}")),
                    ("secret", format!("con-k{old}")),
                ] {
                    let (found, _, _) = kubectl(&["get", kind, "-n", NS, &name], None).await;
                    gone &= !found;
                }
            }
            // Only the retired ones: the next rotation may have made its key by now.
            let left = e.sim.shared.state_of("222222222222", "us-east-1")["secrets"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|s| s["name"].as_str())
                .filter(|n| (1..=3).any(|k| n.starts_with(&format!("dx-macsec/sched/lag-k{k}-"))))
                .count();
            gone && left == 0
        },
    )
    .await;
    let (found, out, _) = kubectl(&["get", "secret", "-n", NS, "con-k4", "-o", "json"], None).await;
    assert!(found, "the active key's Secret stays");
    let secret: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(secret["metadata"]["ownerReferences"][0]["name"], "con-k4");
    assert_eq!(
        secret["metadata"]["labels"]["dxmacsec.io/key-material"],
        "true"
    );
    let state_222 = e.sim.shared.state_of("222222222222", "us-east-1");
    let made: Vec<&str> = state_222["secrets"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["name"].as_str())
        .filter(|n| n.starts_with("dx-macsec/sched/lag-k4-"))
        .collect();
    assert_eq!(made.len(), 1, "the active key's secret stays: {made:?}");

    // The silent router: the rotation waits on the current key with a reason of its own.
    let silent = status_of(NS, "silent").await;
    assert_eq!(
        router_keys(&silent),
        [
            ("k-a".to_string(), "active".to_string()),
            ("silent-k1".to_string(), "staged".to_string())
        ]
    );
    let rotation = silent["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "KeyRotation")
        .cloned()
        .unwrap();
    assert_eq!(
        (rotation["status"].as_str(), rotation["reason"].as_str()),
        (Some("False"), Some("WaitingForRouter"))
    );
    assert!(
        rotation["message"]
            .as_str()
            .unwrap()
            .contains("confirmedCkn"),
        "{rotation}"
    );
    assert!(
        ok_calls(&calls, "AssociateMacSecKey", "dxcon-sched003").is_empty(),
        "nothing associated"
    );
    assert_eq!(key_ckns(&e.sim.shared.state(), "dxcon-sched003"), [CKN_A]);
    assert_eq!(outages["ports"]["dxcon-sched003"]["downSeconds"], 0.0);
    let events = events_of(NS, "silent").await;
    assert!(
        events.contains("\"reason\": \"WaitingForRouter\"")
            && events.contains("\"type\": \"Warning\""),
        "{events}"
    );
    let metrics = metrics_of(e).await;
    let series = |line: &str| metrics.lines().any(|l| l.starts_with(line));
    assert!(
        series(
            r#"dxmacsec_rotation_stage{namespace="sched",name="silent",stage="WaitingForRouter"} 1"#
        ),
        "{metrics}"
    );
    let next = metrics
        .lines()
        .find(|l| {
            l.starts_with(
                r#"dxmacsec_rotation_next_timestamp_seconds{namespace="sched",name="silent"}"#,
            )
        })
        .and_then(|l| l.rsplit(' ').next()?.parse::<i64>().ok())
        .unwrap();
    assert!(
        next <= jiff::Timestamp::now().as_second(),
        "due: the alert's condition holds"
    );

    deleting_a_schedule_keeps_or_removes_its_keys(e).await;

    let caks: Vec<String> = seen.lock().unwrap().caks.values().cloned().collect();
    assert!(
        caks.len() >= 8,
        "the router read every generated key: {}",
        caks.len()
    );
    let path = format!("{}/{GENERATED_CAKS}", env("E2E_WORK"));
    let mut all = std::fs::read_to_string(&path).unwrap_or_default();
    all += &caks.join("\n");
    all += "\n";
    std::fs::write(path, all).unwrap();
}

/// Deleting a scheduled DxConnection: under `deletionPolicy: Retain` the key stays on AWS, so
/// its MacSecKey and material stay too, no longer owned by the DxConnection (garbage
/// collection leaves them to the router and a successor); under `Disassociate` the key leaves
/// AWS and its MacSecKey and material go.
async fn deleting_a_schedule_keeps_or_removes_its_keys(e: &E2e) {
    let (ok, _, err) = kubectl(
        &[
            "patch",
            "dxc",
            "-n",
            NS,
            "lag",
            "--type=merge",
            "-p",
            r#"{"spec":{"deletionPolicy":"Disassociate"}}"#,
        ],
        None,
    )
    .await;
    assert!(ok, "{err}");
    let (ok, _, err) = kubectl(
        &["delete", "dxc", "-n", NS, "con", "lag", "--timeout=90s"],
        None,
    )
    .await;
    assert!(ok, "{err}");
    let (ok, out, err) = kubectl(&["get", "mskey", "-n", NS, "con-k4", "-o", "json"], None).await;
    assert!(ok, "the retained key's MacSecKey stays: {err}");
    let key: Value = serde_json::from_str(&out).unwrap();
    assert!(
        key["metadata"]["ownerReferences"].is_null(),
        "no longer owned: {key}"
    );
    let (found, _, _) = kubectl(&["get", "secret", "-n", NS, "con-k4"], None).await;
    assert!(found, "the retained key's material stays");
    assert_eq!(
        key_ckns(&e.sim.shared.state(), "dxcon-sched001").len(),
        1,
        "Retain: still associated"
    );
    wait_for(
        "the LAG's key and material gone",
        Duration::from_secs(60),
        || async {
            let (found, _, _) = kubectl(&["get", "mskey", "-n", NS, "lag-k4"], None).await;
            let left = e.sim.shared.state_of("222222222222", "us-east-1")["secrets"]
                .as_array()
                .unwrap()
                .iter()
                .any(|s| {
                    s["name"]
                        .as_str()
                        .is_some_and(|n| n.starts_with("dx-macsec/sched/lag-k"))
                });
            !found && !left
        },
    )
    .await;
}

/// The operator killed (SIGKILL, another replica started) in each stage of one scheduled
/// rotation: while the new key's Secrets Manager secret is being made, while the router has
/// not confirmed, right after the association, and while the old key retires. The rotation
/// resumes from the status each time and completes; no AWS mutation is made twice.
pub(super) async fn a_scheduled_rotation_survives_a_kill_in_every_stage(e: &mut E2e) {
    const ID: &str = "dxcon-schedk01";
    let store = "{store: SecretsManager, accessRef: {name: sched-xacct}}";
    // A replica of the operator's own ServiceAccount, which deploy/key-generation-rbac.yaml
    // lets make keys (an earlier scenario ran another identity).
    replace_operators(e, "AKIDSCHEDKILL0").await;
    apply(
        NS,
        &dxc_manifest(
            "kill",
            ID,
            "must_encrypt",
            &[],
            &format!("{}, accessRef: {{name: e2e}}", schedule("1h", "0s", store)),
        ),
    )
    .await;
    let seen = Arc::new(Mutex::new(Router::default()));
    let stand_in = tokio::spawn(router_stand_in(
        router_identity().await,
        secrets_manager_222(e).await,
        e.sim.addr.to_string(),
        vec![("kill".into(), ID.into())],
        seen.clone(),
    ));
    wait_for("the first key in use", Duration::from_secs(90), || async {
        router_keys(&status_of(NS, "kill").await) == [("kill-k1".to_string(), "active".to_string())]
    })
    .await;

    // The second rotation, started by hand, with the secret's creation slowed and the
    // router holding back until the operator has been killed while it waits.
    e.sim.shared.add_fault(Fault {
        operation: "CreateSecret".into(),
        error: None,
        message: None,
        count: Some(1),
        rate: None,
        latency_ms: 4000,
    });
    seen.lock().unwrap().paused.insert("kill".into());
    let (ok, _, err) = kubectl(
        &[
            "annotate",
            "dxc",
            "-n",
            NS,
            "kill",
            "dxmacsec.io/rotate-now=second",
            "--overwrite",
        ],
        None,
    )
    .await;
    assert!(ok, "{err}");
    let stage = || async {
        status_of(NS, "kill").await["schedule"]["stage"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    let mut kills = 0;
    for wanted in ["Generating", "WaitingForRouter", "Associated", "Retiring"] {
        wait_for(
            &format!("stage {wanted}"),
            Duration::from_secs(90),
            || async {
                if wanted == "Associated" {
                    // Killed right after the association: before the port is seen up.
                    ok_calls(&e.calls(), "AssociateMacSecKey", ID).len() == 2
                } else {
                    stage().await == wanted
                }
            },
        )
        .await;
        kills += 1;
        replace_operators(e, &format!("AKIDSCHEDKILL{kills}")).await;
        if wanted == "WaitingForRouter" {
            seen.lock().unwrap().paused.remove("kill");
        }
    }
    wait_for(
        "the rotation completed",
        Duration::from_secs(120),
        || async {
            router_keys(&status_of(NS, "kill").await)
                == [("kill-k2".to_string(), "active".to_string())]
        },
    )
    .await;
    stand_in.abort();

    let calls = e.calls();
    assert_eq!(
        ok_calls(&calls, "AssociateMacSecKey", ID).len(),
        2,
        "k1 and k2, once each"
    );
    assert_eq!(
        ok_calls(&calls, "DisassociateMacSecKey", ID).len(),
        1,
        "k1, once"
    );
    // The successful calls of `op` on a secret whose name or ARN holds `part`.
    let ok_on = |op: &str, part: &str| -> Vec<&CallRecord> {
        calls
            .iter()
            .filter(|c| c.operation == op && c.outcome == "ok")
            .filter(|c| c.target.as_deref().is_some_and(|t| t.contains(part)))
            .collect()
    };
    let made = ok_on("CreateSecret", "dx-macsec/sched/kill-k2-");
    assert_eq!(made.len(), 1, "the secret made once: {made:?}");
    let put = ok_on("PutSecretValue", ":secret:dx-macsec/sched/kill-k2-");
    assert_eq!(put.len(), 1, "one value put: {put:?}");
    let port = &e.sim.shared.outages()["ports"][ID];
    assert_eq!(port["downSeconds"], 0.0, "{port}");
    assert_eq!(port["clearTextSeconds"], 0.0, "{port}");
    let left: Vec<String> = e.sim.shared.state_of("222222222222", "us-east-1")["secrets"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["name"].as_str())
        .filter(|n| n.starts_with("dx-macsec/sched/kill-k"))
        .map(str::to_string)
        .collect();
    wait_for(
        "k1's secret deleted after its retention",
        Duration::from_secs(60),
        || async {
            !e.sim.shared.state_of("222222222222", "us-east-1")["secrets"]
                .as_array()
                .unwrap()
                .iter()
                .any(|s| {
                    s["name"]
                        .as_str()
                        .is_some_and(|n| n.starts_with("dx-macsec/sched/kill-k1-"))
                })
        },
    )
    .await;
    assert!(
        left.iter()
            .any(|n| n.starts_with("dx-macsec/sched/kill-k2-")),
        "{left:?}"
    );
    assert_eq!(kills, 4);
    let caks: Vec<String> = seen.lock().unwrap().caks.values().cloned().collect();
    let path = format!("{}/{GENERATED_CAKS}", env("E2E_WORK"));
    let all = std::fs::read_to_string(&path).unwrap_or_default() + &caks.join("\n") + "\n";
    std::fs::write(path, all).unwrap();
}

/// No operator log of the whole run holds a CAK the operator generated (the replicas log at
/// trace level).
pub(super) fn no_log_holds_a_generated_cak() {
    let caks = std::fs::read_to_string(format!("{}/{GENERATED_CAKS}", env("E2E_WORK"))).unwrap();
    let caks: Vec<&str> = caks.lines().filter(|l| !l.is_empty()).collect();
    assert!(
        caks.len() >= 10,
        "the CAKs of the generated keys were read: {}",
        caks.len()
    );
    let mut logs = 0;
    for entry in std::fs::read_dir(env("E2E_WORK")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if !(name.starts_with("operator-") && name.ends_with(".log")) {
            continue;
        }
        logs += 1;
        let text = std::fs::read_to_string(&path).unwrap().to_ascii_lowercase();
        for cak in &caks {
            assert!(
                !text.contains(&cak.to_ascii_lowercase()),
                "{name} holds a generated CAK"
            );
        }
    }
    assert!(logs > 1, "operator logs read: {logs}");
}
