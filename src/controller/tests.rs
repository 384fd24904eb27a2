//! Controller tests without a cluster: a kube Client on a mocked API server (tower-test)
//! whose verifier asserts every request in order, and dx-sim in-process as AWS.

use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response, StatusCode};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::Client;
use kube::client::Body;
use kube::core::DeserializeGuard;
use kube::runtime::controller::Action;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector;
use kube::runtime::watcher;
use serde_json::{Value, json};

use super::*;
use crate::access::Namespaces;
use crate::aws::{ObservationCache, SdkProvider};
use crate::crd::{
    DeletionPolicy, DxConnectionSpec, DxConnectionStatus, EncryptionMode, FINALIZER, KeyReference,
    MacSecKeySpec, SecretKeySource,
};

const CKN: &str = "abcd000000000000000000000000000000000000000000000000000000000001";
const CAK: &str = "feed000000000000000000000000000000000000000000000000000000c0ffee";

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

/// One expected request: method, a fragment of the path and query, and the response.
struct Expect {
    method: &'static str,
    path: String,
    status: StatusCode,
    /// `None`: answer with the request body (writes echo what was sent).
    response: Option<Value>,
    /// Query parameters that must be present, in any order.
    query: Vec<&'static str>,
}

fn expect(method: &'static str, path: impl Into<String>) -> Expect {
    Expect {
        method,
        path: path.into(),
        status: StatusCode::OK,
        response: None,
        query: Vec::new(),
    }
}

impl Expect {
    /// Server-side apply by this operator's field manager, forced.
    fn server_side_apply(mut self) -> Self {
        self.query = vec!["fieldManager=dx-macsec-operator", "force=true"];
        self
    }

    /// Answers a write with the object as the API server would return it.
    fn returning<T: serde::Serialize>(mut self, obj: &T) -> Self {
        self.response = Some(serde_json::to_value(obj).unwrap());
        self
    }

    fn answer(mut self, status: StatusCode, body: Value) -> Self {
        self.status = status;
        self.response = Some(body);
        self
    }
}

fn is_secret_get(e: &Expect) -> bool {
    e.method == "GET" && e.path.contains("/secrets/")
}

/// Serves the expected requests in order and returns the bodies it received. A missing or
/// unexpected request fails the test within a second.
async fn verify(mut handle: Handle, script: Vec<Expect>) -> (Vec<Value>, Handle) {
    let mut bodies = Vec::new();
    for e in script {
        let (req, send) = tokio::time::timeout(Duration::from_secs(1), handle.next_request())
            .await
            .unwrap_or_else(|_| panic!("no request came; expected {} {}", e.method, e.path))
            .expect("the client is gone");
        let (req, send) = if is_secret_get(&e) {
            // A Secret is read as its metadata first, then (when labelled as key material,
            // and found) in full: one script entry answers both with the same object.
            let accept = req
                .headers()
                .get(http::header::ACCEPT)
                .map(|v| v.to_str().unwrap().to_string());
            assert!(
                accept
                    .as_deref()
                    .is_some_and(|a| a.contains("as=PartialObjectMetadata")),
                "a Secret was read before its metadata: {} {:?}",
                req.uri(),
                accept
            );
            let response = e.response.clone().unwrap_or(Value::Null);
            let full_read_follows = e.status == StatusCode::OK
                && response["metadata"]["labels"][crate::material::KEY_MATERIAL_LABEL] == "true";
            send.send_response(
                Response::builder()
                    .status(e.status)
                    .body(Body::from(serde_json::to_vec(&response).unwrap()))
                    .unwrap(),
            );
            if !full_read_follows {
                bodies.push(Value::Null);
                continue;
            }
            tokio::time::timeout(Duration::from_secs(1), handle.next_request())
                .await
                .unwrap_or_else(|_| panic!("the labelled Secret {} was not read", e.path))
                .expect("the client is gone")
        } else {
            (req, send)
        };
        let uri = req.uri().to_string();
        assert_eq!(req.method().as_str(), e.method, "{uri}");
        assert!(
            uri.contains(&e.path),
            "expected {} {}, got {uri}",
            e.method,
            e.path
        );
        for q in &e.query {
            assert!(uri.contains(q), "{uri} lacks {q}");
        }
        let bytes = req.into_body().collect_bytes().await.unwrap();
        let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        let response = e.response.unwrap_or_else(|| body.clone());
        bodies.push(body);
        send.send_response(
            Response::builder()
                .status(e.status)
                .body(Body::from(serde_json::to_vec(&response).unwrap()))
                .unwrap(),
        );
    }
    // Nothing more may come.
    if let Ok(Some((req, _))) =
        tokio::time::timeout(Duration::from_millis(300), handle.next_request()).await
    {
        panic!("unexpected request {} {}", req.method(), req.uri());
    }
    (bodies, handle)
}

fn dxc(name: &str, created_secs: i64, spec: DxConnectionSpec) -> DxConnection {
    let mut d = DxConnection::new(name, spec);
    d.metadata.namespace = Some("net".into());
    d.metadata.generation = Some(1);
    d.metadata.resource_version = Some("1".into());
    d.metadata.uid = Some(format!("uid-{name}"));
    d.metadata.finalizers = Some(vec![FINALIZER.into()]);
    d.metadata.creation_timestamp = Some(Time(
        jiff::Timestamp::from_second(1_800_000_000 + created_secs).unwrap(),
    ));
    d
}

fn spec(id: &str, mode: Option<EncryptionMode>, keys: &[&str]) -> DxConnectionSpec {
    serde_json::from_value(json!({
        "connectionId": id,
        "region": "us-east-1",
        "encryptionMode": mode,
        "keys": keys.iter().map(|k| KeyReference { name: k.to_string() }).collect::<Vec<_>>(),
    }))
    .unwrap()
}

fn mskey(name: &str) -> MacSecKey {
    let mut k = MacSecKey::new(
        name,
        MacSecKeySpec {
            secret_ref: Some(SecretKeySource {
                name: name.into(),
                ckn_key: "ckn".into(),
                cak_key: "cak".into(),
            }),
            secrets_manager: None,
            direct_connect_secret_arn: None,
            generate: None,
        },
    );
    k.metadata.namespace = Some("net".into());
    k.metadata.generation = Some(1);
    k.metadata.resource_version = Some("1".into());
    k.metadata.finalizers = Some(vec![FINALIZER.into()]);
    k
}

/// A Secret labelled as key material, holding CKN and CAK.
fn secret_json(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Secret",
           "metadata": {"name": name, "namespace": "net", "labels": {crate::material::KEY_MATERIAL_LABEL: "true"}},
           "stringData": {"ckn": CKN, "cak": CAK}})
}

fn not_found() -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404, "message": "not found"})
}

struct Harness {
    ctx: Arc<Context>,
    handle: Option<Handle>,
    sim: dx_sim::Sim,
}

async fn harness(seed: &str, connections: Vec<DxConnection>, keys: Vec<MacSecKey>) -> Harness {
    harness_with(seed, connections, keys, vec![]).await
}

async fn harness_with(
    seed: &str,
    connections: Vec<DxConnection>,
    keys: Vec<MacSecKey>,
    grants: Vec<DxAccess>,
) -> Harness {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "default");
    let sim = dx_sim::Sim::start(dx_sim::Seed::from_yaml(seed).unwrap())
        .await
        .unwrap();
    let (conn_store, mut conn_writer) = reflector::store::<DeserializeGuard<DxConnection>>();
    for d in connections {
        conn_writer.apply_watcher_event(&watcher::Event::Apply(DeserializeGuard(Ok(d))));
    }
    let (key_store, mut key_writer) = reflector::store::<DeserializeGuard<MacSecKey>>();
    for k in keys {
        key_writer.apply_watcher_event(&watcher::Event::Apply(DeserializeGuard(Ok(k))));
    }
    let (grant_store, mut grant_writer) = reflector::store::<DxAccess>();
    for g in grants {
        grant_writer.apply_watcher_event(&watcher::Event::Apply(g));
    }
    let metrics = Arc::new(Metrics::new());
    let reporter = Reporter {
        controller: FIELD_MANAGER.into(),
        instance: Some("test".into()),
    };
    let ctx = Arc::new(Context {
        recorder: Recorder::new(client.clone(), reporter.clone()),
        reporter,
        client,
        engine: Engine::new(
            Arc::new(crate::aws::MeteredProvider::new(
                Arc::new(SdkProvider::for_emulator(&sim.endpoint(), "AKIDCTRL").await),
                metrics.clone(),
            )),
            Arc::new(ObservationCache::new(Duration::from_secs(60))),
        ),
        metrics,
        settings: Settings {
            default_region: Some("us-east-1".into()),
            short_requeue: Duration::from_secs(10),
            resync: Duration::from_secs(300),
            concurrency: 16,
            default_access_namespaces: Namespaces::all(),
            cluster_name: "test-cluster".into(),
            watch_namespaces: Vec::new(),
            watch_secrets: false,
        },
        connections: Stores(vec![conn_store]),
        keys: Stores(vec![key_store]),
        grants: grant_store,
        secret_versions: None,
        source_versions: super::key::SourceVersions::default(),
    });
    Harness {
        ctx,
        handle: Some(handle),
        sim,
    }
}

