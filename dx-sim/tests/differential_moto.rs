//! Differential test: one script of Direct Connect calls against dx-sim and against moto
//! (started by `scripts/test` through tests/moto/launcher.py, address in MOTO_ENDPOINT).
//! Compares the field names and JSON types of every response, and the resulting state where
//! moto's model means something. Every difference must be in [`KNOWN_DIFFERENCES`] with its
//! reason, and every entry there must still be observed, so the table stays true.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_credential_types::Credentials;
use aws_sdk_directconnect as dc;
use serde_json::{Value, json};

mod common;

const CKN: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
const CAK: &str = "fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210";

/// (step, JSON path, dx-sim type, moto type, reason). Types: string, number, bool, null,
/// object, array, absent.
const KNOWN_DIFFERENCES: &[(&str, &str, &str, &str, &str)] = &[
    (
        "create-connection",
        ".lagId",
        "absent",
        "null",
        "moto sends null for unset optional fields; AWS omits them",
    ),
    (
        "create-connection",
        ".providerName",
        "absent",
        "null",
        "moto sends null for unset optional fields; AWS omits them",
    ),
    (
        "create-connection",
        ".ownerAccount",
        "string",
        "absent",
        "moto leaves out ownerAccount, which AWS always sends",
    ),
    (
        "create-connection",
        ".loaIssueTime",
        "absent",
        "number",
        "moto issues an LOA date at once; dx-sim leaves loaIssueTime out (the operator never reads it)",
    ),
    (
        "create-connection",
        ".partnerName",
        "absent",
        "string",
        "moto sets partnerName 'mock_partner' on dedicated connections; AWS sets it only for hosted ones",
    ),
    (
        "create-connection",
        ".vlan",
        "absent",
        "number",
        "moto gives a dedicated connection vlan 0; AWS sets vlan only on hosted connections",
    ),
    (
        "update-connection",
        ".lagId",
        "absent",
        "null",
        "moto sends null for unset optional fields; AWS omits them",
    ),
    (
        "update-connection",
        ".providerName",
        "absent",
        "null",
        "moto sends null for unset optional fields; AWS omits them",
    ),
    (
        "update-connection",
        ".ownerAccount",
        "string",
        "absent",
        "moto leaves out ownerAccount, which AWS always sends",
    ),
    (
        "update-connection",
        ".loaIssueTime",
        "absent",
        "number",
        "moto issues an LOA date at once; dx-sim leaves loaIssueTime out (the operator never reads it)",
    ),
    (
        "update-connection",
        ".partnerName",
        "absent",
        "string",
        "moto sets partnerName 'mock_partner' on dedicated connections; AWS sets it only for hosted ones",
    ),
    (
        "update-connection",
        ".vlan",
        "absent",
        "number",
        "moto gives a dedicated connection vlan 0; AWS sets vlan only on hosted connections",
    ),
    (
        "describe-connection",
        ".lagId",
        "absent",
        "null",
        "moto sends null for unset optional fields; AWS omits them",
    ),
    (
        "describe-connection",
        ".providerName",
        "absent",
        "null",
        "moto sends null for unset optional fields; AWS omits them",
    ),
    (
        "describe-connection",
        ".ownerAccount",
        "string",
        "absent",
        "moto leaves out ownerAccount, which AWS always sends",
    ),
    (
        "describe-connection",
        ".loaIssueTime",
        "absent",
        "number",
        "moto issues an LOA date at once; dx-sim leaves loaIssueTime out (the operator never reads it)",
    ),
    (
        "describe-connection",
        ".partnerName",
        "absent",
        "string",
        "moto sets partnerName 'mock_partner' on dedicated connections; AWS sets it only for hosted ones",
    ),
    (
        "describe-connection",
        ".vlan",
        "absent",
        "number",
        "moto gives a dedicated connection vlan 0; AWS sets vlan only on hosted connections",
    ),
    (
        "create-lag",
        ".connections[].providerName",
        "absent",
        "null",
        "moto sends null for unset optional fields; AWS omits them",
    ),
    (
        "create-lag",
        ".connections[].ownerAccount",
        "string",
        "absent",
        "moto leaves out ownerAccount, which AWS always sends",
    ),
    (
        "create-lag",
        ".connections[].loaIssueTime",
        "absent",
        "number",
        "moto issues an LOA date at once; dx-sim leaves loaIssueTime out (the operator never reads it)",
    ),
    (
        "create-lag",
        ".connections[].partnerName",
        "absent",
        "string",
        "moto sets partnerName 'mock_partner' on dedicated connections; AWS sets it only for hosted ones",
    ),
    (
        "create-lag",
        ".connections[].vlan",
        "absent",
        "number",
        "moto gives a dedicated connection vlan 0; AWS sets vlan only on hosted connections",
    ),
    (
        "create-lag",
        ".providerName",
        "absent",
        "null",
        "moto sends null for unset optional fields; AWS omits them",
    ),
    (
        "create-lag",
        ".ownerAccount",
        "string",
        "absent",
        "moto leaves out ownerAccount, which AWS always sends",
    ),
    (
        "create-lag",
        ".allowsHostedConnections",
        "bool",
        "absent",
        "moto leaves out allowsHostedConnections, which AWS sends",
    ),
];

