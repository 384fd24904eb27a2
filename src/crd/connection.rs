//! `DxConnection`: one dedicated connection or LAG whose MACsec state the operator manages.
// kube's `printcolumn(type_ = …)` arguments repeat by design; clippy reads them as duplicate
// attributes.
#![allow(clippy::duplicated_attributes)]

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Condition;
use crate::conditions::ConditionType;

/// Desired MACsec state of one Direct Connect dedicated connection or interconnect
/// (`dxcon-…`) or LAG (`dxlag-…`).
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "dxmacsec.io",
    version = "v1alpha1",
    kind = "DxConnection",
    doc = "MACsec state wanted on one Direct Connect dedicated connection, interconnect or LAG",
    namespaced,
    status = "DxConnectionStatus",
    shortname = "dxc",
    category = "dxmacsec",
    printcolumn(
        name = "Connection",
        type_ = "string",
        json_path = ".spec.connectionId"
    ),
    printcolumn(name = "Type", type_ = "string", json_path = ".status.resourceType"),
    printcolumn(name = "Mode", type_ = "string", json_path = ".status.encryptionMode"),
    printcolumn(
        name = "Port",
        type_ = "string",
        json_path = ".status.portEncryptionStatus"
    ),
    printcolumn(name = "Keys", type_ = "integer", json_path = ".status.associatedKeys"),
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
        priority = 1,
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(validation = Rule::new(
    "!has(self.encryptionMode) || self.encryptionMode != 'must_encrypt' || !has(self.keys) || size(self.keys) > 0 || (has(self.rotation) && has(self.rotation.schedule))"
).message("encryptionMode must_encrypt needs at least one key in keys (or rotation.schedule, which makes one): without a key the link carries no traffic"))]
#[x_kube(validation = Rule::new("!has(self.keys) || size(self.keys) <= 3")
    .message("keys may list at most 3 MacSecKeys: Direct Connect holds at most 3 keys per connection or LAG"))]
#[serde(rename_all = "camelCase")]
pub struct DxConnectionSpec {
    /// The dedicated connection or interconnect (`dxcon-…`, looked up with
    /// DescribeConnections and DescribeInterconnects) or LAG (`dxlag-…`). Immutable.
    #[schemars(regex(pattern = r"^dx(con|lag)-[0-9a-z]+$"))]
    #[x_kube(validation = Rule::new("self == oldSelf")
        .message("connectionId is immutable; create a new DxConnection for another connection"))]
    pub connection_id: String,

    /// AWS region of the connection; defaults to the operator's configured region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[a-z]{2}(-[a-z]+)+-\d+$"))]
    pub region: Option<String>,

    /// The DxAccess (cluster scoped, written by cluster admins) that grants this namespace
    /// the AWS role, region and connection. Absent: the operator's own credentials, where the
    /// operator allows them for this namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_ref: Option<AccessReference>,

    /// Optional check of the IAM role: the role comes from the DxAccess in `accessRef`, and a
    /// DxConnection whose `roleArn` differs from it (or that sets one without `accessRef`) is
    /// `Forbidden`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^arn:aws[a-z-]*:iam::\d{12}:role/.+$"))]
    pub role_arn: Option<String>,

    /// Wanted encryption mode. Absent: the mode is not managed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption_mode: Option<EncryptionMode>,

    /// MacSecKeys (same namespace) wanted on the connection, oldest first, newest last.
    /// Absent: keys are not managed. Present: the exact set; other keys are removed after the
    /// rotation overlap. With `rotation.schedule` this is only the starting set: the keys in
    /// use are then the ones `status.router.keys` lists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 3))]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub keys: Option<Vec<KeyReference>>,

    /// How key rotation proceeds.
    #[serde(default)]
    pub rotation: Rotation,

    /// Only switch to `must_encrypt` once the port reports `Encryption Up` (every member, for a
    /// LAG).
    #[serde(default = "default_true")]
    pub require_encryption_up: bool,

    /// `Manage` changes AWS; `ObserveOnly` computes and reports the plan and changes nothing.
    #[serde(default)]
    pub management_policy: ManagementPolicy,

    /// Take over a connection or LAG that has MACsec keys or encryption set but no
    /// `dxmacsec.io/owner` tag (configured by Terraform, Crossplane or a person). Without it
    /// such a resource is `Conflict`; one with no MACsec state is claimed without asking, and
    /// one tagged by another owner is never taken.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub adopt: bool,

    /// What deleting this resource does to AWS: `Retain` nothing, `Disassociate` removes the
    /// keys this resource manages first.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
}

