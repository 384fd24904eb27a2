//! Reading the key material a MacSecKey points at: a Kubernetes Secret, a customer-owned
//! Secrets Manager secret, or a Direct Connect-managed secret ARN.
//!
//! Returns [`KeyMaterial`] for the planner or a [`KeyProblem`] whose message names the
//! MacSecKey field and the fix, and says whether the problem heals by itself (AWS or the API
//! server failed for a moment) or needs a person. Values are parsed into `Ckn`/`Cak` at once
//! and never formatted into a message.
//!
//! A Kubernetes Secret is read only when it carries [`KEY_MATERIAL_LABEL`]: anyone who may
//! write a MacSecKey could otherwise have the operator copy any 64-hex value of any Secret
//! in the namespace (another link's CAK, a token) into the MacSecKey's status as its CKN.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use kube::core::ObjectMeta;

use crate::aws::{AwsError, BoxFut, ErrorClass, Scope, SecretsProvider};
use crate::crd::{
    MacSecKey, MacSecKeySpec, SecretKeySource, SecretsManagerLocation, SecretsManagerSource,
};
use crate::keys::{Cak, Ckn};
use crate::plan::{KeyMaterial, KeyProblem, KeyReason, Reason};

/// The data of a Kubernetes Secret, by key.
pub type SecretData = BTreeMap<String, Vec<u8>>;

/// The label, with the value `"true"`, that marks a Secret as MACsec key material the
/// operator may read. `keygen` writes it; an External Secrets or Vault template adds it to the
/// Secrets it makes.
pub const KEY_MATERIAL_LABEL: &str = "dxmacsec.io/key-material";

/// The annotation by which a key-material Secret names the key that holds its CKN, when
/// that is not `ckn`. The CKN is published (status, AWS, the router's automation), so only
/// the Secret's owner says which value may be: a MacSecKey whose `cknKey` names another key
/// (a swapped `cakKey`) is refused.
pub const CKN_KEY_ANNOTATION: &str = "dxmacsec.io/ckn-key";

/// Whether a Secret's metadata marks it as key material for the operator.
pub fn marked(meta: &ObjectMeta) -> bool {
    meta.labels
        .as_ref()
        .and_then(|l| l.get(KEY_MATERIAL_LABEL))
        .is_some_and(|v| v == "true")
}

/// What reading a Secret by name found.
#[derive(Clone)]
pub enum SecretRead {
    /// No Secret of that name.
    Missing,
    /// The Secret exists without [`KEY_MATERIAL_LABEL`]: its data was not used.
    Unmarked,
    /// A marked Secret's data, and the key it publishes as its CKN.
    Data { data: SecretData, ckn_key: String },
}

/// Names the keys of the data, never their values.
impl std::fmt::Debug for SecretRead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SecretRead::Missing => f.write_str("Missing"),
            SecretRead::Unmarked => f.write_str("Unmarked"),
            SecretRead::Data { data, ckn_key } => write!(
                f,
                "Data({:?}: <redacted>, CKN in {ckn_key:?})",
                data.keys().collect::<Vec<_>>()
            ),
        }
    }
}

impl SecretRead {
    /// A Secret's data (`stringData` over `data`, as the API server merges them) when it is
    /// marked; an unmarked Secret's data is dropped unread.
    pub fn of(secret: Secret) -> Self {
        if !marked(&secret.metadata) {
            return SecretRead::Unmarked;
        }
        let mut data: SecretData = secret
            .data
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.0))
            .collect();
        for (k, v) in secret.string_data.unwrap_or_default() {
            data.insert(k, v.into_bytes());
        }
        let ckn_key = secret
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(CKN_KEY_ANNOTATION))
            .cloned()
            .unwrap_or_else(|| "ckn".into());
        SecretRead::Data { data, ckn_key }
    }
}

/// A Secret that could not be read: what happened, and whether it may heal by itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadFailure {
    pub message: String,
    pub transient: bool,
}

