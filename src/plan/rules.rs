//! Rules 2 to 7 of a pass, in order. Each rule is a small function that returns the step it
//! takes, or `None` to hand on to the next; [`decide`] chains them. The names and the order
//! are those of README "How a reconcile decides" and docs/design.md:
//!
//! Rule 1 is validate (validate.rs); then 2 preconditions and the guard (an outgoing key
//! removed within the guard window comes back when the port goes Encryption Down), 3 lower
//! mode, 4 make, 5 raise, 6 break, 7 converged.
//!
//! Every rule reads a [`Situation`]: the observed resource and the [`KeyPicture`], the keys
//! on AWS set against the keys wanted.

use jiff::Timestamp;

use super::types::{
    Action, Association, Desired, KEYCHAIN_SIZE, PriorState, Reason, Removal, Requeue, Target,
};
use super::validate::{ValidKey, Validated};
use crate::crd::{CONFIRM_REMOVAL_ANNOTATION, OWNER_TAG, RemovedKey, RolledBack};
use crate::crd::{EncryptionMode, ResourceType};
use crate::observed::{KeyState, ObservedKey, ObservedResource, is_port_up};

/// The decision of one pass, before policy (ObserveOnly, drift) is applied.
pub(super) enum Step {
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

/// The keys on AWS set against the keys wanted. Keys match by CKN, case-insensitively, or
/// by managed secret ARN where either side has no CKN.
pub(super) struct KeyPicture<'a> {
    /// Keys not yet `disassociated`.
    live: Vec<&'a ObservedKey>,
    /// Each wanted key with the live key it matches, if any.
    matched: Vec<(ValidKey<'a>, Option<&'a ObservedKey>)>,
    /// Live keys that no wanted key matches; empty when keys are not managed.
    unwanted: Vec<&'a ObservedKey>,
    /// Live keys in state `associated`.
    associated: usize,
}

impl<'a> KeyPicture<'a> {
    fn new(v: &Validated<'a>, obs: &'a ObservedResource) -> Self {
        let live: Vec<&ObservedKey> = obs
            .keys
            .iter()
            .filter(|k| k.state() != KeyState::Disassociated)
            .collect();
        let matched: Vec<_> = v
            .wanted()
            .iter()
            .map(|w| (*w, live.iter().copied().find(|o| w.material.matches(o))))
            .collect();
        let unwanted = live
            .iter()
            .copied()
            .filter(|o| v.keys_managed() && !v.wanted().iter().any(|w| w.material.matches(o)))
            .collect();
        let associated = live
            .iter()
            .filter(|k| k.state() == KeyState::Associated)
            .count();
        KeyPicture {
            live,
            matched,
            unwanted,
            associated,
        }
    }

    /// The first wanted key whose live match is in `state`.
    fn wanted_in(&self, pred: impl Fn(KeyState) -> bool) -> Option<&ValidKey<'a>> {
        self.matched
            .iter()
            .find(|(_, o)| o.is_some_and(|o| pred(o.state())))
            .map(|(w, _)| w)
    }
}

/// What rules 3 to 7 look at, once the preconditions hold.
pub(super) struct Situation<'a> {
    obs: &'a ObservedResource,
    target: Target,
    /// The mode, when it is one of the documented values (a port without MACsec and no mode
    /// at all counts as no_encrypt).
    observed_mode: Option<EncryptionMode>,
    /// The mode as AWS spells it, for messages.
    mode_text: &'a str,
    keys: KeyPicture<'a>,
}

/// Rules 2 to 7, chained in order: the first that takes a step decides the pass.
pub(super) fn decide(
    v: &Validated<'_>,
    observed: Option<&ObservedResource>,
    prior: &PriorState,
    now: Timestamp,
) -> (Step, Option<Action>) {
    let (obs, claim) = match preconditions(v, observed, prior) {
        Ok(found) => found,
        Err(step) => return (*step, None),
    };
    let s = situation(v, obs);
    let step = guard(v, &s, prior, now)
        .or_else(|| lower_mode(v, &s))
        .or_else(|| make(&s))
        .or_else(|| raise(v, &s, prior))
        .or_else(|| break_old(v, &s, prior, now))
        .unwrap_or_else(|| converged(v, &s));
    (step, claim)
}

