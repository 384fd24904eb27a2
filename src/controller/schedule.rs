//! A DxConnection's scheduled rotation in the controller: the step `rotation::step` decides
//! from the last status and the MacSecKeys, the MacSecKeys it makes and retires, the status
//! fields, condition, events and metrics it leaves. The decisions are `rotation`'s.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{DeleteParams, PostParams};
use kube::core::ObjectMeta;
use kube::runtime::events::EventType;
use kube::{Api, Resource, ResourceExt};

use super::{Context, reference};
use crate::conditions::{ConditionType, ConditionValue, RotationReason, set_condition};
use crate::crd::{
    DxConnection, DxConnectionStatus, MacSecKey, MacSecKeySpec, ManagementPolicy, MaterialLocation,
    RotationStage,
};
use crate::plan::Requeue;
use crate::rotation::{self, Input, KeyView, OnAws, Step};

/// What the schedule decided for one reconcile.
pub(crate) enum Scheduled {
    /// A step: the keys it wants go to the planner.
    Step(Box<Step>),
    /// The schedule cannot run (invalid, or ObserveOnly): the keys in use stay as they are.
    Held {
        wanted: Vec<String>,
        condition: ConditionValue<RotationReason>,
    },
}

impl Scheduled {
    /// The MacSecKeys wanted on AWS.
    pub(crate) fn wanted(&self) -> &[String] {
        match self {
            Scheduled::Step(step) => &step.wanted,
            Scheduled::Held { wanted, .. } => wanted,
        }
    }
}

/// Where the material of a MacSecKey is, for the router: what the operator made, else the
/// source its spec names.
fn location(key: &MacSecKey) -> Option<MaterialLocation> {
    if let Some(made) = key.status.as_ref().and_then(|s| s.generated.clone()) {
        return Some(made);
    }
    let namespace = crate::crd::namespace_of(key);
    if let Some(r) = &key.spec.secret_ref {
        return Some(MaterialLocation {
            secret: Some(crate::crd::SecretLocation {
                namespace: namespace.to_string(),
                name: r.name.clone(),
                ckn_key: r.ckn_key.clone(),
                cak_key: r.cak_key.clone(),
            }),
            secrets_manager: None,
        });
    }
    key.spec
        .secrets_manager
        .as_ref()
        .map(|sm| MaterialLocation {
            secret: None,
            secrets_manager: Some(crate::crd::SecretsManagerLocation {
                secret_arn: sm.secret_id.clone(),
                region: sm.region.clone().unwrap_or_default(),
                role_arn: None,
                ckn_field: sm.ckn_field.clone(),
                cak_field: sm.cak_field.clone(),
            }),
        })
}

fn view(key: &MacSecKey) -> KeyView {
    let ready = key.validated();
    let stalled = key
        .condition(ConditionType::Stalled)
        .is_some_and(|c| c.status == "True");
    KeyView {
        ckn: key
            .status
            .as_ref()
            .and_then(|s| s.ckn.clone())
            .filter(|_| ready),
        material: location(key),
        // Only what needs a person: a passing failure (throttled, a timeout) heals by itself.
        problem: (!ready && stalled)
            .then(|| key.condition(ConditionType::Ready))
            .flatten()
            .filter(|c| c.status == "False")
            .map(|c| format!("{}: {}", c.reason, c.message)),
    }
}

