//! `embedns chain` and `unchain` as text edits of a conf file another tool owns (flannel's,
//! Calico's, kindnet's): embedns's entry appended to the `plugins` list, put back, or taken
//! out, and every other byte of the file left as it was. serde_json's `RawValue` gives each
//! plugin's exact text and so its place in the file: an entry is inserted after the last
//! plugin with the whitespace that precedes that plugin, and removing it takes out exactly
//! those bytes again, so a chain and unchain round trip gives the file back byte for byte.
//!
//! A single-plugin `.conf` becomes a conflist holding its text verbatim as the first plugin
//! and naming the file it came from (`embednsChainedFrom`, a key of the list that no plugin
//! is given); unchaining that list gives the `.conf`'s text back.

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::cni::SUPPORTED_VERSIONS;

/// The `type` of embedns's entry.
pub const ENTRY_TYPE: &str = "embedns";
/// The list's key naming the single-plugin `.conf` it was made from.
pub const CHAINED_FROM: &str = "embednsChainedFrom";

/// Why a conf file cannot be chained or unchained; the file is left as it is.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ChainError {
    #[error("not a JSON object: {0}")]
    NotJson(String),
    #[error("no \"plugins\" list and no \"type\": not a CNI network configuration")]
    NotANetwork,
    #[error("the \"plugins\" list is empty")]
    NoPlugins,
    #[error(
        "cniVersion {0:?}: embedns serves {served}; chaining it here would fail every container",
        served = SUPPORTED_VERSIONS.join(", ")
    )]
    Version(String),
    #[error("embedns is the only plugin of the list: removing it leaves no network")]
    OnlyEntry,
}

/// What a chain or unchain makes of a file's text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Edited {
    /// Nothing to change (the entry is there with these settings, or absent on unchain).
    Unchanged,
    /// The file's new text.
    List(String),
    /// Unchain of a list made from a `.conf`: that file's name and its original text.
    Single { file: String, text: String },
}

/// The parts of a conf file the edits need, borrowed from its text.
#[derive(Deserialize)]
struct Shape<'a> {
    #[serde(rename = "cniVersion", default)]
    cni_version: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(rename = "type", default)]
    plugin_type: Option<String>,
    #[serde(borrow, default)]
    plugins: Option<Vec<&'a RawValue>>,
    #[serde(rename = "embednsChainedFrom", default)]
    chained_from: Option<String>,
}

/// One plugin of the list: its byte range in the file and its value.
struct Plugin {
    start: usize,
    end: usize,
    value: Value,
}

impl Plugin {
    fn is_embedns(&self) -> bool {
        self.value.get("type").and_then(Value::as_str) == Some(ENTRY_TYPE)
    }
}

fn shape(text: &str) -> Result<Shape<'_>, ChainError> {
    let shape: Shape =
        serde_json::from_str(text).map_err(|e| ChainError::NotJson(e.to_string()))?;
    if let Some(v) = &shape.cni_version {
        if !SUPPORTED_VERSIONS.contains(&v.as_str()) {
            return Err(ChainError::Version(v.clone()));
        }
    }
    Ok(shape)
}

/// The list's plugins with their places in `text` (a `RawValue` borrows its bytes from it).
fn plugins(text: &str, raw: &[&RawValue]) -> Result<Vec<Plugin>, ChainError> {
    raw.iter()
        .map(|r| {
            let start = r.get().as_ptr() as usize - text.as_ptr() as usize;
            let value =
                serde_json::from_str(r.get()).map_err(|e| ChainError::NotJson(e.to_string()))?;
            Ok(Plugin {
                start,
                end: start + r.get().len(),
                value,
            })
        })
        .collect()
}

