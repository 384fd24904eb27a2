//! dx-macsec-operator: keeps AWS Direct Connect MACsec state equal to `DxConnection` and
//! `MacSecKey` custom resources.
//!
//! The decision logic is the pure [`plan`] module; everything that talks to Kubernetes or AWS
//! is a thin shell around it.
#![forbid(unsafe_code)]

pub mod aws;
pub mod cli;
pub mod controller;
pub mod crd;
pub mod desired;
pub mod engine;
pub mod http;
pub mod keys;
pub mod material;
pub mod metrics;
pub mod observed;
pub mod plan;
pub mod status;
pub mod telemetry;
