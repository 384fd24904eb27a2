//! Key material the operator makes (`MacSecKey.spec.generate`) and deletes.
//!
//! A random CKN and CAK (`keys::generate_pair`, the OS's CSPRNG) go straight from memory to
//! their store: a Kubernetes Secret the MacSecKey owns, or a customer-owned Secrets Manager
//! secret made with CreateSecret, then PutSecretValue. Only where they went is recorded
//! (`status.generated`). The names follow from the MacSecKey's name and UID, so an operator
//! restarted between the write and the status finds what it made and makes nothing twice.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{DeleteParams, PostParams};
use kube::core::ObjectMeta;
use kube::{Api, Resource, ResourceExt};

use super::Context;
use crate::aws::{AwsError, ErrorClass};
use crate::conditions::KeyReason;
use crate::crd::{
    GenerateKey, KeyStore, MacSecKey, MaterialLocation, SecretLocation, SecretsManagerLocation,
};
use crate::material::KEY_MATERIAL_LABEL;
use crate::plan::KeyProblem;

fn failed(message: String, transient: bool) -> KeyProblem {
    KeyProblem {
        reason: if transient {
            KeyReason::KeyNotGenerated
        } else {
            KeyReason::KeyGenerationFailed
        },
        message,
        transient,
    }
}

/// The Secrets Manager name of a generated key: under `dx-macsec/`, which the operator's IAM
/// policy confines it to, with the UID so a MacSecKey made again under the same name never
/// meets the old secret (a deleted name stays taken for its recovery window).
pub(crate) fn secret_name(key: &MacSecKey) -> String {
    let uid: String = key.uid().unwrap_or_default().chars().take(8).collect();
    format!(
        "dx-macsec/{}/{}-{uid}",
        crate::crd::namespace_of(key),
        key.name_any()
    )
}

/// Makes the key's material where `generate` says; returns where it went.
pub(crate) async fn make(
    key: &MacSecKey,
    generate: &GenerateKey,
    ctx: &Context,
) -> Result<MaterialLocation, KeyProblem> {
    match generate.store {
        KeyStore::Secret => in_secret(key, ctx).await,
        KeyStore::SecretsManager => in_secrets_manager(key, generate, ctx).await,
    }
}

async fn in_secret(key: &MacSecKey, ctx: &Context) -> Result<MaterialLocation, KeyProblem> {
    let namespace = crate::crd::namespace_of(key);
    let name = key.name_any();
    let uid = key.uid().unwrap_or_default();
    let location = MaterialLocation {
        secret: Some(SecretLocation {
            namespace: namespace.to_string(),
            name: name.clone(),
            ckn_key: "ckn".into(),
            cak_key: "cak".into(),
        }),
        secrets_manager: None,
    };
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    let (ckn, cak) = crate::keys::generate_pair();
    let data = BTreeMap::from([
        (
            "ckn".to_string(),
            ByteString(ckn.as_str().as_bytes().to_vec()),
        ),
        (
            "cak".to_string(),
            ByteString(cak.expose().as_bytes().to_vec()),
        ),
    ]);
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(namespace.to_string()),
            labels: Some(BTreeMap::from([(
                KEY_MATERIAL_LABEL.to_string(),
                "true".to_string(),
            )])),
            owner_references: Some(vec![OwnerReference {
                api_version: MacSecKey::api_version(&()).into_owned(),
                kind: MacSecKey::kind(&()).into_owned(),
                name: name.clone(),
                uid: uid.clone(),
                controller: Some(true),
                block_owner_deletion: None,
            }]),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".into()),
        data: Some(data),
        ..Secret::default()
    };
    let what = format!("cannot make Secret {namespace}/{name} for spec.generate");
    match api.create(&PostParams::default(), &secret).await {
        Ok(_) => Ok(location),
        Err(kube::Error::Api(e)) if e.code == 409 => {
            // Made before a restart, or someone else's: only ours is used.
            let existing = api
                .get_metadata(&name)
                .await
                .map_err(|e| failed(format!("{what}: {e}"), true))?;
            if existing.owner_references().iter().any(|o| o.uid == uid) {
                Ok(location)
            } else {
                Err(failed(
                    format!(
                        "{what}: a Secret of that name exists and this MacSecKey did not make it; the operator never overwrites it. Delete or rename that Secret, or give the MacSecKey another name"
                    ),
                    false,
                ))
            }
        }
        Err(kube::Error::Api(e)) if e.code == 403 => Err(failed(
            format!(
                "{what}: the operator may not create Secrets here ({}); enable key generation (chart value keyGeneration.enabled) or use a Secret made by keygen",
                e.message
            ),
            false,
        )),
        Err(e) => Err(failed(format!("{what}: {e}; retried"), true)),
    }
}

