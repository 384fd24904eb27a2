//! dx-macsec-operator: keeps AWS Direct Connect MACsec state equal to `DxConnection` and
//! `MacSecKey` custom resources.
//!
//! The decision logic is the pure [`plan`] module; everything that talks to Kubernetes or AWS
//! is a thin shell around it.
//!
//! The pipeline of one DxConnection, each arrow a call down:
//! `controller` (or `cli`) → `desired` (spec + MacSecKeys + `material` → `plan::Desired`) →
//! `engine` (`aws` cache read → `plan::plan` → one step of AWS calls → `PassOutcome`) →
//! `status` (conditions, keys, members) → Kubernetes or the terminal. A scheduled rotation
//! (`rotation`, pure as `plan`) picks the keys `desired` reads before the pass.
#![forbid(unsafe_code)]

pub mod access;
pub mod aws;
pub mod cli;
pub mod conditions;
pub mod controller;
pub mod crd;
pub(crate) mod desired;
pub(crate) mod engine;
pub(crate) mod http;
pub mod keys;
pub(crate) mod material;
pub(crate) mod metrics;
pub mod observed;
pub mod plan;
pub mod rotation;
pub(crate) mod status;
pub mod telemetry;
