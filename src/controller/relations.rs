//! Pure functions of the controllers: how objects relate (which DxConnections use a key,
//! which one owns a connection, what a key's status learns from them), the planner's memory
//! from status, and whether a status is worth writing. No I/O: the reconcilers in
//! `connection.rs` and `key.rs` call these and do the reading and writing.

use std::sync::Arc;

use jiff::Timestamp;
use kube::core::DeserializeGuard;
use kube::{Resource, ResourceExt};

use crate::access::Access;
use crate::aws::Scope;
use crate::conditions::{ConditionType, ConditionValue, set_condition, set_standing};
use crate::crd::{DxConnection, DxConnectionStatus, MacSecKey, MacSecKeyStatus};
use crate::desired;
use crate::engine::Standing;
use crate::keys::Ckn;
use crate::plan::{KeyMaterial, PriorState, Reason};

/// Whether `dxc` lists the MacSecKey `name` in `spec.keys`, or its scheduled rotation lists
/// it for the router (`status.router.keys`).
pub(crate) fn references(dxc: &DxConnection, name: &str) -> bool {
    key_names(dxc).any(|k| k == name)
}

/// The MacSecKeys `dxc` names: `spec.keys` and, with a schedule, `status.router.keys`.
pub(crate) fn key_names(dxc: &DxConnection) -> impl Iterator<Item = &str> {
    let scheduled = dxc.spec.rotation.schedule.is_some();
    dxc.spec
        .keys
        .iter()
        .flatten()
        .map(|k| k.name.as_str())
        .chain(
            dxc.status
                .iter()
                .filter(move |_| scheduled)
                .flat_map(|s| s.router.iter())
                .flat_map(|r| r.keys.iter())
                .map(|k| k.mac_sec_key.as_str()),
        )
}

/// The DxConnection that owns `dxc`'s AWS resource when it is not `dxc` itself
/// ([`desired::conflict_owner`]: the oldest naming it).
pub(crate) fn conflict_owner(
    dxc: &DxConnection,
    scope: &Scope,
    all: &[Arc<DeserializeGuard<DxConnection>>],
    access: &Access,
) -> Option<String> {
    let candidates = valid(all).map(|d| (0, d));
    desired::conflict_owner(dxc, 0, scope, candidates, access)
}

/// The planner's memory, from the status written last time.
pub(crate) fn prior_of(dxc: &DxConnection) -> PriorState {
    let Some(status) = &dxc.status else {
        return PriorState::default();
    };
    let converged = dxc
        .condition(ConditionType::Ready)
        .is_some_and(|c| c.status == "True" && c.observed_generation == dxc.metadata.generation);
    PriorState::from_status(status, converged)
}

/// The status of a DxConnection that cannot be acted on before reaching AWS.
pub(crate) fn blocked_status(
    dxc: &DxConnection,
    reason: Reason,
    message: &str,
) -> DxConnectionStatus {
    let mut status = dxc.status.clone().unwrap_or_default();
    let now = Timestamp::now();
    let generation = dxc.metadata.generation;
    status.observed_generation = generation;
    let value = ConditionValue::new(false, reason, message);
    for type_ in [ConditionType::Ready, ConditionType::Synced] {
        set_condition(&mut status.conditions, type_, &value, generation, now);
    }
    set_standing(
        &mut status.conditions,
        Standing::NeedsAPerson,
        &value,
        generation,
        now,
    );
    status
}

/// Whether a status is worth writing: only when something other than `lastSyncTime` changed.
/// Every write is a watch event that reconciles the object again and costs the API server a
/// request, so a steady state writes nothing at all (the reconcile metrics show each resync).
pub(crate) fn status_changed(old: Option<&DxConnectionStatus>, new: &DxConnectionStatus) -> bool {
    let Some(old) = old else {
        return true;
    };
    let mut same_sync = old.clone();
    same_sync.last_sync_time = new.last_sync_time.clone();
    same_sync != *new
}

/// `namespace/name`-free names of the DxConnections in the key's namespace that list it.
pub(crate) fn used_by(key: &MacSecKey, all: &[Arc<DeserializeGuard<DxConnection>>]) -> Vec<String> {
    let ns = key.namespace();
    let name = key.name_any();
    let mut users: Vec<String> = valid(all)
        .filter(|d| d.namespace() == ns && references(d, &name))
        .map(|d| d.name_any())
        .collect();
    users.sort();
    users
}

