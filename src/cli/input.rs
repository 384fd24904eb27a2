//! Reading DxConnection, MacSecKey, DxAccess and Secret manifests from files and folders.
//!
//! Multi-document YAML (or JSON); folders are read recursively for `.yaml`, `.yml` and
//! `.json` files in name order. Errors name the file, the document and the field. Other
//! kinds are skipped with a note, as `kubectl apply` users keep them side by side.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::Secret;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::crd::{DEFAULT_NAMESPACE, DxAccess, DxConnection, MacSecKey};

/// A parsed object and where it came from.
#[derive(Debug, Clone)]
pub struct Sourced<T> {
    pub value: T,
    /// `path, document N`.
    pub origin: String,
}

/// Everything read from the inputs, namespaces filled in (`default` when absent).
#[derive(Debug, Default)]
pub struct Inputs {
    pub connections: Vec<Sourced<DxConnection>>,
    pub keys: BTreeMap<(String, String), Sourced<MacSecKey>>,
    pub secrets: BTreeMap<(String, String), crate::material::SecretRead>,
    /// DxAccesses (cluster scoped) by name.
    pub grants: BTreeMap<String, Sourced<DxAccess>>,
    /// Documents of other kinds that were skipped.
    pub skipped: Vec<String>,
}

fn files_in(path: &Path, out: &mut Vec<PathBuf>) -> Result<(), String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if meta.is_dir() {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(|e| format!("{}: {e}", path.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        entries.sort();
        for p in entries {
            let is_manifest = p
                .extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| matches!(e, "yaml" | "yml" | "json"));
            if p.is_dir() || is_manifest {
                files_in(&p, out)?;
            }
        }
    } else {
        out.push(path.to_path_buf());
    }
    Ok(())
}

/// A field path as `kubectl explain` and serde_path_to_error spell it: `spec.keys[0].name`.
fn field_path(path: &serde_ignored::Path<'_>) -> String {
    use serde_ignored::Path;
    match path {
        Path::Root => String::new(),
        Path::Seq { parent, index } => format!("{}[{index}]", field_path(parent)),
        Path::Map { parent, key } => match field_path(parent) {
            p if p.is_empty() => key.clone(),
            p => format!("{p}.{key}"),
        },
        Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => field_path(parent),
    }
}

/// The document as `T`. A field `T` does not have is an error, as with the API server's
/// strict field validation (`kubectl apply` rejects it too): a typo such as `keyz` would
/// otherwise be dropped and the keys silently not managed.
fn typed<T: DeserializeOwned>(doc: Value, origin: &str, what: &str) -> Result<T, String> {
    let mut unknown = Vec::new();
    let result: Result<T, _> = serde_path_to_error::deserialize(serde_ignored::Deserializer::new(
        doc,
        &mut |path: serde_ignored::Path<'_>| unknown.push(field_path(&path)),
    ));
    let value = result.map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." {
            format!("{origin}: {what}: {inner}")
        } else {
            format!("{origin}: {what}: {path}: {inner}")
        }
    })?;
    // apiVersion and kind were read before; the typed object does not keep them all.
    unknown.retain(|p| p != "apiVersion" && p != "kind");
    match unknown.as_slice() {
        [] => Ok(value),
        fields => Err(format!(
            "{origin}: {what}: unknown field{} {}: check the spelling (`kubectl explain` lists the fields)",
            if fields.len() == 1 { "" } else { "s" },
            fields.join(", ")
        )),
    }
}

fn str_at<'a>(doc: &'a Value, keys: &[&str]) -> Option<&'a str> {
    keys.iter()
        .try_fold(doc, |v, k| v.get(*k))
        .and_then(|v| v.as_str())
}

