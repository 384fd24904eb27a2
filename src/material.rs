//! Reading the key material a MacSecKey points at: a Kubernetes Secret, a customer-owned
//! Secrets Manager secret, or a Direct Connect-managed secret ARN.
//!
//! Returns [`KeyMaterial`] for the planner or a [`KeyProblem`] whose message names the
//! MacSecKey field and the fix. Values are parsed into `Ckn`/`Cak` at once and never
//! formatted into a message.

use std::collections::BTreeMap;

use crate::aws::{AwsProvider, BoxFut, Scope};
use crate::crd::{MacSecKey, MacSecKeySpec};
use crate::keys::{Cak, Ckn};
use crate::plan::{KeyMaterial, KeyProblem};

/// The data of a Kubernetes Secret, by key.
pub type SecretData = BTreeMap<String, Vec<u8>>;

/// Reads Kubernetes Secrets by name (the controller uses `get`, the CLI the files given).
pub trait SecretReader: Send + Sync {
    /// The data of Secret `namespace/name`; `Ok(None)` when it does not exist.
    fn read<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFut<'a, Result<Option<SecretData>, String>>;
}

fn problem(message: String) -> KeyProblem {
    KeyProblem {
        reason: "InvalidKeyMaterial",
        message,
    }
}

fn not_found(message: String) -> KeyProblem {
    KeyProblem {
        reason: "SecretNotFound",
        message,
    }
}

/// Refuses a CAK that changed under a CKN the key already had: Direct Connect cannot change
/// the CAK of a CKN, so the router (given the new CAK) and AWS (holding the old one) would
/// disagree and the port would go down at the next rotation or router change.
fn unchanged(
    status: Option<&crate::crd::MacSecKeyStatus>,
    ckn: &Ckn,
    cak: &Cak,
    source: &str,
) -> Result<(), KeyProblem> {
    let Some(status) = status else {
        return Ok(());
    };
    let same_ckn = status.ckn.as_deref() == Some(ckn.as_str());
    let fingerprint = status.cak_fingerprint.as_deref();
    if same_ckn && fingerprint.and_then(|f| cak.matches(f)) == Some(false) {
        return Err(KeyProblem {
            reason: "KeyMaterialChanged",
            message: format!(
                "the CAK in {source} changed but the CKN {ckn} did not; Direct Connect cannot change the CAK of a CKN, so the router and AWS would disagree. Put the previous CAK back, or create a new key with a new CKN (dx-macsec-operator keygen) and rotate to it"
            ),
        });
    }
    Ok(())
}

fn read_error(message: String) -> KeyProblem {
    KeyProblem {
        reason: "SecretReadError",
        message,
    }
}

/// Checks that exactly one source is set (the CRD's CEL rule, for objects that skipped
/// admission such as CLI files).
pub fn check_one_source(spec: &MacSecKeySpec) -> Result<(), String> {
    let count = [
        spec.secret_ref.is_some(),
        spec.secrets_manager.is_some(),
        spec.direct_connect_secret_arn.is_some(),
    ]
    .iter()
    .filter(|b| **b)
    .count();
    if count == 1 {
        Ok(())
    } else {
        Err(format!(
            "spec sets {count} key sources; set exactly one of secretRef, secretsManager or directConnectSecretArn"
        ))
    }
}

/// The material of `key` without reading its source, when nothing needs the CAK: its
/// MacSecKey has validated the source for the current spec (`Ready`, with the CKN in its
/// status) and `known_arn` gives the Direct Connect-managed secret of that CKN in the
/// DxConnection's scope, so an association goes by that ARN and never sends the CAK. `None`:
/// read the source with [`resolve`].
pub fn settled(key: &MacSecKey, known_arn: impl Fn(&Ckn) -> Option<String>) -> Option<KeyMaterial> {
    if !key.validated() {
        return None;
    }
    let ckn = Ckn::parse("status.ckn", key.status.as_ref()?.ckn.as_deref()?).ok()?;
    let arn = known_arn(&ckn)?;
    Some(KeyMaterial::managed_secret(arn, Some(ckn)))
}

