//! The AWS layer against moto (connection and Secrets Manager calls): a second opinion on
//! the wire format from a peer this project did not write. moto is started by `scripts/test` through
//! tests/moto/launcher.py; its address is in MOTO_ENDPOINT.

use std::sync::Arc;

use aws_config::BehaviorVersion;
use aws_credential_types::Credentials;
use aws_sdk_directconnect as dc;
use dx_macsec_operator::aws::{AwsProvider, ErrorClass, Scope, SdkProvider};
use dx_macsec_operator::crd::{EncryptionMode, ResourceType};
use dx_macsec_operator::keys::{Cak, Ckn};
use dx_macsec_operator::plan::{Association, Target};

const CKN: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
const CAK: &str = "fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210";

/// An SDK configuration for moto at `endpoint`, in us-east-1.
async fn moto_config(endpoint: &str) -> aws_config::SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(Credentials::new("AKIDMOTO", "x", None, None, "test"))
        .endpoint_url(endpoint)
        .load()
        .await
}

/// Describe, associate, set the mode and disassociate on a moto connection through the
/// operator's own SDK clients; unknown IDs are "not found" and errors are classified.
#[tokio::test]
async fn connection_calls_against_moto() {
    let Some(moto) = dx_sim::moto_endpoint("connection_calls_against_moto") else {
        return;
    };
    let conf = moto_config(&moto).await;
    let raw = dc::Client::new(&conf);
    let created = raw
        .create_connection()
        .location("EqDC2")
        .bandwidth("10Gbps")
        .connection_name(format!("op-{}", std::process::id()))
        .request_mac_sec(true)
        .send()
        .await
        .unwrap();
    let id = created.connection_id().unwrap().to_string();

    // The operator's provider, on a config with this test's credentials and endpoint.
    let provider: Arc<dyn AwsProvider> = Arc::new(SdkProvider::from_sdk_config(conf));
    let scope = Scope {
        region: "us-east-1".into(),
        role_arn: None,
    };
    let api = provider.direct_connect(&scope).await.unwrap();

    let all = api.describe_all().await.unwrap();
    let mine = all
        .iter()
        .find(|r| r.id == id)
        .expect("the new connection is listed");
    assert_eq!(mine.kind, ResourceType::Connection);
    assert!(mine.mac_sec_capable);
    let before = mine.keys.len();

    // moto has no DescribeInterconnects: the full read lists connections and LAGs and says
    // why interconnects are missing, and an unknown dxcon ID (which could be one) is that
    // error rather than "not found".
    let unlisted = api
        .interconnects_unlisted()
        .expect("moto lists no interconnects");
    assert_eq!(unlisted.operation, "DescribeInterconnects");
    let unknown = api.describe_one("dxcon-nothere").await.unwrap_err();
    assert_eq!(unknown.operation, "DescribeInterconnects");

    let target = Target {
        id: id.clone(),
        kind: ResourceType::Connection,
    };
    let with = Association::CknCak(
        Ckn::parse("ckn", CKN).unwrap(),
        Cak::parse("cak", CAK).unwrap(),
    );
    api.associate(&target, &with).await.unwrap();
    api.set_mode(&target, EncryptionMode::ShouldEncrypt)
        .await
        .unwrap();
    let one = api.describe_one(&id).await.unwrap().unwrap();
    assert_eq!(one.encryption_mode.as_deref(), Some("should_encrypt"));
    assert_eq!(one.keys.len(), before + 1);
    let ours = one
        .keys
        .iter()
        .find(|k| k.ckn.as_deref() == Some(CKN))
        .unwrap();
    assert_eq!(ours.state.as_deref(), Some("associated"));

    api.disassociate(&target, ours.secret_arn.as_deref().unwrap())
        .await
        .unwrap();
    let after = api.describe_one(&id).await.unwrap().unwrap();
    assert_eq!(after.keys.len(), before);

    let missing = Target {
        id: "dxcon-nothere".into(),
        kind: ResourceType::Connection,
    };
    let err = api.associate(&missing, &with).await.unwrap_err();
    assert_eq!(err.class, ErrorClass::Terminal, "{err}");
    assert_eq!(err.code.as_deref(), Some("ConnectionNotFound"));
    assert!(!err.to_string().contains(CAK));
}

/// A customer-owned key secret through the operator's own client: its value, and its current
/// version, which moves when a new value is put (what tells a MacSecKey to read it again).
#[tokio::test]
async fn secret_calls_against_moto() {
    let Some(moto) = dx_sim::moto_endpoint("secret_calls_against_moto") else {
        return;
    };
    let conf = moto_config(&moto).await;
    let raw = aws_sdk_secretsmanager::Client::new(&conf);
    let name = format!("dx-macsec/op-{}", std::process::id());
    let value = format!(r#"{{"ckn":"{CKN}","cak":"{CAK}"}}"#);
    raw.create_secret()
        .name(&name)
        .secret_string(&value)
        .send()
        .await
        .unwrap();
    let provider: Arc<dyn AwsProvider> = Arc::new(SdkProvider::from_sdk_config(conf));
    let scope = Scope {
        region: "us-east-1".into(),
        role_arn: None,
    };
    let api = provider.secrets(&scope).await.unwrap();
    assert_eq!(api.secret_string(&name).await.unwrap(), value);
    let first = api
        .current_version(&name)
        .await
        .unwrap()
        .expect("a version");
    assert_eq!(
        api.current_version(&name).await.unwrap().as_ref(),
        Some(&first)
    );
    raw.put_secret_value()
        .secret_id(&name)
        .secret_string(value.replace("0123", "3210"))
        .send()
        .await
        .unwrap();
    let second = api
        .current_version(&name)
        .await
        .unwrap()
        .expect("a version");
    assert_ne!(first, second, "a new value is a new current version");
    let err = api.current_version("dx-macsec/none").await.unwrap_err();
    assert_eq!(err.code.as_deref(), Some("ResourceNotFoundException"));
}
