//! The real AWS clients, on the official SDK crates, and the conversion of their shapes
//! into [`ObservedResource`].

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::provider::SharedCredentialsProvider;
use aws_sdk_directconnect as dc;
use aws_sdk_secretsmanager as sm;

use super::{
    Answer, AwsError, AwsProvider, BoxFut, DirectConnectApi, Scope, SecretsApi, SecretsProvider,
};
use crate::crd::{EncryptionMode, ResourceType};
use crate::observed::{ObservedKey, ObservedMember, ObservedResource};
use crate::plan::{Association, Target};

/// Page size for DescribeConnections / DescribeLags / DescribeInterconnects (the API's
/// maximum).
const PAGE_SIZE: i32 = 100;

/// One page of a Direct Connect list call (`$builder`, its request) from `$token`: the page
/// and the next token, for [`every_page`].
macro_rules! list_page {
    ($builder:expr, $operation:literal, $token:expr) => {{
        let page = $builder
            .max_results(PAGE_SIZE)
            .set_next_token($token)
            .send()
            .await
            .map_err(|e| AwsError::from_sdk($operation, &e))?;
        let next = page.next_token().map(str::to_string);
        Ok((page, next))
    }};
}

/// How the SDK clients are built.
#[derive(Debug, Clone)]
pub struct SdkOptions {
    /// Overrides the endpoint of every service (an emulator); `AWS_ENDPOINT_URL` also works.
    pub endpoint_url: Option<String>,
    /// Whole-operation timeout, retries included.
    pub operation_timeout: Duration,
    /// Attempts per call, with the SDK's standard retry mode (exponential backoff with
    /// jitter). Not the SDK's adaptive mode: under a storm where half the calls are throttled
    /// its client-side rate limiter slowed every call past the operation timeout, and nothing
    /// converged. Adapting to throttling is done by the callers instead, which back off by
    /// error class.
    pub max_attempts: u32,
}

impl Default for SdkOptions {
    fn default() -> Self {
        SdkOptions {
            endpoint_url: None,
            operation_timeout: Duration::from_secs(30),
            max_attempts: 4,
        }
    }
}

/// One HTTPS client for every SDK client the provider builds, in every scope (and for STS):
/// the SDK's default (rustls with aws-lc, the proxy from the environment), built once. Left
/// to itself the SDK builds one per client, each with its own connection pool and TLS root
/// store, so memory grew with the number of (account, region) scopes.
fn shared_https_client() -> aws_smithy_runtime_api::client::http::SharedHttpClient {
    use aws_smithy_http_client::{Builder, ConnectorBuilder, proxy::ProxyConfig, tls};
    Builder::new().build_with_connector_fn(|settings, components| {
        let mut connector = ConnectorBuilder::default().tls_provider(tls::Provider::Rustls(
            tls::rustls_provider::CryptoMode::AwsLc,
        ));
        connector.set_connector_settings(settings.cloned());
        if let Some(components) = components {
            connector.set_sleep_impl(components.sleep_impl());
        }
        connector.set_proxy_config(Some(ProxyConfig::from_env()));
        connector.build()
    })
}

/// The Direct Connect and Secrets Manager clients of one scope.
type ScopeClients = (Arc<SdkDirectConnect>, Arc<SdkSecrets>);

/// Builds SDK clients from the standard credential chain, one pair per scope, assuming the
/// scope's role through STS when it has one.
pub struct SdkProvider {
    base: SdkConfig,
    clients: Mutex<HashMap<Scope, ScopeClients>>,
    /// One credentials provider per role, shared by the role's scopes (regions): the SDK's
    /// identity cache keys on the provider, so the role is assumed once per credential
    /// lifetime, not once per region.
    roles: tokio::sync::Mutex<HashMap<String, SharedCredentialsProvider>>,
}

impl SdkProvider {
    pub async fn new(options: &SdkOptions) -> SdkProvider {
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .retry_config(RetryConfig::standard().with_max_attempts(options.max_attempts))
            .timeout_config(
                TimeoutConfig::builder()
                    .operation_timeout(options.operation_timeout)
                    .operation_attempt_timeout(options.operation_timeout / 2)
                    .connect_timeout(Duration::from_secs(5))
                    .build(),
            );
        if let Some(url) = &options.endpoint_url {
            loader = loader.endpoint_url(url);
        }
        loader = loader.http_client(shared_https_client());
        SdkProvider {
            base: loader.load().await,
            clients: Mutex::new(HashMap::new()),
            roles: tokio::sync::Mutex::new(HashMap::new()),
        }
    }