/// The DxConnection of the key's namespace that removed it (by CKN) as an outgoing key less
/// than its guard window ago, and when that window ends (the latest, if several).
pub(crate) fn guarded_by(
    key: &MacSecKey,
    all: &[Arc<DeserializeGuard<DxConnection>>],
    now: Timestamp,
) -> Option<(String, Timestamp)> {
    let ckn = key.status.as_ref()?.ckn.clone()?;
    valid(all)
        .filter(|d| d.namespace() == key.namespace())
        .filter_map(|d| {
            let guard = std::time::Duration::from_secs(u64::from(d.spec.rotation.guard_seconds));
            let until = d
                .status
                .as_ref()?
                .rotation
                .as_ref()?
                .removed
                .iter()
                .filter(|r| r.ckn.as_deref() == Some(ckn.as_str()))
                .filter_map(|r| r.guarded_until(guard))
                .max()?;
            (until > now).then(|| (d.name_any(), until))
        })
        .max_by_key(|(_, until)| *until)
}

/// The managed secret ARN and CKN AWS reported for this key on any DxConnection using it.
pub(crate) fn learned_from_connections(
    key: &MacSecKey,
    ckn: Option<&Ckn>,
    all: &[Arc<DeserializeGuard<DxConnection>>],
) -> (Option<String>, Option<String>) {
    let ns = key.namespace();
    let name = key.name_any();
    let spec_arn = key.spec.direct_connect_secret_arn.as_deref();
    valid(all)
        .filter(|d| d.namespace() == ns)
        .flat_map(|d| d.status.iter().flat_map(|s| s.keys.iter()))
        .filter(|k| k.mac_sec_key.as_deref() == Some(name.as_str()))
        .find(|k| match (ckn, spec_arn) {
            (Some(c), _) => k.ckn.as_deref() == Some(c.as_str()),
            (None, Some(arn)) => k.secret_arn.as_deref() == Some(arn),
            (None, None) => false,
        })
        .map(|k| (k.secret_arn.clone(), k.ckn.clone()))
        .unwrap_or_default()
}

/// Where a Secrets Manager source is read: `spec.secretsManager.region` when set, else the
/// region of a DxConnection using the key, with that DxConnection's role; without a user the
/// operator's own credentials in its default region, if the key's namespace may use them.
/// `None` when none is known or allowed.
pub(crate) fn secrets_scope(
    key: &MacSecKey,
    users: &[String],
    all: &[Arc<DeserializeGuard<DxConnection>>],
    access: &Access,
) -> Option<Scope> {
    let user_scope = valid(all)
        .filter(|d| users.contains(&d.name_any()) && d.namespace() == key.namespace())
        .find_map(|d| access.scope_of(d).ok());
    let own_allowed = access.allows_own_credentials(&key.namespace().unwrap_or_default());
    let own_region = key
        .spec
        .secrets_manager
        .as_ref()
        .and_then(|s| s.region.clone());
    match (own_region, user_scope) {
        (Some(region), Some(scope)) => Some(Scope {
            region,
            role_arn: scope.role_arn,
        }),
        (Some(region), None) => own_allowed.then_some(Scope {
            region,
            role_arn: None,
        }),
        (None, Some(scope)) => Some(scope),
        (None, None) => access
            .default_region()
            .filter(|_| own_allowed)
            .map(|region| Scope {
                region: region.to_string(),
                role_arn: None,
            }),
    }
}