fn default_true() -> bool {
    true
}

/// A reference to a DxAccess.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct AccessReference {
    /// Name of the DxAccess.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// A reference to a MacSecKey in the same namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct KeyReference {
    /// Name of the MacSecKey.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// Direct Connect encryption modes the operator can set.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum EncryptionMode {
    NoEncrypt,
    ShouldEncrypt,
    MustEncrypt,
}

impl EncryptionMode {
    /// The string AWS uses.
    pub fn as_aws_str(self) -> &'static str {
        match self {
            EncryptionMode::NoEncrypt => "no_encrypt",
            EncryptionMode::ShouldEncrypt => "should_encrypt",
            EncryptionMode::MustEncrypt => "must_encrypt",
        }
    }

    /// Reads a mode reported by AWS; `None` for anything else (AWS has returned `unknown`).
    pub fn from_aws_str(s: &str) -> Option<Self> {
        match s {
            "no_encrypt" => Some(EncryptionMode::NoEncrypt),
            "should_encrypt" => Some(EncryptionMode::ShouldEncrypt),
            "must_encrypt" => Some(EncryptionMode::MustEncrypt),
            _ => None,
        }
    }
}

impl std::fmt::Display for EncryptionMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_aws_str())
    }
}

/// Key rotation settings.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Rotation {
    /// Seconds an outgoing key stays associated after every wanted key is `associated`.
    #[serde(default = "default_overlap")]
    #[schemars(range(min = 0, max = 2592000))]
    pub overlap_seconds: u32,

    /// Seconds the port is watched after an outgoing key is removed: if it reports
    /// `Encryption Down` within them, the removed key is associated again at once
    /// (`RotationRolledBack`: the router does not use the new key). 0 turns the guard off.
    #[serde(default = "default_guard")]
    #[schemars(range(min = 0, max = 86400))]
    pub guard_seconds: u32,

    /// `Automatic` removes outgoing keys once the overlap has passed; `Manual` only once a
    /// person (or a system that reads the router) confirms that the router uses a new key,
    /// by setting the annotation `dxmacsec.io/confirm-removal` to a new value.
    #[serde(default)]
    pub confirm: RemovalConfirmation,

    /// Rotate on a schedule: the operator makes each new key (a MacSecKey with `generate`,
    /// owned by this DxConnection), lists it in `status.router.keys` for the router's
    /// automation, waits for its confirmation, associates it, removes the old key under the
    /// guard above and deletes the old key's material after `retainFor`. Absent: keys
    /// change only when `keys` does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<RotationSchedule>,
}

/// When keys are rotated, and how the new ones are made.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RotationSchedule {
    /// How long a key is used before the next one takes over, as a duration such as `90d`,
    /// `12h` or `1m` (units `d`, `h`, `m`, `s`; at least one minute). The first rotation is
    /// due one period after the schedule is first seen, or at once when no key is in use.
    #[schemars(regex(pattern = r"^([0-9]+[dhms])+$"))]
    pub every: String,
    /// How long before a rotation is due the next key is made and listed for the router
    /// (state `staged`), so the router's automation can configure it in time. `0s` makes it
    /// when the rotation is due.
    #[serde(default = "default_lead")]
    #[schemars(regex(pattern = r"^([0-9]+[dhms])+$"))]
    pub router_lead_time: String,
    /// How long the material of a replaced key is kept after it began retiring; it is never
    /// deleted while AWS still holds the key or the guard may associate it again.
    #[serde(default = "default_retain")]
    #[schemars(regex(pattern = r"^([0-9]+[dhms])+$"))]
    pub retain_for: String,
    /// How the operator makes each new key (the `generate` of the MacSecKeys it creates).
    #[serde(default)]
    pub key: super::GenerateKey,
}

fn default_lead() -> String {
    "7d".into()
}

fn default_retain() -> String {
    "1d".into()
}

fn default_overlap() -> u32 {
    300
}

fn default_guard() -> u32 {
    300
}

impl Default for Rotation {
    fn default() -> Self {
        Rotation {
            overlap_seconds: default_overlap(),
            guard_seconds: default_guard(),
            confirm: RemovalConfirmation::default(),
            schedule: None,
        }
    }
}

