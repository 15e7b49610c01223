//! What the model files have in common: safetensors files whose `format`
//! metadata names their kind — a CNMF template dictionary
//! ([`crate::templates`]) or an attack/decay model ([`crate::attack_decay`]).
//! Telling them apart and refusing the wrong kind with a message that names
//! what the file is lives here, below both, so that neither module needs the
//! other.

use std::collections::HashMap;

use crate::{Error, ErrorKind, Result};

/// The `format` of a template dictionary ([`crate::templates::FORMAT_NAME`]).
pub const TEMPLATES_FORMAT: &str = "sscnmf-templates";
/// The `format` of an attack/decay model ([`crate::attack_decay::FORMAT_NAME`]).
pub const ATTACK_DECAY_FORMAT: &str = "sscnmf-attack-decay";

/// The kinds of model file this tool writes, by their `format` metadata.
const KNOWN_FORMATS: &[(&str, &str)] =
    &[(TEMPLATES_FORMAT, "a CNMF template dictionary"), (ATTACK_DECAY_FORMAT, "an attack/decay model")];

/// The `format` metadata of a safetensors file (`sscnmf-templates`,
/// `sscnmf-attack-decay`, …), if it has one.
pub fn model_file_format(bytes: &[u8]) -> Option<String> {
    let (_, header) = safetensors::SafeTensors::read_metadata(bytes).ok()?;
    header.metadata().as_ref()?.get("format").cloned()
}

/// Parses a model file and checks that its `format` is `format` (naming
/// the kind it is otherwise) and its version `version`. `what` names the
/// expected kind in messages ("templates file").
pub(crate) fn open_model_file<'a>(
    bytes: &'a [u8],
    format: &str,
    version: u32,
    what: &str,
) -> Result<(safetensors::SafeTensors<'a>, HashMap<String, String>)> {
    let (st, meta, _) = open_model_file_of_versions(bytes, format, version..=version, what)?;
    Ok((st, meta))
}

/// [`open_model_file`] accepting any format version in `versions`; also
/// returns the file's version.
pub(crate) fn open_model_file_of_versions<'a>(
    bytes: &'a [u8],
    format: &str,
    versions: std::ops::RangeInclusive<u32>,
    what: &str,
) -> Result<(safetensors::SafeTensors<'a>, HashMap<String, String>, u32)> {
    use safetensors::tensor::SafeTensors;
    let bad = |msg: String| Error::new(ErrorKind::Templates, msg);
    let st = SafeTensors::deserialize(bytes).map_err(|e| bad(format!("not a valid {what} ({e})")))?;
    let (_, header) = SafeTensors::read_metadata(bytes).map_err(|e| bad(format!("not a valid {what} ({e})")))?;
    let meta = header.metadata().clone().unwrap_or_default();
    let Some(found) = meta.get("format") else {
        return Err(bad(format!("not a {what}: metadata `format` is missing")));
    };
    if found != format {
        return Err(match KNOWN_FORMATS.iter().find(|(name, _)| name == found) {
            Some((_, kind)) => bad(format!("this is {kind} (format `{found}`), not a {what}")),
            None => bad(format!("not a {what} (format `{found}`)")),
        });
    }
    let found: u32 = meta
        .get("format_version")
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| bad("metadata `format_version` is missing or not a number".into()))?;
    if !versions.contains(&found) {
        let reads = if versions.start() == versions.end() {
            format!("version {}", versions.start())
        } else {
            format!("versions {} to {}", versions.start(), versions.end())
        };
        return Err(bad(format!("{what} format version {found} is not supported by this sscnmf (reads {reads})")));
    }
    Ok((st, meta, found))
}