/// Differences in resulting state (not shape), each with its reason.
const KNOWN_STATE_DIFFERENCES: &[(&str, &str)] = &[
    (
        "create: state, mode and keys",
        "moto makes a MACsec connection available at once, in must_encrypt, with a fake associated key (ckn mock_ckn); AWS starts it requested, and dx-sim in no_encrypt with no key",
    ),
    (
        "associate: key state",
        "moto associates at once (associated); AWS and dx-sim go through associating",
    ),
    (
        "associate: secretARN",
        "moto returns mock_secret_arn for every key; AWS and dx-sim create a managed secret per CKN",
    ),
    (
        "disassociate: key state",
        "moto answers disassociated and drops the key at once; AWS and dx-sim go through disassociating",
    ),
    (
        "connection IDs",
        "moto's IDs are ARNs (arn:aws:directconnect:…:dx-con/dx-moto-NAME-TIME); AWS and dx-sim use dxcon-xxxxxxxx",
    ),
    (
        "unknown connection: error code",
        "moto says ConnectionNotFound; AWS says DirectConnectClientException 'Could not find Connection with ID …'",
    ),
];

fn type_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Path → JSON type of every field; array elements are merged under `[]`.
fn shape(v: &Value, path: &str, out: &mut BTreeMap<String, &'static str>) {
    out.insert(path.to_string(), type_of(v));
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                shape(v, &format!("{path}.{k}"), out);
            }
        }
        Value::Array(items) => {
            for item in items {
                shape(item, &format!("{path}[]"), out);
            }
        }
        _ => {}
    }
}

/// Fields that differ between the two shapes: (path, dx-sim type, moto type). Fields of
/// array elements are compared only where both sides have elements: an empty list against a
/// full one is a difference of state, checked separately.
fn diff(sim: &Value, moto: &Value) -> Vec<(String, &'static str, &'static str)> {
    let (mut a, mut b) = (BTreeMap::new(), BTreeMap::new());
    shape(sim, "", &mut a);
    shape(moto, "", &mut b);
    let has_elements = |shape: &BTreeMap<String, &str>, p: &str| {
        p.match_indices("[]")
            .all(|(i, _)| shape.contains_key(&p[..i + 2]))
    };
    let paths: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    paths
        .into_iter()
        .filter(|p| has_elements(&a, p) && has_elements(&b, p))
        .filter_map(|p| {
            let x = a.get(p).copied().unwrap_or("absent");
            let y = b.get(p).copied().unwrap_or("absent");
            (x != y).then(|| (p.clone(), x, y))
        })
        .collect()
}

struct Peer<'a> {
    name: &'static str,
    endpoint: String,
    /// dx-sim's controls, for what AWS does on its own (provisioning).
    sim: Option<&'a dx_sim::Shared>,
}

impl Peer<'_> {
    async fn call(&self, op: &str, body: Value) -> (u16, Value) {
        common::aws_json(
            &self.endpoint,
            &format!("OvertureService.{op}"),
            "AKIDDIFF",
            &body,
        )
        .await
    }

    async fn sdk(&self) -> dc::Client {
        let conf = aws_config::defaults(BehaviorVersion::latest())
            .region(aws_config::Region::new("us-east-1"))
            .credentials_provider(Credentials::new("AKIDDIFF", "secret", None, None, "test"))
            .endpoint_url(&self.endpoint)
            .load()
            .await;
        dc::Client::new(&conf)
    }
}

