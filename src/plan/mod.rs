//! The reconcile decision: `plan(desired, observed, prior, now) -> Plan`.
//!
//! Pure and synchronous: no I/O, no clock, no randomness. Given what the DxConnection asks
//! for ([`Desired`]), what Direct Connect reports ([`ObservedResource`]) and what earlier
//! passes remembered ([`PriorState`]), it returns at most one step of mutations, the
//! conditions to report and when to look again. The async shells (controller, CLI) execute
//! the step, re-observe and call it again. The rules are those of DESIGN.md "The reconcile";
//! each rule is named where it is applied.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use jiff::Timestamp;

use crate::crd::{EncryptionMode, KeyStatus, ManagementPolicy, ResourceType};
use crate::keys::{Cak, Ckn};
use crate::observed::{KeyState, ObservedKey, ObservedResource};

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
    /// Machine-readable: `SecretNotFound`, `InvalidKeyMaterial`, `MacSecKeyNotFound`,
    /// `SecretReadError`.
    pub reason: &'static str,
    pub message: String,
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

    /// Rule 7: by CKN, case-insensitively; by ARN where either side has no CKN.
    fn matches(&self, observed: &ObservedKey) -> bool {
        match (&self.ckn, observed.ckn_normalized()) {
            (Some(want), Some(have)) => want.as_str() == have,
            _ => matches!((&self.secret_arn, &observed.secret_arn), (Some(a), Some(b)) if a == b),
        }
    }

    fn association(&self) -> Option<Association> {
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
        }
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
            ResourceType::Connection => "UpdateConnection",
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
}

impl Action {
    pub fn target(&self) -> &Target {
        match self {
            Action::Associate { target, .. }
            | Action::Disassociate { target, .. }
            | Action::SetMode { target, .. } => target,
        }
    }

    /// The AWS operation this action calls.
    pub fn operation(&self) -> &'static str {
        match self {
            Action::Associate { .. } => "AssociateMacSecKey",
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
        }
    }
}

/// Machine-readable condition reasons.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
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
    Throttled,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Converged => "Converged",
            Reason::Progressing => "Progressing",
            Reason::WaitingForEncryptionUp => "WaitingForEncryptionUp",
            Reason::EncryptionDown => "EncryptionDown",
            Reason::KeyNotReady => "KeyNotReady",
            Reason::NotFound => "NotFound",
            Reason::NotAvailable => "NotAvailable",
            Reason::NotMacSecCapable => "NotMacSecCapable",
            Reason::ManagedByLag => "ManagedByLag",
            Reason::Conflict => "Conflict",
            Reason::InvalidSpec => "InvalidSpec",
            Reason::DriftDetected => "DriftDetected",
            Reason::AwsError => "AwsError",
            Reason::Throttled => "Throttled",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
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

/// The result of the decision before policy (ObserveOnly, drift) is applied.
enum Step {
    /// Perform this action.
    Act(Action, String),
    /// Nothing to do now; wait with this reason.
    Wait(Reason, String, Requeue),
    /// The spec cannot be acted on; a person has to fix something.
    Blocked(Reason, String),
    /// AWS matches the spec, yet an encrypted port is down: not Ready, nothing to call.
    EncryptionDown(String),
    Converged(String),
}

/// How soon a port reported Encryption Down is read again: it comes back when the customer
/// fixes the router, without any change to the DxConnection.
pub const ENCRYPTION_DOWN_RECHECK: Duration = Duration::from_secs(30);

