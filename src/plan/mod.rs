//! The reconcile decision: `plan(desired, observed, prior, now) -> Plan`.
//!
//! Pure and synchronous: no I/O, no clock, no randomness. Given what the DxConnection asks
//! for ([`Desired`]), what Direct Connect reports ([`ObservedResource`]) and what earlier
//! passes remembered ([`PriorState`]), it returns at most one step of mutations, the
//! conditions to report and when to look again. The async shells (controller, CLI) execute
//! the step, re-observe and call it again.
//!
//! The pipeline: [`validate`](validate::validate) turns the spec into a `Validated` (rule 1),
//! then `rules::decide` chains rules 2 to 7 (preconditions, lower mode, make, raise, break,
//! converged), each a small named function; `plan` turns the step into a [`Plan`] under the
//! management policy. A deletion is planned the same way (`deletion`): the spec its
//! `deletionPolicy` leaves, then the owner tag's release. README "How a reconcile decides" and docs/design.md list the same
//! rules in the same order.

mod deletion;
mod rules;
mod types;
mod validate;

use jiff::Timestamp;

use crate::crd::{KeyStatus, ManagementPolicy, RemovedKey, RolledBack, RotationStatus};
use crate::observed::{KeyState, ObservedResource};
use rules::Step;

pub use types::*;

// The tests name these through `super::*`.
#[cfg(test)]
use crate::crd::EncryptionMode;

/// Decides the next step for one DxConnection. See the module docs.
pub fn plan(
    desired: &Desired,
    observed: Option<&ObservedResource>,
    prior: &PriorState,
    now: Timestamp,
) -> Plan {
    if let Some(deletion) = &desired.deletion {
        return deletion::plan(desired, deletion, observed, now);
    }
    let keys = observed
        .map(|o| key_report(desired, o, prior, now))
        .unwrap_or_default();
    let (step, claim) = match validate::validate(desired) {
        Ok(valid) => rules::decide(&valid, observed, prior, now),
        Err(validate::Invalid::Blocked(reason, message)) => (Step::Blocked(reason, message), None),
        // Not a person's problem: Ready False, not Stalled, and read again soon.
        Err(validate::Invalid::Unreadable(message)) => (
            Step::Wait(Reason::KeyNotReady, message, Requeue::Soon),
            None,
        ),
    };
    let mut plan = Plan {
        actions: Vec::new(),
        withheld: Vec::new(),
        ready: false,
        synced: true,
        reason: Reason::Progressing,
        message: String::new(),
        requeue: Requeue::Soon,
        keys,
        rotation: RotationStatus::default(),
        guarding: observed.is_some() && !rules::recent_removals(desired, prior, now).is_empty(),
    };
    match step {
        Step::Converged(message) => {
            plan.ready = true;
            (plan.reason, plan.message, plan.requeue) =
                (Reason::Converged, message, Requeue::Resync);
        }
        Step::EncryptionDown(message) => {
            (plan.reason, plan.message, plan.requeue) = (
                Reason::EncryptionDown,
                message,
                Requeue::After(ENCRYPTION_DOWN_RECHECK),
            );
        }
        Step::Wait(reason, message, requeue) => {
            (plan.reason, plan.message, plan.requeue) = (reason, message, requeue);
        }
        Step::Blocked(reason, message) => {
            plan.synced = false;
            // A missing key may appear without a spec change; everything else needs an edit.
            let requeue = if reason == Reason::KeyNotReady {
                Requeue::Soon
            } else {
                Requeue::Resync
            };
            (plan.reason, plan.message, plan.requeue) = (reason, message, requeue);
        }
        Step::Act(action, message) => act(&mut plan, desired, prior, action, message),
    }
    // The owner tag goes first, with whatever the step does (a blocked step does nothing).
    if let Some(claim) = claim
        && plan.synced
        && desired.policy == ManagementPolicy::Manage
    {
        plan.actions.insert(0, claim);
    }
    if plan.guarding && plan.requeue == Requeue::Resync {
        // The port is watched until the guard window ends.
        plan.requeue = Requeue::Soon;
    }
    plan.rotation = next_rotation(desired, prior, &plan.actions, now);
    plan
}

/// The rotation's memory once `actions` are made: removals older than the guard window and
/// a rollback that no longer holds are forgotten; an outgoing key removed now is watched; a
/// key restored now is remembered as rolled back.
fn next_rotation(
    desired: &Desired,
    prior: &PriorState,
    actions: &[Action],
    now: Timestamp,
) -> RotationStatus {
    let mut next = RotationStatus {
        removed: rules::recent_removals(desired, prior, now)
            .into_iter()
            .cloned()
            .collect(),
        rolled_back: rules::rolled_back(desired, prior).cloned(),
        confirmation_used: prior.rotation.confirmation_used.clone(),
    };
    let rotating = desired.keys.as_ref().is_some_and(|k| !k.is_empty());
    for action in actions {
        match action {
            Action::Disassociate {
                secret_arn,
                ckn,
                why: Removal::Unwanted,
                ..
            } if rotating => {
                if !desired.guard.is_zero() {
                    next.removed.push(RemovedKey {
                        ckn: ckn.clone(),
                        secret_arn: secret_arn.clone(),
                        removed_at: now.to_string(),
                    });
                }
                if desired.manual_confirmation {
                    next.confirmation_used = desired.confirmation.clone();
                }
            }
            Action::Restore { secret_arn, .. } => {
                let (restored, kept) = std::mem::take(&mut next.removed)
                    .into_iter()
                    .partition(|r| &r.secret_arn == secret_arn);
                next.removed = kept;
                next.rolled_back
                    .get_or_insert_with(|| RolledBack {
                        keys: Vec::new(),
                        at: now.to_string(),
                        generation: desired.generation,
                        confirmation: desired.confirmation.clone(),
                    })
                    .keys
                    .extend::<Vec<RemovedKey>>(restored);
            }
            _ => {}
        }
    }
    next
}

/// A step that calls AWS: done under Manage (told as drift when the previous pass had
/// converged), withheld and reported under ObserveOnly.
fn act(plan: &mut Plan, desired: &Desired, prior: &PriorState, action: Action, message: String) {
    if desired.policy == ManagementPolicy::ObserveOnly {
        plan.reason = Reason::DriftDetected;
        plan.message = format!("ObserveOnly: AWS differs from the spec; would {action}");
        plan.withheld.push(action);
        plan.requeue = Requeue::Resync;
    } else if matches!(action, Action::Restore { .. }) {
        plan.reason = Reason::RotationRolledBack;
        plan.message = message;
        plan.actions.push(action);
    } else if prior.converged {
        plan.reason = Reason::DriftDetected;
        plan.message = format!("AWS changed outside the operator; repairing: {message}");
        plan.actions.push(action);
    } else {
        plan.message = message;
        plan.actions.push(action);
    }
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
                    .then(|| rules::associated_since(k, prior, now).to_string()),
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