/// The responses of one run of the script, by step, and state observations.
struct Outcome {
    created_state: String,
    responses: Vec<(&'static str, Value)>,
    mode_after_update: Option<String>,
    keys_after_associate: Vec<String>,
    keys_after_disassociate: usize,
    unknown_status: u16,
}

async fn script(peer: &Peer<'_>, suffix: &str) -> Outcome {
    let mut responses = Vec::new();
    let (s, conn) = peer
        .call(
            "CreateConnection",
            json!({"location": "EqDC2", "bandwidth": "10Gbps", "connectionName": format!("diff-{suffix}"), "requestMACSec": true}),
        )
        .await;
    assert_eq!(s, 200, "{}: CreateConnection: {conn}", peer.name);
    let id = conn["connectionId"].as_str().unwrap().to_string();
    let created_state = conn["connectionState"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    responses.push(("create-connection", conn));
    if let Some(sim) = peer.sim {
        // The cross-connect is done: AWS moves the port to available; here a control does.
        sim.set_state(&id, "available").unwrap();
    }

    // The SDK must parse both peers' Describe answers (moto through the launcher's fixes).
    let sdk = peer.sdk().await;
    let described = sdk
        .describe_connections()
        .connection_id(&id)
        .send()
        .await
        .unwrap_or_else(|e| {
            panic!(
                "{}: the SDK cannot parse DescribeConnections: {e:?}",
                peer.name
            )
        });
    assert_eq!(
        described.connections()[0].mac_sec_capable(),
        Some(true),
        "{}",
        peer.name
    );

    let (_, upd) = peer
        .call(
            "UpdateConnection",
            json!({"connectionId": id, "encryptionMode": "should_encrypt"}),
        )
        .await;
    let mode_after_update = upd["encryptionMode"].as_str().map(str::to_string);
    responses.push(("update-connection", upd));

    let (s, assoc) = peer
        .call(
            "AssociateMacSecKey",
            json!({"connectionId": id, "ckn": CKN, "cak": CAK}),
        )
        .await;
    assert_eq!(s, 200, "{}: AssociateMacSecKey: {assoc}", peer.name);
    let new_key = assoc["macSecKeys"]
        .as_array()
        .and_then(|ks| ks.iter().find(|k| k["ckn"] == json!(CKN)))
        .cloned()
        .unwrap_or_else(|| panic!("{}: the new key is not in {assoc}", peer.name));
    let arn = new_key["secretARN"].as_str().unwrap().to_string();
    responses.push(("associate", assoc));

    let (_, desc) = peer
        .call("DescribeConnections", json!({"connectionId": id}))
        .await;
    let this = desc["connections"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["connectionId"] == json!(id)))
        .cloned()
        .unwrap_or(Value::Null);
    let keys_after_associate = this["macSecKeys"]
        .as_array()
        .map(|ks| {
            ks.iter()
                .filter_map(|k| k["ckn"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    responses.push(("describe-connection", this));

    let (s, dis) = peer
        .call(
            "DisassociateMacSecKey",
            json!({"connectionId": id, "secretARN": arn}),
        )
        .await;
    assert_eq!(s, 200, "{}: DisassociateMacSecKey: {dis}", peer.name);
    responses.push(("disassociate", dis));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_, desc) = peer
        .call("DescribeConnections", json!({"connectionId": id}))
        .await;
    let keys_after_disassociate = desc["connections"][0]["macSecKeys"]
        .as_array()
        .map(Vec::len)
        .unwrap_or(0);

    let (s, lag) = peer
        .call(
            "CreateLag",
            json!({"numberOfConnections": 1, "location": "EqDC2", "connectionsBandwidth": "100Gbps", "lagName": format!("difflag-{suffix}"), "requestMACSec": true}),
        )
        .await;
    assert_eq!(s, 200, "{}: CreateLag: {lag}", peer.name);
    responses.push(("create-lag", lag));
    sdk.describe_lags()
        .send()
        .await
        .unwrap_or_else(|e| panic!("{}: the SDK cannot parse DescribeLags: {e:?}", peer.name));

    let (unknown_status, unknown) = peer
        .call(
            "AssociateMacSecKey",
            json!({"connectionId": "dxcon-doesnotexist", "ckn": CKN, "cak": CAK}),
        )
        .await;
    responses.push(("unknown-connection", json!({"__type": unknown["__type"]})));

    Outcome {
        created_state,
        responses,
        mode_after_update,
        keys_after_associate,
        keys_after_disassociate,
        unknown_status,
    }
}

/// dx-sim and moto answer the script alike, but for the documented differences.
#[tokio::test]
async fn dx_sim_and_moto_agree_but_for_known_differences() {
    let Some(moto) = dx_sim::moto_endpoint("dx_sim_and_moto_agree_but_for_known_differences")
    else {
        return;
    };
    let seed = dx_sim::Seed::from_yaml(
        "delays: { associateMs: 100, disassociateMs: 100 }\nlocations: [{ code: EqDC2, macSecPortSpeeds: [10G, 100G] }]",
    )
    .unwrap();
    let sim = dx_sim::Sim::start(seed).await.unwrap();
    let suffix = format!("{}", std::process::id());
    let ours = script(
        &Peer {
            name: "dx-sim",
            endpoint: sim.endpoint(),
            sim: Some(&sim.shared),
        },
        &suffix,
    )
    .await;
    let theirs = script(
        &Peer {
            name: "moto",
            endpoint: moto,
            sim: None,
        },
        &suffix,
    )
    .await;

    // Shapes.
    let mut seen = BTreeSet::new();
    let mut unexpected = Vec::new();
    for ((step, a), (_, b)) in ours.responses.iter().zip(&theirs.responses) {
        for (path, x, y) in diff(a, b) {
            let known = KNOWN_DIFFERENCES
                .iter()
                .position(|(s, p, kx, ky, _)| s == step && *p == path && *kx == x && *ky == y);
            match known {
                Some(i) => {
                    seen.insert(i);
                }
                None => unexpected.push(format!("{step} {path}: dx-sim {x}, moto {y}")),
            }
        }
    }
    assert!(
        unexpected.is_empty(),
        "undocumented differences:\n{}",
        unexpected.join("\n")
    );
    let stale: Vec<_> = KNOWN_DIFFERENCES
        .iter()
        .enumerate()
        .filter(|(i, (_, _, x, y, _))| !seen.contains(i) && x != y)
        .map(|(_, d)| format!("{d:?}"))
        .collect();
    assert!(
        stale.is_empty(),
        "documented differences no longer seen:\n{}",
        stale.join("\n")
    );

    // Resulting state where moto's model means something.
    assert_eq!(ours.mode_after_update.as_deref(), Some("should_encrypt"));
    assert_eq!(ours.mode_after_update, theirs.mode_after_update);
    assert_eq!(ours.keys_after_associate, vec![CKN.to_string()]);
    assert!(theirs.keys_after_associate.contains(&CKN.to_string()));
    assert_eq!(
        (ours.keys_after_disassociate, theirs.keys_after_disassociate),
        (0, 1),
        "{:?}",
        KNOWN_STATE_DIFFERENCES[0]
    );
    assert_eq!(
        (ours.created_state.as_str(), theirs.created_state.as_str()),
        ("requested", "available"),
        "{:?}",
        KNOWN_STATE_DIFFERENCES[0]
    );
    let created_mode = |o: &Outcome| o.responses[0].1["encryptionMode"].clone();
    assert_eq!(
        (created_mode(&ours), created_mode(&theirs)),
        (json!("no_encrypt"), json!("must_encrypt")),
        "{:?}",
        KNOWN_STATE_DIFFERENCES[0]
    );
    assert_eq!((ours.unknown_status, theirs.unknown_status), (400, 400));

    // The state differences the table names are still real.
    let key_state = |o: &Outcome| {
        o.responses[2].1["macSecKeys"]
            .as_array()
            .and_then(|ks| ks.iter().find(|k| k["ckn"] == json!(CKN)))
            .map(|k| k["state"].clone())
            .unwrap_or(Value::Null)
    };
    assert_eq!(
        (key_state(&ours), key_state(&theirs)),
        (json!("associating"), json!("associated")),
        "{:?}",
        KNOWN_STATE_DIFFERENCES[1]
    );
    assert!(
        theirs.responses[2].1["macSecKeys"]
            .as_array()
            .unwrap()
            .iter()
            .all(|k| k["secretARN"] == json!("mock_secret_arn")),
        "{:?}",
        KNOWN_STATE_DIFFERENCES[2]
    );
    let dis_state = |o: &Outcome| o.responses[4].1["macSecKeys"][0]["state"].clone();
    assert_eq!(
        (dis_state(&ours), dis_state(&theirs)),
        (json!("disassociating"), json!("disassociated")),
        "{:?}",
        KNOWN_STATE_DIFFERENCES[3]
    );
    let id_of = |o: &Outcome| {
        o.responses[0].1["connectionId"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    assert!(
        id_of(&ours).starts_with("dxcon-") && id_of(&theirs).starts_with("arn:aws:directconnect:"),
        "{:?}",
        KNOWN_STATE_DIFFERENCES[4]
    );
    assert_eq!(
        theirs.responses[6].1["__type"],
        json!("ConnectionNotFound"),
        "{:?}",
        KNOWN_STATE_DIFFERENCES[5]
    );
    assert_eq!(
        ours.responses[6].1["__type"],
        json!("DirectConnectClientException")
    );
}

/// The calls of interconnects and LAG membership that moto does not implement, with what moto
/// answers. The differential script cannot cover them; if moto starts to answer one, this
/// test fails so that the script is extended to compare it.
const NOT_IN_MOTO: &[&str] = &[
    "DescribeInterconnects",
    "CreateInterconnect",
    "AssociateConnectionWithLag",
    "DisassociateConnectionFromLag",
];

#[tokio::test]
async fn moto_lacks_interconnects_and_lag_membership() {
    let Some(moto) = dx_sim::moto_endpoint("moto_lacks_interconnects_and_lag_membership") else {
        return;
    };
    let sim = dx_sim::Sim::start(
        dx_sim::Seed::from_yaml(
            "connections: [{ id: dxcon-a, macSecCapable: true }]\nlags: [{ id: dxlag-a, macSecCapable: true }]",
        )
        .unwrap(),
    )
    .await
    .unwrap();
    let body = |op: &str| match op {
        "DescribeInterconnects" => json!({}),
        "CreateInterconnect" => {
            json!({"interconnectName": "ic", "bandwidth": "10Gbps", "location": "EqDC2", "requestMACSec": true})
        }
        _ => json!({"connectionId": "dxcon-a", "lagId": "dxlag-a"}),
    };
    for op in NOT_IN_MOTO {
        let target = format!("OvertureService.{op}");
        let (status, answer) =
            common::aws_json(&sim.endpoint(), &target, "AKIDDIFF", &body(op)).await;
        assert_eq!(status, 200, "dx-sim {op}: {answer}");
        let (status, answer) = common::aws_json(&moto, &target, "AKIDDIFF", &body(op)).await;
        assert_ne!(
            status, 200,
            "moto now answers {op} ({answer}): add it to the differential script"
        );
    }
}

/// STS against moto: GetCallerIdentity and AssumeRole answer with the same elements, the
/// assumed credentials act in the role's account on both, and the one known difference holds:
/// moto hands out credentials for any role, dx-sim only for the roles its seed lists.
#[tokio::test]
async fn sts_agrees_with_moto_on_roles_and_accounts() {
    let Some(moto) = dx_sim::moto_endpoint("sts_agrees_with_moto_on_roles_and_accounts") else {
        return;
    };
    let sim = dx_sim::Sim::start(
        dx_sim::Seed::from_yaml(
            "account: \"123456789012\"\nroles: [\"arn:aws:iam::222222222222:role/dx\"]",
        )
        .unwrap(),
    )
    .await
    .unwrap();
    const ROLE: &str = "arn:aws:iam::222222222222:role/dx";
    const ELEMENTS: &[&str] = &[
        "AccessKeyId",
        "SecretAccessKey",
        "SessionToken",
        "Expiration",
        "AssumedRoleId",
        "Arn",
        "RequestId",
    ];
    for (name, endpoint) in [("dx-sim", sim.endpoint()), ("moto", moto.clone())] {
        let (status, me) =
            common::sts_query(&endpoint, "AKIDDIFF", &[("Action", "GetCallerIdentity")]).await;
        assert_eq!(status, 200, "{name}: {me}");
        assert_eq!(
            common::xml_text(&me, "Account"),
            Some("123456789012"),
            "{name}: {me}"
        );
        let (status, assumed) = common::sts_query(
            &endpoint,
            "AKIDDIFF",
            &[
                ("Action", "AssumeRole"),
                ("RoleArn", ROLE),
                ("RoleSessionName", "diff"),
            ],
        )
        .await;
        assert_eq!(status, 200, "{name}: {assumed}");
        for element in ELEMENTS {
            assert!(
                common::xml_text(&assumed, element).is_some(),
                "{name}: no {element} in {assumed}"
            );
        }
        assert!(
            common::xml_text(&assumed, "Arn")
                .unwrap()
                .ends_with(":assumed-role/dx/diff"),
            "{name}: {assumed}"
        );
        let key = common::xml_text(&assumed, "AccessKeyId").unwrap();
        let (_, them) = common::sts_query(&endpoint, key, &[("Action", "GetCallerIdentity")]).await;
        assert_eq!(
            common::xml_text(&them, "Account"),
            Some("222222222222"),
            "{name}: {them}"
        );
    }
    let other = [
        ("Action", "AssumeRole"),
        ("RoleArn", "arn:aws:iam::333333333333:role/other"),
        ("RoleSessionName", "diff"),
    ];
    let (status, denied) = common::sts_query(&sim.endpoint(), "AKIDDIFF", &other).await;
    assert_eq!(status, 403, "{denied}");
    assert_eq!(common::xml_text(&denied, "Code"), Some("AccessDenied"));
    let (status, granted) = common::sts_query(&moto, "AKIDDIFF", &other).await;
    assert_eq!(
        status, 200,
        "moto now refuses unknown roles ({granted}): drop this known difference"
    );
}