/// The schedule's step for `dxc`, or `None` without a schedule. A DxConnection that another
/// one's Conflict rule keeps from acting (`conflict_with`) makes no key.
pub(crate) fn decide(
    dxc: &DxConnection,
    ctx: &Context,
    conflict_with: Option<&str>,
) -> Option<Scheduled> {
    let schedule = dxc.spec.rotation.schedule.as_ref()?;
    let ns = crate::crd::namespace_of(dxc);
    let status = dxc.status.as_ref();
    let in_use = || rotation::keys_in_use(dxc);
    if let Some(owner) = conflict_with {
        return Some(Scheduled::Held {
            wanted: in_use(),
            condition: ConditionValue::new(
                false,
                RotationReason::Conflict,
                format!(
                    "DxConnection {owner} manages {}: this schedule makes no key",
                    dxc.spec.connection_id
                ),
            ),
        });
    }
    if dxc.spec.management_policy == ManagementPolicy::ObserveOnly {
        return Some(Scheduled::Held {
            wanted: in_use(),
            condition: ConditionValue::new(
                true,
                RotationReason::ObserveOnly,
                "managementPolicy ObserveOnly: the schedule makes no key and rotates nothing",
            ),
        });
    }
    let periods = match rotation::periods(schedule) {
        Ok(p) => p,
        Err(message) => {
            return Some(Scheduled::Held {
                wanted: in_use(),
                condition: ConditionValue::new(false, RotationReason::InvalidSchedule, message),
            });
        }
    };
    let input = Input {
        name: &dxc.name_any(),
        periods,
        spec_keys: dxc
            .spec
            .keys
            .iter()
            .flatten()
            .map(|k| k.name.clone())
            .collect(),
        schedule: status.and_then(|s| s.schedule.clone()).unwrap_or_default(),
        router: status.and_then(|s| s.router.clone()).unwrap_or_default(),
        rotate_now: dxc
            .annotations()
            .get(rotation::ROTATE_NOW_ANNOTATION)
            .cloned(),
        aws: OnAws::from_status(dxc),
        now: Timestamp::now(),
    };
    let step = rotation::step(input, |name| ctx.find_key(ns, name).map(|k| view(&k)));
    Some(Scheduled::Step(Box::new(step)))
}

/// Makes the MacSecKey the step stages and deletes those it retired. A MacSecKey of the
/// staged name that this DxConnection did not make is left alone and reported.
pub(crate) async fn carry_out(dxc: &DxConnection, ctx: &Context, step: &mut Step) {
    let ns = crate::crd::namespace_of(dxc);
    let api: Api<MacSecKey> = Api::namespaced(ctx.client.clone(), ns);
    let Some(schedule) = dxc.spec.rotation.schedule.as_ref() else {
        return;
    };
    if let Some(name) = step.create.clone() {
        let mut key = MacSecKey::new(
            &name,
            MacSecKeySpec {
                secret_ref: None,
                secrets_manager: None,
                direct_connect_secret_arn: None,
                generate: Some(schedule.key.clone()),
            },
        );
        key.metadata = ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(ns.to_string()),
            labels: Some([(rotation::ROTATED_FOR_LABEL.to_string(), dxc.name_any())].into()),
            owner_references: Some(vec![OwnerReference {
                api_version: DxConnection::api_version(&()).into_owned(),
                kind: DxConnection::kind(&()).into_owned(),
                name: dxc.name_any(),
                uid: dxc.uid().unwrap_or_default(),
                controller: Some(true),
                block_owner_deletion: None,
            }]),
            ..ObjectMeta::default()
        };
        let problem = match api.create(&PostParams::default(), &key).await {
            Ok(_) => None,
            Err(kube::Error::Api(e)) if e.code == 409 => {
                let ours = ctx.find_key(ns, &name).is_none_or(|k| {
                    k.owner_references()
                        .iter()
                        .any(|o| Some(&o.uid) == dxc.uid().as_ref())
                });
                (!ours).then(|| format!("a MacSecKey {name} exists that this DxConnection's schedule did not make; delete or rename it"))
            }
            Err(kube::Error::Api(e)) if e.code == 403 => Some(format!(
                "the operator may not create MacSecKey {name} ({}); enable key generation (chart value keyGeneration.enabled, or deploy/key-generation-rbac.yaml)",
                e.message
            )),
            Err(e) => Some(format!("cannot create MacSecKey {name}: {e}; retried")),
        };
        if let Some(message) = problem {
            step.condition =
                ConditionValue::new(false, RotationReason::KeyGenerationFailed, message);
            step.wake = Some(ctx.settings.short_requeue);
        }
    }
    for name in &step.retire {
        match api.delete(name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => {
                tracing::warn!(key = %name, error = %e, "cannot delete a retired MacSecKey; retried")
            }
        }
    }
}

