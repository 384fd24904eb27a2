//! dx-sim: a local emulator of the AWS Direct Connect MACsec API and the Secrets Manager calls
//! the operator uses, speaking the AWS JSON 1.1 protocol so unmodified AWS SDKs talk to it.
//!
//! Owns the HTTP surface (AWS operations on `POST /`, test controls under `/_sim/`), the call
//! log, fault injection and the global rate limit. The account and its rules live in `model`.
//! Any SigV4-signed request is accepted; the access key ID is recorded as the caller.
#![forbid(unsafe_code)]

pub mod model;
mod peers;
pub mod secrets;
pub mod seed;
pub mod sts;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use rand::Rng;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use model::{Account, AwsError};
pub use peers::{moto_endpoint, test_peer};
pub use seed::Seed;

/// One AWS call as the emulator saw it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct CallRecord {
    pub seq: u64,
    pub operation: String,
    /// The access key ID from the SigV4 `Authorization` header.
    pub caller: String,
    /// The account the call acted in: the caller's, or the one of the role it assumed.
    #[serde(default)]
    pub account: String,
    /// The region the call was signed for.
    #[serde(default)]
    pub region: String,
    /// `connectionId`, `lagId` or `SecretId` of the request (the ID in `resourceArn` for
    /// tagging), when it has one.
    pub target: Option<String>,
    /// `ok` or the error code returned.
    pub outcome: String,
    /// Milliseconds since the emulator started (or was reset).
    pub at_ms: u64,
}

/// A fault to inject: an error and/or added latency for an operation (`*` for every one),
/// for the next `count` calls or at a `rate` (0..1).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Fault {
    pub operation: String,
    /// `ThrottlingException`, `DirectConnectServerException`, or another error code.
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub count: Option<u64>,
    #[serde(default)]
    pub rate: Option<f64>,
    #[serde(default)]
    pub latency_ms: u64,
}

impl Fault {
    /// Every call of `operation` fails with `error` (an AWS error code) until the faults are
    /// cleared: an outage.
    pub fn outage(operation: &str, error: &str) -> Self {
        Fault {
            operation: operation.into(),
            error: Some(error.into()),
            message: Some("Service unavailable".into()),
            count: None,
            rate: None,
            latency_ms: 0,
        }
    }
}

/// Controls body for `POST /_sim/connection-state`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct StateRequest {
    connection_id: String,
    state: String,
}

/// Controls body for `POST /_sim/router`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RouterRequest {
    connection_id: String,
    ckns: Vec<String>,
}

struct TokenBucket {
    rate: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    fn new(rate: f64) -> Self {
        TokenBucket {
            rate,
            tokens: rate.max(1.0),
            last: Instant::now(),
        }
    }

    fn take(&mut self, now: Instant) -> bool {
        let elapsed = now.duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.rate.max(1.0));
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// An (account, region) pair: one emulated Direct Connect and Secrets Manager.
type ScopeKey = (String, String);

struct Inner {
    seed: Seed,
    /// Every (account, region) called so far or seeded.
    accounts: BTreeMap<ScopeKey, Account>,
    /// The seed's top-level account and region: where long-term credentials act.
    home: ScopeKey,
    sts: sts::Sts,
    calls: Vec<CallRecord>,
    counts: BTreeMap<String, u64>,
    faults: Vec<Fault>,
    limiter: Option<TokenBucket>,
    started: Instant,
}

impl Inner {
    fn new(seed: Seed) -> Result<Inner, String> {
        let home = (seed.account.clone(), seed.region.clone());
        let mut accounts = BTreeMap::from([(home.clone(), Account::from_seed(&seed)?)]);
        for s in &seed.accounts {
            if !s.accounts.is_empty() || !s.roles.is_empty() {
                return Err(format!(
                    "seed accounts: {} {} lists accounts or roles; only the top level does",
                    s.account, s.region
                ));
            }
            let key = (s.account.clone(), s.region.clone());
            if accounts.contains_key(&key) {
                return Err(format!(
                    "seed accounts: account {} in {} is described twice",
                    s.account, s.region
                ));
            }
            accounts.insert(key, Account::from_seed(s)?);
        }
        let sts = sts::Sts::new(&seed.roles, Duration::from_secs(seed.credential_seconds))?;
        Ok(Inner {
            limiter: seed.rate_limit.map(TokenBucket::new),
            seed,
            accounts,
            home,
            sts,
            calls: Vec::new(),
            counts: BTreeMap::new(),
            faults: Vec::new(),
            started: Instant::now(),
        })
    }