/// Decides the next step for one DxConnection. See the module docs.
pub fn plan(
    desired: &Desired,
    observed: Option<&ObservedResource>,
    prior: &PriorState,
    now: Timestamp,
) -> Plan {
    let keys = observed
        .map(|o| key_report(desired, o, prior, now))
        .unwrap_or_default();
    let step = decide(desired, observed, prior, now);
    let mut plan = Plan {
        actions: Vec::new(),
        withheld: Vec::new(),
        ready: false,
        synced: true,
        reason: Reason::Progressing,
        message: String::new(),
        requeue: Requeue::Soon,
        keys,
    };
    match step {
        Step::Converged(message) => {
            plan.ready = true;
            plan.reason = Reason::Converged;
            plan.message = message;
            plan.requeue = Requeue::Resync;
        }
        Step::EncryptionDown(message) => {
            plan.reason = Reason::EncryptionDown;
            plan.message = message;
            plan.requeue = Requeue::After(ENCRYPTION_DOWN_RECHECK);
        }
        Step::Wait(reason, message, requeue) => {
            plan.reason = reason;
            plan.message = message;
            plan.requeue = requeue;
        }
        Step::Blocked(reason, message) => {
            plan.synced = false;
            plan.reason = reason;
            plan.message = message;
            // A missing key may appear without a spec change; everything else needs an edit.
            plan.requeue = if reason == Reason::KeyNotReady {
                Requeue::Soon
            } else {
                Requeue::Resync
            };
        }
        Step::Act(action, message) => {
            if desired.policy == ManagementPolicy::ObserveOnly {
                plan.reason = Reason::DriftDetected;
                plan.message = format!("ObserveOnly: AWS differs from the spec; would {action}");
                plan.withheld.push(action);
                plan.requeue = Requeue::Resync;
            } else {
                plan.reason = if prior.converged {
                    Reason::DriftDetected
                } else {
                    Reason::Progressing
                };
                plan.message = if prior.converged {
                    format!("AWS changed outside the operator; repairing: {message}")
                } else {
                    message
                };
                plan.actions.push(action);
                plan.requeue = Requeue::Soon;
            }
        }
    }
    plan
}

/// Rule 1: checks CEL normally enforces (files given to the CLI skip admission) and the key
/// material.
fn validate(desired: &Desired) -> Result<(), (Reason, String)> {
    let id = &desired.connection_id;
    let well_formed = ["dxcon-", "dxlag-"].iter().any(|p| {
        id.strip_prefix(p).is_some_and(|rest| {
            !rest.is_empty()
                && rest
                    .chars()
                    .all(|c| c.is_ascii_digit() || c.is_ascii_lowercase())
        })
    });
    if !well_formed {
        return Err((
            Reason::InvalidSpec,
            format!("spec.connectionId {id:?} is not a connection (dxcon-…) or LAG (dxlag-…) ID"),
        ));
    }
    let Some(keys) = &desired.keys else {
        return Ok(());
    };
    if keys.len() > KEYCHAIN_SIZE {
        return Err((
            Reason::InvalidSpec,
            format!(
                "spec.keys lists {} keys; Direct Connect holds at most {KEYCHAIN_SIZE}",
                keys.len()
            ),
        ));
    }
    if keys.is_empty() && desired.encryption_mode == Some(EncryptionMode::MustEncrypt) {
        return Err((
            Reason::InvalidSpec,
            "spec.encryptionMode must_encrypt needs at least one key in spec.keys".into(),
        ));
    }
    for (i, k) in keys.iter().enumerate() {
        if keys[..i].iter().any(|o| o.name == k.name) {
            return Err((
                Reason::InvalidSpec,
                format!("spec.keys names MacSecKey {} twice", k.name),
            ));
        }
    }
    let problems: Vec<String> = keys
        .iter()
        .filter_map(|k| {
            k.material
                .as_ref()
                .err()
                .map(|p| format!("MacSecKey {}: {}", k.name, p.message))
        })
        .collect();
    if !problems.is_empty() {
        return Err((Reason::KeyNotReady, problems.join("; ")));
    }
    for (i, k) in keys.iter().enumerate() {
        let ckn = k.material.as_ref().ok().and_then(|m| m.ckn.as_ref());
        if let Some(other) = keys[..i]
            .iter()
            .find(|o| ckn.is_some() && o.material.as_ref().ok().and_then(|m| m.ckn.as_ref()) == ckn)
        {
            return Err((
                Reason::InvalidSpec,
                format!(
                    "MacSecKeys {} and {} have the same CKN; each key in spec.keys needs its own",
                    other.name, k.name
                ),
            ));
        }
    }
    Ok(())
}

