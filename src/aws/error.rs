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

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct AwsError {
    pub operation: &'static str,
    /// The AWS error code (`DirectConnectClientException`, `ThrottlingException`…), when
    /// the service answered.
    pub code: Option<String>,
    pub message: String,
    pub class: ErrorClass,
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
    /// Classifies an error the service returned (code and message), including moto's and
    /// dx-sim's codes.
    pub fn from_service(operation: &'static str, code: Option<&str>, message: &str) -> Self {
        let class = match code {
            Some(c) if THROTTLING_CODES.contains(&c) => ErrorClass::Throttled,
            Some(c) if SERVER_CODES.contains(&c) => ErrorClass::RetrySoon,
            Some(_) if NOT_READY_HINTS.iter().any(|h| message.contains(h)) => ErrorClass::RetrySoon,
            // Bad parameters, unknown IDs (AWS's DirectConnectClientException, moto's
            // ConnectionNotFound / LagNotFound / MacSecKeyNotFound, Secrets Manager's
            // ResourceNotFoundException), access denied.
            Some(_) => ErrorClass::Terminal,
            None => ErrorClass::RetrySoon,
        };
        AwsError {
            operation,
            code: code.map(str::to_string),
            message: message.to_string(),
            class,
        }
    }

    /// An error with no answer from the service (timeout, connection refused…): retry.
    pub fn transport(operation: &'static str, message: impl Into<String>) -> Self {
        AwsError {
            operation,
            code: None,
            message: message.into(),
            class: ErrorClass::RetrySoon,
        }
    }

    /// Converts any SDK error. Only the code and message are kept.
    pub fn from_sdk<E, R>(
        operation: &'static str,
        err: &aws_smithy_runtime_api::client::result::SdkError<E, R>,
    ) -> Self
    where
        E: aws_smithy_types::error::metadata::ProvideErrorMetadata + std::error::Error + 'static,
        R: fmt::Debug,
    {
        use aws_smithy_runtime_api::client::result::SdkError;
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
            SdkError::DispatchFailure(e) => Self::transport(
                operation,
                if e.is_timeout() {
                    "timed out".to_string()
                } else {
                    format!("could not reach the endpoint: {e:?}")
                        .chars()
                        .take(300)
                        .collect()
                },
            ),
            SdkError::ResponseError(_) => {
                Self::transport(operation, "the response could not be read")
            }
            SdkError::ConstructionFailure(_) => AwsError {
                operation,
                code: None,
                message: "the request could not be built (check credentials and region)".into(),
                class: ErrorClass::Terminal,
            },
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

    /// A value echoed in a message is replaced.
    #[test]
    fn scrubs_a_secret() {
        let e = AwsError::from_service("AssociateMacSecKey", Some("X"), "bad cak abc123 given")
            .scrubbed("abc123");
        assert_eq!(e.message, "bad cak <redacted> given");
    }
}