fn situation<'a>(v: &Validated<'a>, obs: &'a ObservedResource) -> Situation<'a> {
    let observed_mode = obs
        .mode()
        .or((!obs.mac_sec_capable && obs.encryption_mode.is_none())
            .then_some(EncryptionMode::NoEncrypt));
    Situation {
        obs,
        target: Target {
            id: obs.id.clone(),
            kind: obs.kind,
        },
        observed_mode,
        mode_text: obs.encryption_mode.as_deref().unwrap_or("none"),
        keys: KeyPicture::new(v, obs),
    }
}

/// Rule 2, preconditions: the resource is this DxConnection's to manage (in the cluster and
/// by its owner tag on AWS), exists, is not a LAG member, can do MACsec if asked to, and is
/// `available`. With it, the tag that claims the resource when it has none yet.
fn preconditions<'a>(
    v: &Validated<'_>,
    observed: Option<&'a ObservedResource>,
    prior: &PriorState,
) -> Result<(&'a ObservedResource, Option<Action>), Box<Step>> {
    let id = &v.desired.connection_id;
    if let Some(owner) = &v.desired.conflict_with {
        return Err(Box::new(Step::Blocked(
            Reason::Conflict,
            format!(
                "DxConnection {owner} already manages {id}; only the oldest DxConnection naming a connection acts on it"
            ),
        )));
    }
    let Some(obs) = observed else {
        return Err(Box::new(Step::Blocked(
            Reason::NotFound,
            format!(
                "Direct Connect has no connection or LAG {id}; check spec.connectionId, spec.region and the account of spec.accessRef's DxAccess (its roleArn)"
            ),
        )));
    };
    if let Some(lag) = &obs.lag_id {
        return Err(Box::new(Step::Blocked(
            Reason::ManagedByLag,
            format!(
                "{} is a member of LAG {lag}; MACsec of LAG members is managed on the LAG: set spec.connectionId to {lag}",
                obs.id
            ),
        )));
    }
    let claim = ownership(v, obs, prior)?;
    let wants_encryption = !v.wanted().is_empty()
        || matches!(
            v.mode(),
            Some(EncryptionMode::ShouldEncrypt | EncryptionMode::MustEncrypt)
        );
    if !obs.mac_sec_capable && wants_encryption {
        return Err(Box::new(Step::Blocked(
            Reason::NotMacSecCapable,
            format!(
                "{} was not ordered with MACsec (macSecCapable is false) and it cannot be enabled later; order a MACsec-capable port",
                obs.id
            ),
        )));
    }
    if !obs.is_available() {
        return Err(Box::new(Step::Wait(
            Reason::NotAvailable,
            format!(
                "{} is {}; changes wait until it is available",
                obs.id, obs.state
            ),
            Requeue::Soon,
        )));
    }
    Ok((obs, claim))
}

/// Who owns the resource on AWS, by its `dxmacsec.io/owner` tag. Another owner's tag is a
/// `Conflict` (another cluster or operator acts on it). An untagged resource is claimed with
/// the next step when it has no MACsec state, when this DxConnection managed it before the
/// tags, when it saw it in a LAG it has now left, or when the spec says `adopt`; one with
/// keys or encryption set by something else is a `Conflict` until then.
fn ownership(
    v: &Validated<'_>,
    obs: &ObservedResource,
    prior: &PriorState,
) -> Result<Option<Action>, Box<Step>> {
    let Some(me) = &v.desired.owner else {
        return Ok(None);
    };
    let id = &obs.id;
    match obs.tags.get(OWNER_TAG) {
        Some(owner) if owner == me => Ok(None),
        Some(other) => Err(Box::new(Step::Blocked(
            Reason::Conflict,
            format!(
                "{id} is managed by {other} (its AWS tag {OWNER_TAG}): another cluster or operator acts on it; delete the DxConnection there (it removes the tag), or the tag on AWS if that owner is gone"
            ),
        ))),
        None => {
            // An answer without ownerAccount cannot be tagged; ownership is not enforced.
            let Some(arn) = &obs.arn else {
                return Ok(None);
            };
            let has_state = obs
                .keys
                .iter()
                .any(|k| k.state() != KeyState::Disassociated)
                || matches!(
                    obs.mode(),
                    Some(EncryptionMode::ShouldEncrypt | EncryptionMode::MustEncrypt)
                );
            // A connection that left a LAG kept (or not) the LAG's keys and mode: it was
            // configured on the LAG, and this DxConnection saw it there.
            let left_lag = prior.left_lag.is_some() && obs.lag_id.is_none();
            if has_state && !v.desired.adopt && !prior.managed_before && !left_lag {
                return Err(Box::new(Step::Blocked(
                    Reason::Conflict,
                    format!(
                        "{id} has MACsec keys or encryption set and no {OWNER_TAG} tag: something else configured it (Terraform, Crossplane, a person); set spec.adopt: true to take it over (docs/migrating.md)"
                    ),
                )));
            }
            if me.len() > 256 {
                return Err(Box::new(Step::Blocked(
                    Reason::InvalidSpec,
                    format!(
                        "the {OWNER_TAG} tag value {me} is longer than the 256 characters AWS allows; shorten metadata.name (or the operator's --cluster-name)"
                    ),
                )));
            }
            Ok(Some(Action::Claim {
                target: Target {
                    id: id.clone(),
                    kind: obs.kind,
                },
                arn: arn.clone(),
                owner: me.clone(),
            }))
        }
    }
}

