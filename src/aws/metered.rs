//! A decorator that counts every AWS call by operation and outcome in the metrics.

use std::sync::Arc;

use super::{
    Answer, AwsError, AwsProvider, BoxFut, DirectConnectApi, Scope, SecretsApi, SecretsProvider,
};
use crate::crd::EncryptionMode;
use crate::metrics::Metrics;
use crate::observed::ObservedResource;
use crate::plan::{Association, Target};

pub struct MeteredProvider {
    inner: Arc<dyn AwsProvider>,
    metrics: Arc<Metrics>,
}

/// Every operation label this decorator records (`DescribeAll` is one whole-scope read).
pub const METERED_OPERATIONS: &[&str] = &[
    "DescribeAll",
    "DescribeConnections",
    "DescribeLags",
    "AssociateMacSecKey",
    "DisassociateMacSecKey",
    "UpdateConnection",
    "UpdateLag",
    "TagResource",
    "UntagResource",
    "GetSecretValue",
    "DescribeSecret",
    "CreateSecret",
    "PutSecretValue",
    "DeleteSecret",
];

impl MeteredProvider {
    pub fn new(inner: Arc<dyn AwsProvider>, metrics: Arc<Metrics>) -> Self {
        MeteredProvider { inner, metrics }
    }
}

struct Metered<T: ?Sized> {
    inner: Arc<T>,
    metrics: Arc<Metrics>,
}

fn record<T>(metrics: &Metrics, operation: &str, result: &Result<T, AwsError>) {
    debug_assert!(
        METERED_OPERATIONS.contains(&operation),
        "{operation} is missing from METERED_OPERATIONS"
    );
    let (outcome, throttled) = match result {
        Ok(_) => ("ok", false),
        Err(e) => (
            e.code.as_deref().unwrap_or("transport_error"),
            e.class == super::ErrorClass::Throttled,
        ),
    };
    metrics.aws_call(operation, outcome, throttled);
}

impl AwsProvider for MeteredProvider {
    fn direct_connect<'a>(
        &'a self,
        scope: &'a Scope,
    ) -> BoxFut<'a, Result<Arc<dyn DirectConnectApi>, AwsError>> {
        Box::pin(async move {
            let inner = self.inner.direct_connect(scope).await?;
            Ok(Arc::new(Metered {
                inner,
                metrics: self.metrics.clone(),
            }) as Arc<dyn DirectConnectApi>)
        })
    }
}

impl SecretsProvider for MeteredProvider {
    fn secrets<'a>(
        &'a self,
        scope: &'a Scope,
    ) -> BoxFut<'a, Result<Arc<dyn SecretsApi>, AwsError>> {
        Box::pin(async move {
            let inner = self.inner.secrets(scope).await?;
            Ok(Arc::new(Metered {
                inner,
                metrics: self.metrics.clone(),
            }) as Arc<dyn SecretsApi>)
        })
    }
}

impl DirectConnectApi for Metered<dyn DirectConnectApi> {
    fn describe_all(&self) -> BoxFut<'_, Result<Vec<ObservedResource>, AwsError>> {
        Box::pin(async move {
            let r = self.inner.describe_all().await;
            record(&self.metrics, "DescribeAll", &r);
            r
        })
    }

    fn interconnects_unlisted(&self) -> Option<AwsError> {
        self.inner.interconnects_unlisted()
    }

    fn describe_one<'a>(
        &'a self,
        id: &'a str,
    ) -> BoxFut<'a, Result<Option<ObservedResource>, AwsError>> {
        Box::pin(async move {
            let r = self.inner.describe_one(id).await;
            let op = if id.starts_with("dxlag-") {
                "DescribeLags"
            } else {
                "DescribeConnections"
            };
            record(&self.metrics, op, &r);
            r
        })
    }

    fn associate<'a>(
        &'a self,
        target: &'a Target,
        with: &'a Association,
    ) -> BoxFut<'a, Result<Answer, AwsError>> {
        Box::pin(async move {
            let r = self.inner.associate(target, with).await;
            record(&self.metrics, "AssociateMacSecKey", &r);
            r
        })
    }

    fn disassociate<'a>(
        &'a self,
        target: &'a Target,
        secret_arn: &'a str,
    ) -> BoxFut<'a, Result<Answer, AwsError>> {
        Box::pin(async move {
            let r = self.inner.disassociate(target, secret_arn).await;
            record(&self.metrics, "DisassociateMacSecKey", &r);
            r
        })
    }

    fn tag_resource<'a>(
        &'a self,
        arn: &'a str,
        key: &'a str,
        value: &'a str,
    ) -> BoxFut<'a, Result<(), AwsError>> {
        self.metered("TagResource", self.inner.tag_resource(arn, key, value))
    }

    fn untag_resource<'a>(
        &'a self,
        arn: &'a str,
        key: &'a str,
    ) -> BoxFut<'a, Result<(), AwsError>> {
        self.metered("UntagResource", self.inner.untag_resource(arn, key))
    }

    fn set_mode<'a>(
        &'a self,
        target: &'a Target,
        mode: EncryptionMode,
    ) -> BoxFut<'a, Result<Answer, AwsError>> {
        Box::pin(async move {
            let r = self.inner.set_mode(target, mode).await;
            record(&self.metrics, target.update_operation(), &r);
            r
        })
    }
}

impl Metered<dyn DirectConnectApi> {
    fn metered<'a>(
        &'a self,
        operation: &'static str,
        call: BoxFut<'a, Result<(), AwsError>>,
    ) -> BoxFut<'a, Result<(), AwsError>> {
        Box::pin(async move {
            let r = call.await;
            record(&self.metrics, operation, &r);
            r
        })
    }
}

impl SecretsApi for Metered<dyn SecretsApi> {
    fn create_secret<'a>(
        &'a self,
        name: &'a str,
        description: &'a str,
    ) -> BoxFut<'a, Result<String, AwsError>> {
        Box::pin(async move {
            let r = self.inner.create_secret(name, description).await;
            record(&self.metrics, "CreateSecret", &r);
            r
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
            let r = self.inner.put_key(secret_id, ckn, cak, token).await;
            record(&self.metrics, "PutSecretValue", &r);
            r
        })
    }

    fn delete_secret<'a>(&'a self, secret_id: &'a str) -> BoxFut<'a, Result<(), AwsError>> {
        Box::pin(async move {
            let r = self.inner.delete_secret(secret_id).await;
            record(&self.metrics, "DeleteSecret", &r);
            r
        })
    }

    fn secret_string<'a>(&'a self, secret_id: &'a str) -> BoxFut<'a, Result<String, AwsError>> {
        Box::pin(async move {
            let r = self.inner.secret_string(secret_id).await;
            record(&self.metrics, "GetSecretValue", &r);
            r
        })
    }

    fn current_version<'a>(
        &'a self,
        secret_id: &'a str,
    ) -> BoxFut<'a, Result<Option<String>, AwsError>> {
        Box::pin(async move {
            let r = self.inner.current_version(secret_id).await;
            record(&self.metrics, "DescribeSecret", &r);
            r
        })
    }
}