/// Reads every path; collects all errors rather than stopping at the first.
pub fn load(paths: &[PathBuf]) -> Result<Inputs, Vec<String>> {
    let mut inputs = Inputs::default();
    let mut errors = Vec::new();
    let mut files = Vec::new();
    for p in paths {
        if let Err(e) = files_in(p, &mut files) {
            errors.push(e);
        }
    }
    for file in files {
        let text = match std::fs::read_to_string(&file) {
            Ok(t) => t,
            Err(e) => {
                errors.push(format!("{}: {e}", file.display()));
                continue;
            }
        };
        read_text(&mut inputs, &mut errors, &file.display().to_string(), &text);
    }
    if inputs.connections.is_empty() && errors.is_empty() {
        errors.push("no DxConnection found in the inputs".to_string());
    }
    if errors.is_empty() {
        Ok(inputs)
    } else {
        Err(errors)
    }
}

/// Most documents one file may hold. serde-saphyr's default (1,024) refused a file of 1,100
/// DxConnections; a GitOps render of a large estate is one stream. Its other limits (nodes,
/// depth, aliases) still bound what a hostile file can cost.
const MAX_DOCUMENTS: usize = 100_000;

fn yaml_options() -> serde_saphyr::Options {
    serde_saphyr::options! {
        budget: serde_saphyr::budget! {
            max_documents: MAX_DOCUMENTS,
        },
    }
}

/// Adds the documents of one file's text to `inputs`, or its problems to `errors`.
fn read_text(inputs: &mut Inputs, errors: &mut Vec<String>, file: &str, text: &str) {
    // A syntax error anywhere makes the whole file untrusted: nothing of it is used.
    let docs: Vec<Value> = match serde_saphyr::from_multiple_with_options(text, yaml_options()) {
        Ok(docs) => docs,
        Err(e) => {
            errors.push(format!("{file}: not valid YAML: {e}"));
            return;
        }
    };
    for (i, doc) in docs.into_iter().enumerate() {
        if doc.is_null() {
            continue;
        }
        let origin = format!("{file}, document {}", i + 1);
        if let Err(e) = add(inputs, doc, &origin) {
            errors.push(e);
        }
    }
}

fn add(inputs: &mut Inputs, doc: Value, origin: &str) -> Result<(), String> {
    let api_version = str_at(&doc, &["apiVersion"])
        .unwrap_or_default()
        .to_string();
    let Some(kind) = str_at(&doc, &["kind"]).map(str::to_string) else {
        if api_version.is_empty() {
            // A file that is not a Kubernetes object at all (a dx-sim seed, a values file).
            inputs.skipped.push(format!(
                "{origin}: not a Kubernetes object (no apiVersion or kind)"
            ));
            return Ok(());
        }
        return Err(format!("{origin}: kind is missing"));
    };
    let name = str_at(&doc, &["metadata", "name"]).map(str::to_string);
    let Some(name) = name else {
        return Err(format!("{origin}: {kind}: metadata.name is missing"));
    };
    let what = format!("{kind} {name}");
    let this = Doc {
        origin,
        what: &what,
        name: &name,
    };
    match (api_version.as_str(), kind.as_str()) {
        ("dxmacsec.io/v1alpha1", "DxConnection") => add_connection(inputs, doc, &this)?,
        ("dxmacsec.io/v1alpha1", "MacSecKey") => add_key(inputs, doc, &this)?,
        ("dxmacsec.io/v1alpha1", "DxAccess") => add_grant(inputs, doc, &this)?,
        ("v1", "Secret") => add_secret(inputs, doc, &this)?,
        (_, "DxConnection" | "MacSecKey" | "DxAccess") => {
            return Err(format!(
                "{origin}: {what}: apiVersion {api_version:?} is not served; use dxmacsec.io/v1alpha1"
            ));
        }
        _ => inputs
            .skipped
            .push(format!("{origin}: {what} ({api_version})")),
    }
    Ok(())
}

/// One document being added: where it is, what it is, and its `metadata.name`.
struct Doc<'a> {
    origin: &'a str,
    /// `<kind> <name>`, for messages.
    what: &'a str,
    name: &'a str,
}