    /// Throttling and injected faults for one call: an error to return instead, and latency.
    fn pre_call(&mut self, operation: &str) -> (Option<AwsError>, Duration) {
        let mut latency = Duration::ZERO;
        let mut error = None;
        let mut rng = rand::rng();
        for f in self
            .faults
            .iter_mut()
            .filter(|f| f.operation == "*" || f.operation == operation)
        {
            let hit = match (f.count, f.rate) {
                (Some(0), _) => false,
                (Some(n), _) => {
                    f.count = Some(n - 1);
                    true
                }
                (None, Some(rate)) => rng.random_bool(rate.clamp(0.0, 1.0)),
                (None, None) => true,
            };
            if hit {
                latency += Duration::from_millis(f.latency_ms);
                if error.is_none()
                    && let Some(code) = &f.error
                {
                    error = Some(fault_error(code, f.message.clone()));
                }
            }
        }
        self.faults.retain(|f| f.count != Some(0));
        if error.is_none()
            && let Some(limiter) = &mut self.limiter
            && !limiter.take(Instant::now())
        {
            error = Some(fault_error("ThrottlingException", None));
        }
        (error, latency)
    }

    /// The emulated (account, region); one never seeded starts empty, as a region of AWS
    /// where nothing was ordered does.
    fn account_mut(&mut self, key: &ScopeKey) -> &mut Account {
        self.accounts.entry(key.clone()).or_insert_with(|| {
            let mut seed = Seed::empty();
            seed.account = key.0.clone();
            seed.region = key.1.clone();
            Account::from_seed(&seed).expect("an empty seed is valid")
        })
    }

    /// The (account, region) holding connection, interconnect or LAG `id`; the home one
    /// when none does.
    fn scope_of_id(&self, id: &str) -> ScopeKey {
        self.accounts
            .iter()
            .find(|(_, a)| a.connections.contains_key(id) || a.lags.contains_key(id))
            .map(|(k, _)| k.clone())
            .unwrap_or_else(|| self.home.clone())
    }

    fn record(
        &mut self,
        operation: &str,
        caller: String,
        scope: &ScopeKey,
        target: Option<String>,
        outcome: &str,
    ) {
        *self.counts.entry(operation.to_string()).or_default() += 1;
        let seq = self.calls.len() as u64 + 1;
        self.calls.push(CallRecord {
            seq,
            operation: operation.to_string(),
            caller,
            account: scope.0.clone(),
            region: scope.1.clone(),
            target,
            outcome: outcome.to_string(),
            at_ms: self.started.elapsed().as_millis() as u64,
        });
    }

