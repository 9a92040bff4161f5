//! Spec names (`input`, `a{l}.h{h}`, `m{l}`, `logits`, slots with `<q>`/`<k>`/`<v>`) and their parsers.
//! Parsing accepts only the canonical spelling, so every node and edge has exactly one name.

use std::fmt;
use std::str::FromStr;

use crate::graph::{Dest, GraphError, Node, Qkv, Source};

impl fmt::Display for Qkv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Q => "q",
            Self::K => "k",
            Self::V => "v",
        })
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Input => f.write_str("input"),
            Self::Head { layer, head } => write!(f, "a{layer}.h{head}"),
            Self::Mlp { layer } => write!(f, "m{layer}"),
        }
    }
}

impl fmt::Display for Dest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Head { layer, head, qkv } => write!(f, "a{layer}.h{head}<{qkv}>"),
            Self::Mlp { layer } => write!(f, "m{layer}"),
            Self::Logits => f.write_str("logits"),
        }
    }
}

impl fmt::Display for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Source(source) => source.fmt(f),
            Self::Logits => f.write_str("logits"),
        }
    }
}

impl FromStr for Source {
    type Err = GraphError;

    fn from_str(name: &str) -> Result<Self, GraphError> {
        parse_source(name).ok_or_else(|| malformed("source node", name))
    }
}

impl FromStr for Dest {
    type Err = GraphError;

    fn from_str(name: &str) -> Result<Self, GraphError> {
        parse_dest(name).ok_or_else(|| malformed("destination slot", name))
    }
}

impl FromStr for Node {
    type Err = GraphError;

    fn from_str(name: &str) -> Result<Self, GraphError> {
        if name == "logits" {
            return Ok(Self::Logits);
        }
        parse_source(name).map(Self::Source).ok_or_else(|| malformed("node", name))
    }
}

/// The name of the edge `src -> dst`, written without allocating.
pub(crate) struct EdgeName(pub Source, pub Dest);

impl fmt::Display for EdgeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}->{}", self.0, self.1)
    }
}

fn malformed(kind: &'static str, name: &str) -> GraphError {
    GraphError::Malformed { kind, name: name.to_owned() }
}

fn parse_source(name: &str) -> Option<Source> {
    if name == "input" {
        return Some(Source::Input);
    }
    if let Some(layer) = name.strip_prefix('m') {
        return Some(Source::Mlp { layer: parse_index(layer)? });
    }
    let (layer, head) = parse_head(name)?;
    Some(Source::Head { layer, head })
}

fn parse_dest(name: &str) -> Option<Dest> {
    if name == "logits" {
        return Some(Dest::Logits);
    }
    if let Some(layer) = name.strip_prefix('m') {
        return Some(Dest::Mlp { layer: parse_index(layer)? });
    }
    let (head, slot) = name.strip_suffix('>')?.split_once('<')?;
    let qkv = match slot {
        "q" => Qkv::Q,
        "k" => Qkv::K,
        "v" => Qkv::V,
        _ => return None,
    };
    let (layer, head) = parse_head(head)?;
    Some(Dest::Head { layer, head, qkv })
}

/// `a{layer}.h{head}` without any slot suffix.
fn parse_head(name: &str) -> Option<(usize, usize)> {
    let (layer, head) = name.strip_prefix('a')?.split_once(".h")?;
    Some((parse_index(layer)?, parse_index(head)?))
}

/// A decimal index as `Display` writes it: digits only, no sign, no leading zero.
fn parse_index(digits: &str) -> Option<usize> {
    let canonical = !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) && (digits == "0" || !digits.starts_with('0'));
    if canonical { digits.parse().ok() } else { None }
}
