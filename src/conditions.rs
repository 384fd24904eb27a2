//! The one vocabulary of status conditions, for both kinds: the condition types the
//! operator writes, their True/False value with a reason and a message, and every reason.
//!
//! Reasons are enums, so a reason the code uses and the lists built from them (metrics that
//! start at zero, the health-check tests) cannot drift apart: the names and the lists are
//! derived by the compiler. The `Condition` written into status is `crd::Condition`.

use jiff::Timestamp;
use strum::{Display, EnumString, IntoStaticStr, VariantArray};

use crate::crd::Condition;
use crate::engine::Standing;

/// The condition types the operator writes, on both kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, IntoStaticStr, VariantArray)]
pub enum ConditionType {
    /// AWS (or the key material) matches the spec.
    Ready,
    /// The last pass could act on the spec and its calls succeeded.
    Synced,
    /// kstatus: the operator is working towards the spec.
    Reconciling,
    /// kstatus: only a person can move the object on.
    Stalled,
    /// A DxConnection's scheduled rotation (`spec.rotation.schedule`): True while it keeps
    /// to the schedule, False when it waits on the router or a person.
    KeyRotation,
}

impl ConditionType {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// Why a DxConnection stands as it does.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, IntoStaticStr, VariantArray, EnumString, Display,
)]
pub enum Reason {
    Converged,
    Progressing,
    WaitingForEncryptionUp,
    /// The spec is met but a port that should carry MACsec reports Encryption Down: under
    /// must_encrypt the link carries no traffic, under should_encrypt it carries clear text.
    EncryptionDown,
    KeyNotReady,
    NotFound,
    NotAvailable,
    NotMacSecCapable,
    ManagedByLag,
    Conflict,
    InvalidSpec,
    DriftDetected,
    AwsError,
    /// No AWS credentials were found, or AWS rejected them.
    AwsCredentials,
    /// The operator's AWS identity may not make a call (IAM).
    AccessDenied,
    Throttled,
    /// A removed outgoing key was associated again because the port went Encryption Down:
    /// the router does not use the new key. Removal waits for a person.
    RotationRolledBack,
    /// `rotation.confirm: Manual`: outgoing keys wait for the confirmation annotation.
    WaitingForConfirmation,
    /// No DxAccess grants the DxConnection's namespace the role, region or connection it
    /// names; nothing was sent to AWS.
    Forbidden,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// Why a MacSecKey stands as it does; also why a DxConnection cannot use a key yet (in the
/// message of its `KeyNotReady`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, IntoStaticStr, VariantArray, Display)]
pub enum KeyReason {
    /// The material was read and is well formed.
    KeyMaterialValid,
    /// The MacSecKey is being deleted while a DxConnection uses it, or within a rotation's
    /// guard window.
    InUse,
    /// A DxConnection names a MacSecKey that does not exist.
    MacSecKeyNotFound,
    /// The Secret or Secrets Manager secret does not exist.
    SecretNotFound,
    /// The Secret exists but is not marked as key material (`dxmacsec.io/key-material`).
    SecretNotLabelled,
    /// The source could not be read for a reason that needs the spec or the secret fixed.
    SecretReadError,
    /// The CKN or CAK is not of the form Direct Connect takes, or they are the same value.
    InvalidKeyMaterial,
    /// The CAK changed under a CKN the key already had.
    KeyMaterialChanged,
    /// `spec.generate`: the material is being made.
    KeyNotGenerated,
    /// `spec.generate`: the material cannot be made (the message says why and what to do).
    KeyGenerationFailed,
    /// Secrets Manager failed for a moment; retried.
    AwsError,
    /// No AWS credentials were found, or AWS rejected them.
    AwsCredentials,
    /// The operator's AWS identity may not read the secret (IAM).
    AccessDenied,
    /// Secrets Manager throttled the read; retried.
    Throttled,
}

impl KeyReason {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// A reason of either kind: what a [`ConditionValue`] can be made from.
/// Reasons of a DxConnection's `KeyRotation` condition.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, IntoStaticStr, VariantArray, EnumString, Display,
)]
pub enum RotationReason {
    /// Nothing to do before the next key is staged.
    OnSchedule,
    /// The next key's material is being made.
    GeneratingKey,
    /// The next key could not be made (its MacSecKey says why).
    KeyGenerationFailed,
    /// The next key is staged for the router before the rotation is due.
    KeyStaged,
    /// The rotation is due and the router has not confirmed the new key: nothing is
    /// associated, the link stays on the current key.
    WaitingForRouter,
    /// The router confirmed: the new key is being associated.
    Associating,
    /// The old key is being removed and its material kept until its retention ends.
    Retiring,
    /// The guard put the old key back: the router does not use the new one.
    RotationRolledBack,
    /// `spec.rotation.schedule` cannot be read.
    InvalidSchedule,
    /// `managementPolicy: ObserveOnly`: the schedule makes no key.
    ObserveOnly,
    /// Another DxConnection manages the connection (Conflict): the schedule makes no key.
    Conflict,
}

