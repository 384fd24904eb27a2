//! The planner's vocabulary: what a DxConnection asks for ([`Desired`]), what earlier passes
//! remembered ([`PriorState`]), the mutating calls ([`Action`]) and the outcome of a pass
//! ([`Plan`] with its [`Reason`] and [`Requeue`]). Data and formatting only; no rule lives
//! here.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use jiff::Timestamp;

pub use crate::conditions::{KeyReason, Reason};
use crate::crd::{
    DxConnectionStatus, EncryptionMode, KeyStatus, ManagementPolicy, ResourceType, RotationStatus,
};
use crate::keys::{Cak, Ckn};
use crate::observed::ObservedKey;

/// Direct Connect holds at most this many keys per connection or LAG.
pub const KEYCHAIN_SIZE: usize = 3;

/// What one DxConnection asks for, resolved (key material read, defaults applied).
#[derive(Debug, Clone)]
pub struct Desired {
    pub connection_id: String,
    /// `None`: the mode is not managed.
    pub encryption_mode: Option<EncryptionMode>,
    /// `None`: keys are not managed. Oldest first, newest last.
    pub keys: Option<Vec<WantedKey>>,
    pub overlap: Duration,
    pub require_encryption_up: bool,
    pub policy: ManagementPolicy,
    /// Set when an older DxConnection names the same AWS resource: its namespace/name.
    pub conflict_with: Option<String>,
    /// How long the port is watched after an outgoing key is removed; zero: not watched.
    pub guard: Duration,
    /// Outgoing keys go only once `confirmation` holds a value not used before.
    pub manual_confirmation: bool,
    /// The value of the `dxmacsec.io/confirm-removal` annotation.
    pub confirmation: Option<String>,
    /// The spec's `metadata.generation` (none for the CLI's files).
    pub generation: Option<i64>,
    /// The value of the `dxmacsec.io/owner` tag this DxConnection claims the resource with;
    /// `None`: ownership is not checked (deletion).
    pub owner: Option<String>,
    /// `spec.adopt`: claim a resource with MACsec state and no owner tag.
    pub adopt: bool,
    /// The material of outgoing keys removed within the guard window, from their MacSecKeys:
    /// a rollback associates by CKN/CAK when the managed secret is gone.
    pub restorable: Vec<KeyMaterial>,
    /// Set when the DxConnection is being deleted: what its `deletionPolicy` leaves behind.
    /// The planner then works towards that, and releases the owner tag (`owner`) last.
    pub deletion: Option<Deletion>,
}

/// What deleting a DxConnection does on AWS, by its `deletionPolicy`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Deletion {
    /// Keys and mode stay as they are; only this DxConnection's owner tag goes, so a
    /// successor can adopt the resource.
    Retain,
    /// The keys this DxConnection managed go (`managed`: the `keys[]` of its status), every
    /// other key stays, must_encrypt is lowered to should_encrypt first when no key would
    /// remain (so AWS does not flip it itself); then the owner tag goes.
    Disassociate { managed: Vec<KeyStatus> },
}

impl Desired {
    /// Nothing managed on `connection_id` and nothing remembered: what each caller starts
    /// from before it sets what its DxConnection asks for.
    pub fn new(connection_id: &str) -> Self {
        Desired {
            connection_id: connection_id.to_string(),
            encryption_mode: None,
            keys: None,
            overlap: Duration::ZERO,
            require_encryption_up: false,
            policy: ManagementPolicy::Manage,
            conflict_with: None,
            guard: Duration::ZERO,
            manual_confirmation: false,
            confirmation: None,
            generation: None,
            owner: None,
            adopt: false,
            restorable: Vec::new(),
            deletion: None,
        }
    }
}

/// One MacSecKey named in `spec.keys`, with its material or the reason it is not usable.
#[derive(Debug, Clone)]
pub struct WantedKey {
    /// Name of the MacSecKey.
    pub name: String,
    pub material: Result<KeyMaterial, KeyProblem>,
}