/// The CKN and the managed secret ARN, as read from the material and learned from the
/// DxConnections using the key.
pub(crate) fn learn(
    key: &MacSecKey,
    status: &mut MacSecKeyStatus,
    material: &KeyMaterial,
    all: &[Arc<DeserializeGuard<DxConnection>>],
) {
    let (arn, learned_ckn) = learned_from_connections(key, material.ckn.as_ref(), all);
    status.ckn = material
        .ckn
        .as_ref()
        .map(|c| c.to_string())
        .or(learned_ckn)
        .or(status.ckn.take());
    // The CAK's fingerprint, kept while the CKN stays (resolve refuses a changed CAK), made
    // afresh for a new CKN.
    let previous_ckn = key.status.as_ref().and_then(|s| s.ckn.as_deref());
    if let (Some(ckn), Some(cak)) = (&material.ckn, &material.cak)
        && (status.cak_fingerprint.is_none() || previous_ckn != Some(ckn.as_str()))
    {
        status.cak_fingerprint = Some(cak.fingerprint());
    }
    if arn.is_some() {
        status.direct_connect_secret_arn = arn;
    } else if material.ckn.is_some()
        && status.ckn != key.status.as_ref().and_then(|s| s.ckn.clone())
    {
        // New key material: the old managed secret belongs to the old CKN.
        status.direct_connect_secret_arn = None;
    }
}

/// Only the DxConnections that deserialized.
pub(crate) fn valid(
    all: &[Arc<DeserializeGuard<DxConnection>>],
) -> impl Iterator<Item = &DxConnection> {
    all.iter().filter_map(|g| g.0.as_ref().ok())
}

/// What DxConnections read of a MacSecKey: its identity, spec (generation), deletion and the
/// CKN and managed secret ARN learned in its status. Written out rather than taken from
/// kube-runtime's `predicate_filter`, which can only feed a controller through the unstable
/// `watches_stream`. A key removed for good while still referenced is found at the
/// DxConnections' next requeue (its finalizer keeps a key in use from going).
pub(crate) fn key_relevance(key: &DeserializeGuard<MacSecKey>) -> KeyRelevance {
    let meta = key.meta();
    let status = key.0.as_ref().ok().and_then(|k| k.status.as_ref());
    KeyRelevance {
        uid: meta.uid.clone(),
        generation: meta.generation,
        deleting: meta.deletion_timestamp.is_some(),
        ckn: status.and_then(|s| s.ckn.clone()),
        managed_secret_arn: status.and_then(|s| s.direct_connect_secret_arn.clone()),
        // A scheduled rotation waits for its new key's material, and reports why it fails.
        ready: key.0.as_ref().is_ok_and(MacSecKey::validated),
    }
}

/// What of a MacSecKey matters to the DxConnections that use it ([`key_relevance`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KeyRelevance {
    uid: Option<String>,
    generation: Option<i64>,
    deleting: bool,
    ckn: Option<String>,
    managed_secret_arn: Option<String>,
    ready: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A MacSecKey removed in a rotation is guarded until the DxConnection's guard window
    /// ends, by CKN, in its own namespace only.
    #[test]
    fn a_removed_key_is_guarded_for_the_window() {
        let ckn = "aa".repeat(32);
        let mut key = MacSecKey::new(
            "k-a",
            serde_json::from_value(serde_json::json!({"secretRef": {"name": "s"}})).unwrap(),
        );
        key.metadata.namespace = Some("net".into());
        key.status = Some(MacSecKeyStatus {
            ckn: Some(ckn.clone()),
            ..Default::default()
        });
        let removed_at = Timestamp::from_second(1_800_000_000).unwrap();
        let dxc = |ns: &str| {
            let spec = serde_json::from_value(
                serde_json::json!({"connectionId": "dxcon-a1", "rotation": {"guardSeconds": 60}}),
            )
            .unwrap();
            let mut d = DxConnection::new("x", spec);
            d.metadata.namespace = Some(ns.into());
            d.status = Some(DxConnectionStatus {
                rotation: Some(crate::crd::RotationStatus {
                    removed: vec![crate::crd::RemovedKey {
                        ckn: Some(ckn.clone()),
                        secret_arn: "arn".into(),
                        removed_at: removed_at.to_string(),
                    }],
                    ..Default::default()
                }),
                ..Default::default()
            });
            Arc::new(DeserializeGuard(Ok(d)))
        };
        let all = [dxc("net"), dxc("other")];
        let at = |s: i64| {
            removed_at
                .checked_add(jiff::SignedDuration::from_secs(s))
                .unwrap()
        };
        assert_eq!(
            guarded_by(&key, &all, at(10)),
            Some(("x".to_string(), at(60)))
        );
        assert_eq!(guarded_by(&key, &all, at(60)), None, "the window has ended");
        assert_eq!(
            guarded_by(&key, &all[1..], at(10)),
            None,
            "another namespace"
        );
    }
}