impl Doc<'_> {
    /// An error about this document.
    fn error(&self, problem: impl std::fmt::Display) -> String {
        format!("{}: {}: {problem}", self.origin, self.what)
    }

    /// `value` under `key` in `map`, unless an earlier document took that key.
    fn insert_once<K: Ord, V>(
        &self,
        map: &mut BTreeMap<K, Sourced<V>>,
        key: K,
        value: V,
        full_name: &str,
    ) -> Result<(), String> {
        match map.entry(key) {
            std::collections::btree_map::Entry::Occupied(_) => {
                Err(self.error(format_args!("{full_name} is defined twice")))
            }
            std::collections::btree_map::Entry::Vacant(slot) => {
                slot.insert(Sourced {
                    value,
                    origin: self.origin.to_string(),
                });
                Ok(())
            }
        }
    }
}

/// A DxConnection document: added to `inputs`, or why it cannot be.
fn add_connection(inputs: &mut Inputs, value: Value, doc: &Doc<'_>) -> Result<(), String> {
    let mut dxc: DxConnection = typed(value, doc.origin, doc.what)?;
    let ns = dxc
        .metadata
        .namespace
        .get_or_insert_with(|| DEFAULT_NAMESPACE.into())
        .clone();
    if inputs.connections.iter().any(|c| {
        c.value.metadata.namespace.as_deref() == Some(&ns)
            && c.value.metadata.name.as_deref() == Some(doc.name)
    }) {
        return Err(doc.error(format_args!(
            "DxConnection {ns}/{} is defined twice",
            doc.name
        )));
    }
    inputs.connections.push(Sourced {
        value: dxc,
        origin: doc.origin.to_string(),
    });
    Ok(())
}

/// A MacSecKey document: added to `inputs`, or why it cannot be.
fn add_key(inputs: &mut Inputs, value: Value, doc: &Doc<'_>) -> Result<(), String> {
    let mut key: MacSecKey = typed(value, doc.origin, doc.what)?;
    let ns = key
        .metadata
        .namespace
        .get_or_insert_with(|| DEFAULT_NAMESPACE.into())
        .clone();
    crate::material::check_one_source(&key.spec).map_err(|e| doc.error(e))?;
    let full_name = format!("MacSecKey {ns}/{}", doc.name);
    doc.insert_once(
        &mut inputs.keys,
        (ns, doc.name.to_string()),
        key,
        &full_name,
    )
}

/// A DxAccess document: added to `inputs`, or why it cannot be.
fn add_grant(inputs: &mut Inputs, value: Value, doc: &Doc<'_>) -> Result<(), String> {
    let mut grant: DxAccess = typed(value, doc.origin, doc.what)?;
    // Cluster scoped: a namespace in the manifest means nothing, as for kubectl.
    grant.metadata.namespace = None;
    let full_name = format!("DxAccess {}", doc.name);
    doc.insert_once(&mut inputs.grants, doc.name.to_string(), grant, &full_name)
}