/// Who decides that outgoing keys may be removed.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum RemovalConfirmation {
    #[default]
    Automatic,
    Manual,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum ManagementPolicy {
    #[default]
    Manage,
    ObserveOnly,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum DeletionPolicy {
    #[default]
    Retain,
    Disassociate,
}

/// Whether the AWS resource is a dedicated connection, a Partner's interconnect (found with
/// DescribeInterconnects; MACsec calls take its `dxcon-…` ID like a connection's) or a LAG.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ResourceType {
    Connection,
    Interconnect,
    Lag,
}

impl ResourceType {
    /// A LAG: keys and mode on the LAG, the port status read from its members.
    pub fn is_lag(self) -> bool {
        self == ResourceType::Lag
    }
}

/// What the operator last observed and decided.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DxConnectionStatus {
    /// The `metadata.generation` of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `Synced`, and kstatus's `Reconciling` and `Stalled`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_type: Option<ResourceType>,
    /// `connectionState` or `lagState` as AWS reports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_state: Option<String>,
    /// Whether the port was ordered with MACsec (it cannot be turned on later).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac_sec_capable: Option<bool>,
    /// Encryption mode as AWS reports it (any string, including `unknown`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption_mode: Option<String>,
    /// `Encryption Up` / `Encryption Down`; for a LAG, a summary over its members.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_encryption_status: Option<String>,
    /// Number of keys in state `associated`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub associated_keys: Option<i32>,
    /// For a connection or interconnect in a LAG: that LAG, where its MACsec is managed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag_id: Option<String>,
    /// The LAG the connection left, until this DxConnection has tagged it as its owner: the
    /// keys and mode it kept from the LAG are taken over without `adopt`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub left_lag: Option<String>,
    /// A LAG's current members, with the port encryption status of each.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<MemberStatus>,
    /// Keys on the connection or LAG.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<KeyStatus>,
    /// The rotation's memory: outgoing keys removed within the guard window, a removal rolled
    /// back, the last confirmation used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotation: Option<RotationStatus>,
    /// The scheduled rotation: its stage, when the next one is due, how many keys it made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<ScheduleStatus>,
    /// The keys the router must hold, for its automation (the contract is in
    /// docs/rotation.md). Only with `spec.rotation.schedule`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub router: Option<RouterStatus>,
    /// What the next step does (or would do, under `ObserveOnly`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub planned_actions: Vec<String>,
    /// When AWS was read for the last status that changed (RFC 3339). A steady state writes
    /// no status, so this can be older than the resync period; the operator's reconcile
    /// metrics show each resync.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sync_time: Option<String>,
}

/// One member connection of a LAG.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MemberStatus {
    /// The member connection (`dxcon-…`).
    pub connection_id: String,
    /// Its `connectionState` as AWS reports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_state: Option<String>,
    /// Its encryption mode as AWS reports it (a LAG's members mirror the LAG's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption_mode: Option<String>,
    /// Its port: `Encryption Up` or `Encryption Down`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_encryption_status: Option<String>,
}

/// What a rotation remembers between passes.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RotationStatus {
    /// Outgoing keys removed less than `spec.rotation.guardSeconds` ago: the port is watched.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub removed: Vec<RemovedKey>,
    /// A removal undone because the port went Encryption Down: those keys are not removed
    /// again until the spec or the confirmation annotation changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rolled_back: Option<RolledBack>,
    /// The value of the `dxmacsec.io/confirm-removal` annotation that allowed the last
    /// removal under `confirm: Manual`; the next removal needs another value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confirmation_used: Option<String>,
}

/// Where the scheduled rotation stands (`spec.rotation.schedule`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScheduleStatus {
    /// `Idle`, `Generating`, `WaitingForRouter`, `Confirmed`, `Associating`, `Retiring` or
    /// `RolledBack`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<RotationStage>,
    /// When the next scheduled rotation is due (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_rotation: Option<String>,
    /// When the last scheduled rotation put its key into use (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_rotation: Option<String>,
    /// How many keys the schedule has made: the next one is the MacSecKey
    /// `<name>-k<sequence + 1>`.
    #[serde(default)]
    pub sequence: u32,
    /// The value of the `dxmacsec.io/rotate-now` annotation that started the last rotation;
    /// the next one starts on another value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotate_now_used: Option<String>,
}

