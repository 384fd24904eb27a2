//! Reconciling one `DxConnection`: resolve keys, run one engine pass, write status, publish
//! events, pick the requeue; on deletion, honour `deletionPolicy`.

use std::sync::Arc;
use std::time::Instant;

use jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::core::DeserializeGuard;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::{Api, ResourceExt};
use serde_json::json;

use super::{Context, Error, FIELD_MANAGER, KubeSecrets, reference};
use crate::aws::Scope;
use crate::crd::{
    DeletionPolicy, DxConnection, DxConnectionStatus, EncryptionMode, FINALIZER, ManagementPolicy,
};
use crate::desired;
use crate::engine::{Mode, PassResult};
use crate::keys::Ckn;
use crate::plan::{Desired, KeyMaterial, PriorState, Reason, Requeue, WantedKey};
use crate::status::{dxconnection_status, set_condition};

/// Whether `dxc` lists the MacSecKey `name` in `spec.keys`.
pub fn references(dxc: &DxConnection, name: &str) -> bool {
    dxc.spec.keys.iter().flatten().any(|k| k.name == name)
}

/// The DxConnection that owns `dxc`'s AWS resource when it is not `dxc` itself: the oldest
/// one naming the same connection in the same region and account (ties by namespace/name).
pub fn conflict_owner(
    dxc: &DxConnection,
    scope: &Scope,
    all: &[Arc<DeserializeGuard<DxConnection>>],
    default_region: Option<&str>,
) -> Option<String> {
    let key = |d: &DxConnection| {
        (
            d.metadata.creation_timestamp.as_ref().map(|t| t.0),
            d.namespace().unwrap_or_default(),
            d.name_any(),
        )
    };
    super::valid(all)
        .filter(|o| o.spec.connection_id == dxc.spec.connection_id)
        .filter(|o| desired::scope_of(o, default_region).ok().as_ref() == Some(scope))
        .filter(|o| o.metadata.deletion_timestamp.is_none())
        .min_by_key(|o| key(o))
        .filter(|owner| key(owner) != key(dxc))
        .map(|owner| {
            format!(
                "{}/{}",
                owner.namespace().unwrap_or_default(),
                owner.name_any()
            )
        })
}

/// The planner's memory, from the status written last time.
pub fn prior_of(dxc: &DxConnection) -> PriorState {
    let Some(status) = &dxc.status else {
        return PriorState::default();
    };
    let converged = dxc
        .condition("Ready")
        .is_some_and(|c| c.status == "True" && c.observed_generation == dxc.metadata.generation);
    PriorState::from_key_status(&status.keys, converged)
}