/// Reads Kubernetes Secrets by name (the controller uses `get`, the CLI the files given).
pub trait SecretReader: Send + Sync {
    /// Secret `namespace/name`, as far as the operator may use it.
    fn read<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFut<'a, Result<SecretRead, ReadFailure>>;
}

fn problem(reason: KeyReason, message: String) -> KeyProblem {
    KeyProblem {
        reason,
        message,
        transient: false,
    }
}

fn invalid(message: String) -> KeyProblem {
    problem(KeyReason::InvalidKeyMaterial, message)
}

/// A failed Secrets Manager call: throttled or failed for a moment (`Throttled`, `AwsError`:
/// retried, not a person's problem), refused (`AccessDenied`, `AwsCredentials`), a secret
/// that does not exist (`SecretNotFound`), or another answer that needs the spec or the
/// secret fixed (`SecretReadError`).
fn aws_problem(e: &AwsError, what: &str) -> KeyProblem {
    let transient = e.class != ErrorClass::Terminal;
    // The DxConnection's reasons for an AWS error, except a terminal one of no other kind,
    // which is about the secret itself.
    let reason = match e.reason() {
        Reason::AwsError if !transient => {
            if e.code.as_deref() == Some("ResourceNotFoundException") {
                KeyReason::SecretNotFound
            } else {
                KeyReason::SecretReadError
            }
        }
        Reason::Throttled => KeyReason::Throttled,
        Reason::AwsCredentials => KeyReason::AwsCredentials,
        Reason::AccessDenied => KeyReason::AccessDenied,
        _ => KeyReason::AwsError,
    };
    let retry = if transient {
        "; a passing failure, retried"
    } else {
        ""
    };
    KeyProblem {
        reason,
        message: format!("{what}: {e}{retry}"),
        transient,
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
        return Err(problem(
            KeyReason::KeyMaterialChanged,
            format!(
                "the CAK in {source} changed but the CKN {ckn} did not; Direct Connect cannot change the CAK of a CKN, so the router and AWS would disagree. Put the previous CAK back, or create a new key with a new CKN (dx-macsec-operator keygen) and rotate to it"
            ),
        ));
    }
    Ok(())
}

