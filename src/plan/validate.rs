//! Rule 1, validate: what the CRD's CEL rules enforce (files given to the CLI skip
//! admission) and the key material. No AWS data is needed; the result, [`Validated`], is the
//! only form of the spec the other rules take, so none of them checks the spec again.

use super::types::{Desired, KEYCHAIN_SIZE, KeyMaterial, Reason};
use crate::crd::EncryptionMode;

/// A spec that passed rule 1: a well-formed connection ID, at most 3 keys with distinct
/// names and CKNs, every key's material usable.
pub(super) struct Validated<'a> {
    pub desired: &'a Desired,
    /// `None`: keys are not managed. Oldest first, newest last.
    keys: Option<Vec<ValidKey<'a>>>,
}

/// A wanted key whose material was read.
#[derive(Clone, Copy)]
pub(super) struct ValidKey<'a> {
    /// Name of the MacSecKey.
    pub name: &'a str,
    pub material: &'a KeyMaterial,
}

impl<'a> Validated<'a> {
    /// Whether `spec.keys` is given (the exact set wanted) or absent (keys not managed).
    pub fn keys_managed(&self) -> bool {
        self.keys.is_some()
    }

    /// The wanted keys; empty when keys are not managed.
    pub fn wanted(&self) -> &[ValidKey<'a>] {
        self.keys.as_deref().unwrap_or(&[])
    }

    pub fn mode(&self) -> Option<EncryptionMode> {
        self.desired.encryption_mode
    }
}

/// Why rule 1 stops a pass.
#[derive(Debug)]
pub(super) enum Invalid {
    /// A person has to fix the spec or a key: the reason (`InvalidSpec` or `KeyNotReady`) and
    /// a message naming the field and the fix.
    Blocked(Reason, String),
    /// Every key that cannot be used could not be read for a passing reason (AWS throttled
    /// or failing, the API server timing out): wait and read again.
    Unreadable(String),
}

impl From<(Reason, String)> for Invalid {
    fn from((reason, message): (Reason, String)) -> Self {
        Invalid::Blocked(reason, message)
    }
}

/// Rule 1: the spec and its keys, or why the pass stops here.
pub(super) fn validate(desired: &Desired) -> Result<Validated<'_>, Invalid> {
    check_connection_id(&desired.connection_id)?;
    let Some(keys) = &desired.keys else {
        return Ok(Validated {
            desired,
            keys: None,
        });
    };
    let invalid = |message: String| Err(Invalid::Blocked(Reason::InvalidSpec, message));
    if keys.len() > KEYCHAIN_SIZE {
        return invalid(format!(
            "spec.keys lists {} keys; Direct Connect holds at most {KEYCHAIN_SIZE}",
            keys.len()
        ));
    }
    if keys.is_empty() && desired.encryption_mode == Some(EncryptionMode::MustEncrypt) {
        return invalid(
            "spec.encryptionMode must_encrypt needs at least one key in spec.keys".into(),
        );
    }
    for (i, k) in keys.iter().enumerate() {
        if keys[..i].iter().any(|o| o.name == k.name) {
            return invalid(format!("spec.keys names MacSecKey {} twice", k.name));
        }
    }
    let problems: Vec<_> = keys
        .iter()
        .filter_map(|k| k.material.as_ref().err().map(|p| (k, p)))
        .collect();
    if !problems.is_empty() {
        let message = problems
            .iter()
            .map(|(k, p)| format!("MacSecKey {}: {}", k.name, p.message))
            .collect::<Vec<_>>()
            .join("; ");
        if problems.iter().all(|(_, p)| p.transient) {
            return Err(Invalid::Unreadable(message));
        }
        return Err(Invalid::Blocked(Reason::KeyNotReady, message));
    }
    let valid: Vec<ValidKey<'_>> = keys
        .iter()
        .filter_map(|k| {
            Some(ValidKey {
                name: &k.name,
                material: k.material.as_ref().ok()?,
            })
        })
        .collect();
    for (i, k) in valid.iter().enumerate() {
        let Some(ckn) = &k.material.ckn else {
            continue;
        };
        if let Some(other) = valid[..i]
            .iter()
            .find(|o| o.material.ckn.as_ref() == Some(ckn))
        {
            return invalid(format!(
                "MacSecKeys {} and {} have the same CKN; each key in spec.keys needs its own",
                other.name, k.name
            ));
        }
    }
    Ok(Validated {
        desired,
        keys: Some(valid),
    })
}

fn check_connection_id(id: &str) -> Result<(), (Reason, String)> {
    let well_formed = ["dxcon-", "dxlag-"].iter().any(|p| {
        id.strip_prefix(p).is_some_and(|rest| {
            !rest.is_empty()
                && rest
                    .chars()
                    .all(|c| c.is_ascii_digit() || c.is_ascii_lowercase())
        })
    });
    if well_formed {
        Ok(())
    } else {
        Err((
            Reason::InvalidSpec,
            format!("spec.connectionId {id:?} is not a connection (dxcon-…) or LAG (dxlag-…) ID"),
        ))
    }
}