/// When `dxc` is deleted: the MacSecKeys its schedule made are deleted (`remove`: AWS no
/// longer holds them; their finalizers delete the material) or kept without their owner
/// reference, so garbage collection leaves them to the router and a successor.
pub(crate) async fn release_keys(
    dxc: &DxConnection,
    ctx: &Context,
    remove: bool,
) -> Result<(), super::Error> {
    let ns = crate::crd::namespace_of(dxc);
    let uid = dxc.uid();
    let made = ctx.keys_in(ns, |k| {
        k.owner_references()
            .iter()
            .any(|o| o.kind == DxConnection::kind(&()) && Some(&o.uid) == uid.as_ref())
    });
    let api: Api<MacSecKey> = Api::namespaced(ctx.client.clone(), ns);
    for key in made {
        let name = key.name_any();
        let done = if remove {
            api.delete(&name, &DeleteParams::default())
                .await
                .map(|_| ())
        } else {
            let orphan = serde_json::json!({"metadata": {"ownerReferences": null}});
            api.patch(
                &name,
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(&orphan),
            )
            .await
            .map(|_| ())
        };
        match done {
            Ok(()) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Writes the schedule's fields and its `KeyRotation` condition into `status`; without a
/// schedule, removes them.
pub(crate) fn record(
    status: &mut DxConnectionStatus,
    scheduled: Option<&Scheduled>,
    generation: Option<i64>,
    now: Timestamp,
) {
    match scheduled {
        None => {
            status.schedule = None;
            status.router = None;
            status
                .conditions
                .retain(|c| c.type_ != ConditionType::KeyRotation.as_str());
        }
        Some(Scheduled::Held { condition, .. }) => {
            set_condition(
                &mut status.conditions,
                ConditionType::KeyRotation,
                condition,
                generation,
                now,
            );
        }
        Some(Scheduled::Step(step)) => {
            status.schedule = Some(step.schedule.clone());
            status.router = Some(step.router.clone());
            set_condition(
                &mut status.conditions,
                ConditionType::KeyRotation,
                &step.condition,
                generation,
                now,
            );
        }
    }
}

/// An event per stage the step reached, and a Warning when the rotation starts to need the
/// router or a person (once, not at every reconcile).
pub(crate) async fn publish(ctx: &Context, dxc: &DxConnection, scheduled: &Scheduled) {
    let r = reference(dxc);
    let (notes, condition) = match scheduled {
        Scheduled::Step(step) => (step.notes.as_slice(), &step.condition),
        Scheduled::Held { condition, .. } => (&[][..], condition),
    };
    for note in notes {
        let type_ = if note.warning {
            EventType::Warning
        } else {
            EventType::Normal
        };
        ctx.publish(&r, type_, note.reason, "Rotate", note.message.clone())
            .await;
    }
    let before = dxc
        .condition(ConditionType::KeyRotation)
        .map(|c| (c.status.clone(), c.reason.clone()));
    let now = (
        if condition.status { "True" } else { "False" }.to_string(),
        condition.reason.as_str().to_string(),
    );
    if !condition.status && before.as_ref() != Some(&now) {
        ctx.publish(
            &r,
            EventType::Warning,
            condition.reason.as_str(),
            "Rotate",
            condition.message.clone(),
        )
        .await;
    }
    if let Scheduled::Step(step) = scheduled {
        let next = step
            .schedule
            .next_rotation
            .as_deref()
            .and_then(|t| t.parse::<Timestamp>().ok());
        ctx.metrics.rotation(
            crate::crd::namespace_of(dxc),
            &dxc.name_any(),
            Some((next, step.schedule.stage.unwrap_or(RotationStage::Idle))),
        );
    }
}

/// The sooner of the pass's next look and the schedule's.
pub(crate) fn sooner(ctx: &Context, pass: Requeue, scheduled: Option<&Scheduled>) -> Requeue {
    let Some(Scheduled::Step(step)) = scheduled else {
        return pass;
    };
    // The new key's material is being made: its MacSecKey's change may land before this
    // status names it (and so wake nothing), so look again soon.
    if step.schedule.stage == Some(RotationStage::Generating) {
        return Requeue::Soon;
    }
    let Some(wake) = step.wake else {
        return pass;
    };
    // A second past the moment, so the step that runs then finds it passed.
    let wake = wake + std::time::Duration::from_secs(1);
    match pass {
        Requeue::Soon if ctx.settings.short_requeue <= wake => Requeue::Soon,
        Requeue::After(d) => Requeue::After(d.min(wake)),
        _ => Requeue::After(wake),
    }
}
