//! Errors from AWS calls, with the retry class the shells act on.
//!
//! A message here is built from the operation, the error code and AWS's message only; the
//! request is never formatted into it, so a CAK sent in AssociateMacSecKey cannot leak.

use std::fmt;

/// What to do about a failed call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// Bad parameters, unknown IDs, not capable, access denied: retrying the same call will
    /// not help until the spec or the account changes.
    Terminal,
    /// Server errors, timeouts, a resource not in a state to change yet: retry soon.
    RetrySoon,
    /// Throttling: back off.
    Throttled,
}

/// What a failure is about, where a person has to fix something outside the spec: these
/// get condition reasons of their own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// No credentials were found, or AWS rejected them (wrong, expired).
    Credentials,
    /// The identity may not make the call (IAM).
    AccessDenied,
    /// Anything else.
    Other,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct AwsError {
    pub operation: &'static str,
    /// The AWS error code (`DirectConnectClientException`, `ThrottlingException`…), when
    /// the service answered.
    pub code: Option<String>,
    pub message: String,
    pub class: ErrorClass,
    pub kind: ErrorKind,
}

impl fmt::Display for AwsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.code {
            Some(code) => write!(f, "{} failed: {code}: {}", self.operation, self.message),
            None => write!(f, "{} failed: {}", self.operation, self.message),
        }
    }
}

const THROTTLING_CODES: &[&str] = &[
    "ThrottlingException",
    "Throttling",
    "TooManyRequestsException",
    "RequestLimitExceeded",
    "SlowDown",
    "RequestThrottled",
    "RequestThrottledException",
];

const SERVER_CODES: &[&str] = &[
    "DirectConnectServerException",
    "InternalFailure",
    "InternalServiceError",
    "InternalServiceErrorException",
    "ServiceUnavailable",
    "ServiceUnavailableException",
];

/// The identity may not make the call.
const ACCESS_DENIED_CODES: &[&str] = &[
    "AccessDeniedException",
    "AccessDenied",
    "UnauthorizedOperation",
];

/// AWS rejected the credentials themselves.
const CREDENTIALS_CODES: &[&str] = &[
    "UnrecognizedClientException",
    "InvalidClientTokenId",
    "InvalidSignatureException",
    "SignatureDoesNotMatch",
    "IncompleteSignature",
    "MissingAuthenticationToken",
    "ExpiredToken",
    "ExpiredTokenException",
];

/// Client-exception messages that describe a passing state, not a bad request.
const NOT_READY_HINTS: &[&str] = &[
    "not in available state",
    "must be available",
    "is in state",
    "is pending",
    // A retried associate whose first attempt went through: the next pass re-reads and
    // finds the key by CKN.
    "already associated",
];

impl AwsError {
    /// The condition reason of this error: `Throttled`, `AwsCredentials`, `AccessDenied`, or
    /// `AwsError` for everything else.
    pub fn reason(&self) -> crate::plan::Reason {
        use crate::plan::Reason;
        match (self.class, self.kind) {
            (ErrorClass::Throttled, _) => Reason::Throttled,
            (_, ErrorKind::Credentials) => Reason::AwsCredentials,
            (_, ErrorKind::AccessDenied) => Reason::AccessDenied,
            _ => Reason::AwsError,
        }
    }

    /// Classifies an error the service returned (code and message), including moto's and
    /// dx-sim's codes. Access and credential errors get a message that says what to fix.
    pub fn from_service(operation: &'static str, code: Option<&str>, message: &str) -> Self {
        let (class, kind) = match code {
            Some(c) if THROTTLING_CODES.contains(&c) => (ErrorClass::Throttled, ErrorKind::Other),
            Some(c) if ACCESS_DENIED_CODES.contains(&c) => {
                (ErrorClass::Terminal, ErrorKind::AccessDenied)
            }
            Some(c) if CREDENTIALS_CODES.contains(&c) => {
                (ErrorClass::Terminal, ErrorKind::Credentials)
            }
            Some(c) if SERVER_CODES.contains(&c) => (ErrorClass::RetrySoon, ErrorKind::Other),
            Some(_) if NOT_READY_HINTS.iter().any(|h| message.contains(h)) => {
                (ErrorClass::RetrySoon, ErrorKind::Other)
            }
            // Bad parameters, unknown IDs (AWS's DirectConnectClientException, moto's
            // ConnectionNotFound / LagNotFound / MacSecKeyNotFound, Secrets Manager's
            // ResourceNotFoundException).
            Some(_) => (ErrorClass::Terminal, ErrorKind::Other),
            None => (ErrorClass::RetrySoon, ErrorKind::Other),
        };
        let fix = match kind {
            ErrorKind::AccessDenied if operation == "AssumeRole" => " (the role's trust policy must let the operator's identity assume it, and that identity needs sts:AssumeRole on the role; the role is the roleArn of the DxAccess in spec.accessRef)".to_string(),
            ErrorKind::AccessDenied => format!(
                " (the operator's AWS identity may not call {}: grant it; deploy/iam-policy.json lists every action the operator needs)",
                iam_action(operation)
            ),
            ErrorKind::Credentials => " (AWS rejected the credentials: check the access key, the session token and its expiry, or the role the operator runs as)".to_string(),
            ErrorKind::Other => String::new(),
        };
        AwsError {
            operation,
            code: code.map(str::to_string),
            message: format!("{message}{fix}"),
            class,
            kind,
        }
    }