impl Harness {
    /// Runs one reconcile of `obj` (either kind) against the scripted API server.
    async fn reconcile<K: shell::Reconciled>(
        &mut self,
        obj: K,
        script: Vec<Expect>,
    ) -> (Result<Action, Error>, Vec<Value>) {
        let verifier = tokio::spawn(verify(self.handle.take().unwrap(), script));
        let result = shell::reconcile(Arc::new(DeserializeGuard(Ok(obj))), self.ctx.clone()).await;
        let (bodies, handle) = verifier.await.unwrap();
        // The same API server answers the next reconcile.
        self.handle = Some(handle);
        (result, bodies)
    }

    fn mutations(&self) -> Vec<String> {
        self.sim
            .shared
            .calls()
            .into_iter()
            .filter(|c| !c.operation.starts_with("Describe"))
            .map(|c| c.operation)
            .collect()
    }
}

const SEED: &str = "delays: { associateMs: 100, disassociateMs: 100 }\nconnections:\n  - { id: dxcon-c1, macSecCapable: true }\n";

/// The URL path of `obj` (and `/status` when `subresource` says so) in namespace `net`.
fn path_of<K: kube::Resource<DynamicType = ()>>(obj: &K, subresource: &str) -> String {
    let name = obj.meta().name.clone().unwrap();
    format!(
        "/apis/dxmacsec.io/v1alpha1/namespaces/net/{}/{name}{subresource}?",
        K::plural(&())
    )
}

/// The status write of `obj`: server-side apply, answered with the object.
fn status_patch<K: kube::Resource<DynamicType = ()> + serde::Serialize>(obj: &K) -> Expect {
    expect("PATCH", path_of(obj, "/status"))
        .server_side_apply()
        .returning(obj)
}

/// The JSON patch the finalizer helper sends on the object itself.
fn object_patch<K: kube::Resource<DynamicType = ()> + serde::Serialize>(obj: &K) -> Expect {
    expect("PATCH", path_of(obj, "")).returning(obj)
}

const EVENTS: &str = "/apis/events.k8s.io/v1/namespaces/net/events";

/// The end of a deletion: `events` events, then the patch that removes the finalizer.
fn events_then_finalizer_removed(events: usize, d: &DxConnection) -> Vec<Expect> {
    let mut script: Vec<Expect> = (0..events).map(|_| expect("POST", EVENTS)).collect();
    script.push(object_patch(d));
    script
}

fn condition<'a>(status_body: &'a Value, type_: &str) -> &'a Value {
    status_body["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == type_)
        .unwrap()
}

/// The requests of a pass that acts: Secret `k1` read, the status written, `events` events.
fn read_secret_write_status(d: &DxConnection, events: usize) -> Vec<Expect> {
    let mut script = vec![
        expect("GET", "/api/v1/namespaces/net/secrets/k1")
            .answer(StatusCode::OK, secret_json("k1")),
        status_patch(d),
    ];
    script.extend((0..events).map(|_| expect("POST", EVENTS)));
    script
}

/// One reconcile of a must_encrypt DxConnection `c1` using MacSecKey `k1` on `seed`: the
/// Secret is read (answered with `secret_status` and `secret`), the status written and one
/// event published.
async fn first_pass(
    seed: &str,
    secret_status: StatusCode,
    secret: Value,
    events: usize,
) -> (Harness, Result<Action, Error>, Vec<Value>) {
    let d = dxc(
        "c1",
        0,
        spec("dxcon-c1", Some(EncryptionMode::MustEncrypt), &["k1"]),
    );
    let mut h = harness(seed, vec![d.clone()], vec![mskey("k1")]).await;
    let (result, bodies) = h
        .reconcile(
            d.clone(),
            [
                expect("GET", "/api/v1/namespaces/net/secrets/k1").answer(secret_status, secret),
                status_patch(&d),
            ]
            .into_iter()
            .chain((0..events).map(|_| expect("POST", EVENTS)))
            .collect(),
        )
        .await;
    (h, result, bodies)
}

/// A first pass: the Secret is read with get, the key is associated, status goes by
/// server-side apply with the plan and conditions, an event records the call, and the next
/// look is at once (the call's answer is in the cache). The CAK is in no request body.
#[tokio::test]
async fn apply_associates_writes_status_and_events() {
    let (h, result, bodies) = first_pass(SEED, StatusCode::OK, secret_json("k1"), 2).await;
    assert_eq!(requeue_secs(&result.unwrap()), 0.0);
    let status = &bodies[1];
    assert_eq!(status["apiVersion"], "dxmacsec.io/v1alpha1");
    assert_eq!(status["kind"], "DxConnection");
    assert_eq!(condition(status, "Ready")["status"], "False");
    assert_eq!(condition(status, "Ready")["reason"], "Progressing");
    assert_eq!(condition(status, "Synced")["status"], "True");
    assert_eq!(status["status"]["observedGeneration"], 1);
    assert_eq!(status["status"]["resourceType"], "Connection");
    let planned = &status["status"]["plannedActions"];
    assert!(
        planned[0].as_str().unwrap().starts_with("TagResource"),
        "{planned}"
    );
    assert!(
        planned[1]
            .as_str()
            .unwrap()
            .starts_with("AssociateMacSecKey"),
        "{planned}"
    );
    assert_eq!(bodies[2]["reason"], "TagResource");
    assert_eq!(bodies[3]["reason"], "AssociateMacSecKey");
    assert_eq!(bodies[3]["type"], "Normal");
    for b in &bodies {
        assert!(
            !b.to_string().contains(CAK),
            "the CAK was sent to Kubernetes: {b}"
        );
    }
    assert_eq!(h.mutations(), vec!["TagResource", "AssociateMacSecKey"]);
    let state = h.sim.shared.state();
    assert_eq!(
        state["connections"][0]["tags"],
        json!([{"key": "dxmacsec.io/owner", "value": "test-cluster/net/c1"}]),
        "claimed with the first step"
    );
}