/// The ordered rules. Returns the first step that applies.
fn decide(
    desired: &Desired,
    observed: Option<&ObservedResource>,
    prior: &PriorState,
    now: Timestamp,
) -> Step {
    // Rule 1.
    if let Err((reason, message)) = validate(desired) {
        return Step::Blocked(reason, message);
    }
    // Rule 2.
    if let Some(owner) = &desired.conflict_with {
        return Step::Blocked(
            Reason::Conflict,
            format!(
                "DxConnection {owner} already manages {}; only the oldest DxConnection naming a connection acts on it",
                desired.connection_id
            ),
        );
    }
    let Some(obs) = observed else {
        return Step::Blocked(
            Reason::NotFound,
            format!(
                "Direct Connect has no connection or LAG {}; check spec.connectionId, spec.region and spec.roleArn",
                desired.connection_id
            ),
        );
    };
    if let Some(lag) = &obs.lag_id {
        return Step::Blocked(
            Reason::ManagedByLag,
            format!(
                "{} is a member of LAG {lag}; MACsec of LAG members is managed on the LAG: set spec.connectionId to {lag}",
                obs.id
            ),
        );
    }
    let wants_encryption = desired.keys.as_ref().is_some_and(|k| !k.is_empty())
        || matches!(
            desired.encryption_mode,
            Some(EncryptionMode::ShouldEncrypt | EncryptionMode::MustEncrypt)
        );
    if !obs.mac_sec_capable && wants_encryption {
        return Step::Blocked(
            Reason::NotMacSecCapable,
            format!(
                "{} was not ordered with MACsec (macSecCapable is false) and it cannot be enabled later; order a MACsec-capable port",
                obs.id
            ),
        );
    }
    // Rule 3.
    if !obs.is_available() {
        return Step::Wait(
            Reason::NotAvailable,
            format!(
                "{} is {}; changes wait until it is available",
                obs.id, obs.state
            ),
            Requeue::Soon,
        );
    }
    let target = Target {
        id: obs.id.clone(),
        kind: obs.kind,
    };
    // A port without MACsec may report no mode at all: that is no encryption.
    let observed_mode = obs
        .mode()
        .or((!obs.mac_sec_capable && obs.encryption_mode.is_none())
            .then_some(EncryptionMode::NoEncrypt));
    let mode_text = obs.encryption_mode.as_deref().unwrap_or("none");

    // Rule 5, turning off or down: the mode goes first, so AWS never flips it itself and no
    // key removal happens under must_encrypt.
    if let Some(mode @ (EncryptionMode::NoEncrypt | EncryptionMode::ShouldEncrypt)) =
        desired.encryption_mode
        && observed_mode != Some(mode)
    {
        return Step::Act(
            Action::SetMode { target, mode },
            format!("encryptionMode is {mode_text}; setting {mode}"),
        );
    }

    let live: Vec<&ObservedKey> = obs
        .keys
        .iter()
        .filter(|k| k.state() != KeyState::Disassociated)
        .collect();
    let wanted: &[WantedKey] = desired.keys.as_deref().unwrap_or(&[]);
    let managed = desired.keys.is_some();
    // (wanted key, material, the live key it matches)
    let matched: Vec<(&WantedKey, &KeyMaterial, Option<&ObservedKey>)> = wanted
        .iter()
        .filter_map(|w| {
            let m = w.material.as_ref().ok()?;
            Some((w, m, live.iter().copied().find(|o| m.matches(o))))
        })
        .collect();
    let unwanted: Vec<&ObservedKey> = if managed {
        live.iter()
            .copied()
            .filter(|o| !matched.iter().any(|(_, m, _)| m.matches(o)))
            .collect()
    } else {
        Vec::new()
    };
    let associated_count = live
        .iter()
        .filter(|k| k.state() == KeyState::Associated)
        .count();

    // Rule 4: make-before-break.
    if let Some((w, _, _)) = matched
        .iter()
        .find(|(_, _, o)| o.is_some_and(|o| o.state() == KeyState::Disassociating))
    {
        return Step::Wait(
            Reason::Progressing,
            format!(
                "MacSecKey {} is being disassociated by someone else; it is associated again once AWS has removed it",
                w.name
            ),
            Requeue::Soon,
        );
    }
    if let Some((w, m, _)) = matched.iter().find(|(_, _, o)| o.is_none()) {
        if live.len() >= KEYCHAIN_SIZE {
            return make_room(&target, &unwanted, associated_count, &w.name);
        }
        let Some(with) = m.association() else {
            return Step::Blocked(
                Reason::KeyNotReady,
                format!(
                    "MacSecKey {} has neither a CAK nor a managed secret ARN",
                    w.name
                ),
            );
        };
        return Step::Act(
            Action::Associate {
                target,
                key_name: w.name.clone(),
                ckn: m.ckn.clone(),
                with,
            },
            format!("associating MacSecKey {}", w.name),
        );
    }
    if let Some((w, _, _)) = matched
        .iter()
        .find(|(_, _, o)| o.is_some_and(|o| o.state() != KeyState::Associated))
    {
        return Step::Wait(
            Reason::Progressing,
            format!("waiting for MacSecKey {} to become associated", w.name),
            Requeue::Soon,
        );
    }

    // Rule 5, turning on: must_encrypt last, once a key works.
    if desired.encryption_mode == Some(EncryptionMode::MustEncrypt)
        && observed_mode != Some(EncryptionMode::MustEncrypt)
    {
        let drift_note = if prior.converged && observed_mode == Some(EncryptionMode::ShouldEncrypt)
        {
            " (AWS switched it to should_encrypt, as it does when the last key is removed)"
        } else {
            ""
        };
        if associated_count == 0 {
            return Step::Wait(
                Reason::Progressing,
                format!(
                    "encryptionMode is {mode_text}{drift_note}; must_encrypt is set once a key is associated"
                ),
                Requeue::Soon,
            );
        }
        if desired.require_encryption_up && !obs.port_up() {
            // MACsec is only negotiated under should_encrypt or must_encrypt: go through
            // should_encrypt, which falls back to clear text, so the port can come up.
            if observed_mode != Some(EncryptionMode::ShouldEncrypt) {
                return Step::Act(
                    Action::SetMode {
                        target,
                        mode: EncryptionMode::ShouldEncrypt,
                    },
                    format!(
                        "a key is associated; setting should_encrypt (was {mode_text}) so MACsec can come up before must_encrypt"
                    ),
                );
            }
            return Step::Wait(
                Reason::WaitingForEncryptionUp,
                format!(
                    "{}; must_encrypt is withheld until the port reports Encryption Up: configure the same CKN/CAK on your router{drift_note}",
                    port_down_text(obs)
                ),
                Requeue::Soon,
            );
        }
        return Step::Act(
            Action::SetMode {
                target,
                mode: EncryptionMode::MustEncrypt,
            },
            format!("a key is associated; setting must_encrypt (was {mode_text}){drift_note}"),
        );
    }

    // Rule 4, break: remove unwanted keys.
    if !unwanted.is_empty() {
        let effective_must = desired.encryption_mode == Some(EncryptionMode::MustEncrypt)
            || (desired.encryption_mode.is_none()
                && observed_mode == Some(EncryptionMode::MustEncrypt));
        if effective_must && wanted.is_empty() {
            return Step::Blocked(
                Reason::InvalidSpec,
                format!(
                    "spec.keys is empty but {} is must_encrypt: removing the last key takes the link down; set spec.encryptionMode to should_encrypt or no_encrypt first",
                    obs.id
                ),
            );
        }
        if effective_must && !obs.port_up() {
            return Step::Wait(
                Reason::WaitingForEncryptionUp,
                format!(
                    "{}; old keys stay until the port reports Encryption Up with the new key: configure it on your router",
                    port_down_text(obs)
                ),
                Requeue::Soon,
            );
        }
        if !wanted.is_empty() {
            let since = matched
                .iter()
                .filter_map(|(_, _, o)| o.map(|o| associated_since(o, prior, now)))
                .max()
                .unwrap_or(now);
            let until = since
                .checked_add(jiff::SignedDuration::try_from(desired.overlap).unwrap_or_default())
                .unwrap_or(since);
            if now < until {
                let left = until.duration_since(now);
                let left = Duration::try_from(left).unwrap_or_default();
                return Step::Wait(
                    Reason::Progressing,
                    format!(
                        "every wanted key is associated; {} old key(s) are removed after the rotation overlap, at {until}",
                        unwanted.len()
                    ),
                    Requeue::After(left.max(Duration::from_secs(1))),
                );
            }
        }
        let removable = oldest_first(
            unwanted
                .iter()
                .copied()
                .filter(|k| k.state() != KeyState::Disassociating)
                .collect(),
        );
        let Some(key) = removable.first() else {
            return Step::Wait(
                Reason::Progressing,
                "waiting for AWS to finish disassociating old keys".into(),
                Requeue::Soon,
            );
        };
        return disassociate(&target, key, Removal::Unwanted);
    }
    if live.iter().any(|k| k.state() == KeyState::Disassociating) && managed {
        return Step::Wait(
            Reason::Progressing,
            "waiting for AWS to finish disassociating old keys".into(),
            Requeue::Soon,
        );
    }

    if let Some(message) = encryption_down(desired, obs, associated_count) {
        return Step::EncryptionDown(message);
    }
    Step::Converged(converged_message(obs, associated_count))
}