pub async fn reconcile(
    obj: Arc<DeserializeGuard<DxConnection>>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    let started = Instant::now();
    let dxc = match &obj.0 {
        Ok(d) => Arc::new(d.clone()),
        Err(invalid) => {
            // One malformed object is reported and skipped; the watch goes on.
            tracing::warn!(name = ?invalid.metadata.name, error = %invalid.error, "skipping a DxConnection that does not deserialize");
            return Ok(Action::await_change());
        }
    };
    let ns = dxc.namespace().unwrap_or_default();
    let api: Api<DxConnection> = Api::namespaced(ctx.client.clone(), &ns);
    let result = finalizer(&api, FINALIZER, dxc, |event| async {
        match event {
            Finalizer::Apply(d) => apply(&d, &ctx).await,
            Finalizer::Cleanup(d) => cleanup(&d, &ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)));
    let reason = match &result {
        Ok(_) => "Reconciled",
        Err(e) => e.reason(),
    };
    ctx.metrics
        .reconciled("DxConnection", reason, started.elapsed(), result.is_err());
    result
}

pub fn error_policy(
    obj: Arc<DeserializeGuard<DxConnection>>,
    error: &Error,
    ctx: Arc<Context>,
) -> Action {
    use kube::runtime::finalizer::Error as F;
    let name = obj.0.as_ref().ok().map(|d| d.name_any());
    match error {
        // A Disassociate deletion in progress, or a finalizer removed from an object that
        // is already gone: expected, not failures.
        Error::Finalizer(e)
            if match &**e {
                F::CleanupFailed(Error::CleanupPending(_)) => true,
                F::RemoveFinalizer(kube::Error::Api(status)) => status.code == 404,
                _ => false,
            } =>
        {
            tracing::info!(?name, %error, "DxConnection deletion in progress");
        }
        _ => tracing::warn!(?name, %error, "DxConnection reconcile failed"),
    }
    ctx.requeue(Requeue::Soon)
}

/// The status of a DxConnection that cannot be acted on before reaching AWS.
fn blocked_status(dxc: &DxConnection, reason: Reason, message: &str) -> DxConnectionStatus {
    let mut status = dxc.status.clone().unwrap_or_default();
    let now = Timestamp::now();
    let generation = dxc.metadata.generation;
    status.observed_generation = generation;
    set_condition(
        &mut status.conditions,
        "Ready",
        false,
        reason.as_str(),
        message,
        generation,
        now,
    );
    set_condition(
        &mut status.conditions,
        "Synced",
        false,
        reason.as_str(),
        message,
        generation,
        now,
    );
    status
}

/// Whether a status is worth writing. Every write is a watch event that reconciles the object
/// again, so a status that differs only in `lastSyncTime` is written only when the stored one
/// is older than `max_sync_age`; otherwise each reconcile would trigger the next.
pub fn status_changed(
    old: Option<&DxConnectionStatus>,
    new: &DxConnectionStatus,
    max_sync_age: std::time::Duration,
) -> bool {
    let Some(old) = old else {
        return true;
    };
    let sync_old = old
        .last_sync_time
        .as_deref()
        .and_then(|t| t.parse::<Timestamp>().ok())
        .is_none_or(|t| {
            Timestamp::now().duration_since(t)
                > jiff::SignedDuration::try_from(max_sync_age).unwrap_or_default()
        });
    let mut without_sync = old.clone();
    without_sync.last_sync_time = new.last_sync_time.clone();
    without_sync != *new || sync_old
}

/// The server-side apply body of a status.
pub fn status_patch(status: &DxConnectionStatus) -> serde_json::Value {
    json!({
        "apiVersion": "dxmacsec.io/v1alpha1",
        "kind": "DxConnection",
        "status": status,
    })
}

async fn write_status(
    ctx: &Context,
    dxc: &DxConnection,
    status: &DxConnectionStatus,
) -> Result<(), Error> {
    let api: Api<DxConnection> =
        Api::namespaced(ctx.client.clone(), &dxc.namespace().unwrap_or_default());
    api.patch_status(
        &dxc.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(status_patch(status)),
    )
    .await?;
    Ok(())
}

async fn apply(dxc: &DxConnection, ctx: &Context) -> Result<Action, Error> {
    let ns = dxc.namespace().unwrap_or_default();
    let previous_reason = dxc.condition("Ready").map(|c| c.reason.clone());
    let scope = match desired::scope_of(dxc, ctx.settings.default_region.as_deref()) {
        Ok(s) => s,
        Err(message) => {
            let status = blocked_status(dxc, Reason::InvalidSpec, &message);
            write_status(ctx, dxc, &status).await?;
            if previous_reason.as_deref() != Some(Reason::InvalidSpec.as_str()) {
                ctx.publish(
                    &reference(dxc),
                    EventType::Warning,
                    "InvalidSpec",
                    "Validate",
                    message,
                )
                .await;
            }
            return Ok(ctx.requeue(Requeue::Resync));
        }
    };
    let secrets = KubeSecrets(ctx.client.clone());
    let mut desired = desired::desired(
        dxc,
        |name| ctx.find_key(&ns, name),
        &secrets,
        ctx.engine.aws.as_ref(),
        &scope,
    )
    .await;
    desired.conflict_with = conflict_owner(
        dxc,
        &scope,
        &ctx.all_connections(),
        ctx.settings.default_region.as_deref(),
    );

    let now = Timestamp::now();
    let result = ctx
        .engine
        .pass(&scope, &desired, &prior_of(dxc), now, Mode::Execute)
        .await;
    if let Some(wait) = result.deferred {
        // Nothing was read, decided or done: the status stays as it is.
        return Ok(ctx.requeue(Requeue::After(wait)));
    }
    let status = dxconnection_status(dxc.status.as_ref(), &result, dxc.metadata.generation, now);
    if status_changed(dxc.status.as_ref(), &status, ctx.settings.resync / 2) {
        write_status(ctx, dxc, &status).await?;
    }
    let (ready, reason, _) = result.ready();
    ctx.metrics.observed(
        &ns,
        &dxc.name_any(),
        Some((ready, reason.as_str())),
        result.observed.as_ref(),
    );
    publish_events(ctx, dxc, &result, previous_reason.as_deref()).await;
    Ok(ctx.requeue(requeue_of(&result)))
}

/// Throttling waits longer than other retries.
fn requeue_of(result: &PassResult) -> Requeue {
    match &result.error {
        Some(e) if e.class == crate::aws::ErrorClass::Throttled => {
            Requeue::After(std::time::Duration::from_secs(30))
        }
        _ => result.requeue(),
    }
}

/// One Normal event per AWS mutation, a Warning per failure, and one event when the Ready
/// reason changes to Converged or to a warning (never repeated while it stays).
async fn publish_events(
    ctx: &Context,
    dxc: &DxConnection,
    result: &PassResult,
    previous_reason: Option<&str>,
) {
    let r = reference(dxc);
    for action in &result.executed {
        ctx.publish(
            &r,
            EventType::Normal,
            action.operation(),
            action.operation(),
            action.to_string(),
        )
        .await;
    }
    if let Some(e) = &result.error {
        let reason = crate::engine::error_reason(e);
        ctx.publish(
            &r,
            EventType::Warning,
            reason.as_str(),
            e.operation,
            e.to_string(),
        )
        .await;
    }
    let (ready, reason, message) = result.ready();
    if previous_reason == Some(reason.as_str()) || result.error.is_some() {
        return;
    }
    let type_ = match reason {
        Reason::Converged | Reason::Progressing => EventType::Normal,
        _ => EventType::Warning,
    };
    // Progress is told by the action events; a change of reason is told when it is the goal
    // reached or something a person should look at.
    if ready || type_ == EventType::Warning {
        ctx.publish(&r, type_, reason.as_str(), "Reconcile", message)
            .await;
    }
}

/// The desired state that removes only the keys this DxConnection manages: every other key
/// on AWS is wanted as it is, and must_encrypt is lowered first when no key would remain.
pub fn cleanup_desired(
    dxc: &DxConnection,
    observed: &crate::observed::ObservedResource,
) -> Desired {
    let ours: Vec<(Option<String>, Option<String>)> = dxc
        .status
        .iter()
        .flat_map(|s| &s.keys)
        .filter(|k| k.mac_sec_key.is_some())
        .map(|k| (k.ckn.clone(), k.secret_arn.clone()))
        .collect();
    let is_ours = |k: &crate::observed::ObservedKey| {
        ours.iter().any(|(ckn, arn)| {
            (ckn.is_some() && ckn.as_deref() == k.ckn_normalized().as_deref())
                || (arn.is_some() && *arn == k.secret_arn)
        })
    };
    let keep: Vec<WantedKey> = observed
        .keys
        .iter()
        .filter(|k| k.state() != crate::observed::KeyState::Disassociated && !is_ours(k))
        .filter_map(|k| {
            Some(WantedKey {
                name: "(not managed by this DxConnection)".into(),
                material: Ok(KeyMaterial::managed_secret(
                    k.secret_arn.clone()?,
                    k.ckn.as_deref().and_then(|c| Ckn::parse("ckn", c).ok()),
                )),
            })
        })
        .collect();
    let mode = (keep.is_empty() && observed.mode() == Some(EncryptionMode::MustEncrypt))
        .then_some(EncryptionMode::ShouldEncrypt);
    Desired {
        connection_id: dxc.spec.connection_id.clone(),
        encryption_mode: mode,
        keys: Some(keep),
        overlap: std::time::Duration::ZERO,
        require_encryption_up: false,
        policy: ManagementPolicy::Manage,
        conflict_with: None,
    }
}

async fn cleanup(dxc: &DxConnection, ctx: &Context) -> Result<Action, Error> {
    let r = reference(dxc);
    let ns = dxc.namespace().unwrap_or_default();
    let retain = dxc.spec.deletion_policy == DeletionPolicy::Retain
        || dxc.spec.management_policy == ManagementPolicy::ObserveOnly;
    let scope = desired::scope_of(dxc, ctx.settings.default_region.as_deref());
    if retain || scope.is_err() {
        ctx.metrics.forget(&ns, &dxc.name_any());
        let note = if retain {
            "deletionPolicy Retain (or ObserveOnly): AWS is left as it is".to_string()
        } else {
            "no region is known, so nothing was changed in AWS".to_string()
        };
        ctx.publish(&r, EventType::Normal, "Retained", "Delete", note)
            .await;
        return Ok(Action::await_change());
    }
    let scope = scope.expect("checked above");
    // A Conflict loser never managed the resource: nothing of its own to remove.
    if conflict_owner(
        dxc,
        &scope,
        &ctx.all_connections(),
        ctx.settings.default_region.as_deref(),
    )
    .is_some()
    {
        return Ok(Action::await_change());
    }
    let api = ctx
        .engine
        .aws
        .direct_connect(&scope)
        .await
        .map_err(|e| Error::CleanupPending(e.to_string()))?;
    let (observed, _) = ctx
        .engine
        .cache
        .observe_now(&scope, api.as_ref(), &dxc.spec.connection_id)
        .await
        .map_err(|e| Error::CleanupPending(e.to_string()))?;
    let Some(observed) = observed else {
        // Not found counts as done.
        ctx.metrics.forget(&ns, &dxc.name_any());
        return Ok(Action::await_change());
    };
    let desired = cleanup_desired(dxc, &observed);
    let result = ctx
        .engine
        .pass(
            &scope,
            &desired,
            &PriorState::default(),
            Timestamp::now(),
            Mode::Execute,
        )
        .await;
    for action in &result.executed {
        ctx.publish(
            &r,
            EventType::Normal,
            action.operation(),
            "Delete",
            action.to_string(),
        )
        .await;
    }
    if let Some(e) = result.error {
        ctx.publish(
            &r,
            EventType::Warning,
            crate::engine::error_reason(&e).as_str(),
            "Delete",
            e.to_string(),
        )
        .await;
        return Err(Error::CleanupPending(e.to_string()));
    }
    match result.plan {
        Some(p) if p.spec_met() => {
            ctx.metrics.forget(&ns, &dxc.name_any());
            ctx.publish(
                &r,
                EventType::Normal,
                "Disassociated",
                "Delete",
                "deletionPolicy Disassociate: the keys this DxConnection managed are removed"
                    .into(),
            )
            .await;
            Ok(Action::await_change())
        }
        Some(p) => Err(Error::CleanupPending(p.message)),
        None if result.deferred.is_some() => Err(Error::CleanupPending(
            "waiting to read the connection from AWS again".into(),
        )),
        None => Err(Error::CleanupPending("AWS was not read".into())),
    }
}