/// A must_encrypt link that AWS reports Encryption Down with the spec met: Ready=False with
/// reason EncryptionDown (Synced stays True: nothing is left to call), a Warning event, no
/// AWS mutation, a look again within the recheck interval, and the alert series at 0.
#[tokio::test]
async fn encryption_down_is_not_ready_and_warns() {
    let seed = format!(
        "connections:\n  - {{ id: dxcon-c1, macSecCapable: true, encryptionMode: must_encrypt, keys: [{{ckn: \"{CKN}\", cak: \"{CAK}\"}}], tags: {{dxmacsec.io/owner: test-cluster/net/c1}} }}\n"
    );
    let (h, result, bodies) = first_pass(&seed, StatusCode::OK, secret_json("k1"), 1).await;
    let wait = requeue_secs(&result.unwrap());
    assert!((30.0..=36.0).contains(&wait), "{wait}");
    let ready = condition(&bodies[1], "Ready");
    assert_eq!(ready["status"], "False");
    assert_eq!(ready["reason"], "EncryptionDown");
    let message = ready["message"].as_str().unwrap();
    assert!(
        message.contains(CKN) && message.contains("router"),
        "{message}"
    );
    assert_eq!(condition(&bodies[1], "Synced")["status"], "True");
    assert_eq!(
        bodies[1]["status"]["portEncryptionStatus"],
        "Encryption Down"
    );
    assert_eq!(bodies[2]["type"], "Warning");
    assert_eq!(bodies[2]["reason"], "EncryptionDown");
    assert!(h.mutations().is_empty(), "{:?}", h.mutations());
    let text = h.ctx.metrics.encode();
    assert!(
        text.contains(r#"dxmacsec_port_encryption_up{namespace="net",name="c1",connection_id="dxcon-c1",encryption_mode="must_encrypt"} 0"#),
        "{text}"
    );
    assert!(
        text.contains(r#"dxmacsec_ready{namespace="net",name="c1",reason="EncryptionDown"} 0"#),
        "{text}"
    );
    assert!(!bodies.iter().any(|b| b.to_string().contains(CAK)));
}

/// A DxConnection without the finalizer gets it first, before anything else happens.
#[tokio::test]
async fn finalizer_is_added_first() {
    let mut d = dxc("c1", 0, spec("dxcon-c1", None, &[]));
    d.metadata.finalizers = None;
    let mut h = harness(SEED, vec![d.clone()], vec![]).await;
    let (result, bodies) = h.reconcile(d.clone(), vec![object_patch(&d)]).await;
    result.unwrap();
    let patch = bodies[0].to_string();
    assert!(patch.contains(FINALIZER), "{patch}");
    assert!(h.mutations().is_empty());
}

/// A missing Secret: KeyNotReady names the Secret and the field, a Warning event, a retry
/// soon, and no AWS mutation.
#[tokio::test]
async fn missing_secret_is_reported_and_retried() {
    let (h, result, bodies) = first_pass(SEED, StatusCode::NOT_FOUND, not_found(), 1).await;
    assert!((10.0..=12.0).contains(&requeue_secs(&result.unwrap())));
    let ready = condition(&bodies[1], "Ready");
    assert_eq!(ready["reason"], "KeyNotReady");
    assert!(
        ready["message"]
            .as_str()
            .unwrap()
            .contains("Secret net/k1 (spec.secretRef.name) not found")
    );
    assert_eq!(condition(&bodies[1], "Synced")["status"], "False");
    assert_eq!(bodies[2]["type"], "Warning");
    assert_eq!(bodies[2]["reason"], "KeyNotReady");
    assert!(h.mutations().is_empty());
}

/// Two DxConnections naming one connection: the newer one gets Conflict naming the older,
/// and changes nothing.
#[tokio::test]
async fn the_older_dxconnection_wins() {
    let older = dxc(
        "first",
        0,
        spec("dxcon-c1", Some(EncryptionMode::ShouldEncrypt), &[]),
    );
    let newer = dxc(
        "second",
        60,
        spec("dxcon-c1", Some(EncryptionMode::NoEncrypt), &[]),
    );
    let mut h = harness(SEED, vec![older, newer.clone()], vec![]).await;
    let (result, bodies) = h
        .reconcile(
            newer.clone(),
            vec![status_patch(&newer), expect("POST", EVENTS)],
        )
        .await;
    result.unwrap();
    let ready = condition(&bodies[0], "Ready");
    assert_eq!(ready["reason"], "Conflict");
    assert!(ready["message"].as_str().unwrap().contains("net/first"));
    assert!(h.mutations().is_empty());
}

/// A DxConnection naming a DxAccess that does not grant its namespace: Forbidden in Ready and
/// Synced, one Warning event, no Secret read and no AWS call at all; the namespace the
/// DxAccess grants reaches AWS with the DxAccess's (absent: the operator's own) credentials.
#[tokio::test]
async fn a_dxconnection_gets_only_what_a_dxaccess_grants() {
    let grant = DxAccess::new(
        "prod",
        serde_json::from_value(json!({"namespaces": ["net-prod"], "connectionIds": ["dxcon-c1"]}))
            .unwrap(),
    );
    let mut spec = spec("dxcon-c1", Some(EncryptionMode::MustEncrypt), &["k1"]);
    spec.access_ref = Some(crate::crd::AccessReference {
        name: "prod".into(),
    });
    let d = dxc("c1", 0, spec);
    let mut h = harness_with(SEED, vec![d.clone()], vec![mskey("k1")], vec![grant]).await;
    let (result, bodies) = h
        .reconcile(d.clone(), vec![status_patch(&d), expect("POST", EVENTS)])
        .await;
    result.unwrap();
    for type_ in ["Ready", "Synced"] {
        let c = condition(&bodies[0], type_);
        assert_eq!(c["status"], "False", "{c}");
        assert_eq!(c["reason"], "Forbidden", "{c}");
    }
    assert!(
        condition(&bodies[0], "Ready")["message"]
            .as_str()
            .unwrap()
            .contains("does not grant namespace net")
    );
    assert_eq!(bodies[1]["reason"], "Forbidden");
    assert_eq!(bodies[1]["type"], "Warning");
    assert!(h.sim.shared.calls().is_empty(), "AWS was called");

    // The same object, refused again: no status write, no second event.
    let mut refused = d.clone();
    refused.status = serde_json::from_value(bodies[0]["status"].clone()).unwrap();
    h.handle = Some(new_handle(&mut h));
    let (result, _) = h.reconcile(refused, vec![]).await;
    result.unwrap();

    // Without accessRef, where the operator allows its own credentials: it acts.
    let mut own = d.clone();
    own.spec.access_ref = None;
    h.handle = Some(new_handle(&mut h));
    let (result, _) = h
        .reconcile(own.clone(), read_secret_write_status(&own, 2))
        .await;
    result.unwrap();
    assert_eq!(h.mutations(), vec!["TagResource", "AssociateMacSecKey"]);
}

fn deleting(mut d: DxConnection) -> DxConnection {
    d.metadata.deletion_timestamp = Some(Time(jiff::Timestamp::now()));
    d
}

/// deletionPolicy Retain: no change to keys or mode, an event, and the finalizer is removed;
/// the owner tag goes only when it is this DxConnection's.
#[tokio::test]
async fn deletion_with_retain_leaves_aws_alone() {
    let d = deleting(dxc(
        "c1",
        0,
        spec("dxcon-c1", Some(EncryptionMode::MustEncrypt), &["k1"]),
    ));
    let mut h = harness(SEED, vec![d.clone()], vec![]).await;
    let (result, bodies) = h
        .reconcile(d.clone(), vec![expect("POST", EVENTS), object_patch(&d)])
        .await;
    result.unwrap();
    assert_eq!(bodies[0]["reason"], "Retained");
    assert!(bodies[1].to_string().contains("remove"), "{}", bodies[1]);
    assert!(h.mutations().is_empty(), "untagged: nothing to release");

    let tagged = "connections:\n  - { id: dxcon-c1, macSecCapable: true, tags: {dxmacsec.io/owner: test-cluster/net/c1, team: net} }\n";
    let mut h = harness(tagged, vec![d.clone()], vec![]).await;
    let (result, bodies) = h
        .reconcile(d.clone(), events_then_finalizer_removed(2, &d))
        .await;
    result.unwrap();
    // The release is an action like the others: its own event, then the deletion's.
    assert_eq!(bodies[0]["reason"], "UntagResource");
    assert_eq!(bodies[0]["action"], "Delete");
    assert!(
        bodies[1]["note"]
            .as_str()
            .unwrap()
            .contains("tag is removed"),
        "{}",
        bodies[1]
    );
    assert_eq!(h.mutations(), vec!["UntagResource"]);
    assert_eq!(
        h.sim.shared.state()["connections"][0]["tags"],
        json!([{"key": "team", "value": "net"}]),
        "only the owner tag goes"
    );
}

/// deletionPolicy Disassociate: the managed key is removed (mode lowered first under
/// must_encrypt); the finalizer stays until AWS shows it gone, then goes.
#[tokio::test]
async fn deletion_with_disassociate_removes_managed_keys_first() {
    let seed = format!(
        "delays: {{ associateMs: 100, disassociateMs: 100 }}\nconnections:\n  - {{ id: dxcon-c1, macSecCapable: true, encryptionMode: must_encrypt, keys: [{{ckn: \"{CKN}\", cak: \"{CAK}\"}}], router: [\"{CKN}\"], tags: {{dxmacsec.io/owner: test-cluster/net/c1}} }}\n"
    );
    let mut d = dxc(
        "c1",
        0,
        spec("dxcon-c1", Some(EncryptionMode::MustEncrypt), &["k1"]),
    );
    d.spec.deletion_policy = DeletionPolicy::Disassociate;
    d.status = Some(DxConnectionStatus {
        keys: vec![crate::crd::KeyStatus {
            ckn: Some(CKN.into()),
            secret_arn: None,
            state: Some("associated".into()),
            start_on: None,
            mac_sec_key: Some("k1".into()),
            associated_since: None,
        }],
        ..DxConnectionStatus::default()
    });
    let d = deleting(d);
    let mut h = harness(&seed, vec![d.clone()], vec![]).await;
    // Pass 1: must_encrypt is lowered before the only key goes.
    let (result, bodies) = h.reconcile(d.clone(), vec![expect("POST", EVENTS)]).await;
    assert!(matches!(result, Err(Error::Finalizer(_))), "{result:?}");
    assert_eq!(bodies[0]["reason"], "UpdateConnection");
    // Pass 2: the key is removed.
    h.handle = Some(new_handle(&mut h));
    let (result, bodies) = h.reconcile(d.clone(), vec![expect("POST", EVENTS)]).await;
    assert!(result.is_err());
    assert_eq!(bodies[0]["reason"], "DisassociateMacSecKey");
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Pass 3: gone on AWS: the owner tag is released, the last action, and the finalizer
    // is removed.
    h.handle = Some(new_handle(&mut h));
    let (result, bodies) = h
        .reconcile(d.clone(), events_then_finalizer_removed(2, &d))
        .await;
    result.unwrap();
    assert_eq!(bodies[0]["reason"], "UntagResource");
    assert_eq!(bodies[1]["reason"], "Disassociated");
    assert_eq!(
        h.mutations(),
        vec!["UpdateConnection", "DisassociateMacSecKey", "UntagResource"]
    );
    assert_eq!(h.sim.shared.state()["connections"][0]["tags"], json!([]));
    let state = h.sim.shared.state();
    assert_eq!(state["connections"][0]["encryptionMode"], "should_encrypt");
}

/// Replaces the harness's mock API server (each pass gets a fresh script).
fn new_handle(h: &mut Harness) -> Handle {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "default");
    let ctx = Arc::get_mut(&mut h.ctx).expect("no other holder of the context");
    ctx.recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: FIELD_MANAGER.into(),
            instance: Some("test".into()),
        },
    );
    ctx.client = client;
    handle
}