/// The spec is met; is the link encrypted? A port (a LAG's members, each under its own mode
/// or else the LAG's) that reports Encryption Down under must_encrypt carries no traffic, and
/// under should_encrypt with `requireEncryptionUp` and a key associated it carries clear
/// text. Either is not Ready: the message says what AWS reports and what to check.
fn encryption_down(desired: &Desired, obs: &ObservedResource, associated: usize) -> Option<String> {
    let matters = |mode: Option<EncryptionMode>| match mode {
        Some(EncryptionMode::MustEncrypt) => true,
        Some(EncryptionMode::ShouldEncrypt) => desired.require_encryption_up && associated > 0,
        _ => false,
    };
    let down: Vec<(&str, EncryptionMode)> = match obs.kind {
        ResourceType::Connection => (!obs.port_up())
            .then_some(obs.mode())
            .flatten()
            .filter(|m| matters(Some(*m)))
            .map(|m| (obs.id.as_str(), m))
            .into_iter()
            .collect(),
        ResourceType::Lag => obs
            .members
            .iter()
            .filter(|m| !crate::observed::is_port_up(m.port_encryption_status.as_deref()))
            .filter_map(|m| {
                let mode = m
                    .encryption_mode
                    .as_deref()
                    .and_then(EncryptionMode::from_aws_str)
                    .or(obs.mode())?;
                matters(Some(mode)).then_some((m.connection_id.as_str(), mode))
            })
            .collect(),
    };
    if down.is_empty() {
        return None;
    }
    let must = down.iter().any(|(_, m)| *m == EncryptionMode::MustEncrypt);
    let ports = down
        .iter()
        .map(|(id, m)| format!("{id} ({m})"))
        .collect::<Vec<_>>()
        .join(", ");
    let effect = if must {
        "under must_encrypt the link carries no traffic"
    } else {
        "under should_encrypt traffic flows in clear text (spec.requireEncryptionUp is true)"
    };
    let keys: Vec<String> = obs
        .keys
        .iter()
        .filter(|k| k.state() == KeyState::Associated)
        .map(|k| {
            let id = k
                .ckn_normalized()
                .map(|c| format!("CKN {c}"))
                .or_else(|| k.secret_arn.clone())
                .unwrap_or_else(|| "a key with no CKN".into());
            let owner = desired
                .keys
                .iter()
                .flatten()
                .find(|w| w.material.as_ref().is_ok_and(|m| m.matches(k)));
            match owner {
                Some(w) => format!("{id} (MacSecKey {})", w.name),
                None => format!("{id} (not in spec.keys)"),
            }
        })
        .collect();
    let keys = if keys.is_empty() {
        "no key is associated on AWS".to_string()
    } else {
        format!("associated on AWS: {}", keys.join(", "))
    };
    let subject = match obs.kind {
        ResourceType::Connection => format!("{ports} reports Encryption Down"),
        ResourceType::Lag => format!("LAG {} members report Encryption Down: {ports}", obs.id),
    };
    Some(format!(
        "{subject}; {effect}. {keys}. Check that the customer router has one of these CKN/CAK pairs configured on the port and MACsec enabled on its side; the operator calls nothing until the port reports Encryption Up"
    ))
}

