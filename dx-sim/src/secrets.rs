//! The Secrets Manager calls the operator uses: CreateSecret, PutSecretValue and DeleteSecret
//! (customer-owned key secrets), GetSecretValue and DescribeSecret (customer-owned and Direct
//! Connect-managed secrets).

use serde_json::{Value, json};

use crate::model::{Account, AwsError, OpResult, Secret};

fn not_found() -> AwsError {
    AwsError {
        code: "ResourceNotFoundException",
        message: "Secrets Manager can't find the specified secret.".into(),
    }
}

fn invalid(message: &str) -> AwsError {
    AwsError {
        code: "InvalidParameterException",
        message: message.into(),
    }
}

fn find<'a>(acc: &'a Account, req: &Value) -> Result<&'a Secret, AwsError> {
    let id = req
        .get("SecretId")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid("SecretId is required"))?;
    acc.secrets
        .values()
        .find(|s| s.arn == id || s.name == id)
        .ok_or_else(not_found)
}

fn version_id(s: &Secret) -> String {
    format!(
        "{:024x}{:08x}",
        s.created.as_nanosecond() as u128 & ((1 << 96) - 1),
        s.puts
    )
}

pub fn create_secret(acc: &mut Account, req: &Value) -> OpResult {
    let name = req
        .get("Name")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid("Name is required"))?
        .to_string();
    if acc.secrets.values().any(|s| s.name == name) {
        return Err(AwsError {
            code: "ResourceExistsException",
            message: format!("The operation failed because the secret {name} already exists."),
        });
    }
    let value = req.get("SecretString").and_then(Value::as_str);
    let valued = value.is_some();
    let secret_string = value.unwrap_or_default().to_string();
    let suffix: String = {
        use rand::Rng;
        let mut rng = rand::rng();
        (0..6)
            .map(|_| rng.sample(rand::distr::Alphanumeric) as char)
            .collect()
    };
    let arn = format!(
        "arn:aws:secretsmanager:{}:{}:secret:{name}-{suffix}",
        acc.region, acc.account
    );
    let secret = Secret {
        arn: arn.clone(),
        name: name.clone(),
        secret_string,
        owning_service: None,
        created: jiff::Timestamp::now(),
        puts: 0,
        last_token: None,
        valued,
    };
    let version = version_id(&secret);
    acc.secrets.insert(arn.clone(), secret);
    if valued {
        Ok(json!({"ARN": arn, "Name": name, "VersionId": version}))
    } else {
        Ok(json!({"ARN": arn, "Name": name}))
    }
}

/// A new value, and with it a new AWSCURRENT version, for a customer-owned secret.
pub fn put_secret_value(acc: &mut Account, req: &Value) -> OpResult {
    let id = find(acc, req)?.arn.clone();
    let secret_string = req
        .get("SecretString")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid("SecretString is required"))?
        .to_string();
    let s = acc.secrets.get_mut(&id).ok_or_else(not_found)?;
    if s.owning_service.is_some() {
        return Err(AwsError {
            code: "AccessDeniedException",
            message: format!("{} is managed by another service", s.name),
        });
    }
    let token = req
        .get("ClientRequestToken")
        .and_then(Value::as_str)
        .map(str::to_string);
    if token.is_some() && token == s.last_token {
        if s.secret_string != secret_string {
            return Err(AwsError {
                code: "ResourceExistsException",
                message:
                    "A version with this ClientRequestToken already exists with another value."
                        .into(),
            });
        }
    } else {
        s.secret_string = secret_string;
        s.puts += 1;
        s.last_token = token;
        s.valued = true;
    }
    Ok(
        json!({"ARN": s.arn, "Name": s.name, "VersionId": version_id(s), "VersionStages": ["AWSCURRENT"]}),
    )
}

/// DeleteSecret: the secret is gone at once (AWS keeps it unreadable for the recovery
/// window; neither can be read).
pub fn delete_secret(acc: &mut Account, req: &Value) -> OpResult {
    let id = find(acc, req)?.arn.clone();
    let s = acc.secrets.remove(&id).ok_or_else(not_found)?;
    if s.owning_service.is_some() {
        let (arn, name) = (s.arn.clone(), s.name.clone());
        acc.secrets.insert(id, s);
        return Err(AwsError {
            code: "AccessDeniedException",
            message: format!("{name} ({arn}) is managed by another service"),
        });
    }
    Ok(json!({"ARN": s.arn, "Name": s.name, "DeletionDate": jiff::Timestamp::now().as_second()}))
}

pub fn get_secret_value(acc: &Account, req: &Value) -> OpResult {
    let s = find(acc, req)?;
    if !s.valued {
        return Err(AwsError {
            code: "ResourceNotFoundException",
            message: "Secrets Manager can't find the specified secret value for staging label: AWSCURRENT".into(),
        });
    }
    Ok(json!({
        "ARN": s.arn,
        "Name": s.name,
        "VersionId": version_id(s),
        "SecretString": s.secret_string,
        "VersionStages": ["AWSCURRENT"],
        "CreatedDate": s.created.as_second(),
    }))
}

pub fn describe_secret(acc: &Account, req: &Value) -> OpResult {
    let s = find(acc, req)?;
    let versions = if s.valued {
        json!({ version_id(s): ["AWSCURRENT"] })
    } else {
        json!({})
    };
    let mut out = json!({
        "ARN": s.arn,
        "Name": s.name,
        "CreatedDate": s.created.as_second(),
        "VersionIdsToStages": versions,
        "Tags": [],
    });
    if let Some(owner) = &s.owning_service {
        out["OwningService"] = json!(owner);
        out["Tags"] = json!([{"Key": "aws:secretsmanager:owningService", "Value": owner}]);
    }
    Ok(out)
}