/// Outgoing keys removed less than the guard window ago, oldest first.
pub(super) fn recent_removals<'a>(
    desired: &Desired,
    prior: &'a PriorState,
    now: Timestamp,
) -> Vec<&'a RemovedKey> {
    prior
        .rotation
        .removed
        .iter()
        .filter(|r| {
            r.guarded_until(desired.guard)
                .is_some_and(|until| now < until)
        })
        .collect()
}

/// The removal rolled back for the spec and confirmation as they are now: while it holds,
/// those keys are not removed again.
pub(super) fn rolled_back<'a>(desired: &Desired, prior: &'a PriorState) -> Option<&'a RolledBack> {
    prior
        .rotation
        .rolled_back
        .as_ref()
        .filter(|rb| rb.generation == desired.generation && rb.confirmation == desired.confirmation)
}

fn is_removed_key(k: &ObservedKey, r: &RemovedKey) -> bool {
    k.secret_arn.as_deref() == Some(r.secret_arn.as_str())
        || (r.ckn.is_some() && k.ckn_normalized() == r.ckn)
}

/// The guard: an outgoing key was removed within the guard window of a rotation, and now
/// the port reports Encryption Down. The router does not use the new key; the removed one
/// comes back at once (by its managed secret), before anything else is done.
fn guard(v: &Validated<'_>, s: &Situation<'_>, prior: &PriorState, now: Timestamp) -> Option<Step> {
    let encrypting = matches!(
        s.observed_mode,
        Some(EncryptionMode::ShouldEncrypt | EncryptionMode::MustEncrypt)
    );
    if v.wanted().is_empty() || !encrypting || s.obs.port_up() {
        return None;
    }
    let down = port_down_text(s.obs);
    for r in recent_removals(v.desired, prior, now) {
        let name = r.ckn.as_deref().unwrap_or(&r.secret_arn);
        match s.keys.live.iter().find(|k| is_removed_key(k, r)) {
            Some(k) if k.state() == KeyState::Disassociating => {
                return Some(Step::Wait(
                    Reason::RotationRolledBack,
                    format!(
                        "{down} since key {name} was removed: it is associated again as soon as AWS has finished removing it"
                    ),
                    Requeue::Soon,
                ));
            }
            Some(_) => {}
            None if s.keys.live.len() >= KEYCHAIN_SIZE => {
                return Some(Step::Blocked(
                    Reason::RotationRolledBack,
                    format!(
                        "{down} since key {name} was removed, and the keychain is full so it cannot be associated again; configure a wanted key on the router"
                    ),
                ));
            }
            None => {
                let fallback = v
                    .desired
                    .restorable
                    .iter()
                    .find(|m| m.ckn.as_ref().map(|c| c.as_str()) == r.ckn.as_deref())
                    .and_then(|m| Some(Association::CknCak(m.ckn.clone()?, m.cak.clone()?)));
                return Some(Step::Act(
                    Action::Restore {
                        target: s.target.clone(),
                        secret_arn: r.secret_arn.clone(),
                        ckn: r.ckn.clone(),
                        fallback,
                    },
                    format!(
                        "{down} since key {name} was removed at {}: associating it again, the router does not use the new key",
                        r.removed_at
                    ),
                ));
            }
        }
    }
    None
}

