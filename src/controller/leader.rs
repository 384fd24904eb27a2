//! Leader election on a `coordination.k8s.io/v1` Lease, so two replicas never both act.
//!
//! A replica acquires the Lease when it is absent, expired or already its own, writing with
//! the Lease's resourceVersion so that of two racing replicas only one wins. The leader
//! renews it; if it cannot renew before the Lease would expire it reports the loss and the
//! process stops acting (and exits, to be restarted as a follower).

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};

#[derive(Debug, Clone)]
pub struct LeaseConfig {
    pub namespace: String,
    pub name: String,
    /// This replica's identity (the Pod name).
    pub identity: String,
    pub lease_duration: Duration,
    pub renew_every: Duration,
}

/// What a replica may do with the Lease as it stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// No Lease yet: create it.
    Create,
    /// Ours: renew it.
    Renew,
    /// Someone else's, expired: take it over.
    TakeOver,
    /// Someone else holds it and it is fresh: wait.
    Wait { holder: String },
}

/// The pure decision, given the Lease spec (if the Lease exists) and the time.
pub fn decide(spec: Option<&LeaseSpec>, me: &str, now: Timestamp) -> Decision {
    let Some(spec) = spec else {
        return Decision::Create;
    };
    let holder = spec.holder_identity.clone().unwrap_or_default();
    if holder == me {
        return Decision::Renew;
    }
    if holder.is_empty() {
        return Decision::TakeOver;
    }
    let duration = SignedDuration::from_secs(i64::from(spec.lease_duration_seconds.unwrap_or(15)));
    let expires = spec
        .renew_time
        .as_ref()
        .or(spec.acquire_time.as_ref())
        .and_then(|t| t.0.checked_add(duration).ok());
    match expires {
        Some(e) if e > now => Decision::Wait { holder },
        _ => Decision::TakeOver,
    }
}

fn spec_for(cfg: &LeaseConfig, previous: Option<&LeaseSpec>, now: Timestamp) -> LeaseSpec {
    let ours = previous.and_then(|p| p.holder_identity.as_deref()) == Some(cfg.identity.as_str());
    LeaseSpec {
        holder_identity: Some(cfg.identity.clone()),
        lease_duration_seconds: Some(cfg.lease_duration.as_secs() as i32),
        acquire_time: if ours {
            previous.and_then(|p| p.acquire_time.clone())
        } else {
            Some(MicroTime(now))
        },
        renew_time: Some(MicroTime(now)),
        lease_transitions: Some(
            previous.and_then(|p| p.lease_transitions).unwrap_or(0)
                + i32::from(!ours && previous.is_some()),
        ),
        ..LeaseSpec::default()
    }
}

/// One attempt to hold the Lease; true when this replica holds it afterwards.
pub async fn try_hold(api: &Api<Lease>, cfg: &LeaseConfig) -> Result<bool, kube::Error> {
    let now = Timestamp::now();
    let current = api.get_opt(&cfg.name).await?;
    match decide(
        current.as_ref().and_then(|l| l.spec.as_ref()),
        &cfg.identity,
        now,
    ) {
        Decision::Wait { .. } => Ok(false),
        Decision::Create => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(cfg.name.clone()),
                    namespace: Some(cfg.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(spec_for(cfg, None, now)),
            };
            match api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                // Another replica created it first.
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
                Err(e) => Err(e),
            }
        }
        Decision::Renew | Decision::TakeOver => {
            let mut lease = current.expect("decided on an existing Lease");
            lease.spec = Some(spec_for(cfg, lease.spec.as_ref(), now));
            // The resourceVersion from the read makes this a compare-and-swap.
            match api.replace(&cfg.name, &PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
                Err(e) => Err(e),
            }
        }
    }
}

