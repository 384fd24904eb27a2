//! `DxAccess`: which namespaces may use which AWS role, regions and connections. Cluster
//! scoped and written by cluster admins only: a DxConnection reaches AWS through a DxAccess
//! that grants its namespace what it asks for, or through the operator's own credentials
//! where the operator allows it (`--default-access-namespaces`).
//!
//! Not in the `dxmacsec` category: `kubectl get dxmacsec` is what namespace users run, and
//! most of them may not list DxAccesses.
#![allow(clippy::duplicated_attributes)]

use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

/// What one DxAccess grants.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "dxmacsec.io",
    version = "v1alpha1",
    kind = "DxAccess",
    plural = "dxaccesses",
    doc = "Admin-owned grant: which namespaces' DxConnections may use which AWS role, regions and connections",
    shortname = "dxa",
    printcolumn(name = "Role", type_ = "string", json_path = ".spec.roleArn"),
    printcolumn(name = "Namespaces", type_ = "string", json_path = ".spec.namespaces"),
    printcolumn(name = "Regions", type_ = "string", json_path = ".spec.regions"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct DxAccessSpec {
    /// Namespaces whose DxConnections may name this DxAccess in `spec.accessRef`; `*` stands
    /// for every namespace.
    #[schemars(length(min = 1, max = 1000))]
    #[schemars(inner(
        regex(pattern = r"^(\*|[a-z0-9]([-a-z0-9]*[a-z0-9])?)$"),
        length(max = 63)
    ))]
    pub namespaces: Vec<String>,

    /// IAM role the operator assumes for these DxConnections. Absent: the operator's own
    /// credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^arn:aws[a-z-]*:iam::\d{12}:role/.+$"))]
    pub role_arn: Option<String>,

    /// Regions the DxConnections may name. Absent: any region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 100))]
    #[schemars(inner(regex(pattern = r"^[a-z]{2}(-[a-z]+)+-\d+$")))]
    pub regions: Option<Vec<String>>,

    /// Connection and LAG IDs (`dxcon-…`, `dxlag-…`) the DxConnections may manage. Absent: any
    /// that the role reaches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 10000))]
    #[schemars(inner(regex(pattern = r"^dx(con|lag)-[0-9a-z]+$")))]
    pub connection_ids: Option<Vec<String>>,
}