fn aws_failed(what: &str, e: &AwsError) -> KeyProblem {
    let transient = e.class != ErrorClass::Terminal;
    let retry = if transient { "; retried" } else { "" };
    failed(format!("{what}: {e}{retry}"), transient)
}

async fn in_secrets_manager(
    key: &MacSecKey,
    generate: &GenerateKey,
    ctx: &Context,
) -> Result<MaterialLocation, KeyProblem> {
    let namespace = crate::crd::namespace_of(key);
    let scope = ctx
        .access()
        .generation_scope(namespace, generate)
        .map_err(|r| failed(r.message, false))?;
    let name = secret_name(key);
    let what = format!("cannot make Secrets Manager secret {name} in {scope} for spec.generate");
    let api = ctx
        .engine
        .secrets()
        .secrets(&scope)
        .await
        .map_err(|e| aws_failed(&what, &e))?;
    let description = format!(
        "MACsec CKN/CAK made by dx-macsec-operator for MacSecKey {namespace}/{}",
        key.name_any()
    );
    let arn = api
        .create_secret(&name, &description)
        .await
        .map_err(|e| aws_failed(&what, &e))?;
    // A secret with a value was made before a restart: that value is the key.
    let current = api
        .current_version(&arn)
        .await
        .map_err(|e| aws_failed(&what, &e))?;
    if current.is_none() {
        let (ckn, cak) = crate::keys::generate_pair();
        let token = key.uid().unwrap_or_default();
        api.put_key(&arn, &ckn, &cak, &token)
            .await
            .map_err(|e| aws_failed(&what, &e))?;
    }
    Ok(MaterialLocation {
        secret: None,
        secrets_manager: Some(SecretsManagerLocation {
            secret_arn: arn,
            region: scope.region,
            role_arn: scope.role_arn,
            ckn_field: "ckn".into(),
            cak_field: "cak".into(),
        }),
    })
}

/// Deletes the material the operator made for `key` (its status says where); what was
/// deleted, for the event. A Secret is deleted only if this MacSecKey owns it.
pub(crate) async fn destroy(key: &MacSecKey, ctx: &Context) -> Result<Option<String>, String> {
    let Some(made) = key.status.as_ref().and_then(|s| s.generated.as_ref()) else {
        return Ok(None);
    };
    if let Some(secret) = &made.secret {
        let what = format!("Secret {}/{}", secret.namespace, secret.name);
        let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &secret.namespace);
        let uid = key.uid().unwrap_or_default();
        let ours = match api.get_metadata_opt(&secret.name).await {
            Ok(m) => m.is_some_and(|m| m.owner_references().iter().any(|o| o.uid == uid)),
            Err(e) => return Err(format!("cannot read {what}: {e}")),
        };
        if !ours {
            return Ok(None);
        }
        return match api.delete(&secret.name, &DeleteParams::default()).await {
            Ok(_) => Ok(Some(what)),
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(Some(what)),
            Err(e) => Err(format!("cannot delete {what}: {e}")),
        };
    }
    let Some(sm) = &made.secrets_manager else {
        return Ok(None);
    };
    let what = format!("Secrets Manager secret {}", sm.secret_arn);
    let (_, scope) = crate::material::made_in_secrets_manager(sm);
    let api = ctx
        .engine
        .secrets()
        .secrets(&scope)
        .await
        .map_err(|e| format!("cannot delete {what}: {e}"))?;
    api.delete_secret(&sm.secret_arn)
        .await
        .map_err(|e| format!("cannot delete {what}: {e}"))?;
    Ok(Some(what))
}
