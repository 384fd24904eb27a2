//! Helpers shared by the integration tests that drive the operator with manifests
//! (`cli_sim.rs` through the CLI, `e2e.rs` through a real API server): manifests and reads of
//! dx-sim's state.

// Each test binary uses its own part of these helpers.
#![allow(dead_code)]

use std::time::Duration;

use dx_sim::CallRecord;
use serde_json::Value;

/// A Secret and a MacSecKey, both named `name`, holding `ckn`/`cak`.
pub fn key_manifest(name: &str, ckn: &str, cak: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}}}\nstringData: {{ckn: \"{ckn}\", cak: \"{cak}\"}}\n---\n\
         apiVersion: dxmacsec.io/v1alpha1\nkind: MacSecKey\nmetadata: {{name: {name}}}\nspec: {{secretRef: {{name: {name}}}}}\n---\n"
    )
}

/// A DxConnection; `extra` is more spec, in flow style.
pub fn dxc_manifest(name: &str, id: &str, mode: &str, keys: &[&str], extra: &str) -> String {
    let keys: Vec<String> = keys.iter().map(|k| format!("{{name: {k}}}")).collect();
    format!(
        "apiVersion: dxmacsec.io/v1alpha1\nkind: DxConnection\nmetadata: {{name: {name}}}\nspec: {{connectionId: {id}, encryptionMode: {mode}, keys: [{}]{extra}}}\n---\n",
        keys.join(", ")
    )
}

/// Key `k-a` (`ckn`/`cak`) and a must_encrypt DxConnection `name` on `id` that uses it.
pub fn must_encrypt_with_key_a(name: &str, id: &str, ckn: &str, cak: &str) -> String {
    format!(
        "{}{}",
        key_manifest("k-a", ckn, cak),
        dxc_manifest(name, id, "must_encrypt", &["k-a"], "")
    )
}

/// One connection of dx-sim's `/_sim/state`.
pub fn connection<'a>(state: &'a Value, id: &str) -> &'a Value {
    find(&state["connections"], "connectionId", id)
}

/// One LAG of dx-sim's `/_sim/state`.
pub fn lag<'a>(state: &'a Value, id: &str) -> &'a Value {
    find(&state["lags"], "lagId", id)
}

fn find<'a>(list: &'a Value, field: &str, id: &str) -> &'a Value {
    list.as_array()
        .unwrap()
        .iter()
        .find(|c| c[field] == id)
        .unwrap_or_else(|| panic!("no {field} {id} in the emulator's state"))
}

/// The CKNs on a connection, in AWS's order.
pub fn key_ckns(state: &Value, id: &str) -> Vec<String> {
    connection(state, id)["macSecKeys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["ckn"].as_str().unwrap().to_string())
        .collect()
}

/// The encryption mode of a connection in dx-sim's `/_sim/state`.
pub fn mode_of<'a>(state: &'a Value, id: &str) -> &'a str {
    connection(state, id)["encryptionMode"]
        .as_str()
        .unwrap_or("none")
}

/// Polls `check` until it holds; fails the test after `timeout`, naming `what`.
pub async fn wait_for<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The successful calls of `op` on `target`, from dx-sim's call log.
pub fn ok_calls<'a>(calls: &'a [CallRecord], op: &str, target: &str) -> Vec<&'a CallRecord> {
    calls
        .iter()
        .filter(|c| c.operation == op && c.outcome == "ok" && c.target.as_deref() == Some(target))
        .collect()
}
