//! Reconciling one `DxConnection`: resolve keys, run one engine pass, write status, publish
//! events, pick the requeue; on deletion, honour `deletionPolicy`.

use jiff::Timestamp;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::ResourceExt;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;

use super::relations::{blocked_status, conflict_owner, prior_of, status_changed};
use super::schedule;
use super::shell::{Reconciled, write_status};
use super::{Context, Error, KubeSecrets, reference};
use crate::crd::{DeletionPolicy, DxConnection, ManagementPolicy, OWNER_TAG};
use crate::desired;
use crate::engine::{Mode, PassOutcome};
use crate::plan::{Deletion, Desired, PriorState, Reason, Requeue};
use crate::status::dxconnection_status;

/// A Normal event per AWS call the pass made and a Warning for the one that failed; the
/// event's action is `action`, else the call's operation.
async fn publish_calls(
    ctx: &Context,
    r: &ObjectReference,
    result: &PassOutcome,
    action: Option<&str>,
) {
    for call in result.executed() {
        let act = action.unwrap_or(call.operation());
        ctx.publish(
            r,
            EventType::Normal,
            call.operation(),
            act,
            call.to_string(),
        )
        .await;
    }
    if let Some(e) = result.error() {
        let act = action.unwrap_or(e.operation);
        let reason = e.reason();
        ctx.publish(r, EventType::Warning, reason.as_str(), act, e.to_string())
            .await;
    }
}

/// One Normal event per AWS mutation, a Warning per failure, and one event when the Ready
/// reason changes to Converged or to a warning (never repeated while it stays).
async fn publish_events(
    ctx: &Context,
    dxc: &DxConnection,
    result: &PassOutcome,
    previous_reason: Option<Reason>,
) {
    let r = reference(dxc);
    publish_calls(ctx, &r, result, None).await;
    if result.error().is_some() {
        return;
    }
    let ready = result.ready();
    if previous_reason == Some(ready.reason) {
        return;
    }
    let type_ = if matches!(ready.reason, Reason::Converged | Reason::Progressing) {
        EventType::Normal
    } else {
        EventType::Warning
    };
    // Progress is told by the action events; a change of reason is told when it is the goal
    // reached or something a person should look at.
    if ready.status || type_ == EventType::Warning {
        ctx.publish(&r, type_, ready.reason.as_str(), "Reconcile", ready.message)
            .await;
    }
}

/// Key material, the desired state and one engine pass: what a reconcile does once AWS has
/// not refused the scope.
async fn pass(
    dxc: &DxConnection,
    ctx: &Context,
    ns: &str,
    scope: &crate::aws::Scope,
    scheduled: Option<&schedule::Scheduled>,
    conflict_with: Option<String>,
) -> PassOutcome {
    // With a schedule, the keys in use are the schedule's, not spec.keys.
    let with_schedule;
    let dxc = match scheduled {
        Some(s) => {
            with_schedule = desired::with_keys(dxc, s.wanted());
            &with_schedule
        }
        None => dxc,
    };
    let secrets = KubeSecrets(ctx.client.clone());
    let mut desired = desired::desired(
        dxc,
        |name| ctx.find_key(ns, name),
        |ckn| ctx.engine.managed_secret_arn(scope, ckn),
        &secrets,
        ctx.engine.secrets(),
        scope,
    )
    .await;
    desired.conflict_with = conflict_with;
    desired.owner = Some(desired::owner_tag(&ctx.settings.cluster_name, dxc));
    // Only within a guard window, and only where the last pass saw what a rollback needs
    // (keys wanted, the port encrypting and not Encryption Up): the MacSecKeys that may
    // hold the removed keys, read for a rollback by CKN/CAK should the managed secret be
    // gone. A rollback goes by the managed secret first, so while the port stays up (the
    // usual case) the window reads no Secret.
    let removed = desired::removed_ckns(dxc);
    if !removed.is_empty() && may_roll_back(dxc) {
        let outgoing = ctx.keys_in(ns, |k| {
            k.status
                .as_ref()
                .and_then(|s| s.ckn.as_ref())
                .is_some_and(|c| removed.contains(c))
        });
        desired.restorable =
            desired::restorable(&removed, outgoing, &secrets, ctx.engine.secrets(), scope).await;
    }

    ctx.engine
        .pass(
            scope,
            &desired,
            &prior_of(dxc),
            Timestamp::now(),
            Mode::Execute,
        )
        .await
}

impl Reconciled for DxConnection {
    const KIND: &'static str = "DxConnection";

