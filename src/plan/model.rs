//! A small in-memory model of one Direct Connect connection or LAG, for property tests.
//!
//! It applies the planner's actions the way docs/domain.md says AWS does (3-key keychain,
//! asynchronous key states, the last key removed under must_encrypt turning the mode into
//! should_encrypt, LAG members mirroring the LAG) and refuses what AWS would refuse. A
//! simulated customer router decides `Encryption Up`: the port is up while some associated
//! key's CKN is configured on it.

use std::collections::BTreeSet;

use jiff::Timestamp;

use super::fixtures;
use super::{Action, Association, KEYCHAIN_SIZE};
use crate::crd::{EncryptionMode, ResourceType};
use crate::observed::{KeyState, ObservedKey, ObservedResource};

pub struct Model {
    pub resource: ObservedResource,
    /// CKNs configured on the customer's router.
    pub router: BTreeSet<String>,
    /// Every CKN the planner asked to associate, in order.
    pub associations: Vec<String>,
}

/// A source of random decisions for the model (async delays), fed by proptest.
pub struct Dice<'a> {
    tape: &'a [u8],
    at: usize,
}

impl<'a> Dice<'a> {
    pub fn new(tape: &'a [u8]) -> Self {
        Dice { tape, at: 0 }
    }

    /// True with probability about `percent`%; once the tape is used up, always true so
    /// every run ends.
    pub fn chance(&mut self, percent: u8) -> bool {
        let roll = self.tape.get(self.at).copied();
        self.at += 1;
        roll.is_none_or(|r| (u16::from(r) * 100 / 256) < u16::from(percent))
    }

    /// Like `chance`, for rare events (crashes): false once the tape is used up.
    pub fn rare(&mut self, percent: u8) -> bool {
        let roll = self.tape.get(self.at).copied();
        self.at += 1;
        roll.is_some_and(|r| (u16::from(r) * 100 / 256) < u16::from(percent))
    }
}

/// The CKN a fixture's managed secret ARN was made for.
fn ckn_of_arn(arn: &str) -> String {
    arn.rsplit('/')
        .next()
        .and_then(|s| s.split('-').next())
        .unwrap_or_default()
        .to_string()
}

impl Model {
    pub fn new(resource: ObservedResource) -> Self {
        let mut m = Model {
            resource,
            router: BTreeSet::new(),
            associations: Vec::new(),
        };
        m.refresh_port();
        m
    }

    pub fn live(&self) -> impl Iterator<Item = &ObservedKey> {
        self.resource
            .keys
            .iter()
            .filter(|k| k.state() != KeyState::Disassociated)
    }

    pub fn associated_ckns(&self) -> BTreeSet<String> {
        self.live()
            .filter(|k| k.state() == KeyState::Associated)
            .filter_map(|k| k.ckn.clone())
            .collect()
    }

    /// Applies one action as AWS would, or says why AWS would refuse it.
    pub fn apply(&mut self, action: &Action, now: Timestamp) -> Result<(), String> {
        if !self.resource.is_available() {
            return Err(format!("{action}: the port is not in available state"));
        }
        match action {
            Action::Associate { ckn, with, .. } => {
                let ckn = match (ckn, with) {
                    (Some(c), _) => c.as_str().to_string(),
                    (None, Association::SecretArn(arn)) => ckn_of_arn(arn),
                    (None, Association::CknCak(c, _)) => c.as_str().to_string(),
                };
                self.associate(ckn, now)?;
            }
            Action::Restore { secret_arn, .. } => self.associate(ckn_of_arn(secret_arn), now)?,
            Action::Claim { owner, .. } => {
                self.resource
                    .tags
                    .insert(crate::crd::OWNER_TAG.into(), owner.clone());
            }
            Action::Release { .. } => {
                self.resource.tags.remove(crate::crd::OWNER_TAG);
            }
            Action::Disassociate { secret_arn, .. } => {
                let key = self
                    .resource
                    .keys
                    .iter_mut()
                    .find(|k| {
                        k.secret_arn.as_ref() == Some(secret_arn)
                            && k.state() != KeyState::Disassociated
                    })
                    .ok_or_else(|| format!("no key {secret_arn}"))?;
                key.state = Some("disassociating".into());
            }
            Action::SetMode { target, mode } => {
                if target.kind != self.resource.kind {
                    return Err("wrong operation for the resource type".into());
                }
                self.set_mode(*mode);
            }
        }
        self.refresh_port();
        Ok(())
    }

    fn associate(&mut self, ckn: String, now: Timestamp) -> Result<(), String> {
        if self.live().any(|k| k.ckn.as_deref() == Some(ckn.as_str())) {
            return Err(format!("CKN {ckn} associated twice"));
        }
        if self.live().count() >= KEYCHAIN_SIZE {
            return Err("keychain full".into());
        }
        self.associations.push(ckn.clone());
        let c = ckn.chars().next().unwrap_or('0');
        self.resource.keys.push(ObservedKey {
            secret_arn: Some(fixtures::managed_arn(c)),
            ckn: Some(ckn),
            state: Some("associating".into()),
            start_on: Some(now.to_string()),
        });
        Ok(())
    }

    fn set_mode(&mut self, mode: EncryptionMode) {
        let mode = Some(mode.as_aws_str().to_string());
        self.resource.encryption_mode = mode.clone();
        for m in &mut self.resource.members {
            m.encryption_mode = mode.clone();
        }
    }

    /// Lets time pass: in-flight key operations may finish.
    pub fn progress(&mut self, dice: &mut Dice<'_>) {
        for key in &mut self.resource.keys {
            match key.state() {
                KeyState::Associating if dice.chance(50) => key.state = Some("associated".into()),
                KeyState::Disassociating if dice.chance(50) => {
                    key.state = Some("disassociated".into())
                }
                _ => {}
            }
        }
        self.resource
            .keys
            .retain(|k| k.state() != KeyState::Disassociated);
        // AWS's own rule: the last key gone under must_encrypt means should_encrypt.
        if self.live().next().is_none() && self.resource.mode() == Some(EncryptionMode::MustEncrypt)
        {
            self.set_mode(EncryptionMode::ShouldEncrypt);
        }
        self.refresh_port();
    }

    pub fn refresh_port(&mut self) {
        let up = self.resource.mode() != Some(EncryptionMode::NoEncrypt)
            && self
                .associated_ckns()
                .iter()
                .any(|c| self.router.contains(c));
        let status = Some(fixtures::port(up));
        match self.resource.kind {
            ResourceType::Connection | ResourceType::Interconnect => {
                self.resource.port_encryption_status = status
            }
            ResourceType::Lag => {
                for m in &mut self.resource.members {
                    m.port_encryption_status = status.clone();
                }
            }
        }
    }
}
