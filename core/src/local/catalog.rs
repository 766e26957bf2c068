//! Table definitions. They are local to an instance (never replicated),
//! persisted in the meta keyspace, and cached in memory for the hot paths.

use std::collections::HashMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::local::conflict::ConflictPolicy;
use crate::local::keys::{table_key, NEXT_TABLE_ID, TABLE_PREFIX, TOMBSTONE_INDEX};
use crate::local::storage::{Batch, Space, Store};

/// How to create a table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TableOptions {
    /// Attribute holding the primary key (a string or an integer).
    pub primary_key: String,
    /// Attributes with a secondary index (equality and range finds).
    pub indexes: Vec<String>,
    /// Records older than this many seconds (by `__updatedtime__`) are
    /// evicted locally. Evictions are never replicated.
    pub expiration: Option<u64>,
    /// How concurrent writes to a record are settled (`"conflict"`:
    /// `"lww"`, `"merge"`, `"keep_local"` or `"resolver"`).
    pub conflict: ConflictPolicy,
    /// The most logical bytes the table's live records may take (see
    /// `table_stats`: each record's stored key plus its JSON text); `None`:
    /// no budget. What a write past it does is `on_full`.
    pub disk_budget_bytes: Option<u64>,
    /// `"refuse"` (the default) or `"drop_oldest"`.
    pub on_full: OnFull,
}

/// What a local write that would take a table past its
/// `disk_budget_bytes` does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnFull {
    /// The write fails with [`Error::TableFull`]; other tables keep
    /// writing, and deletes still work.
    #[default]
    Refuse,
    /// The records written longest ago (by the millisecond of their last
    /// write, then by primary key: the by-stamp index expiry uses) are
    /// removed locally in the same commit, and counted.
    DropOldest,
}

impl Default for TableOptions {
    fn default() -> Self {
        TableOptions {
            primary_key: "id".into(),
            indexes: Vec::new(),
            expiration: None,
            conflict: ConflictPolicy::LastWriterWins,
            disk_budget_bytes: None,
            on_full: OnFull::Refuse,
        }
    }
}

impl TableOptions {
    pub fn primary_key(mut self, attr: impl Into<String>) -> Self {
        self.primary_key = attr.into();
        self
    }
    pub fn index(mut self, attr: impl Into<String>) -> Self {
        self.indexes.push(attr.into());
        self
    }
    pub fn expiration_secs(mut self, secs: u64) -> Self {
        self.expiration = Some(secs);
        self
    }
    pub fn conflict(mut self, policy: ConflictPolicy) -> Self {
        self.conflict = policy;
        self
    }
    pub fn disk_budget(mut self, bytes: u64, on_full: OnFull) -> Self {
        self.disk_budget_bytes = Some(bytes);
        self.on_full = on_full;
        self
    }
}

/// A table as `describe` and `list_tables` report it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableInfo {
    pub name: String,
    pub primary_key: String,
    pub indexes: Vec<String>,
    pub expiration: Option<u64>,
    pub conflict: ConflictPolicy,
    pub disk_budget_bytes: Option<u64>,
    pub on_full: OnFull,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct TableDef {
    pub(crate) id: u32,
    pub(crate) name: String,
    pub(crate) primary_key: String,
    pub(crate) indexes: Vec<String>,
    pub(crate) expiration: Option<u64>,
    /// Absent in definitions stored before policies existed: those are
    /// last-writer-wins tables.
    #[serde(default)]
    pub(crate) conflict: ConflictPolicy,
    /// Absent in definitions stored before budgets existed: no budget.
    #[serde(default)]
    pub(crate) disk_budget_bytes: Option<u64>,
    #[serde(default)]
    pub(crate) on_full: OnFull,
}

impl TableDef {
    pub(crate) fn info(&self) -> TableInfo {
        TableInfo {
            name: self.name.clone(),
            primary_key: self.primary_key.clone(),
            indexes: self.indexes.clone(),
            expiration: self.expiration,
            conflict: self.conflict,
            disk_budget_bytes: self.disk_budget_bytes,
            on_full: self.on_full,
        }
    }

    /// Whether writes keep the by-stamp index (`EXPIRY_INDEX`): expiry
    /// reads it, and so does a budget that drops the oldest records.
    pub(crate) fn keeps_age_index(&self) -> bool {
        self.expiration.is_some()
            || (self.disk_budget_bytes.is_some() && self.on_full == OnFull::DropOldest)
    }

    /// Prefix of every row key of this table.
    pub(crate) fn row_prefix(&self) -> [u8; 4] {
        crate::local::keys::row_prefix(self.id)
    }

    /// Prefix of every entry of index `slot` (1-based; `EXPIRY_INDEX` too).
    pub(crate) fn index_prefix(&self, slot: u16) -> [u8; 6] {
        crate::local::keys::index_prefix(self.id, slot)
    }

    pub(crate) fn index_slot(&self, attribute: &str) -> Option<u16> {
        self.indexes
            .iter()
            .position(|a| a == attribute)
            .map(|i| i as u16 + 1)
    }
}