    /// A provider on an already loaded SDK configuration (tests, embedding).
    pub fn from_sdk_config(base: SdkConfig) -> SdkProvider {
        SdkProvider {
            base,
            clients: Mutex::new(HashMap::new()),
            roles: tokio::sync::Mutex::new(HashMap::new()),
        }
    }

    /// A provider for an emulator at `endpoint` in us-east-1, with static credentials whose
    /// access key ID names the caller in the emulator's call log.
    #[cfg(test)]
    pub async fn for_emulator(endpoint: &str, access_key_id: &str) -> SdkProvider {
        let conf = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new("us-east-1"))
            .credentials_provider(aws_credential_types::Credentials::new(
                access_key_id,
                "x",
                None,
                None,
                "test",
            ))
            .endpoint_url(endpoint)
            .load()
            .await;
        SdkProvider::from_sdk_config(conf)
    }

    /// The region of the standard chain (`AWS_REGION`, profile…), if any.
    pub fn default_region(&self) -> Option<String> {
        self.base.region().map(|r| r.to_string())
    }

    async fn clients(&self, scope: &Scope) -> ScopeClients {
        if let Some(c) = self
            .clients
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(scope)
        {
            return c.clone();
        }
        let region = Region::new(scope.region.clone());
        let mut builder = self.base.to_builder();
        builder.set_region(Some(region.clone()));
        if let Some(role) = &scope.role_arn {
            builder.set_credentials_provider(Some(self.role_credentials(role, &region).await));
        }
        let conf = builder.build();
        let pair = (
            Arc::new(SdkDirectConnect::new(
                dc::Client::new(&conf),
                scope.role_arn.as_deref(),
            )),
            Arc::new(SdkSecrets(sm::Client::new(&conf))),
        );
        self.clients
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(scope.clone())
            .or_insert(pair)
            .clone()
    }
}

impl SdkProvider {
    /// The credentials of `role`, assumed through STS (in `region` for the first scope that
    /// needs it) and shared by every scope of the role.
    async fn role_credentials(&self, role: &str, region: &Region) -> SharedCredentialsProvider {
        let mut roles = self.roles.lock().await;
        if let Some(p) = roles.get(role) {
            return p.clone();
        }
        let provider = aws_config::sts::AssumeRoleProvider::builder(role)
            .session_name("dx-macsec-operator")
            .region(region.clone())
            .configure(&self.base)
            .build()
            .await;
        let shared = SharedCredentialsProvider::new(provider);
        roles.insert(role.to_string(), shared.clone());
        shared
    }
}

impl AwsProvider for SdkProvider {
    fn direct_connect<'a>(
        &'a self,
        scope: &'a Scope,
    ) -> BoxFut<'a, Result<Arc<dyn DirectConnectApi>, AwsError>> {
        Box::pin(async move {
            let (dx, _) = self.clients(scope).await;
            Ok(dx as Arc<dyn DirectConnectApi>)
        })
    }
}

impl SecretsProvider for SdkProvider {
    fn secrets<'a>(
        &'a self,
        scope: &'a Scope,
    ) -> BoxFut<'a, Result<Arc<dyn SecretsApi>, AwsError>> {
        Box::pin(async move {
            let (_, secrets) = self.clients(scope).await;
            Ok(secrets as Arc<dyn SecretsApi>)
        })
    }
}

/// Direct Connect in one scope.
pub struct SdkDirectConnect {
    client: dc::Client,
    /// The scope's account: from its role ARN, else the first `ownerAccount` an answer
    /// names. Interconnect answers carry no `ownerAccount`, and the ARN that tags an
    /// interconnect with its owner needs the account.
    account: OnceLock<String>,
    /// Interconnects the last full read found: a read of one of them alone asks
    /// DescribeInterconnects first.
    interconnects: Mutex<HashSet<String>>,
    /// Why the last full read could not list interconnects.
    unlisted: Mutex<Option<AwsError>>,
}

