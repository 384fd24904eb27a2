//! dx-sim through the real AWS SDK clients: every operation and error path parses, async key
//! states move on their own, limits, faults, the rate limit and pagination behave.

use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_credential_types::Credentials;
use aws_sdk_directconnect as dc;
use aws_sdk_directconnect::types::MacSecKey;
use aws_sdk_secretsmanager as sm;
use dx_sim::{Fault, Seed, Sim};

mod common;

const CKN_A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const CKN_B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
const CKN_C: &str = "cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc";
const CKN_D: &str = "dddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd";
const CAK: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

const SEED: &str = r#"
delays: { associateMs: 150, disassociateMs: 150 }
locations:
  - { code: EqDC2, macSecPortSpeeds: [10G, 100G] }
connections:
  - { id: dxcon-cap00001, macSecCapable: true, router: [AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA] }
  - { id: dxcon-cap00002, macSecCapable: true }
  - { id: dxcon-plain001, bandwidth: 1Gbps, macSecCapable: false }
  - { id: dxcon-pending1, macSecCapable: true, state: pending }
  - { id: dxcon-m0000001, bandwidth: 100Gbps, macSecCapable: true }
  - { id: dxcon-m0000002, bandwidth: 100Gbps, macSecCapable: true }
lags:
  - { id: dxlag-lag00001, bandwidth: 100Gbps, macSecCapable: true, members: [dxcon-m0000001, dxcon-m0000002] }
"#;

async fn start(seed: &str) -> Sim {
    Sim::start(Seed::from_yaml(seed).unwrap()).await.unwrap()
}

async fn config(sim: &Sim, access_key: &str) -> aws_config::SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(Credentials::new(access_key, "secret", None, None, "test"))
        .endpoint_url(sim.endpoint())
        .retry_config(RetryConfig::disabled())
        .load()
        .await
}

async fn dx(sim: &Sim) -> dc::Client {
    dc::Client::new(&config(sim, "AKIDTEST").await)
}

/// The error code and message of a failed SDK call.
fn err_of<E, R>(
    r: Result<R, dc::error::SdkError<E, dc::config::http::HttpResponse>>,
) -> (String, String)
where
    E: dc::error::ProvideErrorMetadata + std::fmt::Debug,
    R: std::fmt::Debug,
{
    let e = r.expect_err("the call should fail");
    let meta = e.as_service_error().expect("a service error");
    (
        meta.code().unwrap_or_default().to_string(),
        meta.message().unwrap_or_default().to_string(),
    )
}

async fn keys_of(c: &dc::Client, id: &str) -> Vec<MacSecKey> {
    if id.starts_with("dxlag-") {
        let out = c.describe_lags().lag_id(id).send().await.unwrap();
        out.lags()[0].mac_sec_keys().to_vec()
    } else {
        let out = c
            .describe_connections()
            .connection_id(id)
            .send()
            .await
            .unwrap();
        out.connections()[0].mac_sec_keys().to_vec()
    }
}

async fn associate(c: &dc::Client, id: &str, ckn: &str) -> String {
    let out = c
        .associate_mac_sec_key()
        .connection_id(id)
        .ckn(ckn)
        .cak(CAK)
        .send()
        .await
        .unwrap();
    let key = out
        .mac_sec_keys()
        .iter()
        .find(|k| k.ckn() == Some(ckn))
        .expect("the new key is in the response")
        .clone();
    key.secret_arn().unwrap().to_string()
}

async fn settle() {
    tokio::time::sleep(Duration::from_millis(250)).await;
}

/// Describe calls parse with the SDK and carry the MACsec fields, LAG members included.
#[tokio::test]
async fn describe_parses_with_macsec_fields() {
    let sim = start(SEED).await;
    let c = dx(&sim).await;
    let out = c.describe_connections().send().await.unwrap();
    assert_eq!(out.connections().len(), 6);
    let cap = out
        .connections()
        .iter()
        .find(|c| c.connection_id() == Some("dxcon-cap00001"))
        .unwrap();
    assert_eq!(cap.mac_sec_capable(), Some(true));
    assert_eq!(cap.encryption_mode(), Some("no_encrypt"));
    assert_eq!(cap.port_encryption_status(), Some("Encryption Down"));
    let plain = out
        .connections()
        .iter()
        .find(|c| c.connection_id() == Some("dxcon-plain001"))
        .unwrap();
    assert_eq!(plain.mac_sec_capable(), Some(false));
    assert_eq!(plain.encryption_mode(), None);

    let lags = c.describe_lags().send().await.unwrap();
    let lag = &lags.lags()[0];
    assert_eq!(lag.lag_id(), Some("dxlag-lag00001"));
    assert_eq!(lag.connections().len(), 2);
    assert_eq!(lag.connections()[0].lag_id(), Some("dxlag-lag00001"));

    let locs = c.describe_locations().send().await.unwrap();
    assert_eq!(
        locs.locations()[0].available_mac_sec_port_speeds(),
        ["10G", "100G"]
    );
}

/// Pagination: 250 connections come in 3 pages of at most 100; maxResults is checked.
#[tokio::test]
async fn describe_connections_paginates() {
    let sim = start("generate: { connections: 250 }").await;
    let c = dx(&sim).await;
    let first = c
        .describe_connections()
        .max_results(100)
        .send()
        .await
        .unwrap();
    assert_eq!(first.connections().len(), 100);
    assert!(first.next_token().is_some());
    let mut token = first.next_token().map(str::to_string);
    let mut total = first.connections().len();
    let mut pages = 1;
    while let Some(t) = token {
        let page = c
            .describe_connections()
            .max_results(100)
            .next_token(t)
            .send()
            .await
            .unwrap();
        total += page.connections().len();
        pages += 1;
        token = page.next_token().map(str::to_string);
    }
    assert_eq!((total, pages), (250, 3));
    let (code, msg) = err_of(c.describe_connections().max_results(101).send().await);
    assert_eq!(code, "DirectConnectClientException");
    assert!(msg.contains("maxResults"), "{msg}");
    let (_, msg) = err_of(c.describe_connections().next_token("garbage").send().await);
    assert!(msg.contains("nextToken"), "{msg}");
}