/// The entry `wanted` merged over an existing one: its keys win, `capabilities` are joined.
fn merged(existing: Option<&Value>, wanted: &Map<String, Value>) -> Value {
    let mut out = existing
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    for (k, v) in wanted {
        match (k.as_str(), out.get_mut(k), v) {
            ("capabilities", Some(Value::Object(have)), Value::Object(add)) => {
                have.extend(add.clone());
            }
            _ => {
                out.insert(k.clone(), v.clone());
            }
        }
    }
    Value::Object(out)
}

/// The entry as JSON text placed after `ws` (the whitespace before a plugin), `type` first:
/// pretty, with the plugin's indentation, when plugins are one to a line; compact otherwise.
fn render(value: &Value, ws: &str) -> String {
    let text = |v: &Value, pretty: bool| {
        let s = if pretty {
            serde_json::to_string_pretty(v)
        } else {
            serde_json::to_string(v)
        };
        s.expect("a JSON value renders")
    };
    let Some(map) = value.as_object() else {
        return text(value, false);
    };
    let first = map.get_key_value("type").into_iter();
    let fields = first.chain(map.iter().filter(|(k, _)| k.as_str() != "type"));
    match ws.rfind('\n') {
        Some(nl) => {
            let inner = format!("\n{}  ", &ws[nl + 1..]);
            let fields: Vec<String> = fields
                .map(|(k, v)| format!("{}: {}", text(&k.as_str().into(), false), text(v, true)))
                .map(|f| f.replace('\n', &inner))
                .collect();
            format!(
                "{{{inner}{}{}}}",
                fields.join(&format!(",{inner}")),
                &inner[..inner.len() - 2]
            )
        }
        None => {
            let fields: Vec<String> = fields
                .map(|(k, v)| format!("{}:{}", text(&k.as_str().into(), false), text(v, false)))
                .collect();
            format!("{{{}}}", fields.join(","))
        }
    }
}

/// `text` (the file `file`) with embedns's entry: `wanted` appended, or merged over the
/// entry already there.
pub fn chain(text: &str, file: &str, wanted: &Map<String, Value>) -> Result<Edited, ChainError> {
    let shape = shape(text)?;
    let Some(raw) = &shape.plugins else {
        return match shape.plugin_type {
            Some(_) => Ok(Edited::List(converted(text, file, &shape, wanted))),
            None => Err(ChainError::NotANetwork),
        };
    };
    let list = plugins(text, raw)?;
    let last = list.last().ok_or(ChainError::NoPlugins)?;
    if let Some(ours) = list.iter().find(|p| p.is_embedns()) {
        let entry = merged(Some(&ours.value), wanted);
        if entry == ours.value {
            return Ok(Edited::Unchanged);
        }
        let ws = whitespace_before(text, ours.start);
        let mut out = text.to_string();
        out.replace_range(ours.start..ours.end, &render(&entry, ws));
        return Ok(Edited::List(out));
    }
    let ws = whitespace_before(text, last.start);
    let entry = render(&merged(None, wanted), ws);
    let mut out = String::with_capacity(text.len() + entry.len() + ws.len() + 1);
    out.push_str(&text[..last.end]);
    out.push(',');
    out.push_str(ws);
    out.push_str(&entry);
    out.push_str(&text[last.end..]);
    Ok(Edited::List(out))
}

/// The whitespace right before byte `at`.
fn whitespace_before(text: &str, at: usize) -> &str {
    let before = &text[..at];
    let from = before.trim_end_matches([' ', '\t', '\n', '\r']).len();
    &before[from..]
}

/// A single-plugin conf as a list: its text verbatim as the first plugin, then the entry.
fn converted(text: &str, file: &str, shape: &Shape, wanted: &Map<String, Value>) -> String {
    let quoted = |s: &str| serde_json::to_string(s).expect("a string renders");
    let version = shape.cni_version.as_deref().unwrap_or("1.0.0");
    let name = shape.name.as_deref().unwrap_or("");
    let entry = render(&merged(None, wanted), "\n    ");
    format!(
        "{{\n  \"cniVersion\": {},\n  \"name\": {},\n  \"{CHAINED_FROM}\": {},\n  \"plugins\": [{text},\n    {entry}\n  ]\n}}\n",
        quoted(version),
        quoted(name),
        quoted(file),
    )
}