/// A Secret document: added to `inputs`.
fn add_secret(inputs: &mut Inputs, value: Value, doc: &Doc<'_>) -> Result<(), String> {
    let secret: Secret = typed(value, doc.origin, doc.what)?;
    let ns = secret
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| DEFAULT_NAMESPACE.into());
    let data = crate::material::SecretRead::of(secret);
    inputs.secrets.insert((ns, doc.name.to_string()), data);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::material::SecretRead;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    fn tempdir() -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "dxm-input-{}-{}",
            std::process::id(),
            rand::random::<u64>()
        ));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    /// Errors name the file, the document and the field path.
    #[test]
    fn errors_name_file_document_and_field() {
        let d = tempdir();
        let f = write(
            &d,
            "bad.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n---\napiVersion: dxmacsec.io/v1alpha1\nkind: DxConnection\nmetadata: {name: c}\nspec:\n  connectionId: dxcon-1\n  encryptionMode: always\n",
        );
        let errs = load(std::slice::from_ref(&f)).unwrap_err();
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(
            errs[0].starts_with(&format!(
                "{}, document 2: DxConnection c: spec.encryptionMode: unknown variant `always`",
                f.display()
            )),
            "{}",
            errs[0]
        );
    }

    /// A field the kind does not have is an error naming file, document and field path,
    /// in the spec, in metadata, at the top and inside a list item (the API server's strict
    /// field validation); `apiVersion`, `kind` and `status` are fields.
    #[test]
    fn unknown_fields_are_errors_naming_the_field() {
        let d = tempdir();
        let f = write(
            &d,
            "typo.yaml",
            "apiVersion: dxmacsec.io/v1alpha1\nkind: DxConnection\nmetadata: {name: c, labelz: {a: b}}\nspec:\n  connectionId: dxcon-1\n  keyz: []\n  keys: [{name: k, weight: 1}]\nstatus: {}\n---\napiVersion: v1\nkind: Secret\nmetadata: {name: s}\nstringdata: {ckn: x}\nextra: 1\n",
        );
        let errs = load(std::slice::from_ref(&f)).unwrap_err();
        assert_eq!(
            errs,
            [
                format!(
                    "{}, document 1: DxConnection c: unknown fields metadata.labelz, spec.keys[0].weight, spec.keyz: check the spelling (`kubectl explain` lists the fields)",
                    f.display()
                ),
                format!(
                    "{}, document 2: Secret s: unknown fields extra, stringdata: check the spelling (`kubectl explain` lists the fields)",
                    f.display()
                ),
            ]
        );
    }

    /// One file of 2,000 DxConnections (past serde-saphyr's default of 1,024 documents) is read
    /// whole.
    #[test]
    fn a_file_of_thousands_of_documents_is_read() {
        let d = tempdir();
        let text: String = (0..2000)
            .map(|i| {
                format!(
                    "apiVersion: dxmacsec.io/v1alpha1\nkind: DxConnection\nmetadata: {{name: c{i}}}\nspec: {{connectionId: dxcon-{i:05}}}\n---\n"
                )
            })
            .collect();
        let f = write(&d, "many.yaml", &text);
        let inputs = load(std::slice::from_ref(&f)).unwrap();
        assert_eq!(inputs.connections.len(), 2000);
    }

    /// Secrets take `data` (base64) and `stringData`; folders are read; defaults apply.
    #[test]
    fn reads_folders_secrets_and_defaults() {
        let d = tempdir();
        write(
            &d,
            "a.yaml",
            "apiVersion: v1\nkind: Secret\nmetadata: {name: s, labels: {dxmacsec.io/key-material: \"true\"}}\ndata: {ckn: YWJj}\nstringData: {cak: def}\n---\napiVersion: v1\nkind: Secret\nmetadata: {name: other}\nstringData: {token: x}\n---\napiVersion: dxmacsec.io/v1alpha1\nkind: MacSecKey\nmetadata: {name: k}\nspec: {secretRef: {name: s}}\n",
        );
        std::fs::create_dir_all(d.join("sub")).unwrap();
        write(
            &d.join("sub"),
            "b.yml",
            "apiVersion: dxmacsec.io/v1alpha1\nkind: DxConnection\nmetadata: {name: c, namespace: net}\nspec: {connectionId: dxcon-1}\n",
        );
        write(&d, "notes.txt", "not yaml: [");
        let inputs = load(&[d]).unwrap();
        let SecretRead::Data { data: secret, .. } =
            &inputs.secrets[&("default".to_string(), "s".to_string())]
        else {
            panic!("the labelled Secret's data was not kept");
        };
        assert_eq!(secret["ckn"], b"abc");
        assert_eq!(secret["cak"], b"def");
        // A Secret without the key-material label is kept as unreadable, its data dropped.
        assert!(matches!(
            inputs.secrets[&("default".to_string(), "other".to_string())],
            SecretRead::Unmarked
        ));
        let key = &inputs.keys[&("default".to_string(), "k".to_string())].value;
        assert_eq!(key.spec.secret_ref.as_ref().unwrap().cak_key, "cak");
        let c = &inputs.connections[0].value;
        assert_eq!(c.metadata.namespace.as_deref(), Some("net"));
        assert!(c.spec.require_encryption_up);
        assert_eq!(c.spec.rotation.overlap_seconds, 300);
    }

    /// The examples folder loads as a whole: every manifest parses, other files are skipped.
    #[test]
    fn examples_load() {
        let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
        let inputs = load(&[examples]).unwrap();
        let names: Vec<_> = inputs
            .connections
            .iter()
            .map(|c| c.value.metadata.name.clone().unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "nyc-primary",
                "core-lag",
                "legacy-link",
                "nyc-secondary",
                "chi-primary"
            ]
        );
        assert_eq!(
            inputs.grants.keys().collect::<Vec<_>>(),
            ["partner-account"]
        );
        assert!(
            inputs
                .skipped
                .iter()
                .any(|s| s.contains("sim-account.yaml"))
        );
        assert!(
            inputs
                .skipped
                .iter()
                .any(|s| s.contains("ConfigMap argocd-cm"))
        );
    }

    /// Broken YAML, a missing kind, two key sources and an empty input are all reported.
    #[test]
    fn reports_every_problem() {
        let d = tempdir();
        let f1 = write(&d, "1.yaml", "kind: [unclosed\n");
        let f2 = write(
            &d,
            "2.yaml",
            "apiVersion: v1\nmetadata: {name: x}\n---\napiVersion: dxmacsec.io/v1alpha1\nkind: MacSecKey\nmetadata: {name: k}\nspec: {secretRef: {name: s}, directConnectSecretArn: 'arn:aws:secretsmanager:us-east-1:123456789012:secret:x'}\n",
        );
        let errs = load(&[f1, f2]).unwrap_err();
        assert!(errs[0].contains("1.yaml: not valid YAML"), "{errs:?}");
        assert!(
            errs[1].contains("2.yaml, document 1: kind is missing"),
            "{errs:?}"
        );
        assert!(errs[2].contains("set exactly one of"), "{errs:?}");
        let empty = write(&d, "3.yaml", "");
        // Something that is no Kubernetes object at all is skipped, not an error.
        let seed = write(&d, "4.yaml", "connections: []\n");
        assert_eq!(
            load(std::slice::from_ref(&seed)).unwrap_err(),
            vec!["no DxConnection found in the inputs".to_string()]
        );
        assert_eq!(
            load(&[empty]).unwrap_err(),
            vec!["no DxConnection found in the inputs".to_string()]
        );
    }

    /// Manifest reading never panics, whatever the bytes: arbitrary text, and text built
    /// from manifest fragments (so the parser gets past YAML into the typed objects).
    mod fuzz {
        use proptest::prelude::*;

        use super::super::{Inputs, read_text};

        const FRAGMENTS: &[&str] = &[
            "apiVersion: dxmacsec.io/v1alpha1\n",
            "apiVersion: v1\n",
            "kind: DxConnection\n",
            "kind: MacSecKey\n",
            "kind: Secret\n",
            "metadata: {name: a}\n",
            "metadata:\n  name: b\n  namespace: net\n",
            "spec:\n",
            "  connectionId: dxcon-1\n",
            "  connectionId: [1, 2]\n",
            "  encryptionMode: must_encrypt\n",
            "  keys: [{name: k}]\n",
            "  keys: {name: k}\n",
            "  rotation: {overlapSeconds: -1}\n",
            "  secretRef: {name: s}\n",
            "data: {ckn: '%%%'}\n",
            "stringData: {cak: 1}\n",
            "---\n",
            "- \n",
            "&a [*a]\n",
            "? x\n",
            "\t\u{0}\u{feff}\n",
            "{\n",
            "'\n",
        ];

        fn read(text: &str) {
            let mut inputs = Inputs::default();
            let mut errors = Vec::new();
            read_text(&mut inputs, &mut errors, "fuzz.yaml", text);
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

            #[test]
            fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
                read(&String::from_utf8_lossy(&bytes));
            }

            #[test]
            fn manifest_fragments_never_panic(
                parts in proptest::collection::vec(proptest::sample::select(FRAGMENTS), 0..24)
            ) {
                read(&parts.concat());
            }
        }
    }
}
