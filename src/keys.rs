//! MACsec key material: the CKN (an identifier, safe to show) and the CAK (a secret).
//!
//! Owns parsing and validation of both. The [`Cak`] type has no `Serialize` impl and its
//! `Debug`/`Display` print `<redacted>`, so a CAK cannot reach a log line, a status field or an
//! error by accident; the only way to read it is [`Cak::expose`], called where the value goes
//! to AWS. Its value lives in a `secrecy::SecretString`, zeroed in memory when dropped (each
//! clone too). Parse errors name the field and describe the problem without echoing the value.

use std::fmt;

use secrecy::{ExposeSecret, SecretString};

/// Length of a CKN or CAK in hexadecimal characters (32 bytes).
pub const KEY_HEX_LEN: usize = 64;

/// What is wrong with a CKN or CAK value. Never carries the value itself.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyMaterialError {
    #[error("{field} is empty; it must be exactly 64 hexadecimal characters")]
    Empty { field: String },
    #[error(
        "{field} has {len} characters; it must be exactly 64 hexadecimal characters (0-9, a-f)"
    )]
    WrongLength { field: String, len: usize },
    #[error(
        "{field} has a character that is not hexadecimal at position {position}; only 0-9, a-f and A-F are allowed"
    )]
    NotHex { field: String, position: usize },
}

/// Checks a 64-hex-character value. Surrounding whitespace is ignored, because Secrets made
/// with `kubectl create secret --from-file` usually end in a newline.
fn check_hex64(field: &str, raw: &str) -> Result<String, KeyMaterialError> {
    let value = raw.trim();
    if value.is_empty() {
        return Err(KeyMaterialError::Empty {
            field: field.to_string(),
        });
    }
    if let Some(position) = value.chars().position(|c| !c.is_ascii_hexdigit()) {
        return Err(KeyMaterialError::NotHex {
            field: field.to_string(),
            position: position + 1,
        });
    }
    if value.len() != KEY_HEX_LEN {
        return Err(KeyMaterialError::WrongLength {
            field: field.to_string(),
            len: value.chars().count(),
        });
    }
    Ok(value.to_string())
}

/// Connectivity Association Key Name. Not secret; stored in lower case so comparisons are
/// case-insensitive as AWS's are.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ckn(String);

impl Ckn {
    /// Parses a CKN; `field` names where it came from, for the error message.
    pub fn parse(field: &str, raw: &str) -> Result<Self, KeyMaterialError> {
        check_hex64(field, raw).map(|v| Ckn(v.to_ascii_lowercase()))
    }

    /// Lower-case form of a CKN as reported by AWS, for matching. AWS output is not validated:
    /// an odd value simply matches nothing.
    pub fn normalize_observed(raw: &str) -> String {
        raw.trim().to_ascii_lowercase()
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Ckn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Ckn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Ckn({})", self.0)
    }
}

/// Connectivity Association Key: the MACsec secret. Printing it in any way yields
/// `<redacted>`; it is deliberately not `Serialize`; its memory is zeroed on drop.
#[derive(Clone)]
pub struct Cak(SecretString);

impl Cak {
    /// Parses a CAK; `field` names where it came from, for the error message.
    pub fn parse(field: &str, raw: &str) -> Result<Self, KeyMaterialError> {
        // The checked copy has exactly its length, so moving it into the secret does not
        // reallocate and leave a copy behind.
        check_hex64(field, raw).map(|v| Cak(SecretString::from(v)))
    }

    /// The secret value, for the one place that sends it to AWS.
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

/// How a CAK's fingerprint starts: the scheme, then the salt and the MAC in hexadecimal.
const FINGERPRINT_SCHEME: &str = "hmac-sha256";

impl Cak {
    /// A fingerprint of this CAK under a fresh random salt, to keep in a status and compare
    /// later with [`Cak::matches`]: `hmac-sha256:SALT:MAC`. It tells whether a CAK changed
    /// without revealing the CAK (an HMAC keyed by a random salt, over 256 random bits).
    pub fn fingerprint(&self) -> String {
        self.fingerprint_with(&random_bytes::<16>())
    }

    fn fingerprint_with(&self, salt: &[u8]) -> String {
        use hmac::{KeyInit, Mac};
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(salt)
            .expect("HMAC takes a key of any length");
        mac.update(self.expose().to_ascii_lowercase().as_bytes());
        format!(
            "{FINGERPRINT_SCHEME}:{}:{}",
            hex(salt),
            hex(&mac.finalize().into_bytes())
        )
    }