/// Usable key material. At least one way to associate is known: the CAK, or the ARN of a
/// Direct Connect-managed secret.
#[derive(Debug, Clone)]
pub struct KeyMaterial {
    /// Known unless the key is given only as a managed secret ARN that was never seen on AWS.
    pub ckn: Option<Ckn>,
    pub cak: Option<Cak>,
    /// ARN of the Direct Connect-managed secret for this CKN, when known.
    pub secret_arn: Option<String>,
}

/// Why a wanted key cannot be used yet (missing Secret, bad format, AWS read failed…).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyProblem {
    /// Machine-readable; also the MacSecKey's own reason when the key itself is at fault.
    pub reason: KeyReason,
    pub message: String,
    /// The source could not be read for a passing reason (AWS throttled or failed, the API
    /// server timed out): retried with back-off, never a person's problem.
    pub transient: bool,
}

impl KeyMaterial {
    /// A CKN with its CAK (and the managed ARN when one is known).
    pub fn pair(ckn: Ckn, cak: Cak, secret_arn: Option<String>) -> Self {
        KeyMaterial {
            ckn: Some(ckn),
            cak: Some(cak),
            secret_arn,
        }
    }

    /// A Direct Connect-managed secret, with the CKN when it has been learned.
    pub fn managed_secret(secret_arn: String, ckn: Option<Ckn>) -> Self {
        KeyMaterial {
            ckn,
            cak: None,
            secret_arn: Some(secret_arn),
        }
    }

    /// Key matching: by CKN, case-insensitively; by ARN where either side has no CKN.
    pub(super) fn matches(&self, observed: &ObservedKey) -> bool {
        match (&self.ckn, observed.ckn_normalized()) {
            (Some(want), Some(have)) => want.as_str() == have,
            _ => matches!((&self.secret_arn, &observed.secret_arn), (Some(a), Some(b)) if a == b),
        }
    }

    /// How to associate this key: by the managed secret ARN when one is known, else by
    /// CKN and CAK.
    pub(super) fn association(&self) -> Option<Association> {
        // The CAK is sent only when no managed secret ARN is known.
        if let Some(arn) = &self.secret_arn {
            return Some(Association::SecretArn(arn.clone()));
        }
        match (&self.ckn, &self.cak) {
            (Some(ckn), Some(cak)) => Some(Association::CknCak(ckn.clone(), cak.clone())),
            _ => None,
        }
    }
}

/// What earlier passes learned, carried in status (controller) or memory (CLI).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PriorState {
    /// Key identity (CKN, else ARN) → when it was first seen `associated`.
    pub associated_since: BTreeMap<String, Timestamp>,
    /// The previous pass found the resource converged at the current spec generation, so
    /// any difference now was made outside the operator.
    pub converged: bool,
    /// Outgoing keys removed, a removal rolled back, the last confirmation used.
    pub rotation: RotationStatus,
    /// An earlier status names a MacSecKey on the resource: this DxConnection managed it
    /// before owner tags existed, so it claims it without `adopt`.
    pub managed_before: bool,
    /// The LAG an earlier status found the connection a member of (`lagId`), or that it
    /// left and was not claimed since (`leftLag`). Once out of the LAG, the keys and mode it
    /// kept are the LAG's, configured by no one on the connection itself: it is claimed
    /// without `adopt`.
    pub left_lag: Option<String>,
}

impl PriorState {
    /// Rebuilds the memory from the `keys[]` of a status written earlier.
    pub fn from_key_status(keys: &[KeyStatus], converged: bool) -> Self {
        let associated_since = keys
            .iter()
            .filter_map(|k| {
                let id = k
                    .ckn
                    .as_deref()
                    .map(Ckn::normalize_observed)
                    .or_else(|| k.secret_arn.clone())?;
                let since = k.associated_since.as_deref()?.parse().ok()?;
                Some((id, since))
            })
            .collect();
        PriorState {
            associated_since,
            converged,
            rotation: RotationStatus::default(),
            managed_before: keys.iter().any(|k| k.mac_sec_key.is_some()),
            left_lag: None,
        }
    }