    /// An error with no answer from the service (timeout, connection refused…): retry.
    pub fn transport(operation: &'static str, message: impl Into<String>) -> Self {
        AwsError {
            operation,
            code: None,
            message: message.into(),
            class: ErrorClass::RetrySoon,
            kind: ErrorKind::Other,
        }
    }

    /// A failure that retrying will not mend, with no answer from the service.
    pub fn terminal(operation: &'static str, kind: ErrorKind, message: impl Into<String>) -> Self {
        AwsError {
            operation,
            code: None,
            message: message.into(),
            class: ErrorClass::Terminal,
            kind,
        }
    }

    /// Converts any SDK error. Only the code and message are kept; the whole error chain of
    /// a failure before any answer goes to the log at debug.
    pub fn from_sdk<E, R>(
        operation: &'static str,
        err: &aws_smithy_runtime_api::client::result::SdkError<E, R>,
    ) -> Self
    where
        E: aws_smithy_types::error::metadata::ProvideErrorMetadata + std::error::Error + 'static,
        R: fmt::Debug,
    {
        use aws_smithy_runtime_api::client::result::SdkError;
        // The whole chain goes to the log for failures before any answer (no credentials,
        // no connection): they hold neither request nor response, so no CAK either. An
        // answer's body is never logged: AWS might echo a parameter in it.
        if let SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) = err {
            tracing::debug!(operation, error = ?err, "AWS call failed before an answer");
        }
        match err {
            SdkError::ServiceError(e) => {
                let meta = e.err().meta();
                Self::from_service(
                    operation,
                    meta.code(),
                    meta.message().unwrap_or("no message"),
                )
            }
            SdkError::TimeoutError(_) => Self::transport(operation, "timed out"),
            SdkError::DispatchFailure(e)
                if e.as_connector_error()
                    .is_some_and(|c| credentials_failed(c)) =>
            {
                // A role's credentials come from STS: its answer (AccessDenied, throttling,
                // an expired session) says what went wrong, not "no credentials".
                if let Some((code, message)) =
                    e.as_connector_error().and_then(|c| service_answer(c))
                {
                    return Self::from_service("AssumeRole", code.as_deref(), &message);
                }
                Self::terminal(
                    operation,
                    ErrorKind::Credentials,
                    "no AWS credentials were found: set AWS_PROFILE or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or run with IRSA or EKS Pod Identity (the operator uses the standard credential chain)",
                )
            }
            SdkError::DispatchFailure(e) if e.is_timeout() => {
                Self::transport(operation, "timed out")
            }
            SdkError::DispatchFailure(e) => Self::transport(
                operation,
                format!(
                    "could not reach the endpoint: {} (check the network, spec.region and AWS_ENDPOINT_URL)",
                    e.as_connector_error()
                        .map_or_else(|| "no detail".to_string(), |c| root_cause(c))
                ),
            ),
            SdkError::ResponseError(_) => {
                Self::transport(operation, "the response could not be read")
            }
            SdkError::ConstructionFailure(_) => Self::terminal(
                operation,
                ErrorKind::Other,
                "the request could not be built (check credentials and region)",
            ),
            _ => Self::transport(operation, "unknown SDK error"),
        }
    }

    /// Removes a secret value from the message, should AWS ever echo a parameter.
    pub fn scrubbed(mut self, secret: &str) -> Self {
        if !secret.is_empty() && self.message.contains(secret) {
            self.message = self.message.replace(secret, "<redacted>");
        }
        self
    }
}

/// The IAM action of an operation (`directconnect:DescribeConnections`).
fn iam_action(operation: &str) -> String {
    let service = match operation {
        "GetSecretValue" | "DescribeSecret" | "CreateSecret" | "PutSecretValue"
        | "DeleteSecret" => "secretsmanager",
        "AssumeRole" => "sts",
        _ => "directconnect",
    };
    format!("{service}:{operation}")
}

/// Whether a dispatch failed because no credentials could be loaded (the SDK resolves the
/// identity before it sends anything, and reports that failure as a dispatch failure).
fn credentials_failed(e: &(dyn std::error::Error + 'static)) -> bool {
    use aws_credential_types::provider::error::CredentialsError;
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        if c.downcast_ref::<CredentialsError>().is_some() {
            return true;
        }
        cause = c.source();
    }
    false
}

/// The code and message of a service's answer inside an error chain (STS's, when loading a
/// role's credentials failed).
fn service_answer(e: &(dyn std::error::Error + 'static)) -> Option<(Option<String>, String)> {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        if let Some(meta) = c.downcast_ref::<aws_smithy_types::error::ErrorMetadata>()
            && meta.code().is_some()
        {
            return Some((
                meta.code().map(str::to_string),
                meta.message().unwrap_or("no message").to_string(),
            ));
        }
        cause = c.source();
    }
    None
}

