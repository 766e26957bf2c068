//! Opening a database: the engine and state (db.rs) with the background
//! maintenance that runs on them (maintenance.rs). Kept apart from both so
//! that maintenance can build on the database without the database
//! importing it back.

use std::path::Path;

use crate::error::Result;
use crate::local::db::{Database, OpenOptions};
use crate::local::maintenance::Maintenance;

impl Database {
    /// Opens (creating if needed) the data directory `dir`.
    pub fn open(dir: impl AsRef<Path>, opts: OpenOptions) -> Result<Database> {
        let db = Database::open_engine(dir, opts)?;
        crate::local::conflict_log::open(&db)?;
        let maintenance = Maintenance::start(&db.shared);
        *db.shared.stop_maintenance.lock() = Some(Box::new(move || maintenance.stop()));
        Ok(db)
    }
}