impl RotationReason {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

pub trait ConditionReason:
    Copy + Eq + std::fmt::Debug + Into<&'static str> + private::Sealed
{
}
impl ConditionReason for Reason {}
impl ConditionReason for KeyReason {}
impl ConditionReason for RotationReason {}

mod private {
    pub trait Sealed {}
    impl Sealed for super::Reason {}
    impl Sealed for super::KeyReason {}
    impl Sealed for super::RotationReason {}
}

/// The value of one status condition: True or False, a reason of the vocabulary above (a
/// DxConnection's [`Reason`] unless said otherwise), a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConditionValue<R: ConditionReason = Reason> {
    pub status: bool,
    pub reason: R,
    pub message: String,
}

impl<R: ConditionReason> ConditionValue<R> {
    pub fn new(status: bool, reason: R, message: impl Into<String>) -> Self {
        ConditionValue {
            status,
            reason,
            message: message.into(),
        }
    }
}

/// Sets or updates condition `type_`; `lastTransitionTime` moves only when the status
/// changes.
pub fn set_condition<R: ConditionReason>(
    conditions: &mut Vec<Condition>,
    type_: ConditionType,
    value: &ConditionValue<R>,
    generation: Option<i64>,
    now: Timestamp,
) {
    let status = if value.status { "True" } else { "False" };
    let reason: &'static str = value.reason.into();
    let existing = conditions.iter().position(|c| c.type_ == type_.as_str());
    let last_transition_time = match existing.map(|i| &conditions[i]) {
        Some(c) if c.status == status => c.last_transition_time.clone(),
        _ => now.to_string(),
    };
    let cond = Condition {
        type_: type_.as_str().to_string(),
        status: status.to_string(),
        reason: reason.to_string(),
        message: value.message.clone(),
        last_transition_time,
        observed_generation: generation,
    };
    match existing {
        Some(i) => conditions[i] = cond,
        None => conditions.push(cond),
    }
}

/// The kstatus conditions beside `Ready`: `Reconciling` is True while the operator works
/// toward the spec, `Stalled` is True when only a person can move it on. Flux's kstatus
/// reads them (Stalled → Failed, Reconciling → InProgress), so a Kustomization with
/// `wait: true` fails fast on a permanent problem instead of waiting out its timeout. Both
/// carry `value`'s reason and message; when they do not apply they are False.
pub fn set_standing<R: ConditionReason>(
    conditions: &mut Vec<Condition>,
    standing: Standing,
    value: &ConditionValue<R>,
    generation: Option<i64>,
    now: Timestamp,
) {
    for (type_, applies) in [
        (ConditionType::Reconciling, standing == Standing::Pending),
        (ConditionType::Stalled, standing == Standing::NeedsAPerson),
    ] {
        let condition = ConditionValue {
            status: applies,
            ..value.clone()
        };
        set_condition(conditions, type_, &condition, generation, now);
    }
}

/// `Ready` from `value`, and the kstatus conditions of `standing` with the same reason.
pub fn set_ready<R: ConditionReason>(
    conditions: &mut Vec<Condition>,
    value: &ConditionValue<R>,
    standing: Standing,
    generation: Option<i64>,
    now: Timestamp,
) {
    set_condition(conditions, ConditionType::Ready, value, generation, now);
    set_standing(conditions, standing, value, generation, now);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The names written into status are the variants' names, which README and the alert
    /// rules use: no reason is written under another name.
    #[test]
    fn reasons_are_written_under_their_own_names() {
        for r in Reason::VARIANTS {
            assert_eq!(r.as_str(), format!("{r:?}"));
        }
        for r in KeyReason::VARIANTS {
            assert_eq!(r.as_str(), format!("{r:?}"));
        }
        for r in RotationReason::VARIANTS {
            assert_eq!(r.as_str(), format!("{r:?}"));
        }
        for t in ConditionType::VARIANTS {
            assert_eq!(t.as_str(), format!("{t:?}"));
        }
    }
}
