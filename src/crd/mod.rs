//! The custom resources of group `dxmacsec.io/v1alpha1`: [`DxConnection`] and [`MacSecKey`]
//! (namespaced, written by users), [`DxAccess`] (cluster scoped, written by cluster admins),
//! and the condition type they share.
//!
//! Owns the API surface users write (spec), what the operator reports (status), and the
//! admission rules (OpenAPI patterns, enums, defaults and CEL) baked into the generated CRDs.
//! Holds no logic beyond defaults and small accessors: decisions live in `plan`.

mod access;
mod connection;
mod key;

pub use access::*;
pub use connection::*;
pub use key::*;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;
use schemars::JsonSchema;

use crate::conditions::ConditionType;
use serde::{Deserialize, Serialize};

/// API group of both resources.
pub const GROUP: &str = "dxmacsec.io";
/// Annotation on a DxConnection confirming that the router uses a new key: a new value
/// lets outgoing keys go under `rotation.confirm: Manual`, and retries a rolled-back removal.
pub const CONFIRM_REMOVAL_ANNOTATION: &str = "dxmacsec.io/confirm-removal";
/// The AWS tag on every connection and LAG the operator manages:
/// `<cluster>/<namespace>/<name>` of the DxConnection that owns it.
pub const OWNER_TAG: &str = "dxmacsec.io/owner";
/// Finalizer the operator puts on both kinds.
pub const FINALIZER: &str = "dxmacsec.io/finalizer";

/// A status condition, shaped like `metav1.Condition` so kstatus, `kubectl wait`, Argo CD and
/// Flux read it.
// The types and reasons written are `crate::conditions`'s.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// `Ready`, `Synced`, `Reconciling` (kstatus: the operator is working towards the spec) or
    /// `Stalled` (kstatus: only a person can move the object on).
    #[serde(rename = "type")]
    pub type_: String,
    /// `True` or `False`.
    pub status: String,
    /// Machine-readable reason in CamelCase, for example `Converged` or `KeyNotReady`.
    pub reason: String,
    /// What happened and, when something is wrong, what to do about it.
    pub message: String,
    /// When `status` last changed (RFC 3339).
    pub last_transition_time: String,
    /// The `metadata.generation` this condition was computed for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// Where a namespaced object that names no namespace lives: a manifest without
/// `metadata.namespace` goes there, as `kubectl apply` would place it.
pub const DEFAULT_NAMESPACE: &str = "default";

/// The namespace of a DxConnection or MacSecKey: as the API server gives it, else
/// [`DEFAULT_NAMESPACE`]. The one fallback for the controller and the CLI alike.
pub fn namespace_of<K: kube::Resource>(obj: &K) -> &str {
    obj.meta().namespace.as_deref().unwrap_or(DEFAULT_NAMESPACE)
}

/// The condition of type `type_` in `conditions`, if present.
fn find_condition(conditions: &[Condition], type_: ConditionType) -> Option<&Condition> {
    conditions.iter().find(|c| c.type_ == type_.as_str())
}

/// Every CRD, as installed. Use this rather than `crd()` on the types: it also removes the
/// `null` that schemars puts in the `enum` of optional enum fields, which is not a string and
/// has no place in a structural schema.
pub fn crds() -> Vec<CustomResourceDefinition> {
    [DxConnection::crd(), MacSecKey::crd(), DxAccess::crd()]
        .into_iter()
        .map(|crd| {
            let mut value = serde_json::to_value(crd).expect("a CRD serializes to JSON");
            drop_null_from_enums(&mut value);
            serde_json::from_value(value).expect("removing enum entries keeps a valid CRD")
        })
        .collect()
}

fn drop_null_from_enums(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            if let Some(serde_json::Value::Array(values)) = map.get_mut("enum") {
                values.retain(|v| !v.is_null());
            }
            map.values_mut().for_each(drop_null_from_enums);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(drop_null_from_enums),
        _ => {}
    }
}

