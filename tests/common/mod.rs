//! Helpers shared by the integration tests that drive the operator with manifests
//! (`cli_sim.rs` through the CLI, `e2e.rs` through a real API server): manifests and reads of
//! dx-sim's state.

// Each test binary uses its own part of these helpers.
#![allow(dead_code)]

use std::time::Duration;

use dx_sim::CallRecord;
use serde_json::Value;

/// The Direct Connect operations that change something.
pub const MUTATING: &[&str] = &[
    "AssociateMacSecKey",
    "DisassociateMacSecKey",
    "UpdateConnection",
    "UpdateLag",
    "TagResource",
    "UntagResource",
];

/// The successful mutating calls on `target`, by operation, in order.
pub fn mutations<'a>(calls: &'a [CallRecord], target: &str) -> Vec<&'a str> {
    calls
        .iter()
        .filter(|c| c.outcome == "ok" && c.target.as_deref() == Some(target))
        .filter(|c| MUTATING.contains(&c.operation.as_str()))
        .map(|c| c.operation.as_str())
        .collect()
}

/// A Secret and a MacSecKey, both named `name`, holding `ckn`/`cak`.
pub fn key_manifest(name: &str, ckn: &str, cak: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, labels: {{dxmacsec.io/key-material: \"true\"}}}}\nstringData: {{ckn: \"{ckn}\", cak: \"{cak}\"}}\n---\n\
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

/// One interconnect of dx-sim's `/_sim/state`.
pub fn interconnect<'a>(state: &'a Value, id: &str) -> &'a Value {
    find(&state["interconnects"], "interconnectId", id)
}

/// The member connection IDs of a LAG of dx-sim's `/_sim/state`, sorted.
pub fn members_of(state: &Value, lag_id: &str) -> Vec<String> {
    let mut ids: Vec<String> = lag(state, lag_id)["connections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["connectionId"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids
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

/// The body of `GET http://{addr}{path}` (HTTP/1.0, for the operator's own endpoints).
pub async fn http_get(addr: &str, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    assert!(
        head.starts_with("HTTP/1.") && head.contains(" 200 "),
        "{head}"
    );
    body.to_string()
}

/// The address the operator serves `/metrics` on, from the log line naming the bound port.
pub fn served_address(log: &str) -> Option<String> {
    let line = log.lines().find(|l| l.contains("serving /healthz"))?;
    let start = line.find("127.0.0.1:")?;
    let port: String = line[start + "127.0.0.1:".len()..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    Some(format!("127.0.0.1:{port}"))
}

/// Metric names a text exposition offers: every sample's name, and the names a `# TYPE`
/// line promises (`_total` for a counter, `_bucket`/`_sum`/`_count` for a histogram) even
/// before a first sample.
pub fn exported_metric_names(text: &str) -> std::collections::BTreeSet<String> {
    let mut names = std::collections::BTreeSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            let (Some(name), Some(kind)) = (parts.next(), parts.next()) else {
                continue;
            };
            let suffixes: &[&str] = match kind {
                "counter" => &["_total"],
                "histogram" => &["_bucket", "_sum", "_count"],
                _ => &[""],
            };
            names.extend(suffixes.iter().map(|s| format!("{name}{s}")));
        } else if !line.starts_with('#') && !line.is_empty() {
            let end = line.find(['{', ' ']).unwrap_or(line.len());
            names.insert(line[..end].to_string());
        }
    }
    names
}

/// The operator's metrics that the chart's Grafana dashboard and alert rules read: the
/// dashboard's queries parsed by Prometheus's parser (promql-check in `PROMETHEUS_TOOLS`,
/// with Grafana's variables replaced), and every `dxmacsec_` name in the rules template.
pub fn monitored_metric_names() -> std::collections::BTreeSet<String> {
    use std::io::Write;
    let chart = concat!(env!("CARGO_MANIFEST_DIR"), "/charts/dx-macsec-operator");
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(format!("{chart}/dashboards/dx-macsec-operator.json")).unwrap(),
    )
    .unwrap();
    let exprs: Vec<String> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .map(|t| {
            t["expr"]
                .as_str()
                .unwrap()
                .replace("$__rate_interval", "5m")
                .replace("$namespace", ".*")
        })
        .collect();
    let tools = std::env::var("PROMETHEUS_TOOLS").expect("PROMETHEUS_TOOLS (scripts/with-cluster)");
    let mut child = std::process::Command::new(format!("{tools}/promql-check"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(serde_json::to_string(&exprs).unwrap().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let parsed: Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut names = std::collections::BTreeSet::new();
    for r in parsed.as_array().unwrap() {
        assert!(r.get("error").is_none(), "{r}");
        names.extend(
            r["metrics"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m.as_str().unwrap().to_string()),
        );
    }
    let rules = std::fs::read_to_string(format!("{chart}/templates/prometheusrule.yaml")).unwrap();
    for (i, _) in rules.match_indices("dxmacsec_") {
        let name: String = rules[i..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        names.insert(name);
    }
    assert!(names.len() >= 9, "{names:?}");
    names
}