/// Keychain full: remove the oldest unwanted key, never the only associated one.
fn make_room(
    target: &Target,
    unwanted: &[&ObservedKey],
    associated_count: usize,
    waiting_key: &str,
) -> Step {
    if unwanted
        .iter()
        .any(|k| k.state() == KeyState::Disassociating)
    {
        return Step::Wait(
            Reason::Progressing,
            format!(
                "keychain full; waiting for an old key to go before associating MacSecKey {waiting_key}"
            ),
            Requeue::Soon,
        );
    }
    let candidates = oldest_first(
        unwanted
            .iter()
            .copied()
            .filter(|k| !(k.state() == KeyState::Associated && associated_count <= 1))
            .collect(),
    );
    match candidates.first() {
        Some(key) => disassociate(target, key, Removal::KeychainFull),
        None => Step::Wait(
            Reason::Progressing,
            format!(
                "keychain full ({KEYCHAIN_SIZE} keys) and the only associated key is not wanted; it stays until another key is associated, then MacSecKey {waiting_key} follows"
            ),
            Requeue::Soon,
        ),
    }
}

fn disassociate(target: &Target, key: &ObservedKey, why: Removal) -> Step {
    let name = key.ckn.clone().unwrap_or_else(|| "with no CKN".to_string());
    match &key.secret_arn {
        Some(arn) => Step::Act(
            Action::Disassociate {
                target: target.clone(),
                secret_arn: arn.clone(),
                ckn: key.ckn.clone(),
                why,
            },
            format!("removing key {name}"),
        ),
        None => Step::Blocked(
            Reason::AwsError,
            format!(
                "key {name} on {} has no secretARN, and keys are removed by ARN; remove it in the AWS console",
                target.id
            ),
        ),
    }
}

