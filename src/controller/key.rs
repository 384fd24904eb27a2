//! Reconciling one `MacSecKey`: which DxConnections use it, whether its key material is
//! readable and valid, the managed secret ARN learned from AWS; deletion waits while any
//! DxConnection references it. Makes no AWS mutation.

use std::sync::Arc;

use jiff::Timestamp;
use kube::ResourceExt;
use kube::core::DeserializeGuard;
use kube::runtime::controller::Action;

use super::shell::{Reconciled, write_status};
use super::{Context, Error, KubeSecrets};
use crate::aws::Scope;
use crate::crd::{DxConnection, MacSecKey, MacSecKeyStatus};
use crate::engine::ConditionValue;
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

impl Reconciled for MacSecKey {
    const KIND: &'static str = "MacSecKey";

    async fn apply(obj: &Self, ctx: &Context) -> Result<Action, Error> {
        apply(obj, ctx).await
    }

    async fn cleanup(obj: &Self, ctx: &Context) -> Result<Action, Error> {
        cleanup(obj, ctx).await
    }
}

/// Where a Secrets Manager source is read: `spec.secretsManager.region` when set, else the
/// region of a DxConnection using the key, else the operator's default region. `None` when
/// none is known.
fn secrets_scope(
    key: &MacSecKey,
    users: &[String],
    all: &[Arc<DeserializeGuard<DxConnection>>],
    default_region: Option<&str>,
) -> Option<Scope> {
    let user_scope = super::valid(all)
        .find(|d| users.contains(&d.name_any()) && d.namespace() == key.namespace())
        .and_then(|d| crate::desired::scope_of(d, default_region).ok());
    let own_region = key
        .spec
        .secrets_manager
        .as_ref()
        .and_then(|s| s.region.clone());
    match (own_region, user_scope) {
        (Some(region), scope) => Some(Scope {
            region,
            role_arn: scope.and_then(|s| s.role_arn),
        }),
        (None, Some(scope)) => Some(scope),
        (None, None) => default_region.map(|region| Scope {
            region: region.to_string(),
            role_arn: None,
        }),
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

    let scope = secrets_scope(key, &users, &all, ctx.settings.default_region.as_deref());
    let (condition, requeue) = match scope {
        None if key.spec.secrets_manager.is_some() => (
            ConditionValue {
                status: false,
                reason: "SecretReadError",
                message: "no region to read the Secrets Manager secret in: set spec.secretsManager.region, or use the key from a DxConnection".into(),
            },
            Requeue::Resync,
        ),
        // Only Secrets Manager sources are read in a region.
        scope => {
            let scope = scope.unwrap_or(Scope {
                region: String::new(),
                role_arn: None,
            });
            let secrets = KubeSecrets(ctx.client.clone());
            match crate::material::resolve(key, &secrets, ctx.engine.aws.as_ref(), &scope).await {
                Ok(material) => {
                    learn(key, &mut status, &material, &all);
                    let message = if users.is_empty() {
                        "key material is valid; no DxConnection uses this key".to_string()
                    } else {
                        format!("key material is valid; used by {}", users.join(", "))
                    };
                    let valid = ConditionValue {
                        status: true,
                        reason: "KeyMaterialValid",
                        message,
                    };
                    (valid, Requeue::Resync)
                }
                // A missing Secret may be created at any time: look again soon.
                Err(problem) => (
                    ConditionValue {
                        status: false,
                        reason: problem.reason,
                        message: problem.message,
                    },
                    Requeue::Soon,
                ),
            }
        }
    };
    set_condition(&mut status.conditions, "Ready", &condition, generation, now);
    if key.status.as_ref() != Some(&status) {
        write_status(ctx, key, &status).await?;
    }
    Ok(ctx.requeue(requeue))
}

/// The CKN and the managed secret ARN, as read from the material and learned from the
/// DxConnections using the key.
fn learn(
    key: &MacSecKey,
    status: &mut MacSecKeyStatus,
    material: &crate::plan::KeyMaterial,
    all: &[Arc<DeserializeGuard<DxConnection>>],
) {
    let (arn, learned_ckn) = learned_from_connections(key, material.ckn.as_ref(), all);
    status.ckn = material
        .ckn
        .as_ref()
        .map(|c| c.to_string())
        .or(learned_ckn)
        .or(status.ckn.take());
    if arn.is_some() {
        status.direct_connect_secret_arn = arn;
    } else if material.ckn.is_some()
        && status.ckn != key.status.as_ref().and_then(|s| s.ckn.clone())
    {
        // New key material: the old managed secret belongs to the old CKN.
        status.direct_connect_secret_arn = None;
    }
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
    let in_use = ConditionValue {
        status: false,
        reason: "InUse",
        message: msg,
    };
    set_condition(
        &mut status.conditions,
        "Ready",
        &in_use,
        key.metadata.generation,
        Timestamp::now(),
    );
    if key.status.as_ref() != Some(&status) {
        write_status(ctx, key, &status).await?;
    }
    Err(Error::KeyInUse(users.join(", ")))
}
