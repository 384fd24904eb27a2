//! Reconciling one `MacSecKey`: which DxConnections use it, whether its key material is
//! readable and valid, the managed secret ARN learned from AWS; deletion waits while any
//! DxConnection references it. Makes no AWS mutation.

use std::sync::Arc;

use jiff::Timestamp;
use kube::core::DeserializeGuard;
use kube::runtime::controller::Action;

use super::relations::{guarded_by, learn, secrets_scope, used_by};
use super::shell::{Reconciled, write_status};
use super::{Context, Error, KubeSecrets};
use crate::aws::Scope;
use crate::conditions::{ConditionType, ConditionValue, KeyReason, set_condition, set_ready};
use crate::crd::{DxConnection, MacSecKey, MacSecKeyStatus};
use crate::engine::Standing;
use crate::keys::Ckn;
use crate::plan::{KeyMaterial, KeyProblem, Requeue};

impl Reconciled for MacSecKey {
    const KIND: &'static str = "MacSecKey";

    async fn apply(key: &Self, ctx: &Context) -> Result<Action, Error> {
        let all = ctx.all_connections();
        let users = used_by(key, &all);
        let now = Timestamp::now();
        let generation = key.metadata.generation;
        let mut status = key.status.clone().unwrap_or_default();
        status.observed_generation = generation;
        status.used_by = users.clone();

        let checked = check_material(key, ctx, &users, &all, &mut status).await;
        let (condition, requeue) = (checked.condition, checked.requeue);
        let standing = match (condition.status, checked.transient_failure.is_some()) {
            (true, _) => Standing::Converged,
            // AWS or the API server failed for a moment: it heals by itself.
            (false, true) => Standing::Pending,
            (false, false) => Standing::NeedsAPerson,
        };

        set_ready(
            &mut status.conditions,
            &condition,
            standing,
            generation,
            now,
        );
        // Synced: the key's source was read and its material can be used, the same verdict
        // as Ready here; they part only while a deletion waits (Ready False, InUse).
        set_condition(
            &mut status.conditions,
            ConditionType::Synced,
            &condition,
            generation,
            now,
        );
        if key.status.as_ref() != Some(&status) {
            write_status(ctx, key, &status).await?;
        }
        if let Some(warning) = &checked.transient_failure {
            ctx.publish(
                &super::reference(key),
                kube::runtime::events::EventType::Warning,
                warning.reason.as_str(),
                "ReadKeyMaterial",
                warning.message.clone(),
            )
            .await;
        }
        Ok(ctx.requeue(requeue))
    }

    async fn cleanup(key: &Self, ctx: &Context) -> Result<Action, Error> {
        let all = ctx.all_connections();
        let users = used_by(key, &all);
        let (generation, now) = (key.metadata.generation, Timestamp::now());
        let msg = match guarded_by(key, &all, now) {
            _ if !users.is_empty() => format!(
                "deletion waits: used by DxConnection {}; remove this key from their spec.keys (rotate to another key) first, or, for a key of a scheduled rotation, wait until it retires",
                users.join(", ")
            ),
            // Removed in a rotation: it may have to come back (by CKN/CAK if its managed
            // secret is gone), so its material stays readable until the guard window ends.
            Some((by, until)) => format!(
                "deletion waits until {until}: DxConnection {by} removed this key in a rotation and associates it again if the port goes Encryption Down before then (spec.rotation.guardSeconds)"
            ),
            None => {
                // No connection can need the key again: material the operator made goes.
                return match super::generate::destroy(key, ctx).await {
                    Ok(deleted) => {
                        if let Some(what) = deleted {
                            ctx.publish(
                                &super::reference(key),
                                kube::runtime::events::EventType::Normal,
                                "MaterialDeleted",
                                "Delete",
                                format!("deleted {what}, which the operator made for this key"),
                            )
                            .await;
                        }
                        Ok(Action::await_change())
                    }
                    Err(e) => Err(Error::CleanupPending(e)),
                };
            }
        };
        let mut status = key.status.clone().unwrap_or_default();
        status.used_by = users.clone();
        let in_use = ConditionValue::new(false, KeyReason::InUse, msg);
        set_ready(
            &mut status.conditions,
            &in_use,
            Standing::Pending,
            generation,
            now,
        );
        if key.status.as_ref() != Some(&status) {
            write_status(ctx, key, &status).await?;
        }
        if users.is_empty() {
            return Err(Error::CleanupPending(in_use.message));
        }
        Err(Error::KeyInUse(users.join(", ")))
    }
}

