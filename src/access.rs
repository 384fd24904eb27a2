//! Who may reach which AWS resource: the rule that turns a DxConnection into the AWS
//! [`Scope`] it acts in, or refuses it with `Forbidden` before any AWS call. One rule for
//! the controller (DxAccesses from the cluster) and the CLI (DxAccesses from the files).
//!
//! - Without `spec.accessRef` a DxConnection uses the operator's own credentials, and only
//!   in the namespaces the operator allows (`--default-access-namespaces`; by default the
//!   operator's own namespace, `*` for all).
//!   A `spec.roleArn` without `accessRef` is refused: naming a role is what a DxAccess is
//!   for.
//! - With `spec.accessRef.name` the DxAccess of that name must grant the namespace, the
//!   region and the connection ID; its `roleArn` (absent: the operator's own credentials) is
//!   the role. A `spec.roleArn` that differs from it is refused.

use std::collections::BTreeMap;

use crate::aws::Scope;
use crate::crd::{DxAccess, DxAccessSpec, DxConnection};
use crate::plan::Reason;

/// Why a DxConnection cannot reach AWS: the condition's reason and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub reason: Reason,
    pub message: String,
}

impl Refusal {
    fn forbidden(message: String) -> Self {
        Refusal {
            reason: Reason::Forbidden,
            message,
        }
    }
}

/// Namespaces allowed a grant: names, or `*` for every namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Namespaces(Vec<String>);

impl Namespaces {
    pub fn all() -> Self {
        Namespaces(vec!["*".into()])
    }

    pub fn none() -> Self {
        Namespaces(Vec::new())
    }

    /// A comma-separated list (`*` for every namespace, empty for none).
    pub fn parse(list: &str) -> Self {
        Namespaces(
            list.split(',')
                .map(str::trim)
                .filter(|n| !n.is_empty())
                .map(str::to_string)
                .collect(),
        )
    }

    fn allow(list: &[String], namespace: &str) -> bool {
        list.iter().any(|n| n == "*" || n == namespace)
    }

    pub fn allows(&self, namespace: &str) -> bool {
        Self::allow(&self.0, namespace)
    }
}

/// Everything the rule needs: the DxAccesses by name, the namespaces that may use the
/// operator's own credentials, and the region for DxConnections without `spec.region`.
#[derive(Debug, Clone)]
pub struct Access {
    grants: BTreeMap<String, DxAccessSpec>,
    default_namespaces: Namespaces,
    default_region: Option<String>,
}

impl Access {
    pub fn new(
        grants: impl IntoIterator<Item = DxAccess>,
        default_namespaces: Namespaces,
        default_region: Option<String>,
    ) -> Self {
        Access {
            grants: grants
                .into_iter()
                .map(|a| (a.metadata.name.unwrap_or_default(), a.spec))
                .collect(),
            default_namespaces,
            default_region,
        }
    }

    pub fn default_region(&self) -> Option<&str> {
        self.default_region.as_deref()
    }

    /// Whether objects in `namespace` may use the operator's own credentials without a
    /// DxAccess (a MacSecKey's Secrets Manager source read before any DxConnection uses it).
    pub fn allows_own_credentials(&self, namespace: &str) -> bool {
        self.default_namespaces.allows(namespace)
    }

    /// The DxAccess `name` (named in `field`) when it grants `namespace` and `region`; one
    /// message for "absent" and "not granted": a namespace user learns nothing about
    /// DxAccesses that are not theirs.
    fn granted(
        &self,
        name: &str,
        namespace: &str,
        region: &str,
        field: &str,
    ) -> Result<&DxAccessSpec, Refusal> {
        let grant = self
            .grants
            .get(name)
            .filter(|g| Namespaces::allow(&g.namespaces, namespace))
            .ok_or_else(|| {
                Refusal::forbidden(format!(
                    "DxAccess {name} ({field}) does not exist or does not grant namespace {namespace}: ask a cluster admin to add the namespace to its spec.namespaces, or fix the name"
                ))
            })?;
        if let Some(regions) = &grant.regions
            && !regions.iter().any(|r| r == region)
        {
            return Err(Refusal::forbidden(format!(
                "DxAccess {name} does not allow region {region} (its spec.regions: {}): fix the region or ask a cluster admin",
                regions.join(", ")
            )));
        }
        Ok(grant)
    }