/// `k1` from Secrets Manager secret `dx-macsec/k1` in us-east-1.
fn secrets_manager_key() -> MacSecKey {
    let mut key = mskey("k1");
    key.spec.secret_ref = None;
    key.spec.secrets_manager = Some(crate::crd::SecretsManagerSource {
        secret_id: "dx-macsec/k1".into(),
        region: Some("us-east-1".into()),
        ckn_field: "ckn".into(),
        cak_field: "cak".into(),
    });
    key
}

/// A Secrets Manager client on the harness's dx-sim, to set secrets up.
async fn secrets_manager(h: &Harness) -> aws_sdk_secretsmanager::Client {
    let conf = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_credential_types::Credentials::new(
            "AKIDTEST", "x", None, None, "test",
        ))
        .endpoint_url(h.sim.endpoint())
        .load()
        .await;
    aws_sdk_secretsmanager::Client::new(&conf)
}

/// A MacSecKey read from Secrets Manager with `spec.secretsManager.region` set, used by no
/// DxConnection, on an operator without a default region: the key is read in its own region,
/// and is not told to set the region it has set.
#[tokio::test]
async fn secrets_manager_key_is_read_in_its_own_region() {
    let key = secrets_manager_key();
    let mut h = harness(SEED, vec![], vec![key.clone()]).await;
    Arc::get_mut(&mut h.ctx)
        .expect("no other reference yet")
        .settings
        .default_region = None;
    secrets_manager(&h)
        .await
        .create_secret()
        .name("dx-macsec/k1")
        .secret_string(json!({"ckn": CKN, "cak": CAK}).to_string())
        .send()
        .await
        .unwrap();
    let (result, bodies) = h.reconcile(key.clone(), vec![status_patch(&key)]).await;
    result.unwrap();
    let ready = &bodies[0]["status"]["conditions"][0];
    assert_eq!(ready["reason"], "KeyMaterialValid", "{ready}");
    assert_eq!(bodies[0]["status"]["ckn"], CKN);
    assert!(!bodies[0].to_string().contains(CAK));
}

/// A Secrets Manager key is read (GetSecretValue) once per version: a resync asks only for
/// the current version (DescribeSecret, no value), and reconciles in between share that
/// look; a new value is read at the next look.
#[tokio::test]
async fn a_secrets_manager_key_is_read_once_per_version() {
    let mut key = secrets_manager_key();
    let mut h = harness(SEED, vec![], vec![key.clone()]).await;
    let sm = secrets_manager(&h).await;
    sm.create_secret()
        .name("dx-macsec/k1")
        .secret_string(json!({"ckn": CKN, "cak": CAK}).to_string())
        .send()
        .await
        .unwrap();
    let reads = |h: &Harness, op: &str| {
        h.sim
            .shared
            .calls()
            .iter()
            .filter(|c| c.operation == op)
            .count()
    };
    let (result, bodies) = h.reconcile(key.clone(), vec![status_patch(&key)]).await;
    result.unwrap();
    let first = bodies[0]["status"]["sourceVersion"].clone();
    assert!(first.is_string(), "{}", bodies[0]);
    assert_eq!(reads(&h, "GetSecretValue"), 1);
    key.status = Some(serde_json::from_value(bodies[0]["status"].clone()).unwrap());

    // Reconciles soon after (its DxConnections changing) share the version looked at.
    for _ in 0..3 {
        let (result, _) = h.reconcile(key.clone(), vec![]).await;
        result.unwrap();
    }
    assert_eq!(reads(&h, "GetSecretValue"), 1, "not read again");
    assert_eq!(reads(&h, "DescribeSecret"), 1, "one look per key");
    // Half a resync later (here: at once) the version is looked at again.
    Arc::get_mut(&mut h.ctx).unwrap().settings.resync = Duration::ZERO;
    let (result, _) = h.reconcile(key.clone(), vec![]).await;
    result.unwrap();
    assert_eq!(reads(&h, "GetSecretValue"), 1, "not read again");
    assert_eq!(reads(&h, "DescribeSecret"), 2);

    let other_ckn = CKN.replace("abcd", "dcba");
    sm.put_secret_value()
        .secret_id("dx-macsec/k1")
        .secret_string(json!({"ckn": other_ckn, "cak": CAK}).to_string())
        .send()
        .await
        .unwrap();
    let (result, bodies) = h.reconcile(key.clone(), vec![status_patch(&key)]).await;
    result.unwrap();
    assert_eq!(reads(&h, "GetSecretValue"), 2);
    assert_eq!(bodies[0]["status"]["ckn"], other_ckn);
    assert_ne!(bodies[0]["status"]["sourceVersion"], first);
    assert!(!bodies[0].to_string().contains(CAK));
}

/// A MacSecKey cannot make the operator publish a Secret's value as its CKN: one naming a
/// Secret without the key-material label is refused after a metadata-only read (the data
/// is never fetched); one that swaps cknKey and cakKey on a key-material Secret is refused
/// because the Secret marks another key as its CKN; one whose CKN equals its CAK too. No
/// value reaches the status, and each message says what to change.
#[tokio::test]
async fn a_macseckey_cannot_publish_a_secret_value() {
    let mut h = harness(SEED, vec![], vec![]).await;
    // The Ready condition of `key` after a reconcile whose Secret read is answered `secret`.
    async fn refused(h: &mut Harness, key: MacSecKey, secret: Value) -> Value {
        let (result, bodies) = h
            .reconcile(
                key.clone(),
                vec![
                    expect("GET", "/api/v1/namespaces/net/secrets/k1")
                        .answer(StatusCode::OK, secret),
                    status_patch(&key),
                ],
            )
            .await;
        result.unwrap();
        let status = bodies[1]["status"].clone();
        assert!(status["ckn"].is_null(), "{status}");
        for value in [CKN, CAK] {
            assert!(
                !status.to_string().to_lowercase().contains(value),
                "{status}"
            );
        }
        status["conditions"][0].clone()
    }
    let unrelated = json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "k1", "namespace": "net"}, "stringData": {"ckn": CAK, "cak": CKN}});
    let ready = refused(&mut h, mskey("k1"), unrelated).await;
    assert_eq!(ready["reason"], "SecretNotLabelled", "{ready}");
    let fix = "kubectl label secret -n net k1 dxmacsec.io/key-material=true";
    assert!(ready["message"].as_str().unwrap().contains(fix), "{ready}");

    let mut swapped = mskey("k1");
    let source = swapped.spec.secret_ref.as_mut().unwrap();
    (source.ckn_key, source.cak_key) = ("cak".into(), "ckn".into());
    let ready = refused(&mut h, swapped, secret_json("k1")).await;
    assert_eq!(ready["reason"], "InvalidKeyMaterial", "{ready}");
    assert!(
        ready["message"]
            .as_str()
            .unwrap()
            .contains("Set cknKey to \"ckn\""),
        "{ready}"
    );

    let mut same = secret_json("k1");
    same["stringData"]["cak"] = json!(CKN.to_uppercase());
    let ready = refused(&mut h, mskey("k1"), same).await;
    assert!(
        ready["message"]
            .as_str()
            .unwrap()
            .contains("must never be the CAK"),
        "{ready}"
    );
    let all = format!("{:?}", h.sim.shared.calls());
    for value in [CKN, CAK] {
        assert!(!all.contains(value));
    }
}