/// Rule 3, lower mode: turning encryption off or down sets the mode first, so AWS never flips
/// it itself and no key removal happens under must_encrypt.
fn lower_mode(v: &Validated<'_>, s: &Situation<'_>) -> Option<Step> {
    let mode @ (EncryptionMode::NoEncrypt | EncryptionMode::ShouldEncrypt) = v.mode()? else {
        return None;
    };
    (s.observed_mode != Some(mode)).then(|| {
        Step::Act(
            Action::SetMode {
                target: s.target.clone(),
                mode,
            },
            format!("encryptionMode is {}; setting {mode}", s.mode_text),
        )
    })
}

/// Rule 4, make: associate each wanted key that is missing (making room in a full keychain)
/// and wait until every wanted key is `associated`.
fn make(s: &Situation<'_>) -> Option<Step> {
    let keys = &s.keys;
    if let Some(w) = keys.wanted_in(|st| st == KeyState::Disassociating) {
        return Some(Step::Wait(
            Reason::Progressing,
            format!(
                "MacSecKey {} is being disassociated by someone else; it is associated again once AWS has removed it",
                w.name
            ),
            Requeue::Soon,
        ));
    }
    if let Some((w, _)) = keys.matched.iter().find(|(_, o)| o.is_none()) {
        if keys.live.len() >= KEYCHAIN_SIZE {
            return Some(make_room(s, w.name));
        }
        let Some(with) = w.material.association() else {
            return Some(Step::Blocked(
                Reason::KeyNotReady,
                format!(
                    "MacSecKey {} has neither a CAK nor a managed secret ARN",
                    w.name
                ),
            ));
        };
        return Some(Step::Act(
            Action::Associate {
                target: s.target.clone(),
                key_name: w.name.to_string(),
                ckn: w.material.ckn.clone(),
                with,
            },
            format!("associating MacSecKey {}", w.name),
        ));
    }
    keys.wanted_in(|st| st != KeyState::Associated).map(|w| {
        Step::Wait(
            Reason::Progressing,
            format!("waiting for MacSecKey {} to become associated", w.name),
            Requeue::Soon,
        )
    })
}

/// Keychain full: remove the oldest unwanted key, never the only associated one.
fn make_room(s: &Situation<'_>, waiting_key: &str) -> Step {
    let unwanted = &s.keys.unwanted;
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
            .filter(|k| !(k.state() == KeyState::Associated && s.keys.associated <= 1))
            .collect(),
    );
    match candidates.first() {
        Some(key) => disassociate(&s.target, key, Removal::KeychainFull),
        None => Step::Wait(
            Reason::Progressing,
            format!(
                "keychain full ({KEYCHAIN_SIZE} keys) and the only associated key is not wanted; it stays until another key is associated, then MacSecKey {waiting_key} follows"
            ),
            Requeue::Soon,
        ),
    }
}

/// Rule 5, raise: must_encrypt goes last, once a key is associated and (with
/// `requireEncryptionUp`) the port is up, through should_encrypt so MACsec can come up.
fn raise(v: &Validated<'_>, s: &Situation<'_>, prior: &PriorState) -> Option<Step> {
    if v.mode() != Some(EncryptionMode::MustEncrypt)
        || s.observed_mode == Some(EncryptionMode::MustEncrypt)
    {
        return None;
    }
    let mode_text = s.mode_text;
    let drift_note = if prior.converged && s.observed_mode == Some(EncryptionMode::ShouldEncrypt) {
        " (AWS switched it to should_encrypt, as it does when the last key is removed)"
    } else {
        ""
    };
    let set = |mode, message| {
        Step::Act(
            Action::SetMode {
                target: s.target.clone(),
                mode,
            },
            message,
        )
    };
    Some(if s.keys.associated == 0 {
        Step::Wait(
            Reason::Progressing,
            format!(
                "encryptionMode is {mode_text}{drift_note}; must_encrypt is set once a key is associated"
            ),
            Requeue::Soon,
        )
    } else if !v.desired.require_encryption_up || s.obs.port_up() {
        set(
            EncryptionMode::MustEncrypt,
            format!("a key is associated; setting must_encrypt (was {mode_text}){drift_note}"),
        )
    } else if s.observed_mode != Some(EncryptionMode::ShouldEncrypt) {
        // MACsec is only negotiated under should_encrypt or must_encrypt: go through
        // should_encrypt, which falls back to clear text, so the port can come up.
        set(
            EncryptionMode::ShouldEncrypt,
            format!(
                "a key is associated; setting should_encrypt (was {mode_text}) so MACsec can come up before must_encrypt"
            ),
        )
    } else {
        Step::Wait(
            Reason::WaitingForEncryptionUp,
            format!(
                "{}; must_encrypt is withheld until the port reports Encryption Up: configure the same CKN/CAK on your router{drift_note}",
                port_down_text(s.obs)
            ),
            Requeue::Soon,
        )
    })
}

