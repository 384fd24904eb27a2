//! STS as the AWS SDKs speak it (the query protocol: a form-encoded POST, answered in XML):
//! AssumeRole for the roles the seed allows, GetCallerIdentity, and the temporary credentials
//! AssumeRole hands out, which expire after the seed's `credentialSeconds`.
//!
//! Long-term credentials (any access key ID AssumeRole did not make) act in the seed's
//! top-level account, as a user of that account would.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use rand::Rng;

use crate::model::AwsError;

/// The XML namespace of every STS answer.
const XMLNS: &str = "https://sts.amazonaws.com/doc/2011-06-15/";

/// Credentials AssumeRole handed out.
#[derive(Debug, Clone)]
struct Session {
    account: String,
    role_arn: String,
    session_name: String,
    expires: Instant,
}

/// Who makes a call: the account it acts in, and its ARN as GetCallerIdentity says it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub account: String,
    pub arn: String,
}

/// The roles that may be assumed and the sessions handed out.
#[derive(Debug, Clone)]
pub struct Sts {
    roles: BTreeSet<String>,
    lifetime: Duration,
    sessions: HashMap<String, Session>,
}

/// The account of an IAM role ARN (`arn:aws:iam::<account>:role/<name>`).
fn account_of_role(arn: &str) -> Option<&str> {
    let mut parts = arn.split(':');
    let (arn_, _partition, service, _region, account) = (
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
    );
    let resource = parts.next()?;
    (arn_ == "arn"
        && service == "iam"
        && account.len() == 12
        && account.bytes().all(|b| b.is_ascii_digit())
        && resource.starts_with("role/"))
    .then_some(account)
}

fn random(alphabet: &[u8], n: usize) -> String {
    let mut rng = rand::rng();
    (0..n)
        .map(|_| alphabet[rng.random_range(0..alphabet.len())] as char)
        .collect()
}

fn request_id() -> String {
    format!("{:032x}", rand::rng().random::<u128>())
}

fn error(code: &'static str, message: String) -> AwsError {
    AwsError { code, message }
}

impl Sts {
    pub fn new(roles: &[String], lifetime: Duration) -> Result<Sts, String> {
        for r in roles {
            if account_of_role(r).is_none() {
                return Err(format!(
                    "seed roles: {r} is not a role ARN (arn:aws:iam::<12 digits>:role/<name>)"
                ));
            }
        }
        Ok(Sts {
            roles: roles.iter().cloned().collect(),
            lifetime,
            sessions: HashMap::new(),
        })
    }

    /// The account an access key ID acts in, expired or not: its session's, else the
    /// default account.
    pub fn account_of(&self, access_key: &str, default_account: &str) -> String {
        self.sessions
            .get(access_key)
            .map_or(default_account, |s| s.account.as_str())
            .to_string()
    }

    /// The caller behind an access key ID: an AssumeRole session (refused once expired), or
    /// a user of `default_account`.
    pub fn caller(
        &self,
        access_key: &str,
        default_account: &str,
        now: Instant,
    ) -> Result<Caller, AwsError> {
        match self.sessions.get(access_key) {
            Some(s) if s.expires <= now => Err(error(
                "ExpiredTokenException",
                "The security token included in the request is expired".into(),
            )),
            Some(s) => Ok(Caller {
                account: s.account.clone(),
                arn: format!(
                    "arn:aws:sts::{}:assumed-role/{}/{}",
                    s.account,
                    s.role_arn.rsplit('/').next().unwrap_or_default(),
                    s.session_name
                ),
            }),
            None => Ok(Caller {
                account: default_account.to_string(),
                arn: format!("arn:aws:iam::{default_account}:user/{access_key}"),
            }),
        }
    }