/// A Secrets Manager outage (DescribeSecret and GetSecretValue answering a server error, as
/// in a regional incident) is a passing problem, never a person's: a key not yet read is
/// `AwsError`, Ready False but Stalled False, retried soon; a key already validated stays
/// Ready on its last reading and says so; each gets a Warning event; no message holds the
/// CAK. Once the outage ends, the next look reads the key.
#[tokio::test]
async fn a_secrets_manager_outage_is_retried_and_not_stalled() {
    let key = secrets_manager_key();
    let mut h = harness(SEED, vec![], vec![key.clone()]).await;
    secrets_manager(&h)
        .await
        .create_secret()
        .name("dx-macsec/k1")
        .secret_string(json!({"ckn": CKN, "cak": CAK}).to_string())
        .send()
        .await
        .unwrap();
    let outage = |h: &Harness| {
        for op in ["DescribeSecret", "GetSecretValue"] {
            h.sim
                .shared
                .add_fault(dx_sim::Fault::outage(op, "DirectConnectServerException"));
        }
    };
    let condition = |body: &Value, type_: &str| {
        body["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == type_)
            .cloned()
            .unwrap_or(Value::Null)
    };

    // Never read before: not Ready, not Stalled, a Warning, looked at again soon.
    outage(&h);
    let (result, bodies) = h
        .reconcile(
            key.clone(),
            vec![status_patch(&key), expect("POST", EVENTS)],
        )
        .await;
    result.unwrap();
    let ready = condition(&bodies[0], "Ready");
    assert_eq!(
        (ready["status"].as_str(), ready["reason"].as_str()),
        (Some("False"), Some("AwsError")),
        "{ready}"
    );
    assert!(
        ready["message"]
            .as_str()
            .unwrap()
            .contains("spec.secretsManager.secretId"),
        "{ready}"
    );
    assert_eq!(
        condition(&bodies[0], "Stalled")["status"],
        "False",
        "{}",
        bodies[0]
    );
    assert_eq!(bodies[1]["type"], "Warning");
    assert_eq!(bodies[1]["reason"], "AwsError");

    // The outage heals: the next look reads the key.
    h.sim.shared.clear_faults();
    let (result, bodies) = h.reconcile(key.clone(), vec![status_patch(&key)]).await;
    result.unwrap();
    assert_eq!(condition(&bodies[0], "Ready")["reason"], "KeyMaterialValid");
    let mut validated = key.clone();
    validated.status = Some(serde_json::from_value(bodies[0]["status"].clone()).unwrap());

    // Validated, then another outage at the next look (half a resync later; here at
    // once): still Ready, saying the re-read failed; the Warning again (folded into the
    // first one's series).
    Arc::get_mut(&mut h.ctx).unwrap().settings.resync = Duration::ZERO;
    outage(&h);
    let (result, bodies) = h
        .reconcile(
            validated.clone(),
            vec![status_patch(&validated), expect("PATCH", EVENTS)],
        )
        .await;
    result.unwrap();
    let ready = condition(&bodies[0], "Ready");
    assert_eq!(ready["status"], "True", "{ready}");
    assert!(
        ready["message"]
            .as_str()
            .unwrap()
            .contains("passing reason"),
        "{ready}"
    );
    assert_eq!(condition(&bodies[0], "Stalled")["status"], "False");
    assert_eq!(bodies[0]["status"]["ckn"], CKN);
    assert!(
        bodies[1]["series"]["count"].as_i64() >= Some(2),
        "{}",
        bodies[1]
    );
    for b in &bodies {
        assert!(!b.to_string().contains(CAK));
    }
}

/// A Secrets Manager secret that does not exist is a person's problem: `SecretNotFound`,
/// Stalled.
#[tokio::test]
async fn a_missing_secrets_manager_secret_is_stalled() {
    let key = secrets_manager_key();
    let mut h = harness(SEED, vec![], vec![key.clone()]).await;
    let (result, bodies) = h.reconcile(key.clone(), vec![status_patch(&key)]).await;
    result.unwrap();
    let conditions = bodies[0]["status"]["conditions"].as_array().unwrap();
    let of = |t: &str| conditions.iter().find(|c| c["type"] == t).unwrap();
    assert_eq!(of("Ready")["reason"], "SecretNotFound", "{}", bodies[0]);
    assert_eq!(of("Stalled")["status"], "True");
}

/// A MacSecKey in use cannot be deleted: its condition names the users, and the finalizer
/// stays; once unused, the finalizer goes.
#[tokio::test]
async fn key_in_use_is_protected() {
    let user = dxc("c1", 0, spec("dxcon-c1", None, &["k1"]));
    let mut key = mskey("k1");
    key.metadata.deletion_timestamp = Some(Time(jiff::Timestamp::now()));
    let mut h = harness(SEED, vec![user], vec![key.clone()]).await;
    let (result, bodies) = h.reconcile(key.clone(), vec![status_patch(&key)]).await;
    assert!(matches!(result, Err(Error::Finalizer(_))), "{result:?}");
    let ready = &bodies[0]["status"]["conditions"][0];
    assert_eq!(ready["reason"], "InUse");
    assert!(
        ready["message"]
            .as_str()
            .unwrap()
            .contains("used by DxConnection c1")
    );
    assert_eq!(bodies[0]["status"]["usedBy"], json!(["c1"]));

    let mut h = harness(SEED, vec![], vec![key.clone()]).await;
    let (result, bodies) = h.reconcile(key.clone(), vec![object_patch(&key)]).await;
    result.unwrap();
    assert!(bodies[0].to_string().contains("remove"), "{}", bodies[0]);
}

/// A MacSecKey's status: usedBy, the CKN, KeyMaterialValid; never the CAK.
#[tokio::test]
async fn key_status_reports_users_and_ckn() {
    let user = dxc("c1", 0, spec("dxcon-c1", None, &["k1"]));
    let mut h = harness(SEED, vec![user], vec![mskey("k1")]).await;
    let (result, bodies) = h
        .reconcile(
            mskey("k1"),
            vec![
                expect("GET", "/api/v1/namespaces/net/secrets/k1")
                    .answer(StatusCode::OK, secret_json("k1")),
                status_patch(&mskey("k1")),
            ],
        )
        .await;
    result.unwrap();
    let status = &bodies[1]["status"];
    assert_eq!(status["ckn"], CKN);
    assert_eq!(status["usedBy"], json!(["c1"]));
    assert_eq!(status["conditions"][0]["reason"], "KeyMaterialValid");
    let cak = crate::keys::Cak::parse("cak", CAK).unwrap();
    assert_eq!(
        cak.matches(status["cakFingerprint"].as_str().unwrap()),
        Some(true),
        "the CAK's salted fingerprint is kept: {status}"
    );
    let synced = condition(&bodies[1], "Synced");
    assert_eq!(
        (&synced["status"], &synced["reason"]),
        (&json!("True"), &json!("KeyMaterialValid"))
    );
    assert!(!bodies[1].to_string().contains(CAK));
}

/// `k1` as a MacSecKey whose status has seen CKN with a CAK other than the Secret's.
fn key_that_saw_another_cak() -> MacSecKey {
    let mut key = mskey("k1");
    let other = crate::keys::Cak::parse("cak", &CAK.replace('0', "7")).unwrap();
    key.status = Some(crate::crd::MacSecKeyStatus {
        ckn: Some(CKN.to_lowercase()),
        cak_fingerprint: Some(other.fingerprint()),
        ..Default::default()
    });
    key
}

/// A CAK changed in the Secret under the same CKN is refused: the MacSecKey is not Ready
/// with KeyMaterialChanged and says to make a new CKN; its fingerprint is kept; no CAK in
/// any body.
#[tokio::test]
async fn a_cak_changed_under_its_ckn_is_refused() {
    let key = key_that_saw_another_cak();
    let mut h = harness(SEED, vec![], vec![key.clone()]).await;
    let (result, bodies) = h
        .reconcile(
            key.clone(),
            vec![
                expect("GET", "/api/v1/namespaces/net/secrets/k1")
                    .answer(StatusCode::OK, secret_json("k1")),
                status_patch(&key),
            ],
        )
        .await;
    result.unwrap();
    let ready = condition(&bodies[1], "Ready");
    assert_eq!(ready["status"], "False");
    assert_eq!(ready["reason"], "KeyMaterialChanged");
    let message = ready["message"].as_str().unwrap();
    assert!(
        message.contains("Secret net/k1") && message.contains("keygen"),
        "{message}"
    );
    assert_eq!(
        bodies[1]["status"]["cakFingerprint"],
        json!(key.status.as_ref().unwrap().cak_fingerprint),
        "the fingerprint of the CAK AWS holds stays"
    );
    assert!(!bodies[1].to_string().contains(CAK));
}

/// A DxConnection using a key whose CAK changed under its CKN associates nothing and is not
/// Ready (KeyNotReady) with the reason.
#[tokio::test]
async fn a_dxconnection_does_not_use_a_cak_changed_under_its_ckn() {
    let d = dxc(
        "c1",
        0,
        spec("dxcon-c1", Some(EncryptionMode::MustEncrypt), &["k1"]),
    );
    let mut h = harness(SEED, vec![d.clone()], vec![key_that_saw_another_cak()]).await;
    let (result, bodies) = h
        .reconcile(d.clone(), read_secret_write_status(&d, 1))
        .await;
    result.unwrap();
    let ready = condition(&bodies[1], "Ready");
    assert_eq!(ready["reason"], "KeyNotReady", "{ready}");
    let message = ready["message"].as_str().unwrap();
    assert!(
        message.contains("the CAK in Secret net/k1 changed but the CKN"),
        "{ready}"
    );
    assert!(h.mutations().is_empty(), "{:?}", h.mutations());
}

/// `k1` as its MacSecKey controller leaves it once it has read a valid Secret.
fn validated_key() -> MacSecKey {
    let mut key = mskey("k1");
    key.status = Some(crate::crd::MacSecKeyStatus {
        observed_generation: Some(1),
        ckn: Some(CKN.to_lowercase()),
        conditions: vec![crate::crd::Condition {
            type_: "Ready".into(),
            status: "True".into(),
            reason: "KeyMaterialValid".into(),
            message: "key material is valid; used by c1".into(),
            last_transition_time: "2027-01-01T00:00:00Z".into(),
            observed_generation: Some(1),
        }],
        ..Default::default()
    });
    key
}

/// Once its MacSecKey has validated the key and the connection's scope shows the key's
/// managed secret, a DxConnection reads no Secret: only an association by CKN/CAK needs the
/// CAK. AWS is read before the key material, so even the first pass after a start, on a
/// connection that already carries the key, reads none; neither does a resync.
#[tokio::test]
async fn a_resync_reads_no_secret_once_the_managed_secret_is_known() {
    let seed = format!(
        "connections:\n  - {{ id: dxcon-c1, macSecCapable: true, encryptionMode: must_encrypt, keys: [{{ckn: \"{CKN}\", cak: \"{CAK}\"}}], router: [\"{CKN}\"], tags: {{dxmacsec.io/owner: test-cluster/net/c1}} }}\n"
    );
    let d = dxc(
        "c1",
        0,
        spec("dxcon-c1", Some(EncryptionMode::MustEncrypt), &["k1"]),
    );
    let mut h = harness(&seed, vec![d.clone()], vec![validated_key()]).await;
    let (result, bodies) = h
        .reconcile(d.clone(), vec![status_patch(&d), expect("POST", EVENTS)])
        .await;
    result.unwrap();
    assert_eq!(condition(&bodies[0], "Ready")["status"], "True");
    assert_eq!(bodies[1]["reason"], "Converged");
    let mut resynced = d.clone();
    resynced.status = Some(serde_json::from_value(bodies[0]["status"].clone()).unwrap());
    // No request at all: no Secret read, nothing to write.
    let (result, _) = h.reconcile(resynced, vec![]).await;
    result.unwrap();
    assert!(h.mutations().is_empty(), "{:?}", h.mutations());
}

/// With the metadata watch of Secrets, a MacSecKey reads its Secret once per version: a
/// resync of a validated key at the same resourceVersion reads nothing, and a new
/// resourceVersion is read (and recorded) at once.
#[tokio::test]
async fn a_key_reads_its_secret_only_when_the_secret_changed() {
    let mut h = harness(SEED, vec![], vec![mskey("k1")]).await;
    let (store, mut writer) = kube::runtime::reflector::store::<PartialObjectMeta<Secret>>();
    let version = |rv: &str| {
        let mut m = PartialObjectMeta::<Secret>::default();
        m.metadata.name = Some("k1".into());
        m.metadata.namespace = Some("net".into());
        m.metadata.resource_version = Some(rv.into());
        watcher::Event::Apply(m)
    };
    writer.apply_watcher_event(&version("7"));
    Arc::get_mut(&mut h.ctx)
        .expect("no other reference yet")
        .secret_versions = Some(Stores(vec![store]));
    let read = |key: &MacSecKey| {
        vec![
            expect("GET", "/api/v1/namespaces/net/secrets/k1")
                .answer(StatusCode::OK, secret_json("k1")),
            status_patch(key),
        ]
    };
    let (result, bodies) = h.reconcile(mskey("k1"), read(&mskey("k1"))).await;
    result.unwrap();
    assert_eq!(bodies[1]["status"]["sourceVersion"], "7");
    let mut key = mskey("k1");
    key.status = Some(serde_json::from_value(bodies[1]["status"].clone()).unwrap());

    let (result, _) = h.reconcile(key.clone(), vec![]).await;
    result.unwrap();

    writer.apply_watcher_event(&version("8"));
    let (result, bodies) = h.reconcile(key.clone(), read(&key)).await;
    result.unwrap();
    assert_eq!(bodies[1]["status"]["sourceVersion"], "8");
    assert_eq!(bodies[1]["status"]["ckn"], CKN);
}

/// A MacSecKey whose Secret is missing is neither Ready nor Synced, and says which Secret.
#[tokio::test]
async fn key_without_its_secret_is_not_synced() {
    let mut h = harness(SEED, vec![], vec![mskey("k1")]).await;
    let (result, bodies) = h
        .reconcile(
            mskey("k1"),
            vec![
                expect("GET", "/api/v1/namespaces/net/secrets/k1")
                    .answer(StatusCode::NOT_FOUND, not_found()),
                status_patch(&mskey("k1")),
            ],
        )
        .await;
    result.unwrap();
    for type_ in ["Ready", "Synced"] {
        let c = condition(&bodies[1], type_);
        assert_eq!(c["status"], "False", "{type_}: {c}");
        assert_eq!(c["reason"], "SecretNotFound", "{type_}: {c}");
        assert!(c["message"].as_str().unwrap().contains("k1"), "{c}");
    }
}

/// `try_hold` by replica `me` on Lease ops/l, held by `other` and renewed at `renewed`,
/// having seen that same record `seen_for` ago: the API server answers the read with that
/// Lease and then expects `writes`. Returns the attempt's outcome and the request bodies.
async fn try_hold_against(
    renewed: jiff::Timestamp,
    seen_for: Duration,
    writes: Vec<Expect>,
) -> (leader::Attempt, Vec<Value>) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "default");
    let lease = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "l", "namespace": "ops", "resourceVersion": "7"},
        "spec": {"holderIdentity": "other", "leaseDurationSeconds": 15, "renewTime": k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(renewed)}});
    let path = "/apis/coordination.k8s.io/v1/namespaces/ops/leases/l";
    let mut script = vec![expect("GET", path).answer(StatusCode::OK, lease.clone())];
    script.extend(writes);
    let verifier = tokio::spawn(verify(handle, script));
    let cfg = leader::LeaseConfig {
        namespace: "ops".into(),
        name: "l".into(),
        identity: "me".into(),
        lease_duration: Duration::from_secs(15),
        renew_every: Duration::from_secs(5),
    };
    let api: Api<k8s_openapi::api::coordination::v1::Lease> = Api::namespaced(client, "ops");
    // What this replica saw before: the same record, `seen_for` ago.
    let mut observed = leader::Observed::default();
    let spec: k8s_openapi::api::coordination::v1::LeaseSpec =
        serde_json::from_value(lease["spec"].clone()).unwrap();
    let then = std::time::Instant::now() - seen_for;
    leader::decide(Some(&spec), "me", &mut observed, then);
    let held = leader::try_hold(&api, &cfg, &mut observed).await.unwrap();
    (held, verifier.await.unwrap().0)
}

