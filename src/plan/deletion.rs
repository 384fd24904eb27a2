//! A deletion is a pass like any other: the planner works towards what the DxConnection's
//! `deletionPolicy` leaves on AWS, and releases the owner tag as the last step.

use jiff::Timestamp;

use super::{
    Action, Deletion, Desired, KeyMaterial, Plan, PriorState, Reason, Requeue, Target, WantedKey,
};
use crate::crd::{EncryptionMode, KeyStatus, OWNER_TAG, RotationStatus};
use crate::keys::Ckn;
use crate::observed::{KeyState, ObservedKey, ObservedResource};

/// The next step of a deletion: the `deletionPolicy`'s changes first, then the release of
/// this DxConnection's owner tag. Ready, with nothing to do, once both are done (or Direct
/// Connect no longer knows the resource).
pub(super) fn plan(
    desired: &Desired,
    deletion: &Deletion,
    observed: Option<&ObservedResource>,
    now: Timestamp,
) -> Plan {
    let id = &desired.connection_id;
    let Some(obs) = observed else {
        return settled(format!(
            "Direct Connect no longer knows {id}: nothing is left to remove"
        ));
    };
    let mut plan = match deletion {
        Deletion::Retain => settled(format!(
            "deletionPolicy Retain: the keys and mode of {id} are left as they are"
        )),
        Deletion::Disassociate { managed } => super::plan(
            &leave_behind(desired, obs, managed),
            observed,
            &PriorState::default(),
            now,
        ),
    };
    if plan.spec_met()
        && plan.actions.is_empty()
        && let Some(release) = release(desired, obs)
    {
        plan.ready = false;
        (plan.reason, plan.requeue) = (Reason::Progressing, Requeue::Soon);
        plan.message = format!("{}; {release}", plan.message);
        plan.actions.push(release);
    }
    plan
}

/// Nothing to do: ready, looked at again only at the resync.
fn settled(message: String) -> Plan {
    Plan {
        actions: Vec::new(),
        withheld: Vec::new(),
        ready: true,
        synced: true,
        reason: Reason::Converged,
        message,
        requeue: Requeue::Resync,
        keys: Vec::new(),
        rotation: RotationStatus::default(),
        guarding: false,
    }
}

/// The removal of the owner tag, when the resource carries this DxConnection's.
fn release(desired: &Desired, obs: &ObservedResource) -> Option<Action> {
    let owner = desired.owner.as_ref()?;
    let arn = obs.arn.as_ref()?;
    (obs.tags.get(OWNER_TAG) == Some(owner)).then(|| Action::Release {
        target: Target {
            id: obs.id.clone(),
            kind: obs.kind,
        },
        arn: arn.clone(),
        owner: owner.clone(),
    })
}

/// What `deletionPolicy: Disassociate` leaves on `obs`, as a spec: the keys this
/// DxConnection managed (`managed`, the `keys[]` of its status that name a MacSecKey) are
/// to go; every other key on AWS stays as it is, and must_encrypt is lowered to
/// should_encrypt first when no key would remain (so AWS does not flip it itself).
/// Ownership is not checked: the owner tag is released after.
fn leave_behind(desired: &Desired, obs: &ObservedResource, managed: &[KeyStatus]) -> Desired {
    let ours: Vec<(Option<&str>, Option<&str>)> = managed
        .iter()
        .filter(|k| k.mac_sec_key.is_some())
        .map(|k| (k.ckn.as_deref(), k.secret_arn.as_deref()))
        .collect();
    let is_ours = |k: &ObservedKey| {
        ours.iter().any(|(ckn, arn)| {
            (ckn.is_some() && *ckn == k.ckn_normalized().as_deref())
                || (arn.is_some() && *arn == k.secret_arn.as_deref())
        })
    };
    let keep: Vec<WantedKey> = obs
        .keys
        .iter()
        .filter(|k| k.state() != KeyState::Disassociated && !is_ours(k))
        .filter_map(|k| {
            Some(WantedKey {
                name: "(kept: not managed by this DxConnection)".into(),
                material: Ok(KeyMaterial::managed_secret(
                    k.secret_arn.clone()?,
                    k.ckn.as_deref().and_then(|c| Ckn::parse("ckn", c).ok()),
                )),
            })
        })
        .collect();
    let mode = (keep.is_empty() && obs.mode() == Some(EncryptionMode::MustEncrypt))
        .then_some(EncryptionMode::ShouldEncrypt);
    Desired {
        encryption_mode: mode,
        keys: Some(keep),
        ..Desired::new(&desired.connection_id)
    }
}