    fn dispatch(
        &mut self,
        scope: &ScopeKey,
        service: &str,
        operation: &str,
        req: &Value,
    ) -> Result<Value, AwsError> {
        let acc = self.account_mut(scope);
        acc.tick(Instant::now());
        let result = operate(acc, service, operation, req);
        acc.settle(Instant::now());
        result
    }
}

/// One Direct Connect or Secrets Manager operation on one emulated account.
fn operate(
    acc: &mut Account,
    service: &str,
    operation: &str,
    req: &Value,
) -> Result<Value, AwsError> {
    {
        match (service, operation) {
            ("OvertureService", "DescribeConnections") => acc.describe_connections(req),
            ("OvertureService", "DescribeLags") => acc.describe_lags(req),
            ("OvertureService", "DescribeInterconnects") => acc.describe_interconnects(req),
            ("OvertureService", "CreateInterconnect") => acc.create_interconnect(req),
            ("OvertureService", "AssociateConnectionWithLag") => {
                acc.associate_connection_with_lag(req)
            }
            ("OvertureService", "DisassociateConnectionFromLag") => {
                acc.disassociate_connection_from_lag(req)
            }
            ("OvertureService", "DescribeLocations") => acc.describe_locations(),
            ("OvertureService", "AssociateMacSecKey") => acc.associate_mac_sec_key(req),
            ("OvertureService", "DisassociateMacSecKey") => acc.disassociate_mac_sec_key(req),
            ("OvertureService", "UpdateConnection") => acc.update_connection(req),
            ("OvertureService", "UpdateLag") => acc.update_lag(req),
            ("OvertureService", "CreateConnection") => acc.create_connection(req),
            ("OvertureService", "CreateLag") => acc.create_lag(req),
            ("OvertureService", "DeleteConnection") => acc.delete_connection(req),
            ("OvertureService", "TagResource") => acc.tag_resource(req),
            ("OvertureService", "UntagResource") => acc.untag_resource(req),
            ("OvertureService", "DescribeTags") => acc.describe_tags(req),
            ("secretsmanager", "CreateSecret") => secrets::create_secret(acc, req),
            ("secretsmanager", "PutSecretValue") => secrets::put_secret_value(acc, req),
            ("secretsmanager", "DeleteSecret") => secrets::delete_secret(acc, req),
            ("secretsmanager", "GetSecretValue") => secrets::get_secret_value(acc, req),
            ("secretsmanager", "DescribeSecret") => secrets::describe_secret(acc, req),
            _ => Err(AwsError {
                code: "UnknownOperationException",
                message: format!("dx-sim does not emulate {service}.{operation}"),
            }),
        }
    }
}

fn fault_error(code: &str, message: Option<String>) -> AwsError {
    let (code, default): (&'static str, &str) = match code {
        "ThrottlingException" => ("ThrottlingException", "Rate exceeded"),
        "DirectConnectServerException" => (
            "DirectConnectServerException",
            "An internal error occurred. Please try again.",
        ),
        "DirectConnectClientException" => (model::CLIENT_EXCEPTION, "Injected client error"),
        // What IAM and STS answer a caller that may not make the call, or whose keys are
        // wrong or expired.
        "AccessDeniedException" => (
            "AccessDeniedException",
            "User: arn:aws:iam::123456789012:user/dx-sim is not authorized to perform this action",
        ),
        "UnrecognizedClientException" => (
            "UnrecognizedClientException",
            "The security token included in the request is invalid.",
        ),
        "ExpiredTokenException" => (
            "ExpiredTokenException",
            "The security token included in the request is expired",
        ),
        _ => ("InternalFailure", "Injected failure"),
    };
    AwsError {
        code,
        message: message.unwrap_or_else(|| default.to_string()),
    }
}

/// Shared emulator state; cheap to clone.
#[derive(Clone)]
pub struct Shared(Arc<Mutex<Inner>>);

impl Shared {
    pub fn new(seed: Seed) -> Result<Shared, String> {
        Ok(Shared(Arc::new(Mutex::new(Inner::new(seed)?))))
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves consistent data (every change is a whole
        // assignment), so keep serving.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The seed's top-level account and region as JSON (no CAKs).
    pub fn state(&self) -> Value {
        let home = self.lock().home.clone();
        self.state_of(&home.0, &home.1)
    }

    /// One account and region as JSON (no CAKs); empty if nothing was seeded or called there.
    pub fn state_of(&self, account: &str, region: &str) -> Value {
        let mut inner = self.lock();
        let acc = inner.account_mut(&(account.to_string(), region.to_string()));
        acc.tick(Instant::now());
        acc.dump()
    }

    pub fn calls(&self) -> Vec<CallRecord> {
        self.lock().calls.clone()
    }

    /// Down and clear-text seconds per port and in total over every account and region, up
    /// to now (`/_sim/outages`).
    pub fn outages(&self) -> Value {
        let mut inner = self.lock();
        let (mut down, mut clear) = (0.0, 0.0);
        let mut ports = serde_json::Map::new();
        for acc in inner.accounts.values_mut() {
            acc.tick(Instant::now());
            let o = acc.outages_json();
            down += o["downSeconds"].as_f64().unwrap_or(0.0);
            clear += o["clearTextSeconds"].as_f64().unwrap_or(0.0);
            if let Value::Object(p) = &o["ports"] {
                ports.extend(p.clone());
            }
        }
        json!({"downSeconds": down, "clearTextSeconds": clear, "ports": ports})
    }

    pub fn counts(&self) -> BTreeMap<String, u64> {
        self.lock().counts.clone()
    }

    pub fn add_fault(&self, fault: Fault) {
        self.lock().faults.push(fault);
    }

    pub fn clear_faults(&self) {
        self.lock().faults.clear();
    }

    pub fn set_rate_limit(&self, rate: Option<f64>) {
        self.lock().limiter = rate.map(TokenBucket::new);
    }

    pub fn set_router(&self, connection_id: &str, ckns: &[String]) -> Result<(), String> {
        self.change(connection_id, |acc| acc.set_router(connection_id, ckns))
    }

    /// Sets the state of a connection or LAG (`available`, `pending`, `down`…).
    pub fn set_state(&self, id: &str, state: &str) -> Result<(), String> {
        self.change(id, |acc| acc.set_state(id, state))
    }

    /// A change made from outside the API to the account holding `id`, with the outage
    /// accounting settled before and after it.
    fn change(
        &self,
        id: &str,
        f: impl FnOnce(&mut model::Account) -> Result<(), AwsError>,
    ) -> Result<(), String> {
        let mut inner = self.lock();
        let scope = inner.scope_of_id(id);
        let acc = inner.account_mut(&scope);
        acc.tick(Instant::now());
        let result = f(acc).map_err(|e| e.message);
        acc.settle(Instant::now());
        result
    }

    /// A Direct Connect call made outside the operator (the console, Terraform, a Partner's
    /// tooling): dispatched as over HTTP, without faults, and logged with caller
    /// `out-of-band`.
    pub fn call(&self, operation: &str, req: &Value) -> Result<Value, String> {
        let mut inner = self.lock();
        let target = ["connectionId", "interconnectId", "lagId"]
            .iter()
            .find_map(|f| req.get(*f).and_then(Value::as_str).map(str::to_string));
        let scope = target
            .as_deref()
            .map_or_else(|| inner.home.clone(), |id| inner.scope_of_id(id));
        let result = inner.dispatch(&scope, "OvertureService", operation, req);
        let outcome = result.as_ref().map_or_else(|e| e.code, |_| "ok");
        inner.record(operation, "out-of-band".into(), &scope, target, outcome);
        result.map_err(|e| format!("{}: {}", e.code, e.message))
    }

    /// Back to the seed: account, calls, faults and rate limit.
    pub fn reset(&self) {
        let mut inner = self.lock();
        let seed = inner.seed.clone();
        *inner = Inner::new(seed).expect("the seed was valid at start");
    }
}

/// Part `n` of the credential scope of a SigV4 `Authorization` header
/// (`Credential=<key>/<date>/<region>/<service>/aws4_request`): 0 is the access key ID, 2
/// the region.
fn credential_part(headers: &HeaderMap, n: usize) -> Option<String> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split("Credential=").nth(1))
        .and_then(|v| v.split(',').next())
        .and_then(|v| v.split('/').nth(n))
        .filter(|p| !p.is_empty())
        .map(str::to_string)
}

/// The access key ID of a SigV4 `Authorization` header.
fn caller_of(headers: &HeaderMap) -> String {
    credential_part(headers, 0).unwrap_or_else(|| "anonymous".into())
}

/// An STS call (the query protocol: form parameters in, XML out).
async fn sts_call(sim: Shared, headers: &HeaderMap, body: &[u8]) -> Response {
    let xml = |status: StatusCode, body: String| {
        let mut resp = (status, body).into_response();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            "text/xml".parse().expect("static header"),
        );
        resp
    };
    let params: std::collections::HashMap<String, String> =
        match serde_urlencoded::from_bytes::<Vec<(String, String)>>(body) {
            Ok(p) => p.into_iter().collect(),
            Err(e) => {
                let e = AwsError {
                    code: "MalformedInput",
                    message: e.to_string(),
                };
                return xml(StatusCode::BAD_REQUEST, sts::Sts::error_xml(&e));
            }
        };
    let action = params.get("Action").cloned().unwrap_or_default();
    let key = caller_of(headers);
    let (pre_error, latency) = sim.lock().pre_call(&action);
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let mut inner = sim.lock();
    let region = credential_part(headers, 2).unwrap_or_else(|| inner.home.1.clone());
    let now = Instant::now();
    let caller = inner.sts.caller(&key, &inner.home.0, now);
    let scope = (inner.sts.account_of(&key, &inner.home.0), region);
    let result = match (pre_error, caller) {
        (Some(e), _) | (None, Err(e)) => Err(e),
        (None, Ok(caller)) => match action.as_str() {
            "AssumeRole" => inner.sts.assume_role(&caller, &params, now),
            "GetCallerIdentity" => Ok(sts::Sts::get_caller_identity(&caller)),
            _ => Err(AwsError {
                code: "InvalidAction",
                message: format!("dx-sim does not emulate sts.{action}"),
            }),
        },
    };
    let outcome = result.as_ref().map_or_else(|e| e.code, |_| "ok");
    let target = params.get("RoleArn").cloned();
    inner.record(&action, key, &scope, target, outcome);
    match result {
        Ok(body) => xml(StatusCode::OK, body),
        Err(e) => {
            let status = match e.code {
                "AccessDenied" => StatusCode::FORBIDDEN,
                "ThrottlingException" | "Throttling" => StatusCode::BAD_REQUEST,
                "InternalFailure" => StatusCode::INTERNAL_SERVER_ERROR,
                _ => StatusCode::BAD_REQUEST,
            };
            xml(status, sts::Sts::error_xml(&e))
        }
    }
}