impl SdkDirectConnect {
    pub fn new(client: dc::Client, role_arn: Option<&str>) -> SdkDirectConnect {
        let account = OnceLock::new();
        // arn:aws:iam::123456789012:role/name
        if let Some(a) = role_arn
            .and_then(|r| r.split(':').nth(4))
            .filter(|a| !a.is_empty())
        {
            let _ = account.set(a.to_string());
        }
        SdkDirectConnect {
            client,
            account,
            interconnects: Mutex::new(HashSet::new()),
            unlisted: Mutex::new(None),
        }
    }

    fn learn_account(&self, account: Option<&str>) {
        if let Some(a) = account.filter(|a| !a.is_empty()) {
            let _ = self.account.set(a.to_string());
        }
    }

    fn is_known_interconnect(&self, id: &str) -> bool {
        self.interconnects
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(id)
    }

    /// Every interconnect, all pages.
    async fn all_interconnects(&self) -> Result<Vec<ObservedResource>, AwsError> {
        let pages = every_page(|token| async move {
            list_page!(
                self.client.describe_interconnects(),
                "DescribeInterconnects",
                token
            )
        })
        .await?;
        let account = self.account.get().map(String::as_str);
        let out: Vec<ObservedResource> = pages
            .iter()
            .flat_map(|p| p.interconnects())
            .filter_map(|i| observe_interconnect(i, account))
            .collect();
        *self.interconnects.lock().unwrap_or_else(|e| e.into_inner()) =
            out.iter().map(|r| r.id.clone()).collect();
        Ok(out)
    }

    /// One connection by DescribeConnections; `None` when it does not know it.
    async fn one_connection(&self, id: &str) -> Result<Option<ObservedResource>, AwsError> {
        let found = self
            .client
            .describe_connections()
            .connection_id(id)
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("DescribeConnections", &e))
            .map(|o| {
                o.connections().iter().find_map(|c| {
                    self.learn_account(c.owner_account());
                    observe_connection(c).filter(|r| r.id == id)
                })
            });
        not_found_is_none(found)
    }

    /// One interconnect by DescribeInterconnects; `None` when it does not know it.
    async fn one_interconnect(&self, id: &str) -> Result<Option<ObservedResource>, AwsError> {
        let found = self
            .client
            .describe_interconnects()
            .interconnect_id(id)
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("DescribeInterconnects", &e))
            .map(|o| {
                let account = self.account.get().map(String::as_str);
                o.interconnects()
                    .iter()
                    .filter_map(|i| observe_interconnect(i, account))
                    .find(|r| r.id == id)
            });
        not_found_is_none(found)
    }
}

fn not_found_is_none(
    found: Result<Option<ObservedResource>, AwsError>,
) -> Result<Option<ObservedResource>, AwsError> {
    match found {
        Err(e) if is_not_found(&e) => Ok(None),
        other => other,
    }
}

fn key_of(k: &dc::types::MacSecKey) -> ObservedKey {
    ObservedKey {
        secret_arn: k.secret_arn().map(str::to_string),
        ckn: k.ckn().map(str::to_string),
        state: k.state().map(str::to_string),
        start_on: k.start_on().map(str::to_string),
    }
}

/// The ARN of a connection or LAG, from the account and region the answer names.
pub fn resource_arn(id: &str, account: Option<&str>, region: Option<&str>) -> Option<String> {
    let (account, region) = (account?, region?);
    let partition = if region.starts_with("cn-") {
        "aws-cn"
    } else if region.starts_with("us-gov-") {
        "aws-us-gov"
    } else {
        "aws"
    };
    let kind = if id.starts_with("dxlag-") {
        "dxlag"
    } else {
        "dxcon"
    };
    Some(format!(
        "arn:{partition}:directconnect:{region}:{account}:{kind}/{id}"
    ))
}