/// Associate by CKN/CAK: associating, then associated; a managed secret with a realistic
/// name and random-suffixed ARN; startOn set; the router decides Encryption Up.
#[tokio::test]
async fn associate_goes_async_and_creates_a_managed_secret() {
    let sim = start(SEED).await;
    let c = dx(&sim).await;
    c.update_connection()
        .connection_id("dxcon-cap00001")
        .encryption_mode("should_encrypt")
        .send()
        .await
        .unwrap();
    let arn = associate(&c, "dxcon-cap00001", CKN_A).await;
    assert!(
        arn.starts_with(&format!(
            "arn:aws:secretsmanager:us-east-1:123456789012:secret:directconnect!prod/us-east-1/directconnect/{CKN_A}-"
        )),
        "{arn}"
    );
    assert_eq!(arn.rsplit('-').next().unwrap().len(), 6);
    let keys = keys_of(&c, "dxcon-cap00001").await;
    assert_eq!(keys[0].state(), Some("associating"));
    assert!(
        keys[0]
            .start_on()
            .unwrap()
            .parse::<jiff::Timestamp>()
            .is_ok()
    );
    settle().await;
    assert_eq!(
        keys_of(&c, "dxcon-cap00001").await[0].state(),
        Some("associated")
    );
    let conn = c
        .describe_connections()
        .connection_id("dxcon-cap00001")
        .send()
        .await
        .unwrap();
    // The seeded router has CKN_A (in upper case): up.
    assert_eq!(
        conn.connections()[0].port_encryption_status(),
        Some("Encryption Up")
    );

    // The managed secret is visible to DescribeSecret, owned by Direct Connect.
    let smc = sm::Client::new(&config(&sim, "AKIDTEST").await);
    let d = smc.describe_secret().secret_id(&arn).send().await.unwrap();
    assert_eq!(d.owning_service(), Some("directconnect"));

    // The same key goes to another connection by ARN, without the CAK: same secret.
    let out = c
        .associate_mac_sec_key()
        .connection_id("dxcon-cap00002")
        .secret_arn(&arn)
        .send()
        .await
        .unwrap();
    assert_eq!(out.mac_sec_keys()[0].ckn(), Some(CKN_A));
    assert_eq!(out.mac_sec_keys()[0].secret_arn(), Some(arn.as_str()));
}