/// Rule 6, break: remove unwanted keys once every wanted key is associated (rule 4), the
/// port is up under must_encrypt and the rotation overlap has passed; never the last key
/// under must_encrypt.
fn break_old(
    v: &Validated<'_>,
    s: &Situation<'_>,
    prior: &PriorState,
    now: Timestamp,
) -> Option<Step> {
    let unwanted = &s.keys.unwanted;
    if unwanted.is_empty() {
        let disassociating = s
            .keys
            .live
            .iter()
            .any(|k| k.state() == KeyState::Disassociating);
        return (disassociating && v.keys_managed()).then(still_disassociating);
    }
    let effective_must = v.mode() == Some(EncryptionMode::MustEncrypt)
        || (v.mode().is_none() && s.observed_mode == Some(EncryptionMode::MustEncrypt));
    let wanted_none = v.wanted().is_empty();
    if effective_must && wanted_none {
        return Some(Step::Blocked(
            Reason::InvalidSpec,
            format!(
                "spec.keys is empty but {} is must_encrypt: removing the last key takes the link down; set spec.encryptionMode to should_encrypt or no_encrypt first",
                s.obs.id
            ),
        ));
    }
    if effective_must && !s.obs.port_up() {
        return Some(Step::Wait(
            Reason::WaitingForEncryptionUp,
            format!(
                "{}; old keys stay until the port reports Encryption Up: configure the new key on your router",
                port_down_text(s.obs)
            ),
            Requeue::Soon,
        ));
    }
    if let Some(rb) = rolled_back(v.desired, prior)
        && unwanted
            .iter()
            .any(|k| rb.keys.iter().any(|r| is_removed_key(k, r)))
    {
        return Some(Step::Blocked(
            Reason::RotationRolledBack,
            rolled_back_text(v, s.obs, rb),
        ));
    }
    if !wanted_none && let Some(wait) = overlap_wait(v, s, prior, now) {
        return Some(wait);
    }
    let confirmed = v.desired.confirmation.is_some()
        && v.desired.confirmation != prior.rotation.confirmation_used;
    if v.desired.manual_confirmation && !wanted_none && !confirmed {
        return Some(Step::Wait(
            Reason::WaitingForConfirmation,
            format!(
                "every wanted key is associated and the port reports Encryption Up (with some key: AWS does not say which); {} outgoing key(s) are removed once you confirm that the router uses a new key: annotate this DxConnection with {CONFIRM_REMOVAL_ANNOTATION}=<a new value>",
                unwanted.len()
            ),
            Requeue::Resync,
        ));
    }
    let removable = oldest_first(
        unwanted
            .iter()
            .copied()
            .filter(|k| k.state() != KeyState::Disassociating)
            .collect(),
    );
    Some(match removable.first() {
        Some(key) => disassociate(&s.target, key, Removal::Unwanted),
        None => still_disassociating(),
    })
}

fn rolled_back_text(v: &Validated<'_>, obs: &ObservedResource, rb: &RolledBack) -> String {
    let removed: Vec<&str> = rb
        .keys
        .iter()
        .map(|r| r.ckn.as_deref().unwrap_or(&r.secret_arn))
        .collect();
    let wanted: Vec<String> = v
        .wanted()
        .iter()
        .map(|w| match &w.material.ckn {
            Some(c) => format!("CKN {c} (MacSecKey {})", w.name),
            None => format!("MacSecKey {}", w.name),
        })
        .collect();
    format!(
        "rotation rolled back at {}: {} reported Encryption Down after key {} was removed, so it was associated again; the router does not use {}. Configure it on the router, then annotate this DxConnection with {CONFIRM_REMOVAL_ANNOTATION}=<a new value> (or change the spec) to remove the old key again",
        rb.at,
        obs.id,
        removed.join(", "),
        wanted.join(" or ")
    )
}

fn still_disassociating() -> Step {
    Step::Wait(
        Reason::Progressing,
        "waiting for AWS to finish disassociating old keys".into(),
        Requeue::Soon,
    )
}