    async fn apply(dxc: &Self, ctx: &Context) -> Result<Action, Error> {
        let ns = crate::crd::namespace_of(dxc);
        let previous_reason = dxc.ready_reason();
        let access = ctx.access();
        let scope = match access.scope_of(dxc) {
            Ok(s) => s,
            Err(refusal) => {
                let status = blocked_status(dxc, refusal.reason, &refusal.message);
                if dxc.status.as_ref() != Some(&status) {
                    write_status(ctx, dxc, &status).await?;
                }
                ctx.metrics.observed(
                    ns,
                    &dxc.name_any(),
                    Some((false, refusal.reason)),
                    None,
                    &status.keys,
                );
                if previous_reason != Some(refusal.reason) {
                    ctx.publish(
                        &reference(dxc),
                        EventType::Warning,
                        refusal.reason.as_str(),
                        "Validate",
                        refusal.message,
                    )
                    .await;
                }
                return Ok(ctx.requeue(Requeue::Resync));
            }
        };
        let conflict_with = conflict_owner(dxc, &scope, &ctx.all_connections(), &access);
        let mut scheduled = schedule::decide(dxc, ctx, conflict_with.as_deref());
        let result = match ctx.engine.refused(&scope, &dxc.spec.connection_id).await {
            Some(refusal) => PassOutcome::Unread(refusal),
            None => {
                let s = scheduled.as_ref();
                pass(dxc, ctx, ns, &scope, s, conflict_with).await
            }
        };
        if let PassOutcome::Deferred(wait) = result {
            // Nothing was read, decided or done: the status stays as it is.
            return Ok(ctx.requeue(Requeue::After(wait)));
        }
        if let Some(schedule::Scheduled::Step(step)) = &mut scheduled {
            schedule::carry_out(dxc, ctx, step).await;
        }
        let now = Timestamp::now();
        let mut status =
            dxconnection_status(dxc.status.as_ref(), &result, dxc.metadata.generation, now);
        schedule::record(
            &mut status,
            scheduled.as_ref(),
            dxc.metadata.generation,
            now,
        );
        if status_changed(dxc.status.as_ref(), &status) {
            write_status(ctx, dxc, &status).await?;
        }
        let ready = result.ready();
        ctx.metrics.observed(
            ns,
            &dxc.name_any(),
            Some((ready.status, ready.reason)),
            result.observed(),
            &status.keys,
        );
        publish_events(ctx, dxc, &result, previous_reason).await;
        match &scheduled {
            Some(s) => schedule::publish(ctx, dxc, s).await,
            None => ctx.metrics.rotation(ns, &dxc.name_any(), None),
        }
        Ok(ctx.requeue(schedule::sooner(
            ctx,
            result.next_look(),
            scheduled.as_ref(),
        )))
    }

    async fn cleanup(dxc: &Self, ctx: &Context) -> Result<Action, Error> {
        let (action, keys_removed) = cleanup_aws(dxc, ctx).await?;
        // The keys a schedule made go with the DxConnection only once AWS no longer holds
        // them; otherwise they stay (no longer owned by it) for the router and a successor.
        schedule::release_keys(dxc, ctx, keys_removed).await?;
        Ok(action)
    }
}

/// What deleting `dxc` does on AWS, as its deletionPolicy says; whether its keys were
/// removed from AWS.
async fn cleanup_aws(dxc: &DxConnection, ctx: &Context) -> Result<(Action, bool), Error> {
    let ns = crate::crd::namespace_of(dxc);
    let observe_only = dxc.spec.management_policy == ManagementPolicy::ObserveOnly;
    let access = ctx.access();
    let scope = match access.scope_of(dxc) {
        Ok(scope) if !observe_only => scope,
        refused => {
            ctx.metrics.forget(ns, &dxc.name_any());
            let note = match refused {
                Err(refusal) => format!("nothing was changed in AWS: {}", refusal.message),
                Ok(_) => "ObserveOnly: AWS is left as it is".to_string(),
            };
            ctx.publish(
                &reference(dxc),
                EventType::Normal,
                "Retained",
                "Delete",
                note,
            )
            .await;
            return Ok((Action::await_change(), false));
        }
    };
    // A Conflict loser never managed the resource: nothing of its own to remove.
    if conflict_owner(dxc, &scope, &ctx.all_connections(), &access).is_some() {
        return Ok((Action::await_change(), false));
    }
    let deletion = match dxc.spec.deletion_policy {
        DeletionPolicy::Retain => Deletion::Retain,
        DeletionPolicy::Disassociate => Deletion::Disassociate {
            managed: dxc
                .status
                .as_ref()
                .map(|s| s.keys.clone())
                .unwrap_or_default(),
        },
    };
    let desired = Desired {
        owner: Some(desired::owner_tag(&ctx.settings.cluster_name, dxc)),
        deletion: Some(deletion),
        ..Desired::new(&dxc.spec.connection_id)
    };
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
    publish_calls(ctx, &reference(dxc), &result, Some("Delete")).await;
    match dxc.spec.deletion_policy {
        DeletionPolicy::Retain => {
            retained(ctx, dxc, &result).await;
            Ok((Action::await_change(), false))
        }
        DeletionPolicy::Disassociate => Ok((disassociated(ctx, dxc, &result).await?, true)),
    }
}