/// Every CRD as one multi-document YAML stream: the content of `crds/` and the chart's CRDs.
pub fn crds_yaml() -> String {
    let mut out = String::new();
    for crd in crds() {
        out.push_str("---\n");
        out.push_str(&serde_saphyr::to_string(&crd).expect("a CRD always serializes to YAML"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema_of(crd: &CustomResourceDefinition) -> serde_json::Value {
        serde_json::to_value(&crd.spec.versions[0].schema).unwrap()
    }

    /// No `enum` in either CRD contains null (the API server wants strings only).
    #[test]
    fn enums_hold_no_null() {
        for crd in crds() {
            let text = serde_json::to_string(&schema_of(&crd)).unwrap();
            assert!(
                !text.contains(",null]") && !text.contains("[null"),
                "{text}"
            );
        }
        let text = serde_json::to_string(&schema_of(&crds()[0])).unwrap();
        assert!(text.contains(r#""enum":["no_encrypt","should_encrypt","must_encrypt"]"#));
    }

    /// The admission rules the design asks for are in the generated schema.
    #[test]
    fn cel_rules_and_patterns_are_generated() {
        let [dxc, key, access] = &crds()[..] else {
            panic!("three CRDs")
        };
        let dxc = serde_json::to_string(&schema_of(dxc)).unwrap();
        for needle in [
            "self == oldSelf",
            "size(self.keys) <= 3",
            "'must_encrypt' || !has(self.keys) || size(self.keys) > 0",
            r#"^dx(con|lag)-[0-9a-z]+$"#,
            r#""maxItems":3"#,
            r#""x-kubernetes-list-type":"map""#,
        ] {
            assert!(dxc.contains(needle), "DxConnection CRD lacks {needle}");
        }
        let key = serde_json::to_string(&schema_of(key)).unwrap();
        assert!(key.contains(
            "has(self.directConnectSecretArn) ? 1 : 0) + (has(self.generate) ? 1 : 0) == 1"
        ));
        assert!(key.contains("has(self.generate) == has(oldSelf.generate)"));
        let access = serde_json::to_value(access).unwrap();
        assert_eq!(access["spec"]["scope"], "Cluster");
        assert_eq!(access["spec"]["names"]["plural"], "dxaccesses");
        let schema = access["spec"]["versions"][0]["schema"].to_string();
        assert!(
            schema.contains(r#""pattern":"^(\\*|[a-z0-9]([-a-z0-9]*[a-z0-9])?)$""#),
            "{schema}"
        );
    }

    /// Every field of both kinds has a description, so `kubectl explain` says what it is.
    #[test]
    fn every_field_has_explain_text() {
        fn walk(schema: &serde_json::Value, path: &str, missing: &mut Vec<String>) {
            for (name, field) in schema["properties"].as_object().into_iter().flatten() {
                let path = format!("{path}.{name}");
                if field.get("description").is_none() {
                    missing.push(path.clone());
                }
                walk(field, &path, missing);
            }
            if let Some(items) = schema.get("items") {
                walk(items, &format!("{path}[]"), missing);
            }
        }
        let mut missing = Vec::new();
        for crd in crds() {
            let schema = schema_of(&crd);
            walk(
                &schema["openAPIV3Schema"],
                &crd.spec.names.kind,
                &mut missing,
            );
        }
        assert!(
            missing.is_empty(),
            "fields without a description: {missing:?}"
        );
    }

    /// Short names on every kind; the category and the status subresource on the two
    /// namespaced kinds users write.
    #[test]
    fn names_category_and_status_subresource() {
        let crds = crds();
        let short: Vec<_> = crds
            .iter()
            .map(|c| c.spec.names.short_names.clone().unwrap_or_default())
            .collect();
        assert_eq!(
            short,
            vec![
                vec!["dxc".to_string()],
                vec!["mskey".to_string()],
                vec!["dxa".to_string()]
            ]
        );
        for crd in &crds {
            let user_kind = crd.spec.names.kind != "DxAccess";
            assert_eq!(
                crd.spec.names.categories,
                user_kind.then(|| vec!["dxmacsec".to_string()])
            );
            let status = crd.spec.versions[0]
                .subresources
                .as_ref()
                .is_some_and(|s| s.status.is_some());
            assert_eq!(status, user_kind);
        }
    }
}
