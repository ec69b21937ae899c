//! Offline injection (`remora-control-plane inject -f FILE`): every pod
//! template of a multi-document YAML manifest (Pod, Deployment, StatefulSet,
//! DaemonSet, ReplicaSet, Job, CronJob, and the items of a List) through the
//! same core as the webhook; other kinds pass through. Namespace labels are
//! unknown offline, so a pod is injected when it opts in itself or with
//! `force` (an opt-out still wins).
//!
//! Like the webhook, the change is a JSON patch computed on the typed
//! template and applied to the document as written, so fields the typed
//! model does not know survive.

use super::{inject_template, InjectConfig, Outcome, Skip};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use serde::Deserialize as _;
use serde_json::Value;
use std::collections::BTreeMap;

/// A document that cannot be injected, named by index (from 0) and kind.
#[derive(Debug, thiserror::Error)]
#[error("document {index} ({kind}): {message}")]
pub struct ManifestError {
    pub index: usize,
    pub kind: String,
    pub message: String,
}

/// What happened to one pod template, for the summary on stderr.
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    pub index: usize,
    pub kind: String,
    pub name: String,
    pub outcome: Result<(), Skip>,
}

/// Injects every pod template of `input`; returns the YAML (documents
/// separated by `---`) and a report per template.
pub fn inject_manifest(
    input: &str,
    config: &InjectConfig,
) -> Result<(String, Vec<Report>), ManifestError> {
    let mut docs = Vec::new();
    let mut reports = Vec::new();
    for (index, de) in serde_yaml_ng::Deserializer::from_str(input).enumerate() {
        let err = |kind: &str, message: String| ManifestError {
            index,
            kind: kind.to_string(),
            message,
        };
        let yaml = serde_yaml_ng::Value::deserialize(de).map_err(|e| err("?", e.to_string()))?;
        if yaml.is_null() {
            continue; // an empty document (a leading or trailing `---`)
        }
        let mut doc: Value = serde_json::to_value(&yaml).map_err(|e| err("?", e.to_string()))?;
        inject_document(&mut doc, config, index, &mut reports)?;
        docs.push(serde_yaml_ng::to_string(&doc).map_err(|e| err("?", e.to_string()))?);
    }
    Ok((docs.join("---\n"), reports))
}

/// Where a kind keeps its pod template (a JSON pointer); `None` for kinds
/// without one.
pub fn template_pointer(kind: &str) -> Option<&'static str> {
    match kind {
        "Pod" => Some(""),
        "Deployment"
        | "StatefulSet"
        | "DaemonSet"
        | "ReplicaSet"
        | "Job"
        | "ReplicationController" => Some("/spec/template"),
        "CronJob" => Some("/spec/jobTemplate/spec/template"),
        _ => None,
    }
}

fn inject_document(
    doc: &mut Value,
    config: &InjectConfig,
    index: usize,
    reports: &mut Vec<Report>,
) -> Result<(), ManifestError> {
    let kind = doc
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let err = |message: String| ManifestError {
        index,
        kind: if kind.is_empty() {
            "no kind".into()
        } else {
            kind.clone()
        },
        message,
    };
    if kind == "List" {
        if let Some(items) = doc.get_mut("items").and_then(Value::as_array_mut) {
            for item in items {
                inject_document(item, config, index, reports)?;
            }
        }
        return Ok(());
    }
    let Some(pointer) = template_pointer(&kind) else {
        return Ok(());
    };
    let name = doc
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let Some(raw) = doc.pointer_mut(pointer) else {
        return Err(err(format!("no pod template at {pointer}")));
    };
    let template = PodTemplateSpec {
        metadata: raw
            .get("metadata")
            .map(|m| serde_json::from_value(m.clone()))
            .transpose()
            .map_err(|e| err(format!("{pointer}/metadata: {e}")))?,
        spec: raw
            .get("spec")
            .map(|s| serde_json::from_value(s.clone()))
            .transpose()
            .map_err(|e| err(format!("{pointer}/spec: {e}")))?,
    };
    // Offline the namespace's labels are unknown: the pod (or --force) decides.
    let outcome =
        inject_template(&template, &BTreeMap::new(), config).map_err(|e| err(e.to_string()))?;
    let outcome = match outcome {
        Outcome::Injected(injected) => {
            let patch = template_patch(&template, &injected).map_err(|e| err(e.to_string()))?;
            json_patch::patch(raw, &patch).map_err(|e| err(format!("applying the change: {e}")))?;
            Ok(())
        }
        Outcome::Skipped(skip) => Err(skip),
    };
    reports.push(Report {
        index,
        kind: kind.clone(),
        name,
        outcome,
    });
    Ok(())
}

/// The JSON patch from `before` to `after` (both typed templates).
pub fn template_patch(
    before: &PodTemplateSpec,
    after: &PodTemplateSpec,
) -> Result<json_patch::Patch, serde_json::Error> {
    Ok(json_patch::diff(
        &serde_json::to_value(before)?,
        &serde_json::to_value(after)?,
    ))
}