/// A replica that saw the Lease recently reads it and writes nothing, even when the
/// holder's renewTime is long past on this replica's clock (the clocks may differ), and
/// knows how long the Lease has left as it observed it.
#[tokio::test]
async fn follower_does_not_touch_a_lease_it_saw_recently() {
    let old = jiff::Timestamp::now() - jiff::SignedDuration::from_secs(3600);
    let (attempt, _) = try_hold_against(old, Duration::from_secs(1), vec![]).await;
    let leader::Attempt::NotHeld { expires_in } = attempt else {
        panic!("{attempt:?}");
    };
    assert!(
        expires_in <= Duration::from_secs(14) && expires_in > Duration::from_secs(13),
        "{expires_in:?}"
    );
}

/// A Lease that has not changed for its duration is taken over with a compare-and-swap
/// write naming this replica.
#[tokio::test]
async fn an_expired_lease_is_taken_over() {
    let put = expect(
        "PUT",
        "/apis/coordination.k8s.io/v1/namespaces/ops/leases/l",
    );
    let (held, bodies) =
        try_hold_against(jiff::Timestamp::now(), Duration::from_secs(16), vec![put]).await;
    assert_eq!(held, leader::Attempt::Held);
    assert_eq!(bodies[1]["spec"]["holderIdentity"], "me");
    assert_eq!(bodies[1]["metadata"]["resourceVersion"], "7");
    assert_eq!(bodies[1]["spec"]["leaseTransitions"], 1);
}