/// The stages of one scheduled rotation.
#[derive(
    Serialize,
    Deserialize,
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    JsonSchema,
    strum::IntoStaticStr,
    strum::VariantArray,
)]
pub enum RotationStage {
    /// Nothing to do until the next key is staged.
    Idle,
    /// The next key's MacSecKey is made and its material written.
    Generating,
    /// The next key is listed `staged`: the router's automation is to configure it and
    /// confirm.
    WaitingForRouter,
    /// The router confirmed the next key before the rotation is due: it is associated when
    /// due.
    Confirmed,
    /// Confirmed and due: the key is being associated, and becomes `active` once the port
    /// is Encryption Up with it.
    Associating,
    /// The old key is `retiring`: removed after the overlap under the guard, its material
    /// deleted after `retainFor`.
    Retiring,
    /// The guard associated the old key again: the router does not use the new key.
    RolledBack,
}

/// What the router's automation reads, and the one field it writes.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RouterStatus {
    /// Every key the router must hold now: `active` (in use), `staged` (configure it now; it
    /// is associated once confirmed and due) and `retiring` (keep it until it leaves this
    /// list).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<RouterKey>,
    /// Written by the router's automation, never by the operator: the CKN of the newest key
    /// the router holds, with `kubectl patch dxconnection NAME --subresource=status
    /// --type=merge -p '{"status":{"router":{"confirmedCkn":"CKN"}}}'` (RBAC: `patch` on
    /// `dxconnections/status`, which grants no `spec` edit).
    // Never serialized by the operator: its server-side apply of the status leaves this
    // field to the automation that owns it.
    #[serde(default, skip_serializing)]
    pub confirmed_ckn: Option<String>,
}

/// One key the router must hold.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RouterKey {
    /// The MacSecKey (same namespace).
    pub mac_sec_key: String,
    /// The CKN (lower case); absent while the key is being made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ckn: Option<String>,
    /// Where the CKN and CAK are (never the CAK itself); absent for a key the operator did
    /// not make, whose MacSecKey names it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub material: Option<super::MaterialLocation>,
    /// `staged`, `active` or `retiring`.
    pub state: RouterKeyState,
    /// Since when it is in this state (RFC 3339).
    pub since: String,
    /// When the router's confirmation of this key was seen (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confirmed_at: Option<String>,
    /// Made by the schedule (its MacSecKey and material are deleted when it retires).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub generated: bool,
}

/// The state of a key on the router's side.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum RouterKeyState {
    Staged,
    Active,
    Retiring,
}

impl RotationStatus {
    pub fn is_empty(&self) -> bool {
        *self == RotationStatus::default()
    }
}

/// An outgoing key the operator removed.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RemovedKey {
    /// Its CKN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ckn: Option<String>,
    /// Its Direct Connect-managed secret, by which it is associated again if need be.
    pub secret_arn: String,
    /// When it was removed (RFC 3339).
    pub removed_at: String,
}

impl RemovedKey {
    /// When the guard window of `guard` after this removal ends; `None` when `removedAt`
    /// cannot be read. The one place the window is computed, for the planner and the
    /// MacSecKey's deletion alike.
    pub fn guarded_until(&self, guard: std::time::Duration) -> Option<jiff::Timestamp> {
        let guard = jiff::SignedDuration::try_from(guard).ok()?;
        let at: jiff::Timestamp = self.removed_at.parse().ok()?;
        at.checked_add(guard).ok()
    }
}

/// A removal the guard undid.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolledBack {
    /// The keys associated again.
    pub keys: Vec<RemovedKey>,
    /// When (RFC 3339).
    pub at: String,
    /// The `metadata.generation` of the spec whose removal was undone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<i64>,
    /// The confirmation annotation's value then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confirmation: Option<String>,
}

/// One MACsec key found on the connection or LAG. Never holds the CAK.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeyStatus {
    /// The key's CKN (lower case).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ckn: Option<String>,
    /// ARN of the key's Direct Connect-managed secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_arn: Option<String>,
    /// `associating`, `associated`, `disassociating`, `disassociated` (or what AWS says).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// `startOn` as AWS reports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_on: Option<String>,
    /// The MacSecKey this key belongs to; absent when the key is not in `spec.keys`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac_sec_key: Option<String>,
    /// When the operator first saw the key `associated` (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub associated_since: Option<String>,
}

impl DxConnection {
    /// The condition of the given type, if present.
    pub fn condition(&self, type_: ConditionType) -> Option<&Condition> {
        super::find_condition(&self.status.as_ref()?.conditions, type_)
    }

    /// The reason of the `Ready` condition the status holds, when it is one of this
    /// operator's.
    pub fn ready_reason(&self) -> Option<crate::conditions::Reason> {
        self.condition(ConditionType::Ready)?.reason.parse().ok()
    }
}
