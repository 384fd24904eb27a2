//! What Direct Connect reports about a connection or LAG, as plain domain data.
//!
//! Built from DescribeConnections / DescribeLags (see `aws::observe`) or by tests. Every field
//! AWS sends as a string stays a string here and is interpreted through small accessors, so a
//! value AWS has never documented (encryptionMode `unknown`, a new state) can never make the
//! operator fail; it simply matches nothing.

use std::collections::BTreeMap;

use crate::crd::{EncryptionMode, ResourceType};

/// The AWS spelling of the connection state in which changes are accepted.
pub const STATE_AVAILABLE: &str = "available";
/// The AWS spelling of an active MACsec port.
pub const PORT_UP: &str = "Encryption Up";

/// One dedicated connection or LAG.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedResource {
    pub id: String,
    pub kind: ResourceType,
    /// `connectionState` / `lagState`.
    pub state: String,
    pub mac_sec_capable: bool,
    pub encryption_mode: Option<String>,
    /// Only connections have it; a LAG's port status is read from its members.
    pub port_encryption_status: Option<String>,
    /// For a connection that is a LAG member: the LAG.
    pub lag_id: Option<String>,
    pub keys: Vec<ObservedKey>,
    /// For a LAG: its member connections.
    pub members: Vec<ObservedMember>,
    /// Its ARN, from the answer's `ownerAccount` and `region` (for tagging).
    pub arn: Option<String>,
    /// Its tags.
    pub tags: BTreeMap<String, String>,
}

/// One entry of `macSecKeys[]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedKey {
    pub secret_arn: Option<String>,
    pub ckn: Option<String>,
    pub state: Option<String>,
    pub start_on: Option<String>,
}

/// One member connection of a LAG.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedMember {
    pub connection_id: String,
    pub state: String,
    pub mac_sec_capable: bool,
    pub encryption_mode: Option<String>,
    pub port_encryption_status: Option<String>,
}

/// Lifecycle of a key association, named as AWS writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::EnumString, strum::IntoStaticStr)]
#[strum(serialize_all = "lowercase")]
pub enum KeyState {
    Associating,
    Associated,
    Disassociating,
    Disassociated,
    /// Absent or a value AWS has not documented.
    Other,
}

impl KeyState {
    pub fn parse(s: Option<&str>) -> Self {
        s.and_then(|s| s.trim().parse().ok())
            .unwrap_or(KeyState::Other)
    }

    /// The state as AWS writes it; `other` for [`KeyState::Other`].
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// Whether a `portEncryptionStatus` value means `Encryption Up`.
pub fn is_port_up(status: Option<&str>) -> bool {
    status.is_some_and(|s| s.trim().eq_ignore_ascii_case(PORT_UP))
}

impl ObservedResource {
    pub fn is_available(&self) -> bool {
        self.state == STATE_AVAILABLE
    }

    /// The mode, when it is one of the three documented values.
    pub fn mode(&self) -> Option<EncryptionMode> {
        self.encryption_mode
            .as_deref()
            .and_then(EncryptionMode::from_aws_str)
    }

    /// `Encryption Up` on the connection, or on every member of a LAG (a LAG without
    /// members is not up).
    pub fn port_up(&self) -> bool {
        match self.kind {
            ResourceType::Connection | ResourceType::Interconnect => {
                is_port_up(self.port_encryption_status.as_deref())
            }
            ResourceType::Lag => {
                !self.members.is_empty()
                    && self
                        .members
                        .iter()
                        .all(|m| is_port_up(m.port_encryption_status.as_deref()))
            }
        }
    }

    /// Members of a LAG whose port is not `Encryption Up`.
    pub fn members_down(&self) -> Vec<&str> {
        self.members
            .iter()
            .filter(|m| !is_port_up(m.port_encryption_status.as_deref()))
            .map(|m| m.connection_id.as_str())
            .collect()
    }

    /// Port status for display: the connection's own, or for a LAG a summary of its members.
    pub fn port_summary(&self) -> Option<String> {
        match self.kind {
            ResourceType::Connection | ResourceType::Interconnect => {
                self.port_encryption_status.clone()
            }
            ResourceType::Lag if self.members.is_empty() => None,
            ResourceType::Lag => {
                let up = self.members.len() - self.members_down().len();
                if up == self.members.len() {
                    Some(PORT_UP.to_string())
                } else {
                    Some(format!("Encryption Down ({up}/{} up)", self.members.len()))
                }
            }
        }
    }
}

impl ObservedKey {
    pub fn state(&self) -> KeyState {
        KeyState::parse(self.state.as_deref())
    }