#[derive(Default)]
pub(crate) struct Catalog {
    pub(crate) tables: HashMap<String, Arc<TableDef>>,
    next_id: u32,
}

/// The conflict log's system table (see `conflict_log`): created at open,
/// never by a user, never dropped.
pub(crate) const CONFLICTS_TABLE: &str = "_conflicts";

/// The refusal of a user's create or drop of a system table.
pub(crate) fn reserved(name: &str) -> Error {
    Error::invalid(
        "table name",
        format!("`{name}` is reserved for the conflict log, which tidelog keeps itself: pick another name"),
    )
}

pub(crate) fn validate_table_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && !name.starts_with("__")
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.');
    if !ok {
        return Err(Error::invalid(
            "table name",
            format!("`{name}` must be 1-128 characters of letters, digits, '_', '-' or '.', not starting with \"__\""),
        ));
    }
    Ok(())
}

/// A budget of 0 would refuse (or drop) every record: almost surely a
/// mistake for "no budget", which is leaving it out.
pub(crate) fn validate_budget(bytes: Option<u64>) -> Result<()> {
    if bytes == Some(0) {
        return Err(Error::invalid(
            "disk_budget_bytes",
            "must be at least 1 byte; leave it out (null) for no budget",
        ));
    }
    Ok(())
}

fn validate_attribute(what: &str, attr: &str) -> Result<()> {
    if attr.is_empty() || attr.starts_with("__") || attr.len() > 256 {
        return Err(Error::invalid(
            what,
            format!("`{attr}` must be 1-256 characters and not start with \"__\""),
        ));
    }
    Ok(())
}

impl Catalog {
    pub(crate) fn load(store: &Store) -> Result<Catalog> {
        let mut cat = Catalog {
            tables: HashMap::new(),
            next_id: 1,
        };
        if let Some(v) = store.get(Space::Meta, NEXT_TABLE_ID)? {
            let b: [u8; 4] = (*v)
                .try_into()
                .map_err(|_| Error::Corrupt("next table id".into()))?;
            cat.next_id = u32::from_be_bytes(b);
        }
        for item in store.prefix(Space::Meta, TABLE_PREFIX, false) {
            let (_, v) = item?;
            let def: TableDef = serde_json::from_slice(&v)
                .map_err(|e| Error::Corrupt(format!("table definition: {e}")))?;
            cat.tables.insert(def.name.clone(), Arc::new(def));
        }
        Ok(cat)
    }

    pub(crate) fn get(&self, name: &str) -> Result<&Arc<TableDef>> {
        self.tables
            .get(name)
            .ok_or_else(|| Error::TableNotFound(name.to_string()))
    }

    /// Adds the definition to `batch`; the caller commits it and then calls
    /// [`Catalog::insert`].
    pub(crate) fn prepare_create(
        &self,
        name: &str,
        opts: &TableOptions,
        system: bool,
        batch: &mut Batch,
    ) -> Result<TableDef> {
        validate_table_name(name)?;
        validate_attribute("primary key attribute", &opts.primary_key)?;
        for (i, idx) in opts.indexes.iter().enumerate() {
            validate_attribute("index attribute", idx)?;
            if idx == &opts.primary_key {
                return Err(Error::invalid(
                    "index attribute",
                    format!("`{idx}` is the primary key, which is always indexed"),
                ));
            }
            if opts.indexes[..i].contains(idx) {
                return Err(Error::invalid(
                    "index attribute",
                    format!("`{idx}` is listed twice"),
                ));
            }
        }
        if opts.indexes.len() >= TOMBSTONE_INDEX as usize {
            return Err(Error::invalid("indexes", "too many indexes"));
        }
        if opts.expiration == Some(0) {
            return Err(Error::invalid("expiration", "must be at least 1 second"));
        }
        validate_budget(opts.disk_budget_bytes)?;
        if name == CONFLICTS_TABLE && !system {
            return Err(reserved(name));
        }
        if self.tables.contains_key(name) {
            return Err(Error::TableExists(name.to_string()));
        }
        let def = TableDef {
            id: self.next_id,
            name: name.to_string(),
            primary_key: opts.primary_key.clone(),
            indexes: opts.indexes.clone(),
            expiration: opts.expiration,
            conflict: opts.conflict,
            disk_budget_bytes: opts.disk_budget_bytes,
            on_full: opts.on_full,
        };
        batch.put(
            Space::Meta,
            table_key(name),
            serde_json::to_vec(&def).unwrap_or_default(),
        );
        batch.put(
            Space::Meta,
            NEXT_TABLE_ID.to_vec(),
            (self.next_id + 1).to_be_bytes().to_vec(),
        );
        Ok(def)
    }

    pub(crate) fn insert(&mut self, def: TableDef) -> Arc<TableDef> {
        self.next_id = self.next_id.max(def.id + 1);
        let def = Arc::new(def);
        self.tables.insert(def.name.clone(), def.clone());
        def
    }

    pub(crate) fn remove(&mut self, name: &str) -> Option<Arc<TableDef>> {
        self.tables.remove(name)
    }
}
