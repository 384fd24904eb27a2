//! AWS access: Direct Connect and Secrets Manager behind small traits, their SDK
//! implementations, and the shared per-(role, region) observation cache.
//!
//! Owns every AWS call the operator makes and the classification of their errors. Makes no
//! decisions: what to call comes from `plan`.

mod cache;
mod error;
mod metered;
mod sdk;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

pub use cache::{Observation, ObservationCache};
pub use error::{AwsError, ErrorClass, ErrorKind};
pub use metered::{METERED_OPERATIONS, MeteredProvider};
pub use sdk::{SdkOptions, SdkProvider};

use crate::crd::EncryptionMode;
use crate::observed::{ObservedKey, ObservedResource};
use crate::plan::{Association, Target};

/// A boxed future, so the traits below can be used as trait objects.
pub type BoxFut<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Which account and region a call goes to: the region, and the role assumed (none: the
/// operator's own credentials).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Scope {
    pub region: String,
    pub role_arn: Option<String>,
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.role_arn {
            Some(role) => write!(f, "{} as {role}", self.region),
            None => f.write_str(&self.region),
        }
    }
}

/// What the answer to a mutating call says of the resource after it, for the observation
/// cache: what it carries is taken in place of a re-read.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// AssociateMacSecKey, DisassociateMacSecKey: keys of the resource in their state after
    /// the call (the one associated, or those no longer associated). Keys it does not list
    /// are as they were.
    Keys(Vec<ObservedKey>),
    /// UpdateConnection, UpdateLag: the resource after the call.
    Resource(ObservedResource),
    /// TagResource (`Some` value) or UntagResource (`None`) of one key succeeded: AWS answers
    /// with nothing, but the call sets or removes exactly that tag.
    Tag { key: String, value: Option<String> },
    /// An answer that carries nothing of the resource (or nothing could be read from it).
    Nothing,
}

/// Direct Connect in one scope.
pub trait DirectConnectApi: Send + Sync {
    /// Every connection (LAG members included), every LAG and every interconnect, all pages.
    fn describe_all(&self) -> BoxFut<'_, Result<Vec<ObservedResource>, AwsError>>;
    /// Why the last `describe_all` could not list interconnects (denied, not offered, failed),
    /// though it listed connections and LAGs: a `dxcon-…` ID it did not find may be an
    /// interconnect, so that reader gets this error rather than "not found".
    fn interconnects_unlisted(&self) -> Option<AwsError> {
        None
    }
    /// One connection or LAG; `None` when Direct Connect does not know it.
    fn describe_one<'a>(
        &'a self,
        id: &'a str,
    ) -> BoxFut<'a, Result<Option<ObservedResource>, AwsError>>;
    fn associate<'a>(
        &'a self,
        target: &'a Target,
        with: &'a Association,
    ) -> BoxFut<'a, Result<Answer, AwsError>>;
    fn disassociate<'a>(
        &'a self,
        target: &'a Target,
        secret_arn: &'a str,
    ) -> BoxFut<'a, Result<Answer, AwsError>>;
    fn set_mode<'a>(
        &'a self,
        target: &'a Target,
        mode: EncryptionMode,
    ) -> BoxFut<'a, Result<Answer, AwsError>>;
    /// TagResource: sets one tag on a connection or LAG.
    fn tag_resource<'a>(
        &'a self,
        arn: &'a str,
        key: &'a str,
        value: &'a str,
    ) -> BoxFut<'a, Result<(), AwsError>>;
    /// UntagResource: removes one tag.
    fn untag_resource<'a>(&'a self, arn: &'a str, key: &'a str)
    -> BoxFut<'a, Result<(), AwsError>>;
}

/// Secrets Manager in one scope: reading customer-owned key secrets, and writing and
/// deleting the ones the operator makes (`generate`).
pub trait SecretsApi: Send + Sync {
    /// CreateSecret without a value: the ARN of the new secret, or of the secret of that
    /// name that exists already (found with DescribeSecret).
    fn create_secret<'a>(
        &'a self,
        name: &'a str,
        description: &'a str,
    ) -> BoxFut<'a, Result<String, AwsError>>;
    /// PutSecretValue of a key as `{"ckn": …, "cak": …}`, with an idempotency token: the
    /// same token again with the same value makes no new version.
    fn put_key<'a>(
        &'a self,
        secret_id: &'a str,
        ckn: &'a crate::keys::Ckn,
        cak: &'a crate::keys::Cak,
        token: &'a str,
    ) -> BoxFut<'a, Result<(), AwsError>>;
    /// DeleteSecret with the shortest recovery window (7 days): the value can no longer be
    /// read, and the owner can still restore it in that window. A secret already gone is
    /// no error.
    fn delete_secret<'a>(&'a self, secret_id: &'a str) -> BoxFut<'a, Result<(), AwsError>>;
    /// The SecretString of a secret, by name or ARN.
    fn secret_string<'a>(&'a self, secret_id: &'a str) -> BoxFut<'a, Result<String, AwsError>>;
    /// The ID of the version labelled `AWSCURRENT` (DescribeSecret: the value is not read).
    fn current_version<'a>(
        &'a self,
        secret_id: &'a str,
    ) -> BoxFut<'a, Result<Option<String>, AwsError>>;
}

/// Hands out Secrets Manager clients per scope: all that reading key material needs.
pub trait SecretsProvider: Send + Sync {
    fn secrets<'a>(&'a self, scope: &'a Scope)
    -> BoxFut<'a, Result<Arc<dyn SecretsApi>, AwsError>>;
}

/// Hands out clients per scope. Direct Connect clients are for the engine, which reads
/// through the observation cache and calls what the planner decides.
pub trait AwsProvider: SecretsProvider {
    fn direct_connect<'a>(
        &'a self,
        scope: &'a Scope,
    ) -> BoxFut<'a, Result<Arc<dyn DirectConnectApi>, AwsError>>;
}
