//! The stream's lines from the control plane: a whole snapshot or a delta
//! from the version served, decoded and validated whole.

use remora_api::mesh::{StreamMsg, Update};
use remora_api::{Config, Problem};

/// One line of the stream, decoded and validated: its version, and the
/// whole config it makes (a delta applied to the config served) or every
/// problem found (the NACK's errors).
#[derive(Debug)]
pub struct Decoded {
    pub version: String,
    pub config: Result<Config, Vec<String>>,
    /// For a delta, how many routes and backends it changed.
    pub delta: Option<usize>,
}

/// Decodes and validates a whole-snapshot line (without its newline); see
/// [`decode_against`].
pub fn decode(line: &[u8]) -> Result<Decoded, serde_json::Error> {
    decode_against(line, None, &Config::default())
}

/// Decodes and validates a line (without its newline): a whole snapshot, or
/// a delta applied to `config`, the config of version `has` served now. A
/// delta from any other version is refused (NACKed: the control plane then
/// sends the whole snapshot). `Err` when the line is not a message at all,
/// which ends the subscription. With [`swap_in_versioned`](crate::snapshot::swap_in_versioned), the whole of applying a
/// snapshot after the first (the apply bench measures the two together).
pub fn decode_against(
    line: &[u8],
    has: Option<&str>,
    config: &Config,
) -> Result<Decoded, serde_json::Error> {
    let msg: StreamMsg = serde_json::from_slice(line)?;
    let (version, update) = msg.into_update();
    let (config, delta) = match update {
        Err(e) => (Err(vec![e]), None),
        Ok(Update::Snapshot(config)) => (Ok(config), None),
        Ok(Update::Delta { base, delta }) => {
            let changes = delta.len();
            let patched = if has != Some(base.as_str()) {
                Err(vec![format!(
                    "a delta from version {base}, but this proxy serves {}",
                    has.unwrap_or("nothing yet")
                )])
            } else {
                let mut next = config.clone();
                delta.apply(&mut next).map(|()| next)
            };
            (patched, Some(changes))
        }
    };
    let config = config.and_then(|c| {
        let problems = remora_api::validate(&c);
        if problems.is_empty() {
            Ok(c)
        } else {
            Err(strings(problems))
        }
    });
    Ok(Decoded {
        version,
        config,
        delta,
    })
}

pub(super) fn strings(problems: Vec<Problem>) -> Vec<String> {
    problems.iter().map(|p| p.to_string()).collect()
}