    /// Where a MacSecKey of `namespace` makes its Secrets Manager secret (`spec.generate`):
    /// the role of `generate.accessRef` (which must grant the namespace and the region), or
    /// the operator's own credentials where the namespace may use them; the region of
    /// `generate.region`, else the DxAccess's only region, else the operator's default.
    pub fn generation_scope(
        &self,
        namespace: &str,
        generate: &crate::crd::GenerateKey,
    ) -> Result<Scope, Refusal> {
        let grant = generate
            .access_ref
            .as_ref()
            .and_then(|r| self.grants.get(&r.name));
        let only_region = grant
            .and_then(|g| g.regions.as_ref())
            .filter(|r| r.len() == 1)
            .map(|r| r[0].clone());
        let region = generate
            .region
            .clone()
            .or(only_region)
            .or_else(|| self.default_region.clone())
            .ok_or_else(|| Refusal {
                reason: Reason::InvalidSpec,
                message: "spec.generate.region is not set and the operator has no default region; set spec.generate.region".into(),
            })?;
        match &generate.access_ref {
            Some(r) => {
                let grant =
                    self.granted(&r.name, namespace, &region, "spec.generate.accessRef.name")?;
                Ok(Scope {
                    region,
                    role_arn: grant.role_arn.clone(),
                })
            }
            None if self.default_namespaces.allows(namespace) => Ok(Scope {
                region,
                role_arn: None,
            }),
            None => Err(Refusal::forbidden(format!(
                "namespace {namespace} may not use the operator's own AWS credentials: name a DxAccess that grants it in spec.generate.accessRef.name"
            ))),
        }
    }