/// A status that differs only in lastSyncTime is never written again (each write would
/// trigger the next reconcile and cost the API server a request); any other difference is.
#[test]
fn status_is_written_only_when_it_changed() {
    let now = jiff::Timestamp::now();
    let old = DxConnectionStatus {
        last_sync_time: Some((now - jiff::SignedDuration::from_secs(86_400)).to_string()),
        encryption_mode: Some("must_encrypt".into()),
        ..DxConnectionStatus::default()
    };
    let mut next = old.clone();
    next.last_sync_time = Some(now.to_string());
    assert!(!relations::status_changed(Some(&old), &next));
    next.encryption_mode = Some("should_encrypt".into());
    assert!(relations::status_changed(Some(&old), &next));
    assert!(relations::status_changed(None, &old));
}

/// Seconds until the requeue of an Action (its Debug shows `requeue_after: Some(12.3s)`).
fn requeue_secs(a: &Action) -> f64 {
    let text = format!("{a:?}");
    let inner = text
        .split("Some(")
        .nth(1)
        .unwrap_or_else(|| panic!("no requeue in {text}"));
    let num: String = inner
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    let value: f64 = num.parse().unwrap();
    if inner[num.len()..].starts_with("ms") {
        value / 1000.0
    } else {
        value
    }
}

/// Requeue choices: soon while in flight, the overlap when waiting on it, the resync when
/// converged, always with at most 20% jitter.
#[tokio::test]
async fn requeue_choices() {
    let h = harness(SEED, vec![], vec![]).await;
    let secs = |a: Action| requeue_secs(&a);
    assert!((10.0..=12.0).contains(&secs(h.ctx.requeue(Requeue::Soon))));
    assert!((60.0..=72.0).contains(&secs(
        h.ctx.requeue(Requeue::After(Duration::from_secs(60)))
    )));
    assert!((300.0..=360.0).contains(&secs(
        h.ctx.requeue(Requeue::After(Duration::from_secs(9999)))
    )));
    assert!((300.0..=360.0).contains(&secs(h.ctx.requeue(Requeue::Resync))));
}

/// DxConnections are re-reconciled for the MacSecKey changes they read (spec, deletion, the
/// learned CKN and managed ARN), not for usedBy or condition updates.
#[test]
fn key_changes_that_matter_to_connections() {
    let relevance = |k: &MacSecKey| key_relevance(&DeserializeGuard(Ok(k.clone())));
    let base = mskey("k1");
    let mut users = base.clone();
    users.status = Some(crate::crd::MacSecKeyStatus {
        used_by: vec!["c1".into(), "c2".into()],
        ..Default::default()
    });
    assert_eq!(relevance(&base), relevance(&users));

    let mut learned = users.clone();
    learned.status.as_mut().unwrap().direct_connect_secret_arn = Some("arn:x".into());
    assert_ne!(relevance(&users), relevance(&learned));
    let mut ckn = users.clone();
    ckn.status.as_mut().unwrap().ckn = Some(CKN.into());
    assert_ne!(relevance(&users), relevance(&ckn));
    let mut edited = base.clone();
    edited.metadata.generation = Some(2);
    assert_ne!(relevance(&base), relevance(&edited));
    let mut deleting = base.clone();
    deleting.metadata.deletion_timestamp = Some(Time(jiff::Timestamp::now()));
    assert_ne!(relevance(&base), relevance(&deleting));
}

/// The error metric's reasons are part of the operator's interface (dashboards and alerts
/// select on them): each error keeps its name, and the metric starts at zero for exactly
/// these.
#[test]
fn the_error_reasons_keep_their_metric_names() {
    let errors = [
        (
            Error::Kube(kube::Error::LinesCodecMaxLineLengthExceeded),
            "KubeError",
        ),
        (
            Error::Finalizer(Box::new(kube::runtime::finalizer::Error::UnnamedObject)),
            "FinalizerError",
        ),
        (Error::CleanupPending(String::new()), "CleanupPending"),
        (Error::KeyInUse(String::new()), "InUse"),
    ];
    for (e, name) in &errors {
        assert_eq!(e.reason(), *name);
    }
    assert_eq!(
        <Error as strum::VariantNames>::VARIANTS,
        errors.map(|(_, name)| name)
    );
}

/// AWS refuses the caller outright (access denied on the scope's Describe): the reconcile
/// says AccessDenied naming the IAM action, and reads no Secret (the key could not be used).
#[tokio::test]
async fn a_scope_aws_refuses_reads_no_key_material() {
    let d = dxc(
        "c1",
        0,
        spec("dxcon-c1", Some(EncryptionMode::MustEncrypt), &["k1"]),
    );
    let mut h = harness(SEED, vec![d.clone()], vec![validated_key()]).await;
    h.sim.shared.add_fault(dx_sim::Fault {
        operation: "*".into(),
        error: Some("AccessDeniedException".into()),
        message: None,
        count: None,
        rate: None,
        latency_ms: 0,
    });
    let (result, bodies) = h
        .reconcile(d.clone(), vec![status_patch(&d), expect("POST", EVENTS)])
        .await;
    result.unwrap();
    let ready = condition(&bodies[0], "Ready");
    assert_eq!(ready["reason"], "AccessDenied");
    assert!(
        ready["message"]
            .as_str()
            .unwrap()
            .contains("directconnect:DescribeConnections"),
        "{ready}"
    );
}