    /// The whole memory a status carries: keys, the rotation, the LAG it was a member of.
    pub fn from_status(status: &DxConnectionStatus, converged: bool) -> Self {
        let mut prior =
            Self::from_key_status(&status.keys, converged).with_rotation(status.rotation.as_ref());
        prior.left_lag = status.lag_id.clone().or_else(|| status.left_lag.clone());
        prior
    }

    /// The same, with the rotation's memory.
    pub fn with_rotation(mut self, rotation: Option<&RotationStatus>) -> Self {
        self.rotation = rotation.cloned().unwrap_or_default();
        self
    }
}

/// The AWS resource an action applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub id: String,
    pub kind: ResourceType,
}

impl Target {
    /// The call that sets the encryption mode of this resource.
    pub fn update_operation(&self) -> &'static str {
        match self.kind {
            ResourceType::Lag => "UpdateLag",
            // An interconnect's mode is set by its dxcon ID, as a connection's.
            ResourceType::Connection | ResourceType::Interconnect => "UpdateConnection",
        }
    }
}

/// How a key is associated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Association {
    /// By a Direct Connect-managed secret; the CAK is not sent.
    SecretArn(String),
    /// By CKN and CAK; Direct Connect creates the managed secret.
    CknCak(Ckn, Cak),
}

/// Why a key is removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removal {
    /// Not in `spec.keys` any more and the overlap has passed.
    Unwanted,
    /// Not wanted, and its slot is needed: the keychain holds 3 keys.
    KeychainFull,
}

/// One mutating AWS call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// AssociateMacSecKey.
    Associate {
        target: Target,
        key_name: String,
        ckn: Option<Ckn>,
        with: Association,
    },
    /// DisassociateMacSecKey.
    Disassociate {
        target: Target,
        secret_arn: String,
        ckn: Option<String>,
        why: Removal,
    },
    /// UpdateConnection or UpdateLag with a new encryptionMode.
    SetMode {
        target: Target,
        mode: EncryptionMode,
    },
    /// TagResource: the `dxmacsec.io/owner` tag that claims the resource.
    Claim {
        target: Target,
        arn: String,
        owner: String,
    },
    /// UntagResource: the `dxmacsec.io/owner` tag goes, the last step of a deletion.
    Release {
        target: Target,
        arn: String,
        owner: String,
    },
    /// AssociateMacSecKey of an outgoing key removed within the guard window, by its managed
    /// secret: the port went Encryption Down without it.
    Restore {
        target: Target,
        secret_arn: String,
        ckn: Option<String>,
        /// By CKN/CAK from the key's MacSecKey, if AWS refuses the managed secret (gone).
        fallback: Option<Association>,
    },
}

impl Action {
    pub fn target(&self) -> &Target {
        match self {
            Action::Associate { target, .. }
            | Action::Disassociate { target, .. }
            | Action::SetMode { target, .. }
            | Action::Claim { target, .. }
            | Action::Release { target, .. }
            | Action::Restore { target, .. } => target,
        }
    }

    /// The AWS operation this action calls.
    pub fn operation(&self) -> &'static str {
        match self {
            Action::Associate { .. } | Action::Restore { .. } => "AssociateMacSecKey",
            Action::Claim { .. } => "TagResource",
            Action::Release { .. } => "UntagResource",
            Action::Disassociate { .. } => "DisassociateMacSecKey",
            Action::SetMode { target, .. } => target.update_operation(),
        }
    }
}