/// Resolves the material of `key` for a DxConnection in `scope`.
pub async fn resolve(
    key: &MacSecKey,
    secrets: &dyn SecretReader,
    aws: &dyn AwsProvider,
    scope: &Scope,
) -> Result<KeyMaterial, KeyProblem> {
    let namespace = key.metadata.namespace.as_deref().unwrap_or("default");
    check_one_source(&key.spec).map_err(problem)?;
    let status = key.status.as_ref();

    if let Some(arn) = &key.spec.direct_connect_secret_arn {
        let ckn = status
            .and_then(|s| s.ckn.as_deref())
            .and_then(|c| Ckn::parse("status.ckn", c).ok());
        return Ok(KeyMaterial::managed_secret(arn.clone(), ckn));
    }

    if let Some(r) = &key.spec.secret_ref {
        let data = secrets.read(namespace, &r.name).await.map_err(|e| {
            read_error(format!(
                "cannot read Secret {namespace}/{} (spec.secretRef.name): {e}",
                r.name
            ))
        })?;
        let Some(data) = data else {
            return Err(not_found(format!(
                "Secret {namespace}/{} (spec.secretRef.name) not found; create it in namespace {namespace} or fix the name",
                r.name
            )));
        };
        let field = |k: &str, which: &str| -> Result<String, KeyProblem> {
            let bytes = data.get(k).ok_or_else(|| {
                problem(format!(
                    "Secret {namespace}/{} has no key {k:?} (spec.secretRef.{which}); add it or point {which} at the right key",
                    r.name
                ))
            })?;
            String::from_utf8(bytes.clone()).map_err(|_| {
                problem(format!(
                    "Secret {namespace}/{} key {k:?} is not text; it must hold 64 hexadecimal characters",
                    r.name
                ))
            })
        };
        let ckn_field = format!("Secret {namespace}/{} key {:?}", r.name, r.ckn_key);
        let cak_field = format!("Secret {namespace}/{} key {:?}", r.name, r.cak_key);
        let ckn = Ckn::parse(&ckn_field, &field(&r.ckn_key, "cknKey")?)
            .map_err(|e| problem(e.to_string()))?;
        let cak = Cak::parse(&cak_field, &field(&r.cak_key, "cakKey")?)
            .map_err(|e| problem(e.to_string()))?;
        unchanged(
            status,
            &ckn,
            &cak,
            &format!("Secret {namespace}/{}", r.name),
        )?;
        // The managed secret ARN, when there is one, comes from the engine's cache of the
        // connection's own region and account, not from here.
        return Ok(KeyMaterial::pair(ckn, cak, None));
    }

    if let Some(sm) = &key.spec.secrets_manager {
        let sm_scope = Scope {
            region: sm.region.clone().unwrap_or_else(|| scope.region.clone()),
            role_arn: scope.role_arn.clone(),
        };
        let api = aws
            .secrets(&sm_scope)
            .await
            .map_err(|e| problem(e.to_string()))?;
        let text = api.secret_string(&sm.secret_id).await.map_err(|e| {
            problem(format!(
                "cannot read Secrets Manager secret {} (spec.secretsManager.secretId) in {}: {e}",
                sm.secret_id, sm_scope.region
            ))
        })?;
        let json: serde_json::Value = serde_json::from_str(&text).map_err(|_| {
            problem(format!(
                "Secrets Manager secret {}: SecretString is not JSON; it must be an object with {:?} and {:?} fields",
                sm.secret_id, sm.ckn_field, sm.cak_field
            ))
        })?;
        let field = |f: &str, which: &str| -> Result<&str, KeyProblem> {
            json.get(f).and_then(|v| v.as_str()).ok_or_else(|| {
                problem(format!(
                    "Secrets Manager secret {} has no string field {f:?} (spec.secretsManager.{which})",
                    sm.secret_id
                ))
            })
        };
        let ckn_field = format!(
            "Secrets Manager secret {} field {:?}",
            sm.secret_id, sm.ckn_field
        );
        let cak_field = format!(
            "Secrets Manager secret {} field {:?}",
            sm.secret_id, sm.cak_field
        );
        let ckn = Ckn::parse(&ckn_field, field(&sm.ckn_field, "cknField")?)
            .map_err(|e| problem(e.to_string()))?;
        let cak = Cak::parse(&cak_field, field(&sm.cak_field, "cakField")?)
            .map_err(|e| problem(e.to_string()))?;
        unchanged(
            status,
            &ckn,
            &cak,
            &format!("Secrets Manager secret {}", sm.secret_id),
        )?;
        // The managed secret ARN, when there is one, comes from the engine's cache of the
        // connection's own region and account, not from here.
        return Ok(KeyMaterial::pair(ckn, cak, None));
    }
    unreachable!("check_one_source accepted a spec without a source")
}