/// What reading a key's material earned.
struct Checked {
    /// The `Ready` condition.
    condition: ConditionValue<KeyReason>,
    /// A read that failed for a passing reason, not a person's problem: a Warning event,
    /// and (unless the key stays Ready on its last good reading) the condition's cause.
    transient_failure: Option<KeyProblem>,
    requeue: Requeue,
}

/// Reads the key's material: the `Ready` condition it earns (the CKN and managed ARN learned
/// go into `status`), and when to look again.
///
/// A read that fails for a passing reason (Secrets Manager throttled or failing, the API
/// server timing out) is retried with back-off. A key whose material was already validated
/// (its CKN and fingerprint in status) stays Ready on that reading meanwhile, and says so.
async fn check_material(
    key: &MacSecKey,
    ctx: &Context,
    users: &[String],
    all: &[Arc<DeserializeGuard<DxConnection>>],
    status: &mut MacSecKeyStatus,
) -> Checked {
    // A key the operator makes: its material is made once, then read like any other.
    let made;
    let key = match make_material(key, ctx, status).await {
        Ok(Some(with)) => {
            made = with;
            &made
        }
        Ok(None) => key,
        Err(failed) => return failed,
    };
    let Some(scope) = secrets_scope(key, users, all, &ctx.access()).or_else(|| {
        // Only Secrets Manager sources are read in a region.
        key.spec.secrets_manager.is_none().then(|| Scope {
            region: String::new(),
            role_arn: None,
        })
    }) else {
        let message = "no region and role to read the Secrets Manager secret with: set spec.secretsManager.region, or use the key from a DxConnection that may reach AWS (this namespace may not use the operator's own credentials, or the operator has no default region)";
        return Checked {
            condition: ConditionValue::new(false, KeyReason::SecretReadError, message),
            transient_failure: None,
            requeue: Requeue::Resync,
        };
    };
    let message = if users.is_empty() {
        "key material is valid; no DxConnection uses this key".to_string()
    } else {
        format!("key material is valid; used by {}", users.join(", "))
    };
    let valid = |message: String| Checked {
        condition: ConditionValue::new(true, KeyReason::KeyMaterialValid, message),
        transient_failure: None,
        requeue: Requeue::Resync,
    };
    let version = source_version(key, ctx, &scope).await;
    if let Some(v) = &version
        && read_before(key, v)
    {
        // Validated for this spec at this version: nothing to read.
        let ckn = status
            .ckn
            .as_deref()
            .and_then(|c| Ckn::parse("status.ckn", c).ok());
        let material = KeyMaterial {
            ckn,
            cak: None,
            secret_arn: None,
        };
        learn(key, status, &material, all);
        return valid(message);
    }
    let secrets = KubeSecrets(ctx.client.clone());
    match crate::material::resolve(key, &secrets, ctx.engine.secrets(), &scope).await {
        Ok(material) => {
            learn(key, status, &material, all);
            status.source_version = version;
            valid(message)
        }
        Err(problem) if problem.transient => {
            let requeue = if problem.reason == KeyReason::Throttled {
                Requeue::After(crate::engine::THROTTLED_RETRY)
            } else {
                Requeue::Soon
            };
            let condition = if key.validated() {
                // The last good reading stands; its source_version too, so the next look
                // reads the source again only if it changed or is still unknown.
                valid(format!(
                    "{message}, as last read; reading it again failed for a passing reason and is retried: {}",
                    problem.message
                ))
                .condition
            } else {
                ConditionValue::new(false, problem.reason, problem.message.clone())
            };
            Checked {
                condition,
                transient_failure: Some(problem),
                requeue,
            }
        }
        // A missing Secret may be created at any time: look again soon.
        Err(problem) => {
            status.source_version = None;
            Checked {
                condition: ConditionValue::new(false, problem.reason, problem.message),
                transient_failure: None,
                requeue: Requeue::Soon,
            }
        }
    }
}