/// A one-line description for status, events and CLI output. Never contains the CAK.
impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::Associate {
                target,
                key_name,
                ckn,
                with,
            } => {
                let how = match with {
                    Association::SecretArn(arn) => format!("by managed secret {arn}"),
                    Association::CknCak(..) => "by CKN/CAK".to_string(),
                };
                match ckn {
                    Some(ckn) => write!(
                        f,
                        "{}: associate MacSecKey {key_name} (CKN {ckn}) with {} {how}",
                        self.operation(),
                        target.id
                    ),
                    None => write!(
                        f,
                        "{}: associate MacSecKey {key_name} with {} {how}",
                        self.operation(),
                        target.id
                    ),
                }
            }
            Action::Disassociate {
                target,
                secret_arn,
                ckn,
                why,
            } => {
                let why = match why {
                    Removal::Unwanted => "no longer wanted",
                    Removal::KeychainFull => "keychain full, making room",
                };
                let name = ckn.as_deref().unwrap_or(secret_arn);
                write!(
                    f,
                    "{}: remove key {name} from {} ({why})",
                    self.operation(),
                    target.id
                )
            }
            Action::SetMode { target, mode } => write!(
                f,
                "{}: set encryptionMode {mode} on {}",
                self.operation(),
                target.id
            ),
            Action::Claim { target, owner, .. } => write!(
                f,
                "{}: tag {} {}={owner} (this DxConnection manages it)",
                self.operation(),
                target.id,
                crate::crd::OWNER_TAG
            ),
            Action::Release { target, owner, .. } => write!(
                f,
                "{}: remove tag {}={owner} from {} (this DxConnection is deleted)",
                self.operation(),
                crate::crd::OWNER_TAG,
                target.id
            ),
            Action::Restore {
                target,
                secret_arn,
                ckn,
                ..
            } => write!(
                f,
                "{}: associate removed key {} with {} again by managed secret {secret_arn} (the port went Encryption Down without it)",
                self.operation(),
                ckn.as_deref().unwrap_or(secret_arn),
                target.id
            ),
        }
    }
}

/// When to run the next pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requeue {
    /// Something is in flight or was just changed: look again shortly.
    Soon,
    /// Nothing will change before this much time has passed (the rotation overlap).
    After(Duration),
    /// Converged or stuck on something only a person can fix: the periodic resync.
    Resync,
}

/// The outcome of one planning pass.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Mutations to perform now, in order. Empty under `ObserveOnly`.
    pub actions: Vec<Action>,
    /// Mutations `ObserveOnly` holds back.
    pub withheld: Vec<Action>,
    /// `Ready`: true only when AWS matches the spec.
    pub ready: bool,
    /// `Synced`: false when the spec cannot be acted on as it stands.
    pub synced: bool,
    pub reason: Reason,
    pub message: String,
    pub requeue: Requeue,
    /// Every key AWS reports, labelled with the MacSecKey it belongs to.
    pub keys: Vec<KeyStatus>,
    /// The rotation's memory to keep once `actions` are made.
    pub rotation: RotationStatus,
    /// Within a guard window: the port must be read again soon even when Ready.
    pub guarding: bool,
}

impl Plan {
    /// Whether only a person can move this plan on: the spec cannot be acted on, or AWS
    /// matches the spec and still the link is not encrypted (a router to fix).
    pub fn needs_a_person(&self) -> bool {
        !self.synced || self.reason == Reason::EncryptionDown
    }

    /// Whether AWS matches the spec, so there is nothing left to call: Ready, or Encryption
    /// Down with every call made (deletion is done then, even though the link is not up).
    pub fn spec_met(&self) -> bool {
        self.ready || self.reason == Reason::EncryptionDown
    }

    /// Every action, executed or withheld, as status lines.
    pub fn planned_actions(&self) -> Vec<String> {
        self.actions
            .iter()
            .chain(&self.withheld)
            .map(ToString::to_string)
            .collect()
    }
}

/// How soon a port reported Encryption Down is read again: it comes back when the customer
/// fixes the router, without any change to the DxConnection.
pub const ENCRYPTION_DOWN_RECHECK: Duration = Duration::from_secs(30);