    /// The region and role `dxc` acts in, or why it may not act.
    pub fn scope_of(&self, dxc: &DxConnection) -> Result<Scope, Refusal> {
        let spec = &dxc.spec;
        let region = spec
            .region
            .clone()
            .or_else(|| self.default_region.clone())
            .ok_or_else(|| Refusal {
                reason: Reason::InvalidSpec,
                message: "spec.region is not set and the operator has no default region; set spec.region or AWS_REGION (--region)".into(),
            })?;
        let namespace = crate::crd::namespace_of(dxc);
        let Some(reference) = &spec.access_ref else {
            if let Some(role) = &spec.role_arn {
                return Err(Refusal::forbidden(format!(
                    "spec.roleArn {role} needs a DxAccess that grants namespace {namespace} that role: ask a cluster admin for one and name it in spec.accessRef.name"
                )));
            }
            if !self.default_namespaces.allows(namespace) {
                let allowed = match self.default_namespaces.0.as_slice() {
                    [] => "no namespace".to_string(),
                    list => format!("only namespace {}", list.join(", ")),
                };
                return Err(Refusal::forbidden(format!(
                    "namespace {namespace} may not use the operator's own AWS credentials ({allowed} may, --default-access-namespaces): ask a cluster admin to create a DxAccess whose spec.namespaces lists {namespace} (with the role, regions and connections this namespace may use), then name it in spec.accessRef.name"
                )));
            }
            return Ok(Scope {
                region,
                role_arn: None,
            });
        };
        let name = &reference.name;
        let grant = self.granted(name, namespace, &region, "spec.accessRef.name")?;
        if let Some(ids) = &grant.connection_ids
            && !ids.contains(&spec.connection_id)
        {
            return Err(Refusal::forbidden(format!(
                "DxAccess {name} does not allow {} (not in its spec.connectionIds): fix spec.connectionId or ask a cluster admin",
                spec.connection_id
            )));
        }
        if let Some(role) = &spec.role_arn
            && grant.role_arn.as_ref() != Some(role)
        {
            let granted = grant
                .role_arn
                .as_deref()
                .unwrap_or("the operator's own credentials");
            return Err(Refusal::forbidden(format!(
                "spec.roleArn {role} is not the role of DxAccess {name} ({granted}): remove spec.roleArn, the DxAccess decides the role"
            )));
        }
        Ok(Scope {
            region,
            role_arn: grant.role_arn.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROLE: &str = "arn:aws:iam::222222222222:role/dx";

    fn dxc(ns: &str, spec: serde_json::Value) -> DxConnection {
        let mut d = DxConnection::new("c", serde_json::from_value(spec).unwrap());
        d.metadata.namespace = Some(ns.into());
        d
    }

    fn grant(name: &str, spec: serde_json::Value) -> DxAccess {
        DxAccess::new(name, serde_json::from_value(spec).unwrap())
    }

    fn access(default_namespaces: Namespaces) -> Access {
        Access::new(
            [
                grant(
                    "prod",
                    serde_json::json!({"namespaces": ["net-prod"], "roleArn": ROLE,
                        "regions": ["us-east-1"], "connectionIds": ["dxcon-prod1"]}),
                ),
                grant("own", serde_json::json!({"namespaces": ["*"]})),
            ],
            default_namespaces,
            Some("us-east-1".into()),
        )
    }

    fn refusal(a: &Access, d: &DxConnection) -> String {
        let r = a.scope_of(d).unwrap_err();
        assert_eq!(r.reason, Reason::Forbidden, "{}", r.message);
        r.message
    }

    /// The escalation case: a namespace the DxAccess does not list, naming it and its
    /// production connection, is refused; so is a role named without a DxAccess.
    #[test]
    fn a_namespace_gets_only_what_a_dxaccess_grants_it() {
        let a = access(Namespaces::all());
        let prod =
            serde_json::json!({"connectionId": "dxcon-prod1", "accessRef": {"name": "prod"}});
        assert_eq!(
            a.scope_of(&dxc("net-prod", prod.clone())).unwrap(),
            Scope {
                region: "us-east-1".into(),
                role_arn: Some(ROLE.into())
            }
        );
        let m = refusal(&a, &dxc("sandbox", prod));
        assert!(
            m.contains("DxAccess prod (spec.accessRef.name) does not exist or does not grant namespace sandbox"),
            "{m}"
        );
        assert_eq!(
            m,
            refusal(
                &a,
                &dxc(
                    "sandbox",
                    serde_json::json!({"connectionId": "dxcon-prod1", "accessRef": {"name": "nope"}})
                )
            )
            .replace("nope", "prod"),
            "absent and not granted read the same"
        );
        let m = refusal(
            &a,
            &dxc(
                "sandbox",
                serde_json::json!({"connectionId": "dxcon-prod1", "roleArn": ROLE}),
            ),
        );
        assert!(
            m.contains("spec.roleArn") && m.contains("spec.accessRef.name"),
            "{m}"
        );
    }

    /// Region, connection ID and role must each be within the grant.
    #[test]
    fn region_connection_and_role_are_checked() {
        let a = access(Namespaces::all());
        let with = |extra: serde_json::Value| {
            let mut spec =
                serde_json::json!({"connectionId": "dxcon-prod1", "accessRef": {"name": "prod"}});
            spec.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            dxc("net-prod", spec)
        };
        let m = refusal(&a, &with(serde_json::json!({"region": "eu-west-1"})));
        assert!(
            m.contains("region eu-west-1") && m.contains("us-east-1"),
            "{m}"
        );
        let m = refusal(
            &a,
            &with(serde_json::json!({"connectionId": "dxcon-other"})),
        );
        assert!(
            m.contains("dxcon-other") && m.contains("spec.connectionIds"),
            "{m}"
        );
        let m = refusal(
            &a,
            &with(serde_json::json!({"roleArn": "arn:aws:iam::333333333333:role/dx"})),
        );
        assert!(m.contains("not the role of DxAccess prod"), "{m}");
        assert!(
            a.scope_of(&with(serde_json::json!({"roleArn": ROLE})))
                .is_ok()
        );
    }

    /// Without accessRef: the operator's own credentials in the namespaces it allows; a
    /// DxAccess without a role also means its own credentials.
    #[test]
    fn own_credentials_only_where_allowed() {
        let plain = serde_json::json!({"connectionId": "dxcon-a1"});
        let own = Scope {
            region: "us-east-1".into(),
            role_arn: None,
        };
        assert_eq!(
            access(Namespaces::all())
                .scope_of(&dxc("x", plain.clone()))
                .unwrap(),
            own
        );
        let only_net = access(Namespaces::parse(" net, ops ,"));
        assert_eq!(only_net.scope_of(&dxc("ops", plain.clone())).unwrap(), own);
        let m = refusal(&only_net, &dxc("sandbox", plain.clone()));
        assert!(m.contains("--default-access-namespaces"), "{m}");
        // The fix is named: a DxAccess listing this namespace, by a cluster admin.
        assert!(
            m.contains("only namespace net, ops may")
                && m.contains("create a DxAccess whose spec.namespaces lists sandbox"),
            "{m}"
        );
        refusal(&access(Namespaces::none()), &dxc("net", plain));
        let via_grant = dxc(
            "sandbox",
            serde_json::json!({"connectionId": "dxcon-a1", "accessRef": {"name": "own"}}),
        );
        assert_eq!(only_net.scope_of(&via_grant).unwrap(), own);
    }

    /// No region anywhere is an invalid spec, not a refusal.
    #[test]
    fn no_region_is_invalid_spec() {
        let a = Access::new([], Namespaces::all(), None);
        let r = a
            .scope_of(&dxc("x", serde_json::json!({"connectionId": "dxcon-a1"})))
            .unwrap_err();
        assert_eq!(r.reason, Reason::InvalidSpec);
        assert!(r.message.contains("spec.region"));
    }
}