    /// Lower-case CKN, for matching.
    pub fn ckn_normalized(&self) -> Option<String> {
        self.ckn
            .as_deref()
            .map(crate::keys::Ckn::normalize_observed)
    }

    /// Whether `other` is this key, as an answer may show it: by managed secret ARN, else
    /// by CKN.
    pub fn same_key(&self, other: &ObservedKey) -> bool {
        match (&self.secret_arn, &other.secret_arn) {
            (Some(a), Some(b)) => a == b,
            _ => self.ckn_normalized().is_some() && self.ckn_normalized() == other.ckn_normalized(),
        }
    }

    /// A stable identity for remembering the key across passes: its CKN, else its ARN.
    pub fn identity(&self) -> String {
        self.ckn_normalized()
            .or_else(|| self.secret_arn.clone())
            .unwrap_or_default()
    }

    /// `startOn` parsed leniently; `None` when absent or in a format we do not know.
    pub fn start_on_time(&self) -> Option<jiff::Timestamp> {
        parse_start_on(self.start_on.as_deref()?)
    }
}

/// A `startOn` value read leniently: RFC 3339, a civil date-time read as UTC (AWS documents
/// only "a UTC string"), or seconds since the epoch; `None` for anything else.
pub fn parse_start_on(raw: &str) -> Option<jiff::Timestamp> {
    let raw = raw.trim();
    if let Ok(ts) = raw.parse::<jiff::Timestamp>() {
        return Some(ts);
    }
    raw.replace(' ', "T")
        .trim_end_matches('Z')
        .parse::<jiff::civil::DateTime>()
        .ok()
        .and_then(|dt| dt.to_zoned(jiff::tz::TimeZone::UTC).ok())
        .map(|z| z.timestamp())
        .or_else(|| {
            raw.parse::<f64>()
                .ok()
                .and_then(|secs| jiff::Timestamp::from_second(secs as i64).ok())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(start_on: &str) -> ObservedKey {
        ObservedKey {
            secret_arn: None,
            ckn: Some("AB".into()),
            state: Some("weird".into()),
            start_on: Some(start_on.into()),
        }
    }

    /// startOn in any of the shapes seen or plausible is read; garbage is not an error.
    #[test]
    fn start_on_is_parsed_leniently() {
        let want = "2026-01-02T03:04:05Z".parse::<jiff::Timestamp>().unwrap();
        assert_eq!(key("2026-01-02T03:04:05Z").start_on_time(), Some(want));
        assert_eq!(key("2026-01-02 03:04:05").start_on_time(), Some(want));
        assert_eq!(key("2026-01-02T03:04:05").start_on_time(), Some(want));
        assert_eq!(
            key(&want.as_second().to_string()).start_on_time(),
            Some(want)
        );
        assert_eq!(key("next tuesday").start_on_time(), None);
    }

    /// Unknown key states and CKN case do not trip the accessors.
    #[test]
    fn unknown_values_are_tolerated() {
        let k = key("x");
        assert_eq!(k.state(), KeyState::Other);
        assert_eq!(k.ckn_normalized().as_deref(), Some("ab"));
        assert_eq!(k.identity(), "ab");
    }

    /// The lenient readers of AWS answers never panic on any string: key states, port
    /// status, modes, CKNs and `startOn` (which takes several formats, numbers included).
    mod fuzz {
        use proptest::prelude::*;

        use super::*;

        proptest! {
            #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

            #[test]
            fn aws_strings_never_panic(s in any::<String>(), n in any::<f64>()) {
                let _ = KeyState::parse(Some(&s));
                let _ = is_port_up(Some(&s));
                let _ = EncryptionMode::from_aws_str(&s);
                for start_on in [s.clone(), n.to_string(), format!("{n}e300"), format!("{s}Z")] {
                    let k = ObservedKey {
                        secret_arn: Some(s.clone()),
                        ckn: Some(s.clone()),
                        state: Some(s.clone()),
                        start_on: Some(start_on),
                    };
                    let _ = k.state();
                    let _ = k.start_on_time();
                    let _ = k.identity();
                }
            }
        }
    }
}
