//! `MacSecKey`: one CKN/CAK pair and where its material comes from.
// kube's `printcolumn(type_ = …)` arguments repeat by design; clippy reads them as duplicate
// attributes.
#![allow(clippy::duplicated_attributes)]

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Condition;
use crate::conditions::ConditionType;

/// One MACsec CKN/CAK pair. Exactly one source of key material must be set.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "dxmacsec.io",
    version = "v1alpha1",
    kind = "MacSecKey",
    doc = "One MACsec CKN/CAK pair and where its key material comes from",
    namespaced,
    status = "MacSecKeyStatus",
    shortname = "mskey",
    category = "dxmacsec",
    printcolumn(name = "CKN", type_ = "string", json_path = ".status.ckn"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Synced",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Synced\")].status"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason"
    ),
    printcolumn(
        name = "Used By",
        type_ = "string",
        priority = 1,
        json_path = ".status.usedBy"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(validation = Rule::new(
    "(has(self.secretRef) ? 1 : 0) + (has(self.secretsManager) ? 1 : 0) + (has(self.directConnectSecretArn) ? 1 : 0) + (has(self.generate) ? 1 : 0) == 1"
).message("set exactly one of secretRef, secretsManager, directConnectSecretArn or generate"))]
#[x_kube(validation = Rule::new("has(self.generate) == has(oldSelf.generate)")
    .message("generate cannot be added to or removed from an existing MacSecKey; create a new MacSecKey"))]
#[serde(rename_all = "camelCase")]
pub struct MacSecKeySpec {
    /// A Kubernetes Secret in the same namespace holding the CKN and CAK.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretKeySource>,
    /// A customer-owned Secrets Manager secret whose SecretString is JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secrets_manager: Option<SecretsManagerSource>,
    /// An existing Direct Connect-managed secret (`…:secret:directconnect!…`); the CKN is
    /// learned from AWS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:\d{12}:secret:.+$"))]
    pub direct_connect_secret_arn: Option<String>,
    /// Have the operator make the key: a random CKN and CAK (64 hex characters each, from
    /// the operating system's random number generator), written where `store` says. The
    /// operator needs the chart value `keyGeneration.enabled` for it. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self == oldSelf")
        .message("generate is immutable; create a new MacSecKey for another store"))]
    pub generate: Option<GenerateKey>,
}

/// Where a key the operator makes is written. The CAK is written there only: never to a
/// status, an event, a log or a metric.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GenerateKey {
    /// `Secret` (the default): a Kubernetes Secret named after the MacSecKey in its
    /// namespace, owned by it (ownerReference) and labelled `dxmacsec.io/key-material`.
    /// `SecretsManager`: a customer-owned Secrets Manager secret
    /// `dx-macsec/<namespace>/<name>-<uid>` (fields `ckn` and `cak`), for clusters that keep
    /// no CAK in etcd.
    #[serde(default)]
    pub store: KeyStore,
    /// For `store: SecretsManager`: the DxAccess (which must grant this namespace) whose role
    /// and region the secret is made in. Absent: the operator's own credentials, where this
    /// namespace may use them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_ref: Option<super::AccessReference>,
    /// For `store: SecretsManager`: the region of the secret; defaults to the DxAccess's only
    /// region, else the operator's default region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[a-z]{2}(-[a-z]+)+-\d+$"))]
    pub region: Option<String>,
}

/// Where generated key material is kept.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum KeyStore {
    #[default]
    Secret,
    SecretsManager,
}

/// Where a key's material lives, for the router's automation to read (never the CAK).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MaterialLocation {
    /// A Kubernetes Secret in the key's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<SecretLocation>,
    /// A customer-owned Secrets Manager secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secrets_manager: Option<SecretsManagerLocation>,
}

/// A Kubernetes Secret holding a key.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretLocation {
    /// Namespace of the Secret.
    pub namespace: String,
    /// Name of the Secret.
    pub name: String,
    /// Its data key holding the CKN.
    pub ckn_key: String,
    /// Its data key holding the CAK.
    pub cak_key: String,
}

