//! Builders for planner tests: observed connections and LAGs, keys, desired state.

use std::time::Duration;

use jiff::Timestamp;

use super::{Desired, KeyMaterial, KeyProblem, KeyReason, WantedKey};
use crate::crd::{EncryptionMode, ResourceType};
use crate::keys::{Cak, Ckn};
use crate::observed::{ObservedKey, ObservedMember, ObservedResource, PORT_UP};

pub const REGION: &str = "us-east-1";

/// A CKN made of one repeated hex digit, so tests can name keys `'a'`, `'b'`….
pub fn ckn(c: char) -> String {
    c.to_string().repeat(64)
}

/// A CAK derived from the CKN's digit; distinct from it so a leak test can search for it.
pub fn cak(c: char) -> String {
    format!("{}{}", "c0de".repeat(15), c.to_string().repeat(4))
}

/// The ARN Direct Connect gives the managed secret of `ckn(c)`.
pub fn managed_arn(c: char) -> String {
    format!(
        "arn:aws:secretsmanager:{REGION}:123456789012:secret:directconnect!prod/{REGION}/directconnect/{}-Ab12Cd",
        ckn(c)
    )
}

pub fn t(secs: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + secs).unwrap()
}

pub fn key(c: char, state: &str) -> ObservedKey {
    ObservedKey {
        secret_arn: Some(managed_arn(c)),
        ckn: Some(ckn(c)),
        state: Some(state.to_string()),
        start_on: None,
    }
}

pub fn connection(mode: &str, port_up: bool, keys: Vec<ObservedKey>) -> ObservedResource {
    ObservedResource {
        id: "dxcon-abc123".into(),
        kind: ResourceType::Connection,
        state: "available".into(),
        mac_sec_capable: true,
        encryption_mode: Some(mode.into()),
        port_encryption_status: Some(port(port_up)),
        lag_id: None,
        keys,
        members: Vec::new(),
        arn: Some(format!(
            "arn:aws:directconnect:{REGION}:123456789012:dxcon/dxcon-abc123"
        )),
        tags: Default::default(),
    }
}

/// A Partner's interconnect: a connection in all but its type (and an answer without
/// `ownerAccount`, so its ARN comes from the scope).
pub fn interconnect(mode: &str, port_up: bool, keys: Vec<ObservedKey>) -> ObservedResource {
    ObservedResource {
        kind: ResourceType::Interconnect,
        ..connection(mode, port_up, keys)
    }
}

pub fn port(up: bool) -> String {
    if up {
        PORT_UP.into()
    } else {
        "Encryption Down".into()
    }
}

pub fn lag(mode: &str, members_up: &[bool], keys: Vec<ObservedKey>) -> ObservedResource {
    ObservedResource {
        id: "dxlag-ffff01".into(),
        kind: ResourceType::Lag,
        state: "available".into(),
        mac_sec_capable: true,
        encryption_mode: Some(mode.into()),
        port_encryption_status: None,
        lag_id: None,
        keys,
        members: members_up
            .iter()
            .enumerate()
            .map(|(i, up)| ObservedMember {
                connection_id: format!("dxcon-member{i}"),
                state: "available".into(),
                mac_sec_capable: true,
                encryption_mode: Some(mode.into()),
                port_encryption_status: Some(port(*up)),
            })
            .collect(),
        arn: Some(format!(
            "arn:aws:directconnect:{REGION}:123456789012:dxlag/dxlag-ffff01"
        )),
        tags: Default::default(),
    }
}

pub fn wanted(name: &str, c: char) -> WantedKey {
    WantedKey {
        name: name.into(),
        material: Ok(KeyMaterial::pair(
            Ckn::parse("ckn", &ckn(c)).unwrap(),
            Cak::parse("cak", &cak(c)).unwrap(),
            None,
        )),
    }
}

pub fn broken(name: &str, message: &str) -> WantedKey {
    WantedKey {
        name: name.into(),
        material: Err(KeyProblem {
            reason: KeyReason::SecretNotFound,
            message: message.into(),
            transient: false,
        }),
    }
}

pub fn desired(id: &str, mode: Option<EncryptionMode>, keys: Option<Vec<WantedKey>>) -> Desired {
    Desired {
        encryption_mode: mode,
        keys,
        overlap: Duration::from_secs(300),
        require_encryption_up: true,
        ..Desired::new(id)
    }
}