/// The innermost cause's message: what went wrong, without the SDK's wrappers.
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Codes from AWS, moto and dx-sim land in the right class.
    #[test]
    fn classifies_codes_and_messages() {
        let c = |code: &str, msg: &str| AwsError::from_service("Op", Some(code), msg).class;
        assert_eq!(
            c("ThrottlingException", "Rate exceeded"),
            ErrorClass::Throttled
        );
        assert_eq!(
            c("DirectConnectServerException", "x"),
            ErrorClass::RetrySoon
        );
        assert_eq!(
            c(
                "DirectConnectClientException",
                "The port is not in available state to associate the key"
            ),
            ErrorClass::RetrySoon
        );
        assert_eq!(
            c(
                "DirectConnectClientException",
                "Could not find Connection with ID dxcon-1"
            ),
            ErrorClass::Terminal
        );
        assert_eq!(c("ConnectionNotFound", "moto"), ErrorClass::Terminal);
        assert_eq!(c("ResourceNotFoundException", "x"), ErrorClass::Terminal);
        assert_eq!(
            AwsError::from_service("Op", None, "x").class,
            ErrorClass::RetrySoon
        );
    }

    /// Access and credential errors are terminal, of their own kind, and say what to fix.
    #[test]
    fn access_and_credential_errors_say_what_to_fix() {
        let e = AwsError::from_service("UpdateLag", Some("AccessDeniedException"), "denied");
        assert_eq!(
            (e.class, e.kind),
            (ErrorClass::Terminal, ErrorKind::AccessDenied)
        );
        assert!(e.message.contains("directconnect:UpdateLag"), "{e}");
        assert!(e.message.contains("deploy/iam-policy.json"), "{e}");
        let e = AwsError::from_service("GetSecretValue", Some("AccessDenied"), "denied");
        assert!(e.message.contains("secretsmanager:GetSecretValue"), "{e}");
        for code in [
            "ExpiredTokenException",
            "UnrecognizedClientException",
            "InvalidSignatureException",
        ] {
            let e = AwsError::from_service("DescribeLags", Some(code), "no");
            assert_eq!(
                (e.class, e.kind),
                (ErrorClass::Terminal, ErrorKind::Credentials),
                "{code}"
            );
        }
    }

    /// A value echoed in a message is replaced.
    #[test]
    fn scrubs_a_secret() {
        let e = AwsError::from_service("AssociateMacSecKey", Some("X"), "bad cak abc123 given")
            .scrubbed("abc123");
        assert_eq!(e.message, "bad cak <redacted> given");
    }

    /// deploy/iam-policy.json grants exactly the calls the code makes: every SDK call in
    /// sdk.rs (each names its operation for its errors: `from_sdk("Op", …)` right after the
    /// fluent call `.op()`) as the IAM action `iam_action` names, plus the one action AWS
    /// needs on the operator's behalf (the service-linked role on a first association) and
    /// kms:Decrypt for key secrets under a customer-managed KMS key. AssumeRole is granted
    /// per role by the user (the README says so), not by this policy. Every ARN is
    /// partition-neutral.
    #[test]
    fn the_iam_policy_grants_exactly_the_calls_made() {
        let code = include_str!("sdk.rs");
        let mut called = std::collections::BTreeSet::new();
        for (at, _) in code.match_indices("from_sdk(\"") {
            let op: String = code[at + 10..].chars().take_while(|c| *c != '"').collect();
            let snake: String = op
                .chars()
                .enumerate()
                .flat_map(|(i, c)| {
                    let lower = c.to_ascii_lowercase();
                    if c.is_ascii_uppercase() && i > 0 {
                        vec!['_', lower]
                    } else {
                        vec![lower]
                    }
                })
                .collect();
            assert!(
                code.contains(&format!(".{snake}()")),
                "sdk.rs names {op} in an error but never calls .{snake}()"
            );
            called.insert(iam_action(&op));
        }
        assert!(code.contains("AssumeRoleProvider"), "roles are assumed");
        let policy: serde_json::Value =
            serde_json::from_str(include_str!("../../deploy/iam-policy.json")).unwrap();
        let mut granted = std::collections::BTreeSet::new();
        for statement in policy["Statement"].as_array().unwrap() {
            let actions = &statement["Action"];
            match actions.as_array() {
                Some(list) => granted.extend(list.iter().map(|a| a.as_str().unwrap().to_string())),
                None => {
                    granted.insert(actions.as_str().unwrap().to_string());
                }
            }
            let resources = &statement["Resource"];
            let resources: Vec<&str> = match resources.as_array() {
                Some(list) => list.iter().map(|r| r.as_str().unwrap()).collect(),
                None => vec![resources.as_str().unwrap()],
            };
            for r in resources {
                assert!(r == "*" || r.starts_with("arn:*:"), "{r} names a partition");
            }
        }
        let mut expected = called.clone();
        expected.insert("iam:CreateServiceLinkedRole".into());
        expected.insert("kms:Decrypt".into());
        assert_eq!(granted, expected);
        assert!(called.len() >= 7, "{called:?}");
    }
}
