//! Option objects into core's one options schema (`tidelog::options`).
//! index.js turns the caller's camelCase keys into the schema's snake_case
//! ones and hands over JSON text; the schema decodes, checks ranges and
//! names a bad option (index.js puts the caller's spelling back into the
//! message). A new option in core so works here without code.

use tidelog::options;
use tidelog::{OpenOptions, PeerConfig, ReplicationOptions};

use crate::convert::{invalid, OrJs};

fn parse(what: &str, json: &str) -> napi::Result<serde_json::Value> {
    serde_json::from_str(json).map_err(|e| invalid(format!("invalid {what}: {e}")))
}

pub(crate) fn open_options(json: &str) -> napi::Result<OpenOptions> {
    options::open_from_json(parse("open options", json)?).js()
}

pub(crate) fn replication_options(json: &str) -> napi::Result<ReplicationOptions> {
    options::replication_from_json(parse("replication options", json)?).js()
}

pub(crate) fn peer_config(json: &str) -> napi::Result<PeerConfig> {
    options::peer_from_json(parse("peer", json)?).js()
}