/// The end of a `deletionPolicy: Retain` deletion, which never holds the deletion up: an
/// event that says whether the owner tag went, so a successor can adopt the resource.
async fn retained(ctx: &Context, dxc: &DxConnection, result: &PassOutcome) {
    let ns = crate::crd::namespace_of(dxc);
    ctx.metrics.forget(ns, &dxc.name_any());
    let kept = "deletionPolicy Retain: keys and mode are left as they are";
    let (type_, note) = match result.error() {
        Some(e) => (
            EventType::Warning,
            format!(
                "{kept}, but the {OWNER_TAG} tag could not be removed ({e}); remove it by hand so another owner can adopt {}",
                dxc.spec.connection_id
            ),
        ),
        None if result.released_owner_tag() => (
            EventType::Normal,
            format!("{kept}; the {OWNER_TAG} tag is removed"),
        ),
        None => (
            EventType::Normal,
            format!("{kept}; it carries no {OWNER_TAG} tag of this DxConnection"),
        ),
    };
    ctx.publish(&reference(dxc), type_, "Retained", "Delete", note)
        .await;
}

/// The end of a `deletionPolicy: Disassociate` deletion once a pass left nothing to do; until
/// then the finalizer stays, and the error says what is pending.
async fn disassociated(
    ctx: &Context,
    dxc: &DxConnection,
    result: &PassOutcome,
) -> Result<Action, Error> {
    if let Some(e) = result.error() {
        return Err(Error::CleanupPending(e.to_string()));
    }
    if !result.deletion_done() {
        let pending = result.plan().map_or_else(
            || "waiting to read the connection from AWS again".to_string(),
            |p| p.message.clone(),
        );
        return Err(Error::CleanupPending(pending));
    }
    let ns = crate::crd::namespace_of(dxc);
    ctx.metrics.forget(ns, &dxc.name_any());
    ctx.publish(
        &reference(dxc),
        EventType::Normal,
        "Disassociated",
        "Delete",
        format!("deletionPolicy Disassociate: the keys this DxConnection managed are removed, and its {OWNER_TAG} tag"),
    )
    .await;
    Ok(Action::await_change())
}

/// Whether a rotation's guard could roll `dxc` back, as its last status saw the port: keys
/// wanted, the mode encrypting (or not seen yet) and the port not Encryption Up.
fn may_roll_back(dxc: &DxConnection) -> bool {
    let status = dxc.status.as_ref();
    let wants_keys = dxc.spec.keys.as_ref().is_some_and(|k| !k.is_empty());
    let encrypting = status
        .and_then(|s| s.encryption_mode.as_deref())
        .is_none_or(|m| m == "should_encrypt" || m == "must_encrypt");
    let up = crate::observed::is_port_up(status.and_then(|s| s.port_encryption_status.as_deref()));
    wants_keys && encrypting && !up
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::DxConnectionStatus;

    /// The port-up test is the one the planner uses (observed.rs): a port status AWS writes
    /// in another case or with spaces around it is up here too, so no rollback material is
    /// read for a port that is up.
    #[test]
    fn a_port_up_in_any_spelling_cannot_roll_back() {
        let spec = serde_json::from_value(serde_json::json!({
            "connectionId": "dxcon-1", "encryptionMode": "must_encrypt", "keys": [{"name": "k"}]
        }))
        .unwrap();
        let mut dxc = DxConnection::new("c", spec);
        for (port, rolls_back) in [
            ("Encryption Up", false),
            (" encryption up ", false),
            ("Encryption Down", true),
        ] {
            dxc.status = Some(DxConnectionStatus {
                encryption_mode: Some("must_encrypt".into()),
                port_encryption_status: Some(port.into()),
                ..DxConnectionStatus::default()
            });
            assert_eq!(may_roll_back(&dxc), rolls_back, "{port:?}");
        }
    }
}
