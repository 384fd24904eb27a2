//! Building `DxConnection.status` from a pass: the observed fields, the key report, the
//! planned actions and kstatus-style `Ready`/`Synced` conditions.

use jiff::Timestamp;

use crate::crd::{Condition, DxConnectionStatus, MemberStatus};
use crate::engine::{ConditionValue, PassOutcome};
use crate::observed::KeyState;

/// Sets or updates condition `type_`; `lastTransitionTime` moves only when the status
/// changes.
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    type_: &str,
    value: &ConditionValue,
    generation: Option<i64>,
    now: Timestamp,
) {
    let status = if value.status { "True" } else { "False" };
    let existing = conditions.iter().position(|c| c.type_ == type_);
    let last_transition_time = match existing.map(|i| &conditions[i]) {
        Some(c) if c.status == status => c.last_transition_time.clone(),
        _ => now.to_string(),
    };
    let cond = Condition {
        type_: type_.to_string(),
        status: status.to_string(),
        reason: value.reason.to_string(),
        message: value.message.clone(),
        last_transition_time,
        observed_generation: generation,
    };
    match existing {
        Some(i) => conditions[i] = cond,
        None => conditions.push(cond),
    }
}

/// The status after a pass. Fields AWS could not be read for keep their previous values.
pub fn dxconnection_status(
    previous: Option<&DxConnectionStatus>,
    result: &PassOutcome,
    generation: Option<i64>,
    now: Timestamp,
) -> DxConnectionStatus {
    let mut status = previous.cloned().unwrap_or_default();
    if matches!(result, PassOutcome::Deferred(_)) {
        // Nothing was read: the status stays as it was.
        return status;
    }
    status.observed_generation = generation;
    if let Some(plan) = result.plan() {
        status.last_sync_time = Some(now.to_string());
        status.keys = plan.keys.clone();
        status.planned_actions = plan.planned_actions();
        match result.observed() {
            Some(o) => {
                status.resource_type = Some(o.kind);
                status.connection_state = Some(o.state.clone());
                status.mac_sec_capable = Some(o.mac_sec_capable);
                status.encryption_mode = o.encryption_mode.clone();
                status.port_encryption_status = o.port_summary();
                status.associated_keys = Some(
                    o.keys
                        .iter()
                        .filter(|k| k.state() == KeyState::Associated)
                        .count() as i32,
                );
                status.members = o
                    .members
                    .iter()
                    .map(|m| MemberStatus {
                        connection_id: m.connection_id.clone(),
                        connection_state: Some(m.state.clone()),
                        encryption_mode: m.encryption_mode.clone(),
                        port_encryption_status: m.port_encryption_status.clone(),
                    })
                    .collect();
            }
            None => {
                status.resource_type = None;
                status.connection_state = None;
                status.mac_sec_capable = None;
                status.encryption_mode = None;
                status.port_encryption_status = None;
                status.associated_keys = None;
                status.members.clear();
            }
        }
    }
    set_condition(
        &mut status.conditions,
        "Ready",
        &result.ready(),
        generation,
        now,
    );
    set_condition(
        &mut status.conditions,
        "Synced",
        &result.synced(),
        generation,
        now,
    );
    status
}