/// A Secrets Manager secret holding a key as JSON.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretsManagerLocation {
    /// ARN of the secret.
    pub secret_arn: String,
    /// Its region.
    pub region: String,
    /// The IAM role it was made with and is read with (the DxAccess's); absent: the
    /// operator's own credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role_arn: Option<String>,
    /// JSON field of the SecretString holding the CKN.
    pub ckn_field: String,
    /// JSON field of the SecretString holding the CAK.
    pub cak_field: String,
}

/// Keys of a Kubernetes Secret holding the pair. The operator reads only a Secret labelled
/// `dxmacsec.io/key-material: "true"`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeySource {
    /// Name of the Secret (same namespace). It must carry the label
    /// `dxmacsec.io/key-material: "true"`; the operator reads no other Secret.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key in the Secret holding the CKN: the key the Secret marks as its CKN, `ckn` or the
    /// one its annotation `dxmacsec.io/ckn-key` names.
    #[serde(default = "default_ckn")]
    pub ckn_key: String,
    /// Key in the Secret holding the CAK.
    #[serde(default = "default_cak")]
    pub cak_key: String,
}

/// Fields of a Secrets Manager secret holding the pair.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretsManagerSource {
    /// Name or ARN of the secret.
    #[schemars(length(min = 1, max = 2048))]
    pub secret_id: String,
    /// Region of the secret; defaults to the connection's region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// JSON field of the SecretString holding the CKN.
    #[serde(default = "default_ckn")]
    pub ckn_field: String,
    /// JSON field of the SecretString holding the CAK.
    #[serde(default = "default_cak")]
    pub cak_field: String,
}

fn default_ckn() -> String {
    "ckn".to_string()
}

fn default_cak() -> String {
    "cak".to_string()
}

/// What the operator knows of the key. Never holds the CAK.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MacSecKeyStatus {
    /// The `metadata.generation` of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The CKN (lower case).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ckn: Option<String>,
    /// ARN of the Direct Connect-managed secret the key's associations created, as a
    /// DxConnection using it reports. For reference: later associations go by the ARN that
    /// Describe shows in the connection's own region and account, so the CAK is sent once
    /// there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direct_connect_secret_arn: Option<String>,
    /// A salted HMAC-SHA256 of the CAK last read under `ckn` (never the CAK itself): a CAK
    /// changed under the same CKN is refused with `KeyMaterialChanged`, because Direct
    /// Connect cannot change the CAK of a CKN and router and AWS would disagree.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cak_fingerprint: Option<String>,
    /// The version of the key's source when it was last read: the Secret's
    /// `resourceVersion` or the Secrets Manager secret's `AWSCURRENT` version ID. While it and
    /// the spec stay the same, the source is not read again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_version: Option<String>,
    /// Where the material the operator made for `spec.generate` was written (the CKN and
    /// CAK are read there; the CAK is never shown). The names are fixed by the MacSecKey's name and
    /// UID, so an operator restarted halfway finds what it made rather than making another.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generated: Option<MaterialLocation>,
    /// DxConnections (same namespace) that reference this key.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub used_by: Vec<String>,
    /// `Ready` (the key material is valid), and kstatus's `Reconciling` and `Stalled`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

impl MacSecKey {
    /// The condition of the given type, if present.
    pub fn condition(&self, type_: ConditionType) -> Option<&super::Condition> {
        super::find_condition(&self.status.as_ref()?.conditions, type_)
    }

    /// Its status says the key material was read and found valid for the current spec (the
    /// CKN is in the status).
    pub fn validated(&self) -> bool {
        self.status.as_ref().is_some_and(|s| {
            s.observed_generation.is_some()
                && s.observed_generation == self.metadata.generation
                && s.ckn.is_some()
                && self
                    .condition(ConditionType::Ready)
                    .is_some_and(|c| c.status == "True")
        })
    }
}