/// Checks that exactly one source is set (the CRD's CEL rule, for objects that skipped
/// admission such as CLI files).
pub fn check_one_source(spec: &MacSecKeySpec) -> Result<(), String> {
    let count = [
        spec.secret_ref.is_some(),
        spec.secrets_manager.is_some(),
        spec.direct_connect_secret_arn.is_some(),
        spec.generate.is_some(),
    ]
    .iter()
    .filter(|b| **b)
    .count();
    if count == 1 {
        Ok(())
    } else {
        Err(format!(
            "spec sets {count} key sources; set exactly one of secretRef, secretsManager, directConnectSecretArn or generate"
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
    aws: &dyn SecretsProvider,
    scope: &Scope,
) -> Result<KeyMaterial, KeyProblem> {
    check_one_source(&key.spec).map_err(invalid)?;
    let status = key.status.as_ref();
    let spec = &key.spec;
    let (ckn, cak, source) = if let Some(r) = &spec.secret_ref {
        let namespace = crate::crd::namespace_of(key);
        from_secret(r, namespace, secrets).await?
    } else if let Some(sm) = &spec.secrets_manager {
        from_secrets_manager(sm, aws, scope).await?
    } else if spec.generate.is_some() {
        from_generated(key, secrets, aws).await?
    } else {
        // The one source left: a Direct Connect-managed secret, used by its ARN.
        let arn = spec.direct_connect_secret_arn.clone().unwrap_or_default();
        let ckn = status
            .and_then(|s| s.ckn.as_deref())
            .and_then(|c| Ckn::parse("status.ckn", c).ok());
        return Ok(KeyMaterial::managed_secret(arn, ckn));
    };
    unchanged(status, &ckn, &cak, &source)?;
    // The managed secret ARN, when there is one, comes from the engine's cache of the
    // connection's own region and account, not from here.
    Ok(KeyMaterial::pair(ckn, cak, None))
}

/// The pair the operator made for a MacSecKey with `spec.generate`, where its status says it
/// was written: a Secret of the key's namespace, or a Secrets Manager secret read in the
/// region and with the role it was made with.
async fn from_generated(
    key: &MacSecKey,
    secrets: &dyn SecretReader,
    aws: &dyn SecretsProvider,
) -> Result<(Ckn, Cak, String), KeyProblem> {
    let made = key.status.as_ref().and_then(|s| s.generated.as_ref());
    if let Some(secret) = made.and_then(|m| m.secret.as_ref()) {
        let source = SecretKeySource {
            name: secret.name.clone(),
            ckn_key: secret.ckn_key.clone(),
            cak_key: secret.cak_key.clone(),
        };
        return from_secret(&source, crate::crd::namespace_of(key), secrets).await;
    }
    if let Some(sm) = made.and_then(|m| m.secrets_manager.as_ref()) {
        let (source, scope) = made_in_secrets_manager(sm);
        return from_secrets_manager(&source, aws, &scope).await;
    }
    Err(KeyProblem {
        reason: KeyReason::KeyNotGenerated,
        message: "the key's material is not made yet (spec.generate): the controller makes it and records where in status.generated; plan and apply read a generated key only from a manifest whose status says where it is (kubectl get mskey NAME -o yaml)".into(),
        transient: true,
    })
}

/// A generated key's Secrets Manager secret as a source, and where it is read: its region,
/// with the role it was made with.
pub fn made_in_secrets_manager(sm: &SecretsManagerLocation) -> (SecretsManagerSource, Scope) {
    let source = SecretsManagerSource {
        secret_id: sm.secret_arn.clone(),
        region: Some(sm.region.clone()),
        ckn_field: sm.ckn_field.clone(),
        cak_field: sm.cak_field.clone(),
    };
    let scope = Scope {
        region: sm.region.clone(),
        role_arn: sm.role_arn.clone(),
    };
    (source, scope)
}

/// Parses a CKN and a CAK read from `source`'s fields; a CAK equal to its CKN is refused,
/// since the CKN is shown in status and sent to AWS and routers as a name.
fn parse_pair(
    source: &str,
    (ckn_field, ckn): (&str, &str),
    (cak_field, cak): (&str, &str),
) -> Result<(Ckn, Cak), KeyProblem> {
    let ckn =
        Ckn::parse(&format!("{source} {ckn_field}"), ckn).map_err(|e| invalid(e.to_string()))?;
    let cak =
        Cak::parse(&format!("{source} {cak_field}"), cak).map_err(|e| invalid(e.to_string()))?;
    if ckn.as_str().eq_ignore_ascii_case(cak.expose()) {
        return Err(invalid(format!(
            "{source}: {ckn_field} and {cak_field} hold the same value; the CKN is shown in status and on AWS, so it must never be the CAK. Point them at two different values (dx-macsec-operator keygen makes a pair)"
        )));
    }
    Ok((ckn, cak))
}

/// The pair in a Kubernetes Secret that carries [`KEY_MATERIAL_LABEL`].
async fn from_secret(
    r: &SecretKeySource,
    namespace: &str,
    secrets: &dyn SecretReader,
) -> Result<(Ckn, Cak, String), KeyProblem> {
    let source = format!("Secret {namespace}/{}", r.name);
    let data = match secrets.read(namespace, &r.name).await {
        Ok(SecretRead::Data { data, ckn_key }) if ckn_key == r.ckn_key && r.cak_key != ckn_key => {
            data
        }
        Ok(SecretRead::Data { ckn_key, .. }) => {
            return Err(invalid(format!(
                "spec.secretRef.cknKey {:?} and cakKey {:?} do not match {source}, whose CKN is its key {ckn_key:?} (annotation {CKN_KEY_ANNOTATION}, default \"ckn\"): the CKN is shown in status and on AWS, so only the key the Secret's owner marks is read as one. Set cknKey to {ckn_key:?} and cakKey to the key of the CAK, or have the Secret's owner fix its annotation",
                r.ckn_key, r.cak_key
            )));
        }
        Ok(SecretRead::Missing) => {
            return Err(problem(
                KeyReason::SecretNotFound,
                format!(
                    "{source} (spec.secretRef.name) not found; create it in namespace {namespace} or fix the name"
                ),
            ));
        }
        Ok(SecretRead::Unmarked) => {
            return Err(problem(
                KeyReason::SecretNotLabelled,
                format!(
                    "{source} (spec.secretRef.name) is not labelled {KEY_MATERIAL_LABEL}=true, so the operator does not read it: label the Secret that holds this key's CKN and CAK (kubectl label secret -n {namespace} {} {KEY_MATERIAL_LABEL}=true), or fix the name",
                    r.name
                ),
            ));
        }
        Err(failure) => {
            return Err(KeyProblem {
                reason: KeyReason::SecretReadError,
                message: format!(
                    "cannot read {source} (spec.secretRef.name): {}",
                    failure.message
                ),
                transient: failure.transient,
            });
        }
    };
    let field = |k: &str, which: &str| -> Result<String, KeyProblem> {
        let bytes = data.get(k).ok_or_else(|| {
            invalid(format!(
                "{source} has no key {k:?} (spec.secretRef.{which}); add it or point {which} at the right key"
            ))
        })?;
        String::from_utf8(bytes.clone()).map_err(|_| {
            invalid(format!(
                "{source} key {k:?} is not text; it must hold 64 hexadecimal characters"
            ))
        })
    };
    let (ckn, cak) = parse_pair(
        &source,
        (
            &format!("key {:?}", r.ckn_key),
            &field(&r.ckn_key, "cknKey")?,
        ),
        (
            &format!("key {:?}", r.cak_key),
            &field(&r.cak_key, "cakKey")?,
        ),
    )?;
    Ok((ckn, cak, source))
}

/// Where a Secrets Manager source is read for a DxConnection in `scope`: its own region if
/// it names one, with the scope's role.
pub fn secrets_manager_scope(sm: &SecretsManagerSource, scope: &Scope) -> Scope {
    Scope {
        region: sm.region.clone().unwrap_or_else(|| scope.region.clone()),
        role_arn: scope.role_arn.clone(),
    }
}

/// The pair in a customer-owned Secrets Manager secret whose SecretString is JSON.
async fn from_secrets_manager(
    sm: &SecretsManagerSource,
    aws: &dyn SecretsProvider,
    scope: &Scope,
) -> Result<(Ckn, Cak, String), KeyProblem> {
    let sm_scope = secrets_manager_scope(sm, scope);
    let what = format!(
        "cannot read Secrets Manager secret {} (spec.secretsManager.secretId) in {}",
        sm.secret_id, sm_scope.region
    );
    let api = aws
        .secrets(&sm_scope)
        .await
        .map_err(|e| aws_problem(&e, &what))?;
    let text = api
        .secret_string(&sm.secret_id)
        .await
        .map_err(|e| aws_problem(&e, &what))?;
    let source = format!("Secrets Manager secret {}", sm.secret_id);
    let json: serde_json::Value = serde_json::from_str(&text).map_err(|_| {
        invalid(format!(
            "{source}: SecretString is not JSON; it must be an object with {:?} and {:?} fields",
            sm.ckn_field, sm.cak_field
        ))
    })?;
    let field = |f: &str, which: &str| -> Result<&str, KeyProblem> {
        json.get(f).and_then(|v| v.as_str()).ok_or_else(|| {
            invalid(format!(
                "{source} has no string field {f:?} (spec.secretsManager.{which})"
            ))
        })
    };
    let (ckn, cak) = parse_pair(
        &source,
        (
            &format!("field {:?}", sm.ckn_field),
            field(&sm.ckn_field, "cknField")?,
        ),
        (
            &format!("field {:?}", sm.cak_field),
            field(&sm.cak_field, "cakField")?,
        ),
    )?;
    Ok((ckn, cak, source))
}