fn tags_of(tags: &[dc::types::Tag]) -> std::collections::BTreeMap<String, String> {
    tags.iter()
        .map(|t| {
            (
                t.key().to_string(),
                t.value().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// A port (a connection or an interconnect) as the domain sees it, from anything that reads
/// like DescribeConnections' `Connection` or DescribeInterconnects' `Interconnect`
/// (UpdateConnection answers with a connection's fields): `$id` and `$state` name its ID and
/// state getters, `$account` is the account of its ARN. `None` without an ID.
macro_rules! observe_port_like {
    ($c:expr, $id:ident, $state:ident, $kind:expr, $account:expr) => {{
        let c = $c;
        Some(ObservedResource {
            id: c.$id()?.to_string(),
            kind: $kind,
            state: c
                .$state()
                .map(|s| s.as_str().to_string())
                .unwrap_or_else(|| "unknown".into()),
            mac_sec_capable: c.mac_sec_capable().unwrap_or(false),
            encryption_mode: c.encryption_mode().map(str::to_string),
            port_encryption_status: c.port_encryption_status().map(str::to_string),
            lag_id: c.lag_id().filter(|l| !l.is_empty()).map(str::to_string),
            keys: c.mac_sec_keys().iter().map(key_of).collect(),
            members: Vec::new(),
            arn: resource_arn(c.$id()?, $account, c.region()),
            tags: tags_of(c.tags()),
        })
    }};
}

/// A connection as the domain sees it; `None` without an ID.
pub fn observe_connection(c: &dc::types::Connection) -> Option<ObservedResource> {
    observe_port_like!(
        c,
        connection_id,
        connection_state,
        ResourceType::Connection,
        c.owner_account()
    )
}

/// The connection or interconnect (`kind`) UpdateConnection answers with.
fn observe_connection_output(
    c: &dc::operation::update_connection::UpdateConnectionOutput,
    kind: ResourceType,
) -> Option<ObservedResource> {
    observe_port_like!(c, connection_id, connection_state, kind, c.owner_account())
}

/// An interconnect as the domain sees it; `None` without an ID. Its answer names no
/// account: `account` is the scope's, when known.
pub fn observe_interconnect(
    i: &dc::types::Interconnect,
    account: Option<&str>,
) -> Option<ObservedResource> {
    observe_port_like!(
        i,
        interconnect_id,
        interconnect_state,
        ResourceType::Interconnect,
        account
    )
}

/// A LAG with its members as the domain sees it, from anything that reads like DescribeLags'
/// `Lag` (UpdateLag answers with the same fields); `None` without an ID.
macro_rules! observe_lag_like {
    ($l:expr) => {{
        let l = $l;
        Some(ObservedResource {
            id: l.lag_id()?.to_string(),
            kind: ResourceType::Lag,
            state: l
                .lag_state()
                .map(|s| s.as_str().to_string())
                .unwrap_or_else(|| "unknown".into()),
            mac_sec_capable: l.mac_sec_capable().unwrap_or(false),
            encryption_mode: l.encryption_mode().map(str::to_string),
            port_encryption_status: None,
            lag_id: None,
            keys: l.mac_sec_keys().iter().map(key_of).collect(),
            members: l
                .connections()
                .iter()
                .filter_map(|m| {
                    Some(ObservedMember {
                        connection_id: m.connection_id()?.to_string(),
                        state: m
                            .connection_state()
                            .map(|s| s.as_str().to_string())
                            .unwrap_or_else(|| "unknown".into()),
                        mac_sec_capable: m.mac_sec_capable().unwrap_or(false),
                        encryption_mode: m.encryption_mode().map(str::to_string),
                        port_encryption_status: m.port_encryption_status().map(str::to_string),
                    })
                })
                .collect(),
            arn: resource_arn(l.lag_id()?, l.owner_account(), l.region()),
            tags: tags_of(l.tags()),
        })
    }};
}

/// A LAG with its members as the domain sees it; `None` without an ID.
pub fn observe_lag(l: &dc::types::Lag) -> Option<ObservedResource> {
    observe_lag_like!(l)
}

/// The LAG UpdateLag answers with.
fn observe_lag_output(l: &dc::operation::update_lag::UpdateLagOutput) -> Option<ObservedResource> {
    observe_lag_like!(l)
}

/// The answer of a call that returns the resource: the resource, or nothing when the
/// answer could not be read as one.
fn answer_of(resource: Option<ObservedResource>) -> Answer {
    resource.map_or(Answer::Nothing, Answer::Resource)
}

/// Every page of a Direct Connect list that pages by `nextToken`: `fetch` gets the token of
/// the page to read (none for the first) and returns the page with the next token. The SDK
/// has no paginators for these calls (the service model does not mark them paginated), so
/// this is the one loop they share.
async fn every_page<P, F, Fut>(mut fetch: F) -> Result<Vec<P>, AwsError>
where
    F: FnMut(Option<String>) -> Fut,
    Fut: std::future::Future<Output = Result<(P, Option<String>), AwsError>>,
{
    let mut pages = Vec::new();
    let mut token = None;
    loop {
        let (page, next) = fetch(token.take()).await?;
        pages.push(page);
        match next {
            Some(t) if !t.is_empty() => token = Some(t),
            _ => return Ok(pages),
        }
    }
}

/// "Unknown ID" in the words of AWS, moto or dx-sim: the resource does not exist.
fn is_not_found(e: &AwsError) -> bool {
    matches!(
        e.code.as_deref(),
        Some("ConnectionNotFound" | "LagNotFound")
    ) || e.message.contains("Could not find")
        || e.message.contains("does not exist")
        || e.message.contains("does not match any")
}

impl DirectConnectApi for SdkDirectConnect {
    fn describe_all(&self) -> BoxFut<'_, Result<Vec<ObservedResource>, AwsError>> {
        Box::pin(async move {
            let connections = every_page(|token| async move {
                list_page!(
                    self.client.describe_connections(),
                    "DescribeConnections",
                    token
                )
            })
            .await?;
            let lags = every_page(|token| async move {
                list_page!(self.client.describe_lags(), "DescribeLags", token)
            })
            .await?;
            let connections = connections.iter().flat_map(|p| p.connections());
            let lags = lags.iter().flat_map(|p| p.lags());
            for account in connections.clone().map(|c| c.owner_account()) {
                self.learn_account(account);
            }
            for account in lags.clone().map(|l| l.owner_account()) {
                self.learn_account(account);
            }
            let mut out: Vec<ObservedResource> = connections
                .filter_map(observe_connection)
                .chain(lags.filter_map(observe_lag))
                .collect();
            // Interconnects are a Partner's: an account without them, an IAM policy from
            // before they were supported, or an endpoint without the call (moto) must not
            // stop the connections and LAGs from being managed.
            let unlisted = match self.all_interconnects().await {
                Ok(interconnects) => {
                    out.extend(interconnects);
                    None
                }
                Err(e) => {
                    tracing::warn!(error = %e.message, "interconnects could not be listed; connections and LAGs are managed, DxConnections naming an interconnect report this error");
                    Some(e)
                }
            };
            *self.unlisted.lock().unwrap_or_else(|e| e.into_inner()) = unlisted;
            Ok(out)
        })
    }

    fn interconnects_unlisted(&self) -> Option<AwsError> {
        self.unlisted
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn describe_one<'a>(
        &'a self,
        id: &'a str,
    ) -> BoxFut<'a, Result<Option<ObservedResource>, AwsError>> {
        Box::pin(async move {
            if id.starts_with("dxlag-") {
                let found = self
                    .client
                    .describe_lags()
                    .lag_id(id)
                    .send()
                    .await
                    .map_err(|e| AwsError::from_sdk("DescribeLags", &e))
                    .map(|o| o.lags().iter().filter_map(observe_lag).find(|r| r.id == id));
                return not_found_is_none(found);
            }
            // A dxcon ID is a connection or an interconnect: ask first where it was last.
            if self.is_known_interconnect(id) {
                match self.one_interconnect(id).await? {
                    Some(found) => Ok(Some(found)),
                    None => self.one_connection(id).await,
                }
            } else {
                match self.one_connection(id).await? {
                    Some(found) => Ok(Some(found)),
                    None => self.one_interconnect(id).await,
                }
            }
        })
    }

    fn associate<'a>(
        &'a self,
        target: &'a Target,
        with: &'a Association,
    ) -> BoxFut<'a, Result<Answer, AwsError>> {
        Box::pin(async move {
            let req = self
                .client
                .associate_mac_sec_key()
                .connection_id(&target.id);
            let (req, secret) = match with {
                Association::SecretArn(arn) => (req.secret_arn(arn), ""),
                Association::CknCak(ckn, cak) => {
                    (req.ckn(ckn.as_str()).cak(cak.expose()), cak.expose())
                }
            };
            req.send()
                .await
                .map(|out| Answer::Keys(out.mac_sec_keys().iter().map(key_of).collect()))
                .map_err(|e| AwsError::from_sdk("AssociateMacSecKey", &e).scrubbed(secret))
        })
    }

    fn disassociate<'a>(
        &'a self,
        target: &'a Target,
        secret_arn: &'a str,
    ) -> BoxFut<'a, Result<Answer, AwsError>> {
        Box::pin(async move {
            self.client
                .disassociate_mac_sec_key()
                .connection_id(&target.id)
                .secret_arn(secret_arn)
                .send()
                .await
                .map(|out| Answer::Keys(out.mac_sec_keys().iter().map(key_of).collect()))
                .map_err(|e| AwsError::from_sdk("DisassociateMacSecKey", &e))
        })
    }

    fn tag_resource<'a>(
        &'a self,
        arn: &'a str,
        key: &'a str,
        value: &'a str,
    ) -> BoxFut<'a, Result<(), AwsError>> {
        Box::pin(self.tag(arn, key, value))
    }

    fn untag_resource<'a>(
        &'a self,
        arn: &'a str,
        key: &'a str,
    ) -> BoxFut<'a, Result<(), AwsError>> {
        Box::pin(self.untag(arn, key))
    }

    fn set_mode<'a>(
        &'a self,
        target: &'a Target,
        mode: EncryptionMode,
    ) -> BoxFut<'a, Result<Answer, AwsError>> {
        Box::pin(async move {
            match target.kind {
                ResourceType::Lag => self
                    .client
                    .update_lag()
                    .lag_id(&target.id)
                    .encryption_mode(mode.as_aws_str())
                    .send()
                    .await
                    .map(|out| answer_of(observe_lag_output(&out)))
                    .map_err(|e| AwsError::from_sdk("UpdateLag", &e)),
                ResourceType::Connection | ResourceType::Interconnect => self
                    .client
                    .update_connection()
                    .connection_id(&target.id)
                    .encryption_mode(mode.as_aws_str())
                    .send()
                    .await
                    .map(|out| answer_of(observe_connection_output(&out, target.kind)))
                    .map_err(|e| AwsError::from_sdk("UpdateConnection", &e)),
            }
        })
    }
}