/// For a key with `spec.generate` whose material is not made yet: makes it, and returns the
/// key as its status now says (`status.generated` set, also in `status`); `None` for any
/// other key; the `Ready` it earns when the material cannot be made.
async fn make_material(
    key: &MacSecKey,
    ctx: &Context,
    status: &mut MacSecKeyStatus,
) -> Result<Option<MacSecKey>, Checked> {
    let Some(generate) = &key.spec.generate else {
        return Ok(None);
    };
    if status.generated.is_some() {
        return Ok(None);
    }
    match super::generate::make(key, generate, ctx).await {
        Ok(location) => {
            status.generated = Some(location.clone());
            let mut with = key.clone();
            with.status.get_or_insert_with(Default::default).generated = Some(location);
            Ok(Some(with))
        }
        Err(problem) => Err(Checked {
            condition: ConditionValue::new(false, problem.reason, problem.message.clone()),
            requeue: Requeue::Soon,
            transient_failure: problem.transient.then_some(problem),
        }),
    }
}

/// The version of the key's source now, without reading the key: the Secret's
/// resourceVersion from the metadata watch, or the Secrets Manager secret's current version
/// ID (DescribeSecret). `None` when unknown (no watch, not seen yet, a failed call): the
/// source is read.
async fn source_version(key: &MacSecKey, ctx: &Context, scope: &Scope) -> Option<String> {
    let namespace = crate::crd::namespace_of(key);
    if let Some(r) = &key.spec.secret_ref {
        return ctx.secret_version(namespace, &r.name);
    }
    let made = key.status.as_ref().and_then(|s| s.generated.as_ref());
    if let Some(secret) = made.and_then(|m| m.secret.as_ref()) {
        return ctx.secret_version(namespace, &secret.name);
    }
    let source = match (
        &key.spec.secrets_manager,
        made.and_then(|m| m.secrets_manager.as_ref()),
    ) {
        (Some(sm), _) => (
            crate::material::secrets_manager_scope(sm, scope),
            sm.secret_id.clone(),
        ),
        (None, Some(sm)) => {
            let (source, scope) = crate::material::made_in_secrets_manager(sm);
            (scope, source.secret_id)
        }
        (None, None) => return None,
    };
    // Within half a resync of the last look, and with the spec as it was read, the version
    // looked at then stands: the reconciles a key gets while its DxConnections change (each
    // changes its usedBy) share one DescribeSecret. The periodic resync looks again.
    let spec_read =
        key.status.as_ref().and_then(|s| s.observed_generation) == key.metadata.generation;
    if spec_read && let Some(version) = ctx.source_versions.recent(&source, ctx.settings.resync / 2)
    {
        return Some(version);
    }
    let api = ctx.engine.secrets().secrets(&source.0).await.ok()?;
    let version = api.current_version(&source.1).await.ok().flatten()?;
    ctx.source_versions.remember(source, &version);
    Some(version)
}

/// The current version ID of each Secrets Manager source (by scope and secret ID) as last
/// looked at, and when: shared by every MacSecKey reconcile.
#[derive(Default)]
pub struct SourceVersions(
    std::sync::Mutex<std::collections::HashMap<(Scope, String), (String, std::time::Instant)>>,
);

impl SourceVersions {
    /// The version of `source` looked at less than `within` ago.
    fn recent(&self, source: &(Scope, String), within: std::time::Duration) -> Option<String> {
        let held = self.0.lock().unwrap_or_else(|e| e.into_inner());
        held.get(source)
            .filter(|(_, at)| at.elapsed() < within)
            .map(|(version, _)| version.clone())
    }

    fn remember(&self, source: (Scope, String), version: &str) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(source, (version.to_string(), std::time::Instant::now()));
    }
}

/// Whether `key`'s status already holds a valid reading of this spec at `version`.
fn read_before(key: &MacSecKey, version: &str) -> bool {
    key.validated()
        && key
            .status
            .as_ref()
            .and_then(|s| s.source_version.as_deref())
            == Some(version)
}