    /// Whether `fingerprint` (from [`Cak::fingerprint`]) is of this CAK (letter case aside);
    /// `None` when it is not a fingerprint this version can read.
    pub fn matches(&self, fingerprint: &str) -> Option<bool> {
        let mut parts = fingerprint.split(':');
        let (Some(FINGERPRINT_SCHEME), Some(salt), Some(_), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return None;
        };
        let salt = unhex(salt)?;
        Some(self.fingerprint_with(&salt) == fingerprint)
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || !text.is_ascii() {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok())
        .collect()
}

impl PartialEq for Cak {
    fn eq(&self, other: &Self) -> bool {
        self.expose() == other.expose()
    }
}

impl Eq for Cak {}

impl fmt::Debug for Cak {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for Cak {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// A fresh random CKN/CAK pair from the operating system's CSPRNG, for `keygen`.
pub fn generate_pair() -> (Ckn, Cak) {
    let random_hex = || hex(&random_bytes::<{ KEY_HEX_LEN / 2 }>());
    (Ckn(random_hex()), Cak(SecretString::from(random_hex())))
}

/// `N` bytes from the operating system's CSPRNG.
fn random_bytes<const N: usize>() -> [u8; N] {
    use rand::TryRngCore;
    let mut bytes = [0u8; N];
    rand::rngs::OsRng
        .try_fill_bytes(&mut bytes)
        .expect("the operating system's random number generator is unavailable");
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX64: &str = "0123456789abcdefABCDEF0123456789abcdef0123456789abcdef0123456789";

    /// The CAK's holder zeroes its memory on drop (a compile-time check), and a CAK still
    /// compares and prints as before.
    #[test]
    fn the_cak_is_held_in_memory_that_is_zeroed_on_drop() {
        fn zeroed_on_drop<T: secrecy::zeroize::ZeroizeOnDrop + ?Sized>() {}
        zeroed_on_drop::<SecretString>();
        let a = Cak::parse("cak", HEX64).unwrap();
        assert_eq!(a.clone(), a);
        assert_eq!(a.expose(), HEX64);
        assert_eq!(format!("{a} {a:?}"), "<redacted> <redacted>");
    }

    /// A fingerprint matches its CAK (in either letter case) and no other, differs each time
    /// it is made (salted), never contains the CAK, and an unreadable one is `None`.
    #[test]
    fn fingerprints_tell_a_changed_cak_without_holding_it() {
        let a = Cak::parse("cak", HEX64).unwrap();
        let upper = Cak::parse("cak", &HEX64.to_ascii_uppercase()).unwrap();
        let b = Cak::parse("cak", &HEX64.replace('0', "1")).unwrap();
        let fp = a.fingerprint();
        assert!(
            fp.starts_with("hmac-sha256:") && fp.len() == 12 + 32 + 1 + 64,
            "{fp}"
        );
        assert!(
            !fp.to_ascii_lowercase()
                .contains(&HEX64.to_ascii_lowercase()[..16])
        );
        assert_eq!(a.matches(&fp), Some(true));
        assert_eq!(upper.matches(&fp), Some(true));
        assert_eq!(b.matches(&fp), Some(false));
        assert_ne!(a.fingerprint(), fp, "salted");
        for bad in [
            "",
            "sha1:00:00",
            "hmac-sha256:zz:00",
            "hmac-sha256:0:00",
            "hmac-sha256:00",
        ] {
            assert_eq!(a.matches(bad), None, "{bad}");
        }
    }

    /// Both cases and all of a-f are accepted (the AWS docs' "A-E" is a typo).
    #[test]
    fn accepts_64_hex_in_either_case() {
        let ckn = Ckn::parse("ckn", HEX64).unwrap();
        assert_eq!(ckn.as_str(), HEX64.to_ascii_lowercase());
        assert!(Cak::parse("cak", HEX64).is_ok());
    }

    /// A trailing newline from `--from-file` is not an error.
    #[test]
    fn trims_surrounding_whitespace() {
        assert!(Ckn::parse("ckn", &format!("{HEX64}\n")).is_ok());
    }

    /// Anchored at both ends: 65 characters are rejected (Terraform's regex lets them through).
    #[test]
    fn rejects_wrong_length() {
        let err = Cak::parse("secret/k cak", &format!("{HEX64}a")).unwrap_err();
        assert_eq!(
            err,
            KeyMaterialError::WrongLength {
                field: "secret/k cak".into(),
                len: 65
            }
        );
        assert!(Ckn::parse("ckn", &HEX64[..63]).is_err());
        assert!(matches!(
            Ckn::parse("ckn", "  "),
            Err(KeyMaterialError::Empty { .. })
        ));
    }

    /// A non-hex character is reported by position, and the value never appears in the message.
    #[test]
    fn errors_name_the_field_and_never_echo_the_value() {
        let secret = format!("{}g", &HEX64[..63]);
        let err = Cak::parse("Secret default/k key cak", &secret).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("Secret default/k key cak"), "{msg}");
        assert!(msg.contains("position 64"), "{msg}");
        assert!(!msg.contains(&secret[..20]), "{msg}");
        assert!(!format!("{err:?}").contains(&secret[..20]));
    }

    /// The CAK prints as `<redacted>` through Debug, Display and nested Debug.
    #[test]
    fn cak_is_redacted_in_every_format() {
        let cak = Cak::parse("cak", HEX64).unwrap();
        assert_eq!(format!("{cak}"), "<redacted>");
        assert_eq!(format!("{cak:?}"), "<redacted>");
        assert_eq!(format!("{:#?}", Some(&cak)), "Some(\n    <redacted>,\n)");
        assert_eq!(cak.expose(), HEX64);
    }

    /// Generated pairs are valid, distinct and lower case.
    #[test]
    fn generated_pairs_are_valid_and_distinct() {
        let (ckn1, cak1) = generate_pair();
        let (ckn2, _) = generate_pair();
        assert_ne!(ckn1, ckn2);
        assert!(Ckn::parse("ckn", ckn1.as_str()).is_ok());
        assert!(Cak::parse("cak", cak1.expose()).is_ok());
        assert_eq!(cak1.expose(), cak1.expose().to_ascii_lowercase());
    }
}