/// Each AWS call is an Event of its own with its own note, even the same call made again on
/// the same object (should_encrypt, then must_encrypt), and none is kept in memory; a
/// repeated warning becomes a series of one Event.
#[tokio::test]
async fn each_call_is_an_event_and_a_repeated_warning_a_series() {
    let mut h = harness(SEED, vec![], vec![]).await;
    let handle = h.handle.take().expect("the harness's API server");
    let script = vec![
        expect("POST", EVENTS),
        expect("POST", EVENTS),
        expect("POST", EVENTS),
        expect("PATCH", EVENTS),
    ];
    let verifier = tokio::spawn(verify(handle, script));
    let r = k8s_openapi::api::core::v1::ObjectReference {
        api_version: Some("dxmacsec.io/v1alpha1".into()),
        kind: Some("DxConnection".into()),
        name: Some("c1".into()),
        namespace: Some("net".into()),
        ..Default::default()
    };
    let (normal, warning) = (
        kube::runtime::events::EventType::Normal,
        kube::runtime::events::EventType::Warning,
    );
    for note in ["set should_encrypt", "set must_encrypt"] {
        let op = "UpdateConnection";
        h.ctx.publish(&r, normal, op, op, note.into()).await;
    }
    for _ in 0..2 {
        let (reason, op) = ("Throttled", "DescribeConnections");
        h.ctx
            .publish(&r, warning, reason, op, "slow down".into())
            .await;
    }
    let (bodies, _) = verifier.await.unwrap();
    assert_eq!(bodies[0]["note"], "set should_encrypt");
    assert_eq!(bodies[1]["note"], "set must_encrypt");
    assert_eq!(bodies[1]["series"], Value::Null, "{}", bodies[1]);
    assert_eq!(bodies[3]["series"]["count"], 2, "{}", bodies[3]);
}

/// A leader whose API server stops answering (a frozen proxy or a partition: the connection
/// stays open, nothing comes back) stops at its renew deadline, counted from when its last
/// successful renewal was sent, although every request after that hangs for ever: the
/// deadline runs on a timer of its own, and each hung request is given up and tried again.
#[tokio::test]
async fn a_leader_whose_lease_requests_hang_stops_at_its_renew_deadline() {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "default");
    let cfg = leader::LeaseConfig {
        namespace: "ops".into(),
        name: "l".into(),
        identity: "me".into(),
        lease_duration: Duration::from_millis(1500),
        renew_every: Duration::from_millis(300),
    };
    let requests = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = requests.clone();
    let server = tokio::spawn(async move {
        let mut unanswered = Vec::new();
        while let Some((request, send)) = handle.next_request().await {
            let n = seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            match n {
                // The first renewal goes through: the Lease is ours, the write is echoed.
                0 => send.send_response(
                    Response::builder()
                        .body(Body::from(
                            serde_json::to_vec(&json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                                "metadata": {"name": "l", "namespace": "ops", "resourceVersion": "7"},
                                "spec": {"holderIdentity": "me", "leaseDurationSeconds": 1}}))
                            .unwrap(),
                        ))
                        .unwrap(),
                ),
                1 => {
                    let body = request.into_body().collect_bytes().await.unwrap();
                    send.send_response(Response::builder().body(Body::from(body.to_vec())).unwrap());
                }
                // Then the API server hangs: requests are taken and never answered.
                _ => unanswered.push(send),
            }
        }
    });
    let held_since = tokio::time::Instant::now();
    let stopped = tokio::time::timeout(
        Duration::from_secs(10),
        leader::hold(client, &cfg, held_since),
    )
    .await;
    let took = held_since.elapsed();
    server.abort();
    assert!(stopped.is_ok(), "hold did not return while requests hung");
    // Renewed once at 300 ms, so the deadline is 300 + 1200 ms; not a moment later than that
    // (with room for a loaded machine), and not before.
    let deadline = cfg.renew_every + leader::renew_deadline(&cfg);
    assert!(
        took >= deadline && took < deadline + Duration::from_millis(250),
        "stopped after {took:?}, the deadline was {deadline:?}"
    );
    let made = requests.load(std::sync::atomic::Ordering::SeqCst);
    // GET and PUT of the renewal, then a hung GET, given up after half a renewal period and
    // tried again before the deadline.
    assert!(
        made >= 4,
        "{made} requests: a hung one was not given up and retried"
    );
}

/// `g1`: a MacSecKey that asks for its key to be made, in a Secret.
fn generated_key() -> MacSecKey {
    let mut k = mskey("g1");
    k.spec.secret_ref = None;
    k.spec.generate = Some(crate::crd::GenerateKey::default());
    k.metadata.uid = Some("0a1b2c3d-0000-4000-8000-000000000001".into());
    k
}

/// A key the operator makes: a Secret owned by the MacSecKey and labelled as key material,
/// with a fresh 64-hex CKN and CAK; the status says where it went and holds the CKN read from
/// there, never a CAK.
#[tokio::test]
async fn a_generated_key_is_written_to_a_secret_it_owns() {
    let key = generated_key();
    let mut h = harness(SEED, vec![], vec![key.clone()]).await;
    let (result, bodies) = h
        .reconcile(
            key.clone(),
            vec![
                expect("POST", "/api/v1/namespaces/net/secrets?"),
                expect("GET", "/api/v1/namespaces/net/secrets/g1")
                    .answer(StatusCode::OK, secret_json("g1")),
                status_patch(&key),
            ],
        )
        .await;
    result.unwrap();
    let secret = &bodies[0];
    assert_eq!(secret["metadata"]["name"], "g1");
    assert_eq!(
        secret["metadata"]["labels"][crate::material::KEY_MATERIAL_LABEL],
        "true"
    );
    let owner = &secret["metadata"]["ownerReferences"][0];
    assert_eq!(
        (
            &owner["kind"],
            &owner["name"],
            &owner["uid"],
            &owner["controller"]
        ),
        (
            &json!("MacSecKey"),
            &json!("g1"),
            &json!("0a1b2c3d-0000-4000-8000-000000000001"),
            &json!(true)
        )
    );
    let field = |k: &str| {
        let b: k8s_openapi::ByteString = serde_json::from_value(secret["data"][k].clone()).unwrap();
        String::from_utf8(b.0).unwrap()
    };
    let (ckn, cak) = (field("ckn"), field("cak"));
    for v in [&ckn, &cak] {
        assert!(
            v.len() == 64 && v.chars().all(|c| c.is_ascii_hexdigit()),
            "{v}"
        );
    }
    assert_ne!(ckn, cak);
    let status = &bodies[2]["status"];
    assert_eq!(
        status["generated"]["secret"],
        json!({"namespace": "net", "name": "g1", "cknKey": "ckn", "cakKey": "cak"})
    );
    assert_eq!(status["conditions"][0]["reason"], "KeyMaterialValid");
    let written = bodies[2].to_string();
    assert!(
        !written.contains(&cak) && !written.contains(CAK),
        "{written}"
    );
}

/// A Secret of the key's name that it did not make is never overwritten, and an operator
/// that may not create Secrets says which chart value allows it: both need a person.
#[tokio::test]
async fn a_generated_key_never_takes_a_secret_it_did_not_make() {
    let key = generated_key();
    let mut h = harness(SEED, vec![], vec![key.clone()]).await;
    let exists = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "AlreadyExists", "code": 409, "message": "secrets \"g1\" already exists"});
    let theirs = json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "g1", "namespace": "net", "ownerReferences": [
            {"apiVersion": "v1", "kind": "ConfigMap", "name": "x", "uid": "someone-else"}]}});
    let (result, bodies) = h
        .reconcile(
            key.clone(),
            vec![
                expect("POST", "/api/v1/namespaces/net/secrets?")
                    .answer(StatusCode::CONFLICT, exists),
                expect("GET", "/api/v1/namespaces/net/secrets/g1").answer(StatusCode::OK, theirs),
                status_patch(&key),
            ],
        )
        .await;
    result.unwrap();
    let ready = condition(&bodies[2], "Ready");
    assert_eq!(ready["reason"], "KeyGenerationFailed");
    assert!(
        ready["message"]
            .as_str()
            .unwrap()
            .contains("never overwrites"),
        "{ready}"
    );
    assert_eq!(condition(&bodies[2], "Stalled")["status"], "True");
    assert!(bodies[2]["status"]["generated"].is_null());

    let forbidden = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Forbidden", "code": 403, "message": "secrets is forbidden"});
    let (result, bodies) = h
        .reconcile(
            key.clone(),
            vec![
                expect("POST", "/api/v1/namespaces/net/secrets?")
                    .answer(StatusCode::FORBIDDEN, forbidden),
                status_patch(&key),
            ],
        )
        .await;
    result.unwrap();
    let ready = condition(&bodies[1], "Ready");
    assert!(
        ready["message"]
            .as_str()
            .unwrap()
            .contains("keyGeneration.enabled"),
        "{ready}"
    );
}
