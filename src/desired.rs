//! From a `DxConnection` and the MacSecKeys it names to the planner's [`Desired`], and the
//! AWS [`Scope`] it lives in. Shared by the CLI and the controller.

use std::time::Duration;

use crate::access::Access;
use crate::aws::{Scope, SecretsProvider};
use crate::crd::{CONFIRM_REMOVAL_ANNOTATION, DxConnection, MacSecKey, RemovalConfirmation};
use crate::keys::Ckn;
use crate::material::{self, SecretReader};
use crate::plan::{Desired, KeyProblem, WantedKey};

/// The `dxmacsec.io/owner` tag value of `dxc` in cluster `cluster`.
pub fn owner_tag(cluster: &str, dxc: &DxConnection) -> String {
    format!(
        "{cluster}/{}/{}",
        crate::crd::namespace_of(dxc),
        dxc.metadata.name.as_deref().unwrap_or_default()
    )
}

/// Everything but key material and conflicts, which `desired` adds.
fn base(dxc: &DxConnection) -> Desired {
    Desired {
        encryption_mode: dxc.spec.encryption_mode,
        overlap: Duration::from_secs(u64::from(dxc.spec.rotation.overlap_seconds)),
        require_encryption_up: dxc.spec.require_encryption_up,
        policy: dxc.spec.management_policy,
        guard: Duration::from_secs(u64::from(dxc.spec.rotation.guard_seconds)),
        manual_confirmation: dxc.spec.rotation.confirm == RemovalConfirmation::Manual,
        confirmation: dxc
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(CONFIRM_REMOVAL_ANNOTATION))
            .cloned(),
        generation: dxc.metadata.generation,
        adopt: dxc.spec.adopt,
        ..Desired::new(&dxc.spec.connection_id)
    }
}

/// Resolves every MacSecKey named in `spec.keys`; `find_key` looks one up by name in the
/// DxConnection's namespace. A key whose CAK cannot be needed (see [`material::settled`];
/// `known_arn` gives the managed secret ARN of a CKN in `scope`) is not read at all, so a
/// steady-state resync reads no Secret and calls no GetSecretValue.
pub async fn desired(
    dxc: &DxConnection,
    find_key: impl Fn(&str) -> Option<MacSecKey>,
    known_arn: impl Fn(&Ckn) -> Option<String>,
    secrets: &dyn SecretReader,
    aws: &dyn SecretsProvider,
    scope: &Scope,
) -> Desired {
    let namespace = crate::crd::namespace_of(dxc);
    let mut d = base(dxc);
    if let Some(refs) = &dxc.spec.keys {
        let mut keys = Vec::with_capacity(refs.len());
        for (i, r) in refs.iter().enumerate() {
            let material = match find_key(&r.name) {
                Some(key) => match material::settled(&key, &known_arn) {
                    Some(material) => Ok(material),
                    None => material::resolve(&key, secrets, aws, scope).await,
                },
                None => Err(KeyProblem {
                    reason: crate::conditions::KeyReason::MacSecKeyNotFound,
                    message: format!(
                        "MacSecKey {namespace}/{} (spec.keys[{i}].name) not found; create it or fix the name",
                        r.name
                    ),
                    transient: false,
                }),
            };
            keys.push(WantedKey {
                name: r.name.clone(),
                material,
            });
        }
        d.keys = Some(keys);
    }
    d
}

/// `dxc` with `spec.keys` naming `names`: the keys a schedule has in use, which [`desired`]
/// reads in place of the starting set its spec lists (the controller and the CLI alike).
pub fn with_keys(dxc: &DxConnection, names: &[String]) -> DxConnection {
    let mut d = dxc.clone();
    d.spec.keys = Some(
        names
            .iter()
            .map(|name| crate::crd::KeyReference { name: name.clone() })
            .collect(),
    );
    d
}

/// The CKNs of the outgoing keys `dxc`'s status says were removed within a guard window.
pub fn removed_ckns(dxc: &DxConnection) -> Vec<String> {
    dxc.status
        .iter()
        .flat_map(|s| s.rotation.iter())
        .flat_map(|r| r.removed.iter())
        .filter_map(|k| k.ckn.clone())
        .collect()
}

/// The material of the outgoing keys whose CKNs are `removed`, read from `candidates`
/// (MacSecKeys that may hold them): what a rollback sends as CKN/CAK if the managed secret
/// is gone. Keys that cannot be read are left out; the managed secret is tried first anyway.
pub async fn restorable(
    removed: &[String],
    candidates: Vec<MacSecKey>,
    secrets: &dyn SecretReader,
    aws: &dyn SecretsProvider,
    scope: &Scope,
) -> Vec<crate::plan::KeyMaterial> {
    let mut out = Vec::new();
    for key in candidates {
        if let Ok(m) = material::resolve(&key, secrets, aws, scope).await
            && m.cak.is_some()
            && m.ckn
                .as_ref()
                .is_some_and(|c| removed.iter().any(|r| r == c.as_str()))
        {
            out.push(m);
        }
    }
    out
}