/// Every AssociateMacSecKey / Disassociate / Update error path, AWS-shaped.
#[tokio::test]
async fn validation_errors_are_aws_shaped() {
    let sim = start(SEED).await;
    let c = dx(&sim).await;
    let assoc = |id: &str| c.associate_mac_sec_key().connection_id(id.to_string());
    let cases: Vec<(Result<_, _>, &str)> = vec![
        (
            assoc("dxcon-missing1").ckn(CKN_A).cak(CAK).send().await,
            "Could not find Connection with ID dxcon-missing1",
        ),
        (
            assoc("dxlag-missing1").ckn(CKN_A).cak(CAK).send().await,
            "Could not find Lag with ID dxlag-missing1",
        ),
        (
            assoc("dxcon-cap00001").ckn("abc").cak(CAK).send().await,
            "CKN must be 64 hexadecimal",
        ),
        (
            assoc("dxcon-cap00001")
                .ckn(CKN_A)
                .cak(format!("{CAK}0"))
                .send()
                .await,
            "CAK must be 64 hexadecimal",
        ),
        (
            assoc("dxcon-cap00001").ckn(CKN_A).send().await,
            "both ckn and cak",
        ),
        (assoc("dxcon-cap00001").send().await, "both ckn and cak"),
        (
            assoc("dxcon-cap00001")
                .ckn(CKN_A)
                .cak(CAK)
                .secret_arn("arn:x")
                .send()
                .await,
            "not both",
        ),
        (
            assoc("dxcon-plain001").ckn(CKN_A).cak(CAK).send().await,
            "not MACsec capable",
        ),
        (
            assoc("dxcon-pending1").ckn(CKN_A).cak(CAK).send().await,
            "not in available state to associate the key",
        ),
        (
            assoc("dxcon-m0000001").ckn(CKN_A).cak(CAK).send().await,
            "member of LAG dxlag-lag00001",
        ),
    ];
    for (result, needle) in cases {
        let (code, msg) = err_of(result);
        assert_eq!(code, "DirectConnectClientException", "{msg}");
        assert!(msg.contains(needle), "{msg:?} should contain {needle:?}");
    }

    // A secret the customer made is not a Direct Connect-managed one.
    let smc = sm::Client::new(&config(&sim, "AKIDTEST").await);
    let own = smc
        .create_secret()
        .name("my-macsec-key")
        .secret_string(format!(r#"{{"ckn":"{CKN_A}","cak":"{CAK}"}}"#))
        .send()
        .await
        .unwrap();
    let (_, msg) = err_of(
        assoc("dxcon-cap00001")
            .secret_arn(own.arn().unwrap())
            .send()
            .await,
    );
    assert!(msg.contains("not a Direct Connect managed secret"), "{msg}");

    // Keychain: a duplicate CKN, then a fourth key.
    for ckn in [CKN_A, CKN_B, CKN_C] {
        associate(&c, "dxcon-cap00001", ckn).await;
    }
    let (_, msg) = err_of(
        assoc("dxcon-cap00001")
            .ckn(CKN_A.to_uppercase())
            .cak(CAK)
            .send()
            .await,
    );
    assert!(msg.contains("already associated"), "{msg}");
    let (_, msg) = err_of(assoc("dxcon-cap00001").ckn(CKN_D).cak(CAK).send().await);
    assert!(msg.contains("maximum of 3"), "{msg}");

    let (_, msg) = err_of(
        c.disassociate_mac_sec_key()
            .connection_id("dxcon-cap00001")
            .secret_arn("arn:nope")
            .send()
            .await,
    );
    assert!(msg.contains("is not associated"), "{msg}");

    let upd = |id: &str, mode: &str| {
        c.update_connection()
            .connection_id(id.to_string())
            .encryption_mode(mode.to_string())
    };
    let (_, msg) = err_of(upd("dxcon-cap00001", "always_encrypt").send().await);
    assert!(
        msg.contains("Invalid encryptionMode always_encrypt"),
        "{msg}"
    );
    let (_, msg) = err_of(upd("dxcon-plain001", "should_encrypt").send().await);
    assert!(msg.contains("not MACsec capable"), "{msg}");
    let (_, msg) = err_of(upd("dxcon-pending1", "should_encrypt").send().await);
    assert!(msg.contains("must be available"), "{msg}");
    let (_, msg) = err_of(upd("dxcon-m0000001", "should_encrypt").send().await);
    assert!(msg.contains("set the encryption mode on the LAG"), "{msg}");
    let (_, msg) = err_of(
        c.update_lag()
            .lag_id("dxlag-missing1")
            .encryption_mode("no_encrypt")
            .send()
            .await,
    );
    assert!(msg.contains("Could not find Lag"), "{msg}");
}

/// Disassociate: disassociating, then gone; the last key gone under must_encrypt turns the
/// mode to should_encrypt, as AWS does.
#[tokio::test]
async fn last_key_removed_under_must_encrypt_falls_back() {
    let sim = start(SEED).await;
    let c = dx(&sim).await;
    let arn = associate(&c, "dxcon-cap00001", CKN_A).await;
    settle().await;
    c.update_connection()
        .connection_id("dxcon-cap00001")
        .encryption_mode("must_encrypt")
        .send()
        .await
        .unwrap();
    let out = c
        .disassociate_mac_sec_key()
        .connection_id("dxcon-cap00001")
        .secret_arn(&arn)
        .send()
        .await
        .unwrap();
    assert_eq!(out.mac_sec_keys()[0].state(), Some("disassociating"));
    let conn = c
        .describe_connections()
        .connection_id("dxcon-cap00001")
        .send()
        .await
        .unwrap();
    assert_eq!(
        conn.connections()[0].encryption_mode(),
        Some("must_encrypt")
    );
    settle().await;
    let conn = c
        .describe_connections()
        .connection_id("dxcon-cap00001")
        .send()
        .await
        .unwrap();
    assert!(conn.connections()[0].mac_sec_keys().is_empty());
    assert_eq!(
        conn.connections()[0].encryption_mode(),
        Some("should_encrypt")
    );
}

/// LAG: keys and mode set on the LAG appear on every member; each member's router counts.
#[tokio::test]
async fn lag_keys_and_mode_mirror_to_members() {
    let sim = start(SEED).await;
    let c = dx(&sim).await;
    associate(&c, "dxlag-lag00001", CKN_A).await;
    c.update_lag()
        .lag_id("dxlag-lag00001")
        .encryption_mode("should_encrypt")
        .send()
        .await
        .unwrap();
    settle().await;
    sim.shared
        .set_router("dxcon-m0000001", &[CKN_A.into()])
        .unwrap();
    let lag = c
        .describe_lags()
        .lag_id("dxlag-lag00001")
        .send()
        .await
        .unwrap();
    let lag = &lag.lags()[0];
    assert_eq!(lag.encryption_mode(), Some("should_encrypt"));
    let status: Vec<_> = lag
        .connections()
        .iter()
        .map(|m| {
            assert_eq!(m.encryption_mode(), Some("should_encrypt"));
            assert_eq!(m.mac_sec_keys()[0].ckn(), Some(CKN_A));
            m.port_encryption_status().unwrap().to_string()
        })
        .collect();
    assert_eq!(status, ["Encryption Up", "Encryption Down"]);
    // The router control on the LAG sets every member.
    sim.shared
        .set_router("dxlag-lag00001", &[CKN_A.into()])
        .unwrap();
    let lag = c
        .describe_lags()
        .lag_id("dxlag-lag00001")
        .send()
        .await
        .unwrap();
    assert!(
        lag.lags()[0]
            .connections()
            .iter()
            .all(|m| m.port_encryption_status() == Some("Encryption Up"))
    );
}

/// Create and delete: MACsec only on 10/100/400 Gbps where the location offers it; a LAG
/// and its members must agree on MACsec.
#[tokio::test]
async fn create_and_delete_follow_macsec_rules() {
    let sim = start(SEED).await;
    let c = dx(&sim).await;
    let conn = c
        .create_connection()
        .location("EqDC2")
        .bandwidth("10Gbps")
        .connection_name("new")
        .request_mac_sec(true)
        .send()
        .await
        .unwrap();
    assert_eq!(conn.mac_sec_capable(), Some(true));
    assert_eq!(
        conn.connection_state().map(|s| s.as_str()),
        Some("requested")
    );
    let (_, msg) = err_of(
        c.create_connection()
            .location("EqDC2")
            .bandwidth("1Gbps")
            .connection_name("x")
            .request_mac_sec(true)
            .send()
            .await,
    );
    assert!(
        msg.contains("only available on dedicated 10, 100 and 400"),
        "{msg}"
    );
    let lag = c
        .create_lag()
        .location("EqDC2")
        .connections_bandwidth("100Gbps")
        .lag_name("l")
        .number_of_connections(2)
        .request_mac_sec(true)
        .send()
        .await
        .unwrap();
    assert_eq!(lag.connections().len(), 2);
    let (_, msg) = err_of(
        c.create_connection()
            .location("EqDC2")
            .bandwidth("100Gbps")
            .connection_name("mixed")
            .lag_id(lag.lag_id().unwrap())
            .send()
            .await,
    );
    assert!(
        msg.contains("should be requested MacSec at the same time"),
        "{msg}"
    );
    let deleted = c
        .delete_connection()
        .connection_id(conn.connection_id().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(
        deleted.connection_state().map(|s| s.as_str()),
        Some("deleted")
    );
}

/// Secrets Manager: create, read and describe a customer secret; unknown IDs are
/// ResourceNotFoundException.
#[tokio::test]
async fn secrets_manager_calls() {
    let sim = start(SEED).await;
    let smc = sm::Client::new(&config(&sim, "AKIDTEST").await);
    let made = smc
        .create_secret()
        .name("team/dx-key")
        .secret_string(r#"{"ckn":"x"}"#)
        .send()
        .await
        .unwrap();
    assert!(
        made.arn()
            .unwrap()
            .starts_with("arn:aws:secretsmanager:us-east-1:123456789012:secret:team/dx-key-")
    );
    let got = smc
        .get_secret_value()
        .secret_id("team/dx-key")
        .send()
        .await
        .unwrap();
    assert_eq!(got.secret_string(), Some(r#"{"ckn":"x"}"#));
    let described = smc
        .describe_secret()
        .secret_id(made.arn().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(described.owning_service(), None);
    let e = smc
        .get_secret_value()
        .secret_id("nope")
        .send()
        .await
        .unwrap_err();
    assert!(e.into_service_error().is_resource_not_found_exception());
    let e = smc
        .create_secret()
        .name("team/dx-key")
        .secret_string("{}")
        .send()
        .await
        .unwrap_err();
    assert!(e.into_service_error().is_resource_exists_exception());
}

/// A secret made without a value has no version until PutSecretValue gives it one (what the
/// operator's generation relies on to find a half-made key); the same request token again
/// makes no new version; DeleteSecret makes it unreadable.
#[tokio::test]
async fn a_secret_made_empty_then_put_then_deleted() {
    let sim = start(SEED).await;
    let smc = sm::Client::new(&config(&sim, "AKIDTEST").await);
    let arn = smc
        .create_secret()
        .name("dx-macsec/net/k1-0123abcd")
        .send()
        .await
        .unwrap()
        .arn()
        .unwrap()
        .to_string();
    let described = smc.describe_secret().secret_id(&arn).send().await.unwrap();
    assert!(
        described
            .version_ids_to_stages()
            .is_none_or(|v| v.is_empty())
    );
    let e = smc
        .get_secret_value()
        .secret_id(&arn)
        .send()
        .await
        .unwrap_err();
    assert!(e.into_service_error().is_resource_not_found_exception());
    let token = "0123abcd-0000-0000-0000-000000000000";
    for _ in 0..2 {
        smc.put_secret_value()
            .secret_id(&arn)
            .secret_string(r#"{"ckn":"a","cak":"b"}"#)
            .client_request_token(token)
            .send()
            .await
            .unwrap();
    }
    let described = smc.describe_secret().secret_id(&arn).send().await.unwrap();
    assert_eq!(described.version_ids_to_stages().unwrap().len(), 1);
    let e = smc
        .put_secret_value()
        .secret_id(&arn)
        .secret_string(r#"{"ckn":"c","cak":"d"}"#)
        .client_request_token(token)
        .send()
        .await
        .unwrap_err();
    assert!(e.into_service_error().is_resource_exists_exception());
    smc.delete_secret()
        .secret_id(&arn)
        .recovery_window_in_days(7)
        .send()
        .await
        .unwrap();
    let e = smc
        .get_secret_value()
        .secret_id(&arn)
        .send()
        .await
        .unwrap_err();
    assert!(e.into_service_error().is_resource_not_found_exception());
}

/// Faults: throttling and server errors for the next N calls of one operation, latency, and
/// a rate; the call log records outcome and caller.
#[tokio::test]
async fn faults_and_call_log() {
    let sim = start(SEED).await;
    let c = dx(&sim).await;
    sim.shared.add_fault(Fault {
        operation: "DescribeConnections".into(),
        error: Some("ThrottlingException".into()),
        message: None,
        count: Some(2),
        rate: None,
        latency_ms: 0,
    });
    sim.shared.add_fault(Fault {
        operation: "DescribeLags".into(),
        error: Some("DirectConnectServerException".into()),
        message: None,
        count: Some(1),
        rate: None,
        latency_ms: 0,
    });
    let (code, msg) = err_of(c.describe_connections().send().await);
    assert_eq!(
        (code.as_str(), msg.as_str()),
        ("ThrottlingException", "Rate exceeded")
    );
    assert_eq!(
        err_of(c.describe_connections().send().await).0,
        "ThrottlingException"
    );
    assert!(c.describe_connections().send().await.is_ok());
    assert_eq!(
        err_of(c.describe_lags().send().await).0,
        "DirectConnectServerException"
    );
    assert!(c.describe_lags().send().await.is_ok());

    sim.shared.add_fault(Fault {
        operation: "*".into(),
        error: None,
        message: None,
        count: Some(1),
        rate: None,
        latency_ms: 300,
    });
    let t0 = std::time::Instant::now();
    c.describe_locations().send().await.unwrap();
    assert!(t0.elapsed() >= Duration::from_millis(300));

    // A rate of 1.0 fails every call until cleared.
    sim.shared.add_fault(Fault {
        operation: "DescribeLocations".into(),
        error: Some("ThrottlingException".into()),
        message: None,
        count: None,
        rate: Some(1.0),
        latency_ms: 0,
    });
    assert_eq!(
        err_of(c.describe_locations().send().await).0,
        "ThrottlingException"
    );
    sim.shared.clear_faults();
    assert!(c.describe_locations().send().await.is_ok());

    let other = dc::Client::new(&config(&sim, "AKIDOTHER").await);
    other.describe_lags().send().await.unwrap();
    let calls = sim.shared.calls();
    let outcomes: Vec<_> = calls
        .iter()
        .map(|c| (c.operation.as_str(), c.outcome.as_str()))
        .collect();
    assert_eq!(
        &outcomes[..3],
        [
            ("DescribeConnections", "ThrottlingException"),
            ("DescribeConnections", "ThrottlingException"),
            ("DescribeConnections", "ok"),
        ]
    );
    assert_eq!(calls.first().unwrap().caller, "AKIDTEST");
    assert_eq!(calls.last().unwrap().caller, "AKIDOTHER");
    assert_eq!(sim.shared.counts()["DescribeLags"], 3);
}

/// The global rate limit answers ThrottlingException past R requests per second.
#[tokio::test]
async fn rate_limit_throttles() {
    let sim = start("rateLimit: 5").await;
    let c = dx(&sim).await;
    let mut throttled = 0;
    for _ in 0..20 {
        if let Err(e) = c.describe_connections().send().await {
            assert_eq!(
                e.as_service_error()
                    .and_then(|e| dc::error::ProvideErrorMetadata::code(e)),
                Some("ThrottlingException")
            );
            throttled += 1;
        }
    }
    // A burst of 20 against 5/s: the bucket of 5 and what refills while the burst runs pass
    // (on a slow machine the burst takes longer, so the lower bound is loose).
    assert!((5..=15).contains(&throttled), "{throttled} throttled");
    sim.shared.set_rate_limit(None);
    assert!(c.describe_connections().send().await.is_ok());
}

/// HTTP controls: state dump without CAKs, router, faults, calls and reset over HTTP.
#[tokio::test]
async fn http_controls() {
    let sim = start(SEED).await;
    let c = dx(&sim).await;
    associate(&c, "dxcon-cap00002", CKN_B).await;
    let (status, body) = http(&sim, "GET", "/_sim/state", "").await;
    assert_eq!(status, 200);
    assert!(body.contains(CKN_B) && body.contains("directconnect!prod"));
    assert!(!body.contains(CAK), "the state dump must not hold CAKs");

    let (status, _) = http(
        &sim,
        "POST",
        "/_sim/router",
        &format!(r#"{{"connectionId":"dxcon-cap00002","ckns":["{CKN_B}"]}}"#),
    )
    .await;
    assert_eq!(status, 204);
    let (status, _) = http(
        &sim,
        "POST",
        "/_sim/router",
        r#"{"connectionId":"dxcon-nope0000","ckns":[]}"#,
    )
    .await;
    assert_eq!(status, 404);

    let (status, _) = http(
        &sim,
        "POST",
        "/_sim/faults",
        r#"{"operation":"DescribeLags","error":"ThrottlingException","count":1}"#,
    )
    .await;
    assert_eq!(status, 204);
    assert_eq!(
        err_of(c.describe_lags().send().await).0,
        "ThrottlingException"
    );
    let (_, calls) = http(&sim, "GET", "/_sim/calls", "").await;
    let calls: serde_json::Value = serde_json::from_str(&calls).unwrap();
    assert_eq!(calls["counts"]["AssociateMacSecKey"], 1);
    assert_eq!(calls["calls"][1]["outcome"], "ThrottlingException");

    let (status, _) = http(
        &sim,
        "POST",
        "/_sim/connection-state",
        r#"{"connectionId":"dxcon-cap00002","state":"down"}"#,
    )
    .await;
    assert_eq!(status, 204);
    let conn = c
        .describe_connections()
        .connection_id("dxcon-cap00002")
        .send()
        .await
        .unwrap();
    assert_eq!(
        conn.connections()[0].connection_state().map(|s| s.as_str()),
        Some("down")
    );

    let (status, _) = http(&sim, "POST", "/_sim/reset", "").await;
    assert_eq!(status, 204);
    assert!(keys_of(&c, "dxcon-cap00002").await.is_empty());
    assert_eq!(sim.shared.calls().len(), 1);
}

async fn http(sim: &Sim, method: &str, path: &str, body: &str) -> (u16, String) {
    common::http(
        &sim.endpoint(),
        method,
        path,
        &[("Content-Type", "application/json")],
        body,
    )
    .await
}

/// The newcomer's seed in examples/ loads and describes what its comments say.
#[tokio::test]
async fn example_seed_loads() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/sim-account.yaml"
    ))
    .unwrap();
    let sim = Sim::start(Seed::from_yaml(&text).unwrap()).await.unwrap();
    let c = dx(&sim).await;
    assert_eq!(
        c.describe_connections()
            .send()
            .await
            .unwrap()
            .connections()
            .len(),
        4
    );
    let lags = c.describe_lags().send().await.unwrap();
    assert_eq!(lags.lags()[0].connections().len(), 2);
    let ics = c.describe_interconnects().send().await.unwrap();
    assert_eq!(ics.interconnects()[0].mac_sec_capable(), Some(true));
}

/// TagResource, UntagResource and DescribeTags on connection and LAG ARNs: tags show in the
/// Describe answers, seeded tags too, the call log names the resource, and a foreign or
/// unknown ARN and an `aws:` key are refused as AWS does.
#[tokio::test]
async fn tags_on_connections_and_lags() {
    let sim = start(
        "connections:\n  - { id: dxcon-tag00001, macSecCapable: true, tags: {team: net} }\n  - { id: dxcon-m0000001, bandwidth: 100Gbps, macSecCapable: true }\nlags:\n  - { id: dxlag-tag00001, bandwidth: 100Gbps, macSecCapable: true, members: [dxcon-m0000001] }\n",
    )
    .await;
    let c = dx(&sim).await;
    let arn = |id: &str| {
        let kind = &id[..5];
        format!("arn:aws:directconnect:us-east-1:123456789012:{kind}/{id}")
    };
    let tag = |k: &str, v: &str| dc::types::Tag::builder().key(k).value(v).build().unwrap();
    for id in ["dxcon-tag00001", "dxlag-tag00001"] {
        c.tag_resource()
            .resource_arn(arn(id))
            .tags(tag("dxmacsec.io/owner", "a/b/c"))
            .send()
            .await
            .unwrap();
    }
    let conn = c
        .describe_connections()
        .connection_id("dxcon-tag00001")
        .send()
        .await
        .unwrap();
    let tags: Vec<(String, String)> = conn.connections()[0]
        .tags()
        .iter()
        .map(|t| {
            (
                t.key().to_string(),
                t.value().unwrap_or_default().to_string(),
            )
        })
        .collect();
    assert_eq!(
        tags,
        [
            ("dxmacsec.io/owner".to_string(), "a/b/c".to_string()),
            ("team".to_string(), "net".to_string())
        ]
    );
    assert_eq!(conn.connections()[0].owner_account(), Some("123456789012"));
    let lags = c
        .describe_lags()
        .lag_id("dxlag-tag00001")
        .send()
        .await
        .unwrap();
    assert_eq!(lags.lags()[0].tags().len(), 1);

    c.untag_resource()
        .resource_arn(arn("dxcon-tag00001"))
        .tag_keys("dxmacsec.io/owner")
        .send()
        .await
        .unwrap();
    let described = c
        .describe_tags()
        .resource_arns(arn("dxcon-tag00001"))
        .resource_arns(arn("dxlag-tag00001"))
        .send()
        .await
        .unwrap();
    let counts: Vec<usize> = described
        .resource_tags()
        .iter()
        .map(|r| r.tags().len())
        .collect();
    assert_eq!(counts, [1, 1]);
    let log = sim.shared.calls();
    assert!(
        log.iter().any(
            |r| r.operation == "UntagResource" && r.target.as_deref() == Some("dxcon-tag00001")
        )
    );

    let (code, message) = err_of(
        c.tag_resource()
            .resource_arn("arn:aws:directconnect:us-east-1:999999999999:dxcon/dxcon-tag00001")
            .tags(tag("k", "v"))
            .send()
            .await,
    );
    assert_eq!(code, "DirectConnectClientException");
    assert!(message.contains("Invalid resource ARN"), "{message}");
    let (_, message) = err_of(
        c.tag_resource()
            .resource_arn(arn("dxcon-nothere1"))
            .tags(tag("k", "v"))
            .send()
            .await,
    );
    assert!(message.contains("does not exist"), "{message}");
    let (_, message) = err_of(
        c.tag_resource()
            .resource_arn(arn("dxcon-tag00001"))
            .tags(tag("aws:reserved", "v"))
            .send()
            .await,
    );
    assert!(message.contains("Invalid tag key"), "{message}");
}

const PARTNER_SEED: &str = r#"
delays: { associateMs: 0, disassociateMs: 0, membershipMs: 150 }
connections:
  - { id: dxcon-p0000001, bandwidth: 10Gbps, macSecCapable: true, partner: true }
  - { id: dxcon-p0000002, bandwidth: 10Gbps, macSecCapable: true, partner: true }
  - { id: dxcon-p0000003, bandwidth: 10Gbps, macSecCapable: true }
  - { id: dxcon-far00001, bandwidth: 10Gbps, macSecCapable: true, device: EqDC2-zzzzzzzz }
  - { id: dxcon-big00001, bandwidth: 100Gbps, macSecCapable: true }
  - { id: dxcon-plain001, bandwidth: 10Gbps, macSecCapable: false }
interconnects:
  - { id: dxcon-ic000001, bandwidth: 10Gbps, macSecCapable: true, router: [AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA] }
lags:
  - { id: dxlag-p0000001, bandwidth: 10Gbps, macSecCapable: true, minimumLinks: 1, members: [dxcon-p0000001, dxcon-p0000002] }
"#;

/// UpdateLag's minimumLinks is kept and acts as AWS documents it: above the operational
/// members the LAG goes down, at or below them it is available again; a member may not
/// leave when that would take the LAG below it; a value that is not a count is refused.
#[tokio::test]
async fn update_lag_minimum_links_is_kept_and_enforced() {
    let sim = start(PARTNER_SEED).await;
    let c = dx(&sim).await;
    let lag_state = |out: &dc::operation::update_lag::UpdateLagOutput| {
        (
            out.minimum_links(),
            out.lag_state().map(|s| s.as_str().to_string()),
        )
    };
    let update = |n: i32| {
        c.update_lag()
            .lag_id("dxlag-p0000001")
            .minimum_links(n)
            .send()
    };
    let out = update(3).await.unwrap();
    assert_eq!(lag_state(&out), (3, Some("down".into())));
    let listed = c
        .describe_lags()
        .lag_id("dxlag-p0000001")
        .send()
        .await
        .unwrap();
    assert_eq!(listed.lags()[0].minimum_links(), 3);
    let out = update(2).await.unwrap();
    assert_eq!(lag_state(&out), (2, Some("available".into())));
    let (code, msg) = err_of(
        c.disassociate_connection_from_lag()
            .connection_id("dxcon-p0000001")
            .lag_id("dxlag-p0000001")
            .send()
            .await,
    );
    assert_eq!(code, "DirectConnectClientException");
    assert!(msg.contains("below its minimum links of 2"), "{msg}");
    let (code, msg) = err_of(update(-1).await);
    assert_eq!(code, "DirectConnectClientException");
    assert!(msg.contains("minimumLinks"), "{msg}");
}

/// Interconnects are listed by DescribeInterconnects (paginated, one by ID) and not by
/// DescribeConnections; they take MACsec keys and the mode by their dxcon ID, and
/// CreateInterconnect honours requestMACSec.
#[tokio::test]
async fn interconnects_carry_macsec_by_their_connection_id() {
    let sim = start(PARTNER_SEED).await;
    let c = dx(&sim).await;
    let listed = c.describe_connections().send().await.unwrap();
    assert!(
        listed
            .connections()
            .iter()
            .all(|x| x.connection_id() != Some("dxcon-ic000001")),
        "an interconnect is not a connection"
    );
    let (code, msg) = err_of(
        c.describe_connections()
            .connection_id("dxcon-ic000001")
            .send()
            .await,
    );
    assert_eq!(code, "DirectConnectClientException");
    assert!(msg.contains("Could not find Connection"), "{msg}");

    let made = c
        .create_interconnect()
        .interconnect_name("partner-2")
        .bandwidth("10Gbps")
        .location("EqDC2")
        .request_mac_sec(true)
        .send()
        .await
        .unwrap();
    assert_eq!(made.mac_sec_capable(), Some(true));
    assert_eq!(made.encryption_mode(), Some("no_encrypt"));
    let page = c
        .describe_interconnects()
        .max_results(1)
        .send()
        .await
        .unwrap();
    assert_eq!(page.interconnects().len(), 1);
    let rest = c
        .describe_interconnects()
        .max_results(1)
        .next_token(page.next_token().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(rest.interconnects().len(), 1);
    assert!(rest.next_token().is_none());

    let arn = associate(&c, "dxcon-ic000001", CKN_A).await;
    c.update_connection()
        .connection_id("dxcon-ic000001")
        .encryption_mode("must_encrypt")
        .send()
        .await
        .unwrap();
    let one = c
        .describe_interconnects()
        .interconnect_id("dxcon-ic000001")
        .send()
        .await
        .unwrap();
    let ic = &one.interconnects()[0];
    assert_eq!(ic.encryption_mode(), Some("must_encrypt"));
    assert_eq!(ic.port_encryption_status(), Some("Encryption Up"));
    assert_eq!(ic.mac_sec_keys()[0].secret_arn(), Some(arn.as_str()));
    let (_, msg) = err_of(
        c.describe_interconnects()
            .interconnect_id("dxcon-p0000003")
            .send()
            .await,
    );
    assert!(msg.contains("Could not find Interconnect"), "{msg}");
}

/// AssociateConnectionWithLag and DisassociateConnectionFromLag with AWS's rules: same
/// device and bandwidth, MACsec on both, the member limit, minimum links but for the last
/// member, an empty LAG, a Partner's member leaving as an interconnect, and the interruption.
#[tokio::test]
async fn lag_membership_follows_the_documented_rules() {
    let sim = start(PARTNER_SEED).await;
    let c = dx(&sim).await;
    let join = |id: &'static str| {
        c.associate_connection_with_lag()
            .connection_id(id)
            .lag_id("dxlag-p0000001")
            .send()
    };
    let (_, msg) = err_of(join("dxcon-far00001").await);
    assert!(msg.contains("same AWS Direct Connect endpoint"), "{msg}");
    let (_, msg) = err_of(join("dxcon-big00001").await);
    assert!(msg.contains("does not match the bandwidth"), "{msg}");
    let (_, msg) = err_of(join("dxcon-plain001").await);
    assert!(msg.contains("requested MacSec at the same time"), "{msg}");

    // The LAG has a key and must_encrypt; a joining connection drops its own key.
    let lag_arn = associate(&c, "dxlag-p0000001", CKN_B).await;
    associate(&c, "dxcon-p0000003", CKN_C).await;
    c.update_lag()
        .lag_id("dxlag-p0000001")
        .encryption_mode("must_encrypt")
        .send()
        .await
        .unwrap();
    let joined = join("dxcon-p0000003").await.unwrap();
    assert_eq!(joined.lag_id(), Some("dxlag-p0000001"));
    assert_eq!(
        joined.connection_state().map(|s| s.as_str()),
        Some("pending"),
        "joining interrupts the port"
    );
    let keys = keys_of(&c, "dxcon-p0000003").await;
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0].ckn(), Some(CKN_B), "it carries the LAG's key only");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let back = c
        .describe_connections()
        .connection_id("dxcon-p0000003")
        .send()
        .await
        .unwrap();
    assert_eq!(
        back.connections()[0].connection_state().map(|s| s.as_str()),
        Some("available")
    );
    let (_, msg) = err_of(join("dxcon-p0000003").await);
    assert!(msg.contains("already associated"), "{msg}");

    let leave = |id: &'static str| {
        c.disassociate_connection_from_lag()
            .connection_id(id)
            .lag_id("dxlag-p0000001")
            .send()
    };
    // Minimum links 1: with the other two members still pending, p1 cannot leave; once
    // they are available again it can.
    sim.shared.set_state("dxcon-p0000002", "down").unwrap();
    sim.shared.set_state("dxcon-p0000003", "down").unwrap();
    let (_, msg) = err_of(leave("dxcon-p0000001").await);
    assert!(msg.contains("below its minimum links of 1"), "{msg}");
    sim.shared.set_state("dxcon-p0000002", "available").unwrap();
    sim.shared.set_state("dxcon-p0000003", "available").unwrap();
    let left = leave("dxcon-p0000001").await.unwrap();
    assert!(left.lag_id().is_none());
    // A Partner's connection comes back as an interconnect, with the LAG's key and mode
    // (the seed's default afterLeavingLag: keep).
    let ic = c
        .describe_interconnects()
        .interconnect_id("dxcon-p0000001")
        .send()
        .await
        .unwrap();
    let ic = &ic.interconnects()[0];
    assert_eq!(ic.encryption_mode(), Some("must_encrypt"));
    assert_eq!(ic.mac_sec_keys()[0].secret_arn(), Some(lag_arn.as_str()));
    // Its own keys now: removing it leaves the LAG's alone.
    tokio::time::sleep(Duration::from_millis(200)).await;
    c.disassociate_mac_sec_key()
        .connection_id("dxcon-p0000001")
        .secret_arn(&lag_arn)
        .send()
        .await
        .unwrap();
    assert_eq!(keys_of(&c, "dxlag-p0000001").await.len(), 1);

    // The last member may leave although that is below minimum links; the LAG stays empty.
    leave("dxcon-p0000002").await.unwrap();
    let (_, msg) = err_of(leave("dxcon-p0000002").await);
    assert!(msg.contains("not associated with LAG"), "{msg}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    leave("dxcon-p0000003").await.unwrap();
    let lag = c
        .describe_lags()
        .lag_id("dxlag-p0000001")
        .send()
        .await
        .unwrap();
    assert!(lag.lags()[0].connections().is_empty(), "an empty LAG stays");
    assert_eq!(sim.shared.counts()["DisassociateConnectionFromLag"], 5);
}

/// With `afterLeavingLag: reset` a connection leaves bare; and at 100G a LAG holds two.
#[tokio::test]
async fn leaving_a_lag_can_reset_and_100g_lags_hold_two() {
    let sim = start(
        r#"
afterLeavingLag: reset
delays: { associateMs: 0, disassociateMs: 0, membershipMs: 0 }
connections:
  - { id: dxcon-a, bandwidth: 100Gbps, macSecCapable: true }
  - { id: dxcon-b, bandwidth: 100Gbps, macSecCapable: true }
  - { id: dxcon-c, bandwidth: 100Gbps, macSecCapable: true }
lags:
  - { id: dxlag-a, bandwidth: 100Gbps, macSecCapable: true, encryptionMode: should_encrypt, members: [dxcon-a, dxcon-b] }
"#,
    )
    .await;
    let c = dx(&sim).await;
    associate(&c, "dxlag-a", CKN_A).await;
    let (_, msg) = err_of(
        c.associate_connection_with_lag()
            .connection_id("dxcon-c")
            .lag_id("dxlag-a")
            .send()
            .await,
    );
    assert!(msg.contains("maximum of 2 connections"), "{msg}");
    let left = c
        .disassociate_connection_from_lag()
        .connection_id("dxcon-a")
        .lag_id("dxlag-a")
        .send()
        .await
        .unwrap();
    assert_eq!(left.encryption_mode(), Some("no_encrypt"));
    assert!(left.mac_sec_keys().is_empty());
    assert_eq!(
        left.connection_state().map(|s| s.as_str()),
        Some("available"),
        "no interruption with membershipMs 0"
    );
}

/// Accounts and regions: long-term keys act in the top-level account, in the region the
/// request is signed for; STS AssumeRole gives credentials in the role's account, which
/// expire; a role the seed does not list is AccessDenied. The call log names the account and
/// region of every call.
#[tokio::test]
async fn roles_reach_other_accounts_through_sts_until_their_credentials_expire() {
    use aws_credential_types::provider::ProvideCredentials;
    let sim = start(
        r#"
account: "111111111111"
connections: [{ id: dxcon-home0001, macSecCapable: true }]
accounts:
  - account: "222222222222"
    region: us-east-1
    connections: [{ id: dxcon-acct2001, macSecCapable: true }]
  - account: "222222222222"
    region: us-west-2
    interconnects: [{ id: dxcon-west2001, macSecCapable: true }]
roles: ["arn:aws:iam::222222222222:role/dx"]
credentialSeconds: 2
"#,
    )
    .await;
    let base = config(&sim, "AKIDHOME").await;
    let ids = |out: &dc::operation::describe_connections::DescribeConnectionsOutput| {
        out.connections()
            .iter()
            .map(|c| c.connection_id().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    let home = dc::Client::new(&base);
    assert_eq!(
        ids(&home.describe_connections().send().await.unwrap()),
        ["dxcon-home0001"]
    );
    let assume = |role: &str, region: &str| {
        aws_config::sts::AssumeRoleProvider::builder(role)
            .session_name("t")
            .region(aws_config::Region::new(region.to_string()))
            .configure(&base)
            .build()
    };
    let provider = assume("arn:aws:iam::222222222222:role/dx", "us-east-1").await;
    let creds = provider.provide_credentials().await.unwrap();
    assert!(creds.access_key_id().starts_with("ASIA"));
    let in_region = |region: &str| {
        let conf = base
            .to_builder()
            .region(aws_config::Region::new(region.to_string()))
            .credentials_provider(
                aws_credential_types::provider::SharedCredentialsProvider::new(creds.clone()),
            )
            .build();
        dc::Client::new(&conf)
    };
    let east = in_region("us-east-1");
    assert_eq!(
        ids(&east.describe_connections().send().await.unwrap()),
        ["dxcon-acct2001"]
    );
    let west = in_region("us-west-2");
    let ics = west.describe_interconnects().send().await.unwrap();
    assert_eq!(
        ics.interconnects()[0].interconnect_id(),
        Some("dxcon-west2001")
    );
    // A region nothing was ordered in is empty, not an error.
    let empty = in_region("eu-west-1").describe_lags().send().await.unwrap();
    assert!(empty.lags().is_empty());

    let denied = assume("arn:aws:iam::333333333333:role/dx", "us-east-1")
        .await
        .provide_credentials()
        .await
        .expect_err("a role the seed does not list is denied");
    let text = format!("{denied:?}");
    assert!(text.contains("AccessDenied"), "{text}");

    tokio::time::sleep(Duration::from_millis(2100)).await;
    let (code, _) = err_of(east.describe_connections().send().await);
    assert_eq!(code, "ExpiredTokenException");

    let calls = sim.shared.calls();
    let where_ = |op: &str| {
        calls
            .iter()
            .filter(|c| c.operation == op)
            .map(|c| (c.account.as_str(), c.region.as_str(), c.outcome.as_str()))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        where_("DescribeConnections"),
        [
            ("111111111111", "us-east-1", "ok"),
            ("222222222222", "us-east-1", "ok"),
            ("222222222222", "us-east-1", "ExpiredTokenException"),
        ]
    );
    assert_eq!(
        where_("DescribeInterconnects"),
        [("222222222222", "us-west-2", "ok")]
    );
    assert_eq!(
        where_("AssumeRole"),
        [
            ("111111111111", "us-east-1", "ok"),
            ("111111111111", "us-east-1", "AccessDenied")
        ]
    );
}