/// `text` without embedns's entry; for a list made from a `.conf`, that file back.
pub fn unchain(text: &str) -> Result<Edited, ChainError> {
    let shape: Shape =
        serde_json::from_str(text).map_err(|e| ChainError::NotJson(e.to_string()))?;
    let Some(raw) = &shape.plugins else {
        return Ok(Edited::Unchanged);
    };
    let list = plugins(text, raw)?;
    let Some(at) = list.iter().position(Plugin::is_embedns) else {
        return Ok(Edited::Unchanged);
    };
    if list.len() == 1 {
        return Err(ChainError::OnlyEntry);
    }
    if let (Some(file), 2, 1) = (&shape.chained_from, list.len(), at) {
        // The original text sits between the list's `[` and the comma after it.
        let open = whitespace_before(text, list[0].start);
        let from = list[0].start - open.len();
        let comma = from
            + text[from..list[1].start]
                .rfind(',')
                .expect("plugins are separated");
        if text[..from].ends_with('[') {
            return Ok(Edited::Single {
                file: file.clone(),
                text: text[from..comma].to_string(),
            });
        }
    }
    let (from, to) = if at > 0 {
        (list[at - 1].end, list[at].end)
    } else {
        (list[0].start, list[1].start)
    };
    let mut out = text.to_string();
    out.replace_range(from..to, "");
    Ok(Edited::List(out))
}

/// The value of `key` in embedns's entry of the conf file `text`, if it has one.
pub fn entry_setting(text: &str, key: &str) -> Option<Value> {
    let shape: Shape = serde_json::from_str(text).ok()?;
    let list = plugins(text, shape.plugins.as_deref()?).ok()?;
    let ours = list.into_iter().find(Plugin::is_embedns)?;
    ours.value.get(key).cloned()
}