impl SdkDirectConnect {
    async fn tag(&self, arn: &str, key: &str, value: &str) -> Result<(), AwsError> {
        let tag = dc::types::Tag::builder()
            .key(key)
            .value(value)
            .build()
            .map_err(|e| {
                AwsError::terminal("TagResource", super::ErrorKind::Other, e.to_string())
            })?;
        self.client
            .tag_resource()
            .resource_arn(arn)
            .tags(tag)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| AwsError::from_sdk("TagResource", &e))
    }

    async fn untag(&self, arn: &str, key: &str) -> Result<(), AwsError> {
        self.client
            .untag_resource()
            .resource_arn(arn)
            .tag_keys(key)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| AwsError::from_sdk("UntagResource", &e))
    }
}

pub struct SdkSecrets(sm::Client);

impl SecretsApi for SdkSecrets {
    fn create_secret<'a>(
        &'a self,
        name: &'a str,
        description: &'a str,
    ) -> BoxFut<'a, Result<String, AwsError>> {
        Box::pin(async move {
            let created = self
                .0
                .create_secret()
                .name(name)
                .description(description)
                .send()
                .await;
            match created {
                Ok(out) => Ok(out.arn().unwrap_or(name).to_string()),
                Err(e) => {
                    let e = AwsError::from_sdk("CreateSecret", &e);
                    if e.code.as_deref() != Some("ResourceExistsException") {
                        return Err(e);
                    }
                    let out = self
                        .0
                        .describe_secret()
                        .secret_id(name)
                        .send()
                        .await
                        .map_err(|e| AwsError::from_sdk("DescribeSecret", &e))?;
                    Ok(out.arn().unwrap_or(name).to_string())
                }
            }
        })
    }

    fn put_key<'a>(
        &'a self,
        secret_id: &'a str,
        ckn: &'a crate::keys::Ckn,
        cak: &'a crate::keys::Cak,
        token: &'a str,
    ) -> BoxFut<'a, Result<(), AwsError>> {
        Box::pin(async move {
            let value = serde_json::json!({"ckn": ckn.as_str(), "cak": cak.expose()}).to_string();
            let value = secrecy::SecretString::from(value);
            use secrecy::ExposeSecret;
            self.0
                .put_secret_value()
                .secret_id(secret_id)
                .client_request_token(token)
                .secret_string(value.expose_secret())
                .send()
                .await
                .map(|_| ())
                // An error that echoes the value is scrubbed of the CAK.
                .map_err(|e| AwsError::from_sdk("PutSecretValue", &e).scrubbed(cak.expose()))
        })
    }

    fn delete_secret<'a>(&'a self, secret_id: &'a str) -> BoxFut<'a, Result<(), AwsError>> {
        Box::pin(async move {
            match self
                .0
                .delete_secret()
                .secret_id(secret_id)
                .recovery_window_in_days(7)
                .send()
                .await
            {
                Ok(_) => Ok(()),
                Err(e) => {
                    let e = AwsError::from_sdk("DeleteSecret", &e);
                    if e.code.as_deref() == Some("ResourceNotFoundException") {
                        Ok(())
                    } else {
                        Err(e)
                    }
                }
            }
        })
    }

    fn secret_string<'a>(&'a self, secret_id: &'a str) -> BoxFut<'a, Result<String, AwsError>> {
        Box::pin(async move {
            let out = self
                .0
                .get_secret_value()
                .secret_id(secret_id)
                .send()
                .await
                .map_err(|e| AwsError::from_sdk("GetSecretValue", &e))?;
            out.secret_string().map(str::to_string).ok_or_else(|| {
                AwsError::terminal(
                    "GetSecretValue",
                    super::ErrorKind::Other,
                    format!(
                        "secret {secret_id} has no SecretString (binary secrets are not supported)"
                    ),
                )
            })
        })
    }

    fn current_version<'a>(
        &'a self,
        secret_id: &'a str,
    ) -> BoxFut<'a, Result<Option<String>, AwsError>> {
        Box::pin(async move {
            let out = self
                .0
                .describe_secret()
                .secret_id(secret_id)
                .send()
                .await
                .map_err(|e| AwsError::from_sdk("DescribeSecret", &e))?;
            Ok(out.version_ids_to_stages().and_then(|versions| {
                versions
                    .iter()
                    .find(|(_, stages)| stages.iter().any(|s| s == "AWSCURRENT"))
                    .map(|(id, _)| id.clone())
            }))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A role used in two regions is assumed once for both (the credentials are shared until
    /// they near expiry), and each region's calls act in the role's account there.
    #[tokio::test]
    async fn a_role_is_assumed_once_for_all_its_regions() {
        let role = "arn:aws:iam::222222222222:role/dx";
        let seed = format!(
            "accounts:\n  - {{ account: \"222222222222\", region: us-east-1, connections: [{{ id: dxcon-e1 }}] }}\n  - {{ account: \"222222222222\", region: us-west-2, connections: [{{ id: dxcon-w1 }}] }}\nroles: [\"{role}\"]\n"
        );
        let sim = dx_sim::Sim::start(dx_sim::Seed::from_yaml(&seed).unwrap())
            .await
            .unwrap();
        let aws = SdkProvider::for_emulator(&sim.endpoint(), "AKIDSDK").await;
        for (region, id) in [
            ("us-east-1", "dxcon-e1"),
            ("us-west-2", "dxcon-w1"),
            ("us-east-1", "dxcon-e1"),
        ] {
            let scope = Scope {
                region: region.into(),
                role_arn: Some(role.into()),
            };
            let all = aws
                .direct_connect(&scope)
                .await
                .unwrap()
                .describe_all()
                .await
                .unwrap();
            assert_eq!(all.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(), [id]);
            assert_eq!(
                all[0].arn.as_deref(),
                Some(format!("arn:aws:directconnect:{region}:222222222222:dxcon/{id}").as_str())
            );
        }
        assert_eq!(sim.shared.counts()["AssumeRole"], 1);
    }
}