fn aws_response(status: StatusCode, body: &Value, error_type: Option<&str>) -> Response {
    let mut resp = (status, body.to_string()).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        "application/x-amz-json-1.1".parse().expect("static header"),
    );
    let request_id = format!("{:032x}", rand::rng().random::<u128>());
    h.insert("x-amzn-RequestId", request_id.parse().expect("hex header"));
    if let Some(t) = error_type
        && let Ok(v) = t.parse()
    {
        h.insert("x-amzn-ErrorType", v);
    }
    resp
}

async fn aws_call(State(sim): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    let form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    if form && !headers.contains_key("x-amz-target") {
        return sts_call(sim, &headers, &body).await;
    }
    let Some((service, operation)) = headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once('.'))
        .map(|(s, o)| (s.to_string(), o.to_string()))
    else {
        return aws_response(
            StatusCode::BAD_REQUEST,
            &json!({"__type": "MissingAction", "message": "X-Amz-Target header is required"}),
            Some("MissingAction"),
        );
    };
    let caller = caller_of(&headers);
    let req: Value = if body.is_empty() {
        json!({})
    } else {
        match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(e) => {
                return aws_response(
                    StatusCode::BAD_REQUEST,
                    &json!({"__type": "SerializationException", "message": e.to_string()}),
                    Some("SerializationException"),
                );
            }
        }
    };
    let target = [
        "connectionId",
        "interconnectId",
        "lagId",
        "SecretId",
        "Name",
    ]
    .iter()
    .find_map(|f| req.get(*f).and_then(Value::as_str).map(str::to_string))
    .or_else(|| {
        // TagResource and UntagResource name a connection or LAG by its ARN.
        let arn = req.get("resourceArn").and_then(Value::as_str)?;
        arn.rsplit('/').next().map(str::to_string)
    });
    let (pre_error, latency) = sim.lock().pre_call(&operation);
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let mut inner = sim.lock();
    // The account is the caller's (an assumed role's, or the home account for long-term
    // keys); the region the one the request is signed for.
    let region = credential_part(&headers, 2).unwrap_or_else(|| inner.home.1.clone());
    let acting = inner.sts.caller(&caller, &inner.home.0, Instant::now());
    let scope = (inner.sts.account_of(&caller, &inner.home.0), region);
    let result = match (pre_error, acting) {
        (Some(e), _) | (None, Err(e)) => Err(e),
        (None, Ok(_)) => inner.dispatch(&scope, &service, &operation, &req),
    };
    let outcome = match &result {
        Ok(_) => "ok",
        Err(e) => e.code,
    };
    inner.record(&operation, caller, &scope, target, outcome);
    drop(inner);
    match result {
        Ok(body) => aws_response(StatusCode::OK, &body, None),
        Err(e) => {
            let message_key = if service == "secretsmanager" {
                "Message"
            } else {
                "message"
            };
            aws_response(
                StatusCode::BAD_REQUEST,
                &json!({"__type": e.code, message_key: e.message}),
                Some(e.code),
            )
        }
    }
}