/// Whether `text` is a conf file holding embedns's entry.
pub fn has_entry(text: &str) -> bool {
    entry_setting(text, "type").is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wanted() -> Map<String, Value> {
        let v = serde_json::json!({"type": "embedns",
            "capabilities": {"aliases": true, "dns": true, "cgroupPath": true}});
        v.as_object().unwrap().clone()
    }

    const FLANNEL: &str = r#"{
  "name": "cbr0",
  "cniVersion": "0.3.1",
  "plugins": [
    {
      "type": "flannel",
      "delegate": {
        "hairpinMode": true,
        "isDefaultGateway": true
      }
    },
    {
      "type": "portmap",
      "capabilities": {
        "portMappings": true
      }
    }
  ]
}
"#;

    fn list(e: Edited) -> String {
        match e {
            Edited::List(s) => s,
            other => panic!("expected a list, got {other:?}"),
        }
    }

    #[test]
    fn a_chain_appends_the_entry_and_an_unchain_gives_the_file_back() {
        let chained = list(chain(FLANNEL, "10-flannel.conflist", &wanted()).unwrap());
        let v: Value = serde_json::from_str(&chained).unwrap();
        assert_eq!(v["plugins"][2]["type"], "embedns");
        assert_eq!(v["plugins"][2]["capabilities"]["cgroupPath"], true);
        assert!(
            chained.contains("    },\n    {\n      \"type\": \"embedns\""),
            "{chained}"
        );
        assert_eq!(chain(&chained, "x", &wanted()).unwrap(), Edited::Unchanged);
        assert_eq!(list(unchain(&chained).unwrap()), FLANNEL);
        assert_eq!(unchain(FLANNEL).unwrap(), Edited::Unchanged);
    }

    #[test]
    fn compact_lists_get_a_compact_entry() {
        let text =
            r#"{"cniVersion":"1.0.0","name":"k","plugins":[{"type":"ptp"},{"type":"portmap"}]}"#;
        let chained = list(chain(text, "10-k.conflist", &wanted()).unwrap());
        assert!(chained.starts_with(
            r#"{"cniVersion":"1.0.0","name":"k","plugins":[{"type":"ptp"},{"type":"portmap"},{""#
        ));
        assert_eq!(list(unchain(&chained).unwrap()), text);
    }

    #[test]
    fn an_entry_already_there_keeps_its_keys_and_gets_what_is_asked() {
        let text = r#"{"cniVersion":"1.0.0","name":"k","plugins":[{"type":"ptp"},
  {"type":"embedns","ttl":5,"capabilities":{"portMappings":true}}]}"#;
        let mut w = wanted();
        w.insert("dataDir".into(), "/var/lib/x".into());
        let chained = list(chain(text, "f", &w).unwrap());
        let v: Value = serde_json::from_str(&chained).unwrap();
        let e = &v["plugins"][1];
        assert_eq!(
            (e["ttl"].as_u64(), e["dataDir"].as_str()),
            (Some(5), Some("/var/lib/x"))
        );
        assert_eq!(e["capabilities"]["portMappings"], true);
        assert_eq!(e["capabilities"]["dns"], true);
        assert!(
            chained.starts_with(r#"{"cniVersion":"1.0.0","name":"k","plugins":[{"type":"ptp"},"#)
        );
        assert_eq!(chain(&chained, "f", &w).unwrap(), Edited::Unchanged);
    }

    #[test]
    fn a_single_conf_becomes_a_list_and_comes_back() {
        let conf = "{\n  \"cniVersion\": \"0.4.0\",\n  \"name\": \"mynet\",\n  \"type\": \"bridge\",\n  \"ipam\": {\"type\": \"host-local\"}\n}\n";
        let chained = list(chain(conf, "10-mynet.conf", &wanted()).unwrap());
        let v: Value = serde_json::from_str(&chained).unwrap();
        assert_eq!(
            (v["name"].as_str(), v["cniVersion"].as_str()),
            (Some("mynet"), Some("0.4.0"))
        );
        assert_eq!(v[CHAINED_FROM], "10-mynet.conf");
        assert_eq!(v["plugins"][0]["type"], "bridge");
        assert_eq!(v["plugins"][1]["type"], "embedns");
        assert!(has_entry(&chained) && !has_entry(conf));
        assert_eq!(
            entry_setting(&chained, "capabilities").unwrap()["dns"],
            true
        );
        assert_eq!(entry_setting(&chained, "dataDir"), None);
        assert_eq!(
            unchain(&chained).unwrap(),
            Edited::Single {
                file: "10-mynet.conf".into(),
                text: conf.into()
            }
        );
    }

    #[test]
    fn bad_input_is_a_clear_error() {
        assert!(matches!(
            chain("{nope", "f", &wanted()),
            Err(ChainError::NotJson(_))
        ));
        assert!(matches!(
            chain("[1]", "f", &wanted()),
            Err(ChainError::NotJson(_))
        ));
        assert_eq!(
            chain(r#"{"name":"x"}"#, "f", &wanted()),
            Err(ChainError::NotANetwork)
        );
        let empty = r#"{"cniVersion":"1.0.0","name":"x","plugins":[]}"#;
        assert_eq!(chain(empty, "f", &wanted()), Err(ChainError::NoPlugins));
        let future = r#"{"cniVersion":"9.0.0","name":"x","plugins":[{"type":"ptp"}]}"#;
        assert_eq!(
            chain(future, "f", &wanted()),
            Err(ChainError::Version("9.0.0".into()))
        );
        let alone = r#"{"cniVersion":"1.0.0","name":"x","plugins":[{"type":"embedns"}]}"#;
        assert_eq!(unchain(alone), Err(ChainError::OnlyEntry));
    }
}