/// The Conflict rule, one for the controller and the CLI: of the DxConnections that name
/// one AWS resource (the same connection ID, region and role), the oldest acts and the
/// others get `Conflict`. DxConnections that [`Access`] refuses do not count. Oldest by `metadata.creationTimestamp`; objects without one (files
/// given to the CLI, never objects of a cluster) come after those with one, in `position`
/// order (the CLI's is the order it read the files in); ties by namespace/name. Objects
/// being deleted do not count: once the owner is being deleted, the next oldest takes over
/// (and the one being deleted leaves the resource to it).
///
/// `candidates` are every DxConnection with its position (the controller gives 0 to all);
/// returns `namespace/name` of the owner when it is not `dxc` itself.
pub fn conflict_owner<'a>(
    dxc: &DxConnection,
    position: usize,
    scope: &Scope,
    candidates: impl Iterator<Item = (usize, &'a DxConnection)>,
    access: &Access,
) -> Option<String> {
    let seniority = |d: &DxConnection, position: usize| {
        let created = d.metadata.creation_timestamp.as_ref().map(|t| t.0);
        (
            created.is_none(),
            created,
            position,
            d.metadata.namespace.clone().unwrap_or_default(),
            d.metadata.name.clone().unwrap_or_default(),
        )
    };
    let own = seniority(dxc, position);
    candidates
        .filter(|(_, o)| o.spec.connection_id == dxc.spec.connection_id)
        .filter(|(_, o)| o.metadata.deletion_timestamp.is_none())
        .filter(|(_, o)| access.scope_of(o).ok().as_ref() == Some(scope))
        .map(|(i, o)| seniority(o, i))
        .min()
        .filter(|owner| *owner != own)
        .map(|(_, _, _, namespace, name)| format!("{namespace}/{name}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::Namespaces;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn dxc(name: &str, id: &str, created: Option<i64>) -> DxConnection {
        let spec = serde_json::from_value(serde_json::json!({"connectionId": id})).unwrap();
        let mut d = DxConnection::new(name, spec);
        d.metadata.namespace = Some("net".into());
        d.metadata.creation_timestamp =
            created.map(|s| Time(jiff::Timestamp::from_second(1_800_000_000 + s).unwrap()));
        d
    }

    fn owner(all: &[DxConnection], i: usize) -> Option<String> {
        let access = Access::new([], Namespaces::all(), Some("us-east-1".into()));
        let scope = access.scope_of(&all[i]).unwrap();
        conflict_owner(&all[i], i, &scope, all.iter().enumerate(), &access)
    }

    /// One rule for the controller and the CLI: the oldest by creationTimestamp acts,
    /// wherever it stands; manifests without one follow the order read, after those with
    /// one; another connection or region is no conflict; a deleting owner hands over.
    #[test]
    fn the_oldest_dxconnection_owns_the_connection() {
        let all = [
            dxc("newer", "dxcon-a1", Some(10)),
            dxc("older", "dxcon-a1", Some(5)),
            dxc("file-first", "dxcon-a1", None),
            dxc("file-second", "dxcon-a1", None),
            dxc("other", "dxcon-b2", None),
        ];
        assert_eq!(owner(&all, 0).as_deref(), Some("net/older"));
        assert_eq!(owner(&all, 1), None);
        assert_eq!(owner(&all, 2).as_deref(), Some("net/older"));
        assert_eq!(owner(&all, 4), None);

        let files = [
            dxc("file-first", "dxcon-a1", None),
            dxc("file-second", "dxcon-a1", None),
        ];
        assert_eq!(owner(&files, 0), None);
        assert_eq!(owner(&files, 1).as_deref(), Some("net/file-first"));

        let mut other_region = files.clone();
        other_region[1].spec.region = Some("eu-west-1".into());
        assert_eq!(owner(&other_region, 1), None);

        let mut deleting = all.clone();
        deleting[1].metadata.deletion_timestamp = Some(Time(jiff::Timestamp::now()));
        assert_eq!(owner(&deleting, 0), None, "the next oldest takes over");
        assert_eq!(owner(&deleting, 1).as_deref(), Some("net/newer"));

        let mut refused = all.clone();
        refused[1].spec.role_arn = Some("arn:aws:iam::111111111111:role/dx".into());
        assert_eq!(
            owner(&refused, 0),
            None,
            "a Forbidden DxConnection owns nothing"
        );
    }
}