/// Query of `GET /_sim/state`: another account and region than the seed's top level.
#[derive(Debug, Deserialize)]
struct StateQuery {
    account: Option<String>,
    region: Option<String>,
}

async fn get_state(
    State(sim): State<Shared>,
    axum::extract::Query(q): axum::extract::Query<StateQuery>,
) -> Response {
    let state = match (q.account, q.region) {
        (None, None) => sim.state(),
        (account, region) => {
            let home = sim.lock().home.clone();
            sim.state_of(
                account.as_deref().unwrap_or(&home.0),
                region.as_deref().unwrap_or(&home.1),
            )
        }
    };
    axum::Json(state).into_response()
}

async fn get_outages(State(sim): State<Shared>) -> Response {
    axum::Json(sim.outages()).into_response()
}

async fn get_calls(State(sim): State<Shared>) -> Response {
    let inner = sim.lock();
    axum::Json(json!({"counts": inner.counts, "calls": inner.calls})).into_response()
}

async fn post_faults(State(sim): State<Shared>, body: Bytes) -> Response {
    let faults: Vec<Fault> = match serde_json::from_slice::<Value>(&body) {
        Ok(v @ Value::Array(_)) => serde_json::from_value(v).unwrap_or_default(),
        Ok(v) => serde_json::from_value(v)
            .map(|f| vec![f])
            .unwrap_or_default(),
        Err(_) => Vec::new(),
    };
    if faults.is_empty() {
        return (
            StatusCode::BAD_REQUEST,
            "expected a fault or a list of faults\n",
        )
            .into_response();
    }
    for f in faults {
        sim.add_fault(f);
    }
    StatusCode::NO_CONTENT.into_response()
}