/// Waits until this replica holds the Lease.
pub async fn acquire(client: Client, cfg: &LeaseConfig) {
    let api: Api<Lease> = Api::namespaced(client, &cfg.namespace);
    let mut waiting_logged = false;
    loop {
        match try_hold(&api, cfg).await {
            Ok(true) => {
                tracing::info!(lease = %cfg.name, identity = %cfg.identity, "became leader");
                return;
            }
            Ok(false) if !waiting_logged => {
                tracing::info!(lease = %cfg.name, "another replica is leader; standing by");
                waiting_logged = true;
            }
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "cannot read or write the leader Lease"),
        }
        tokio::time::sleep(cfg.renew_every).await;
    }
}

/// Renews the Lease until it cannot be renewed before it expires; then returns.
pub async fn hold(client: Client, cfg: &LeaseConfig) {
    let api: Api<Lease> = Api::namespaced(client, &cfg.namespace);
    let mut last_renewed = tokio::time::Instant::now();
    loop {
        tokio::time::sleep(cfg.renew_every).await;
        match try_hold(&api, cfg).await {
            Ok(true) => last_renewed = tokio::time::Instant::now(),
            Ok(false) => {
                tracing::error!(lease = %cfg.name, "leadership lost to another replica");
                return;
            }
            Err(e) => tracing::warn!(error = %e, "cannot renew the leader Lease"),
        }
        // Stop before the Lease expires, so the next leader never overlaps with us.
        if last_renewed.elapsed() + cfg.renew_every >= cfg.lease_duration {
            tracing::error!(lease = %cfg.name, "could not renew the leader Lease in time");
            return;
        }
    }
}

/// Gives the Lease up on shutdown so another replica takes over at once.
pub async fn release(client: Client, cfg: &LeaseConfig) {
    let api: Api<Lease> = Api::namespaced(client, &cfg.namespace);
    if let Ok(Some(mut lease)) = api.get_opt(&cfg.name).await
        && let Some(spec) = lease.spec.as_mut()
        && spec.holder_identity.as_deref() == Some(cfg.identity.as_str())
    {
        spec.holder_identity = None;
        let _ = api.replace(&cfg.name, &PostParams::default(), &lease).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(holder: &str, renewed_secs_ago: i64, now: Timestamp) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(holder.into()),
            lease_duration_seconds: Some(15),
            renew_time: Some(MicroTime(now - SignedDuration::from_secs(renewed_secs_ago))),
            ..LeaseSpec::default()
        }
    }

    /// A replica without the Lease waits while the holder's Lease is fresh, and takes over
    /// an expired or released one.
    #[test]
    fn follower_waits_for_a_fresh_lease_and_takes_an_expired_one() {
        let now = Timestamp::now();
        assert_eq!(decide(None, "b", now), Decision::Create);
        assert_eq!(
            decide(Some(&lease("a", 5, now)), "b", now),
            Decision::Wait { holder: "a".into() }
        );
        assert_eq!(
            decide(Some(&lease("a", 16, now)), "b", now),
            Decision::TakeOver
        );
        assert_eq!(decide(Some(&lease("b", 5, now)), "b", now), Decision::Renew);
        assert_eq!(
            decide(Some(&lease("", 1, now)), "b", now),
            Decision::TakeOver
        );
    }

    /// Taking over counts a transition and resets the acquire time; renewing keeps both.
    #[test]
    fn transitions_are_counted() {
        let now = Timestamp::now();
        let cfg = LeaseConfig {
            namespace: "ns".into(),
            name: "l".into(),
            identity: "b".into(),
            lease_duration: Duration::from_secs(15),
            renew_every: Duration::from_secs(5),
        };
        let mut old = lease("a", 20, now);
        old.lease_transitions = Some(2);
        let taken = spec_for(&cfg, Some(&old), now);
        assert_eq!(taken.lease_transitions, Some(3));
        assert_eq!(taken.acquire_time, Some(MicroTime(now)));
        let renewed = spec_for(&cfg, Some(&taken), now + SignedDuration::from_secs(5));
        assert_eq!(renewed.lease_transitions, Some(3));
        assert_eq!(renewed.acquire_time, Some(MicroTime(now)));
    }
}