/// Oldest first by `startOn`; keys without a readable time keep AWS's order, after the
/// dated ones.
fn oldest_first(mut keys: Vec<&ObservedKey>) -> Vec<&ObservedKey> {
    keys.sort_by_key(|k| match k.start_on_time() {
        Some(t) => (0, Some(t)),
        None => (1, None),
    });
    keys
}

fn associated_since(key: &ObservedKey, prior: &PriorState, now: Timestamp) -> Timestamp {
    prior
        .associated_since
        .get(&key.identity())
        .copied()
        .unwrap_or(now)
}

fn port_down_text(obs: &ObservedResource) -> String {
    match obs.kind {
        ResourceType::Connection => format!(
            "{} reports {}",
            obs.id,
            obs.port_encryption_status
                .as_deref()
                .unwrap_or("no port encryption status")
        ),
        ResourceType::Lag if obs.members.is_empty() => format!("LAG {} has no members", obs.id),
        ResourceType::Lag => format!(
            "LAG {} members not Encryption Up: {}",
            obs.id,
            obs.members_down().join(", ")
        ),
    }
}

fn converged_message(obs: &ObservedResource, associated: usize) -> String {
    let mut msg = format!(
        "{} matches the spec: encryptionMode {}, {associated} key(s) associated",
        obs.id,
        obs.encryption_mode.as_deref().unwrap_or("none")
    );
    let odd: Vec<String> = obs
        .members
        .iter()
        .filter(|m| m.encryption_mode != obs.encryption_mode)
        .map(|m| {
            format!(
                "{} ({})",
                m.connection_id,
                m.encryption_mode.as_deref().unwrap_or("none")
            )
        })
        .collect();
    if !odd.is_empty() {
        msg.push_str(&format!(
            "; members whose mode differs from the LAG: {}",
            odd.join(", ")
        ));
    }
    msg
}

/// Every key AWS reports, labelled with the MacSecKey it belongs to.
fn key_report(
    desired: &Desired,
    obs: &ObservedResource,
    prior: &PriorState,
    now: Timestamp,
) -> Vec<KeyStatus> {
    obs.keys
        .iter()
        .map(|k| {
            let owner = desired.keys.iter().flatten().find(|w| {
                w.material
                    .as_ref()
                    .is_ok_and(|m| m.matches(k) && k.state() != KeyState::Disassociated)
            });
            KeyStatus {
                ckn: k.ckn_normalized(),
                secret_arn: k.secret_arn.clone(),
                state: k.state.clone(),
                start_on: k.start_on.clone(),
                mac_sec_key: owner.map(|w| w.name.clone()),
                associated_since: (k.state() == KeyState::Associated)
                    .then(|| associated_since(k, prior, now).to_string()),
            }
        })
        .collect()
}

#[cfg(test)]
pub(crate) mod fixtures;
#[cfg(test)]
mod model;
#[cfg(test)]
mod properties;
#[cfg(test)]
mod scenarios;