async fn delete_faults(State(sim): State<Shared>) -> Response {
    sim.clear_faults();
    StatusCode::NO_CONTENT.into_response()
}

async fn post_rate_limit(State(sim): State<Shared>, body: Bytes) -> Response {
    match serde_json::from_slice::<Value>(&body) {
        Ok(v) => {
            sim.set_rate_limit(v.get("requestsPerSecond").and_then(Value::as_f64));
            StatusCode::NO_CONTENT.into_response()
        }
        Err(e) => (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response(),
    }
}

async fn post_router(State(sim): State<Shared>, body: Bytes) -> Response {
    let req: RouterRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response(),
    };
    match sim.set_router(&req.connection_id, &req.ckns) {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => (StatusCode::NOT_FOUND, format!("{e}\n")).into_response(),
    }
}

async fn post_connection_state(State(sim): State<Shared>, body: Bytes) -> Response {
    let req: StateRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response(),
    };
    match sim.set_state(&req.connection_id, &req.state) {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => (StatusCode::NOT_FOUND, format!("{e}\n")).into_response(),
    }
}

async fn post_reset(State(sim): State<Shared>) -> Response {
    sim.reset();
    StatusCode::NO_CONTENT.into_response()
}

/// The HTTP application for a shared emulator state.
pub fn app(sim: Shared) -> Router {
    Router::new()
        .route("/", post(aws_call))
        .route("/_sim/state", get(get_state))
        .route("/_sim/calls", get(get_calls))
        .route("/_sim/outages", get(get_outages))
        .route("/_sim/faults", post(post_faults).delete(delete_faults))
        .route("/_sim/rate-limit", post(post_rate_limit))
        .route("/_sim/router", post(post_router))
        .route("/_sim/connection-state", post(post_connection_state))
        .route("/_sim/reset", post(post_reset))
        .with_state(sim)
}

/// A running emulator on a loopback port; stops when dropped.
pub struct Sim {
    pub addr: SocketAddr,
    pub shared: Shared,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Sim {
    /// Starts on `127.0.0.1` with a free port.
    pub async fn start(seed: Seed) -> std::io::Result<Sim> {
        Self::start_on(seed, SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    pub async fn start_on(seed: Seed, addr: SocketAddr) -> std::io::Result<Sim> {
        let shared = Shared::new(seed).map_err(std::io::Error::other)?;
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let router = app(shared.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, router)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await;
        });
        Ok(Sim {
            addr,
            shared,
            shutdown: Some(tx),
        })
    }

    /// The URL to give the SDK as endpoint (`AWS_ENDPOINT_URL`).
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}
