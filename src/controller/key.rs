//! Reconciling one `MacSecKey`: which DxConnections use it, whether its key material is
//! readable and valid, the managed secret ARN learned from AWS; deletion waits while any
//! DxConnection references it. Makes no AWS mutation.

use std::sync::Arc;
use std::time::Instant;

use jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::core::DeserializeGuard;
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::{Api, ResourceExt};
use serde_json::json;

use super::{Context, Error, FIELD_MANAGER, KubeSecrets};
use crate::aws::Scope;
use crate::crd::{DxConnection, FINALIZER, MacSecKey, MacSecKeyStatus};
use crate::keys::Ckn;
use crate::plan::Requeue;
use crate::status::set_condition;

/// `namespace/name`-free names of the DxConnections in the key's namespace that list it.
pub fn used_by(key: &MacSecKey, all: &[Arc<DeserializeGuard<DxConnection>>]) -> Vec<String> {
    let ns = key.namespace();
    let name = key.name_any();
    let mut users: Vec<String> = super::valid(all)
        .filter(|d| d.namespace() == ns && super::connection::references(d, &name))
        .map(|d| d.name_any())
        .collect();
    users.sort();
    users
}

/// The managed secret ARN and CKN AWS reported for this key on any DxConnection using it.
pub fn learned_from_connections(
    key: &MacSecKey,
    ckn: Option<&Ckn>,
    all: &[Arc<DeserializeGuard<DxConnection>>],
) -> (Option<String>, Option<String>) {
    let ns = key.namespace();
    let name = key.name_any();
    let spec_arn = key.spec.direct_connect_secret_arn.as_deref();
    super::valid(all)
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

fn patch_body(status: &MacSecKeyStatus) -> serde_json::Value {
    json!({"apiVersion": "dxmacsec.io/v1alpha1", "kind": "MacSecKey", "status": status})
}

async fn write_status(
    ctx: &Context,
    key: &MacSecKey,
    status: &MacSecKeyStatus,
) -> Result<(), Error> {
    let api: Api<MacSecKey> =
        Api::namespaced(ctx.client.clone(), &key.namespace().unwrap_or_default());
    api.patch_status(
        &key.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(patch_body(status)),
    )
    .await?;
    Ok(())
}

pub async fn reconcile(
    obj: Arc<DeserializeGuard<MacSecKey>>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    let started = Instant::now();
    let key = match &obj.0 {
        Ok(k) => Arc::new(k.clone()),
        Err(invalid) => {
            tracing::warn!(name = ?invalid.metadata.name, error = %invalid.error, "skipping a MacSecKey that does not deserialize");
            return Ok(Action::await_change());
        }
    };
    let api: Api<MacSecKey> =
        Api::namespaced(ctx.client.clone(), &key.namespace().unwrap_or_default());
    let result = finalizer(&api, FINALIZER, key, |event| async {
        match event {
            Finalizer::Apply(k) => apply(&k, &ctx).await,
            Finalizer::Cleanup(k) => cleanup(&k, &ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)));
    let reason = match &result {
        Ok(_) => "Reconciled",
        Err(e) => e.reason(),
    };
    ctx.metrics
        .reconciled("MacSecKey", reason, started.elapsed(), result.is_err());
    result
}

pub fn error_policy(
    obj: Arc<DeserializeGuard<MacSecKey>>,
    error: &Error,
    ctx: Arc<Context>,
) -> Action {
    tracing::info!(name = ?obj.0.as_ref().ok().map(|k| k.name_any()), %error, "MacSecKey reconcile will retry");
    match error {
        // Re-triggered at once when a DxConnection changes; otherwise look again later.
        Error::KeyInUse(_) => ctx.requeue(Requeue::After(std::time::Duration::from_secs(15))),
        _ => ctx.requeue(Requeue::Soon),
    }
}

async fn apply(key: &MacSecKey, ctx: &Context) -> Result<Action, Error> {
    let all = ctx.all_connections();
    let users = used_by(key, &all);
    let now = Timestamp::now();
    let generation = key.metadata.generation;
    let mut status = key.status.clone().unwrap_or_default();
    status.observed_generation = generation;
    status.used_by = users.clone();

    // Secrets Manager sources are read in the region of a DxConnection using the key, else
    // the operator's default region.
    let scope = super::valid(&all)
        .find(|d| users.contains(&d.name_any()) && d.namespace() == key.namespace())
        .and_then(|d| crate::desired::scope_of(d, ctx.settings.default_region.as_deref()).ok())
        .or_else(|| {
            ctx.settings.default_region.clone().map(|region| Scope {
                region,
                role_arn: None,
            })
        });
    let requeue = match scope {
        None if key.spec.secrets_manager.is_some() => {
            let msg = "no region to read the Secrets Manager secret in: set spec.secretsManager.region, or use the key from a DxConnection";
            set_condition(
                &mut status.conditions,
                "Ready",
                false,
                "SecretReadError",
                msg,
                generation,
                now,
            );
            Requeue::Resync
        }
        scope => {
            let scope = scope.unwrap_or(Scope {
                region: key
                    .spec
                    .secrets_manager
                    .as_ref()
                    .and_then(|s| s.region.clone())
                    .unwrap_or_default(),
                role_arn: None,
            });
            let secrets = KubeSecrets(ctx.client.clone());
            match crate::material::resolve(key, &secrets, ctx.engine.aws.as_ref(), &scope).await {
                Ok(material) => {
                    let (arn, learned_ckn) =
                        learned_from_connections(key, material.ckn.as_ref(), &all);
                    status.ckn = material
                        .ckn
                        .as_ref()
                        .map(|c| c.to_string())
                        .or(learned_ckn)
                        .or(status.ckn);
                    if arn.is_some() {
                        status.direct_connect_secret_arn = arn;
                    } else if material.ckn.is_some()
                        && status.ckn != key.status.as_ref().and_then(|s| s.ckn.clone())
                    {
                        // New key material: the old managed secret belongs to the old CKN.
                        status.direct_connect_secret_arn = None;
                    }
                    let msg = if users.is_empty() {
                        "key material is valid; no DxConnection uses this key".to_string()
                    } else {
                        format!("key material is valid; used by {}", users.join(", "))
                    };
                    set_condition(
                        &mut status.conditions,
                        "Ready",
                        true,
                        "KeyMaterialValid",
                        &msg,
                        generation,
                        now,
                    );
                    Requeue::Resync
                }
                Err(problem) => {
                    set_condition(
                        &mut status.conditions,
                        "Ready",
                        false,
                        problem.reason,
                        &problem.message,
                        generation,
                        now,
                    );
                    // A missing Secret may be created at any time: look again soon.
                    Requeue::Soon
                }
            }
        }
    };
    if key.status.as_ref() != Some(&status) {
        write_status(ctx, key, &status).await?;
    }
    Ok(ctx.requeue(requeue))
}

async fn cleanup(key: &MacSecKey, ctx: &Context) -> Result<Action, Error> {
    let users = used_by(key, &ctx.all_connections());
    if users.is_empty() {
        return Ok(Action::await_change());
    }
    let mut status = key.status.clone().unwrap_or_default();
    let msg = format!(
        "deletion waits: used by DxConnection {}; remove this key from their spec.keys (rotate to another key) first",
        users.join(", ")
    );
    status.used_by = users.clone();
    set_condition(
        &mut status.conditions,
        "Ready",
        false,
        "InUse",
        &msg,
        key.metadata.generation,
        Timestamp::now(),
    );
    if key.status.as_ref() != Some(&status) {
        write_status(ctx, key, &status).await?;
    }
    Err(Error::KeyInUse(users.join(", ")))
}