    /// AssumeRole: temporary credentials in the role's account, for a role the seed allows.
    pub fn assume_role(
        &mut self,
        caller: &Caller,
        params: &HashMap<String, String>,
        now: Instant,
    ) -> Result<String, AwsError> {
        let role = params.get("RoleArn").map(String::as_str).unwrap_or("");
        let session_name = params
            .get("RoleSessionName")
            .map(String::as_str)
            .unwrap_or("");
        if session_name.is_empty() || session_name.len() > 64 {
            return Err(error(
                "ValidationError",
                "RoleSessionName must be 1 to 64 characters".into(),
            ));
        }
        let Some(account) = account_of_role(role).filter(|_| self.roles.contains(role)) else {
            return Err(error(
                "AccessDenied",
                format!(
                    "User: {} is not authorized to perform: sts:AssumeRole on resource: {role}",
                    caller.arn
                ),
            ));
        };
        const UPPER: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
        const ANY: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
        let key = format!("ASIA{}", random(UPPER, 16));
        let session = Session {
            account: account.to_string(),
            role_arn: role.to_string(),
            session_name: session_name.to_string(),
            expires: now + self.lifetime,
        };
        let expiration = jiff::Timestamp::now()
            .checked_add(jiff::SignedDuration::try_from(self.lifetime).unwrap_or_default())
            .unwrap_or_else(|_| jiff::Timestamp::now());
        let expiration = jiff::Timestamp::from_second(expiration.as_second())
            .unwrap_or(expiration)
            .to_string();
        let role_name = role.rsplit('/').next().unwrap_or_default();
        let body = format!(
            "<AssumeRoleResponse xmlns=\"{XMLNS}\"><AssumeRoleResult><Credentials>\
             <AccessKeyId>{key}</AccessKeyId><SecretAccessKey>{secret}</SecretAccessKey>\
             <SessionToken>{token}</SessionToken><Expiration>{expiration}</Expiration>\
             </Credentials><AssumedRoleUser><AssumedRoleId>AROA{role_id}:{session_name}</AssumedRoleId>\
             <Arn>arn:aws:sts::{account}:assumed-role/{role_name}/{session_name}</Arn></AssumedRoleUser>\
             </AssumeRoleResult><ResponseMetadata><RequestId>{rid}</RequestId></ResponseMetadata>\
             </AssumeRoleResponse>",
            secret = random(ANY, 40),
            token = random(ANY, 120),
            role_id = random(UPPER, 16),
            rid = request_id(),
        );
        // Expired sessions are kept: a call with them is refused as AWS refuses it.
        self.sessions.insert(key, session);
        Ok(body)
    }

    /// GetCallerIdentity: the account and ARN of the caller.
    pub fn get_caller_identity(caller: &Caller) -> String {
        format!(
            "<GetCallerIdentityResponse xmlns=\"{XMLNS}\"><GetCallerIdentityResult>\
             <Arn>{arn}</Arn><UserId>AIDA{user}</UserId><Account>{account}</Account>\
             </GetCallerIdentityResult><ResponseMetadata><RequestId>{rid}</RequestId>\
             </ResponseMetadata></GetCallerIdentityResponse>",
            arn = caller.arn,
            user = random(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", 16),
            account = caller.account,
            rid = request_id(),
        )
    }

    /// An STS error answer.
    pub fn error_xml(e: &AwsError) -> String {
        let kind = if e.code == "InternalFailure" {
            "Receiver"
        } else {
            "Sender"
        };
        format!(
            "<ErrorResponse xmlns=\"{XMLNS}\"><Error><Type>{kind}</Type><Code>{}</Code>\
             <Message>{}</Message></Error><RequestId>{}</RequestId></ErrorResponse>",
            e.code,
            xml_escape(&e.message),
            request_id()
        )
    }
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROLE: &str = "arn:aws:iam::222222222222:role/dx-macsec";

    fn params(role: &str) -> HashMap<String, String> {
        HashMap::from([
            ("RoleArn".to_string(), role.to_string()),
            ("RoleSessionName".to_string(), "s".to_string()),
        ])
    }

    fn key_of(xml: &str) -> String {
        let start = xml.find("<AccessKeyId>").unwrap() + "<AccessKeyId>".len();
        xml[start..start + 20].to_string()
    }

    /// A session acts in the role's account until it expires; other keys act in the default
    /// account; a role the seed does not allow is AccessDenied naming caller and role.
    #[test]
    fn sessions_act_in_the_role_account_until_they_expire() {
        let mut sts = Sts::new(&[ROLE.to_string()], Duration::from_secs(10)).unwrap();
        let t0 = Instant::now();
        let me = sts.caller("AKIDUSER", "111111111111", t0).unwrap();
        assert_eq!(me.account, "111111111111");
        let xml = sts.assume_role(&me, &params(ROLE), t0).unwrap();
        let key = key_of(&xml);
        assert!(key.starts_with("ASIA"));
        let s = sts.caller(&key, "111111111111", t0).unwrap();
        assert_eq!(s.account, "222222222222");
        assert!(Sts::get_caller_identity(&s).contains("<Account>222222222222</Account>"));
        let late = t0 + Duration::from_secs(10);
        assert_eq!(
            sts.caller(&key, "111111111111", late).unwrap_err().code,
            "ExpiredTokenException"
        );
        let denied = sts
            .assume_role(&me, &params("arn:aws:iam::333333333333:role/x"), t0)
            .unwrap_err();
        assert_eq!(denied.code, "AccessDenied");
        assert!(
            denied.message.contains("user/AKIDUSER"),
            "{}",
            denied.message
        );
        assert!(Sts::new(&["not-a-role".into()], Duration::from_secs(1)).is_err());
    }
}