/// The rotation overlap, counted from when the last wanted key was first seen associated: a
/// wait while it runs.
fn overlap_wait(
    v: &Validated<'_>,
    s: &Situation<'_>,
    prior: &PriorState,
    now: Timestamp,
) -> Option<Step> {
    let since = s
        .keys
        .matched
        .iter()
        .filter_map(|(_, o)| o.map(|o| associated_since(o, prior, now)))
        .max()
        .unwrap_or(now);
    let until = since
        .checked_add(jiff::SignedDuration::try_from(v.desired.overlap).unwrap_or_default())
        .unwrap_or(since);
    if now >= until {
        return None;
    }
    let left = std::time::Duration::try_from(until.duration_since(now)).unwrap_or_default();
    Some(Step::Wait(
        Reason::Progressing,
        format!(
            "every wanted key is associated; {} old key(s) are removed after the rotation overlap, at {until}",
            s.keys.unwanted.len()
        ),
        Requeue::After(left.max(std::time::Duration::from_secs(1))),
    ))
}

/// Rule 7, converged: AWS matches the spec. Ready only when the link is encrypted; a port
/// that should carry MACsec and reports Encryption Down is `EncryptionDown`.
fn converged(v: &Validated<'_>, s: &Situation<'_>) -> Step {
    match encryption_down(v, s) {
        Some(message) => Step::EncryptionDown(message),
        None => Step::Converged(converged_message(s.obs, s.keys.associated)),
    }
}

/// The ports (a LAG's members, each under its own mode or else the LAG's) that report
/// Encryption Down while they should carry MACsec: under must_encrypt (no traffic), or under
/// should_encrypt with `requireEncryptionUp` and a key associated (clear text). The message
/// says what AWS reports and what to check.
fn encryption_down(v: &Validated<'_>, s: &Situation<'_>) -> Option<String> {
    let obs = s.obs;
    let matters = |mode: Option<EncryptionMode>| match mode {
        Some(EncryptionMode::MustEncrypt) => true,
        Some(EncryptionMode::ShouldEncrypt) => {
            v.desired.require_encryption_up && s.keys.associated > 0
        }
        _ => false,
    };
    let down: Vec<(&str, EncryptionMode)> = match obs.kind {
        ResourceType::Connection | ResourceType::Interconnect => (!obs.port_up())
            .then_some(obs.mode())
            .flatten()
            .filter(|m| matters(Some(*m)))
            .map(|m| (obs.id.as_str(), m))
            .into_iter()
            .collect(),
        ResourceType::Lag => obs
            .members
            .iter()
            .filter(|m| !is_port_up(m.port_encryption_status.as_deref()))
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
    let ports = down
        .iter()
        .map(|(id, m)| format!("{id} ({m})"))
        .collect::<Vec<_>>()
        .join(", ");
    let effect = if down.iter().any(|(_, m)| *m == EncryptionMode::MustEncrypt) {
        "under must_encrypt the link carries no traffic"
    } else {
        "under should_encrypt traffic flows in clear text (spec.requireEncryptionUp is true)"
    };
    let subject = match obs.kind {
        ResourceType::Connection | ResourceType::Interconnect => {
            format!("{ports} reports Encryption Down")
        }
        ResourceType::Lag => format!("LAG {} members report Encryption Down: {ports}", obs.id),
    };
    Some(format!(
        "{subject}; {effect}. {}. Check that the customer router has one of these CKN/CAK pairs configured on the port and MACsec enabled on its side; the operator calls nothing until the port reports Encryption Up",
        associated_keys_text(v, obs)
    ))
}

/// The keys associated on AWS with the MacSecKey each belongs to, for messages.
fn associated_keys_text(v: &Validated<'_>, obs: &ObservedResource) -> String {
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
            match v.wanted().iter().find(|w| w.material.matches(k)) {
                Some(w) => format!("{id} (MacSecKey {})", w.name),
                None => format!("{id} (not in spec.keys)"),
            }
        })
        .collect();
    if keys.is_empty() {
        "no key is associated on AWS".to_string()
    } else {
        format!("associated on AWS: {}", keys.join(", "))
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

pub(super) fn associated_since(key: &ObservedKey, prior: &PriorState, now: Timestamp) -> Timestamp {
    prior
        .associated_since
        .get(&key.identity())
        .copied()
        .unwrap_or(now)
}

fn port_down_text(obs: &ObservedResource) -> String {
    match obs.kind {
        ResourceType::Connection | ResourceType::Interconnect => format!(
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
