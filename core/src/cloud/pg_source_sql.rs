//! The SQL text of the PostgreSQL source (see `pg_source`): the shared
//! tables, the capture triggers' functions and the reader's queries.
//!
//! Functions carry their version in their name (`_v1`) and the triggers
//! are `CREATE OR REPLACE`d onto them, so a later version installs side by
//! side and moves the triggers over in one transaction, while hubs of the
//! older version keep reading the same change table.

/// The version [`INSTALL_FUNCTIONS`] installs, recorded in
/// `tidelog_source_version` so an operator can see which triggers run.
pub const VERSION: i32 = 1;

/// Advisory lock (transaction scope) every capturing transaction holds
/// from its first write to a sourced table until it ends: change ids are
/// then handed out in commit order (see the module doc of `pg_source`).
/// "tidelog" in ASCII.
pub const CAPTURE_LOCK: i64 = 0x0074_6964_656c_6f67;

/// Advisory lock serializing installs, so several hubs starting at once do
/// not race on `CREATE OR REPLACE FUNCTION` ("tuple concurrently updated").
pub const INSTALL_LOCK: i64 = CAPTURE_LOCK + 1;

/// The tables every source shares, created if missing.
pub const INSTALL_TABLES: &str = r#"
CREATE TABLE IF NOT EXISTS tidelog_source_node (
  one  boolean PRIMARY KEY DEFAULT true CHECK (one),
  node numeric(20,0) NOT NULL
);
-- One random u64 per database (never 0, below 2^64): the origin of every
-- captured write, the same for every hub.
INSERT INTO tidelog_source_node (node)
  SELECT 1 + floor(random() * 4294967295)::numeric * 4294967296
           + floor(random() * 4294967296)::numeric
  ON CONFLICT DO NOTHING;
CREATE TABLE IF NOT EXISTS tidelog_changes (
  id         bigserial PRIMARY KEY,
  pg_table   text          NOT NULL,
  key        jsonb         NOT NULL,
  record     jsonb,
  deleted    boolean       NOT NULL,
  stamp_time bigint        NOT NULL,
  stamp_node numeric(20,0) NOT NULL,
  at         timestamptz   NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX IF NOT EXISTS tidelog_changes_table_id ON tidelog_changes (pg_table, id);
CREATE TABLE IF NOT EXISTS tidelog_source_progress (
  hub       text        NOT NULL,
  pg_table  text        NOT NULL,
  change_id bigint      NOT NULL,
  at        timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (hub, pg_table)
);
CREATE TABLE IF NOT EXISTS tidelog_source_trim (
  pg_table text   PRIMARY KEY,
  through  bigint NOT NULL
);
CREATE TABLE IF NOT EXISTS tidelog_source_version (
  one     boolean PRIMARY KEY DEFAULT true CHECK (one),
  version int     NOT NULL
);
"#;

/// The trigger functions. `tidelog.writer = 'sink'` marks the sink's own
/// writes: they are neither stamped nor captured (no echo).
pub const INSTALL_FUNCTIONS: &str = r#"
CREATE OR REPLACE FUNCTION tidelog_source_lock_v1() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  IF coalesce(current_setting('tidelog.writer', true), '') <> 'sink' THEN
    PERFORM pg_advisory_xact_lock(32766977217687399);
  END IF;
  RETURN NULL;
END $$;

-- TG_ARGV[0]: the primary-key attribute; TG_ARGV[1]: the table's name.
CREATE OR REPLACE FUNCTION tidelog_source_stamp_v1() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
  pk text := TG_ARGV[0];
  wall bigint := floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint << 16;
  n bigint;
BEGIN
  IF coalesce(current_setting('tidelog.writer', true), '') = 'sink' THEN
    IF TG_OP = 'DELETE' THEN RETURN OLD; END IF;
    RETURN NEW;
  END IF;
  IF TG_OP = 'DELETE' THEN
    -- A tombstone, so that a late older write cannot bring the row back.
    IF NOT OLD.deleted THEN
      EXECUTE format('UPDATE %s SET deleted = true, record = NULL WHERE key = $1', TG_RELID::regclass)
        USING OLD.key;
    END IF;
    RETURN NULL;
  END IF;
  IF NEW.deleted OR NEW.record IS NULL THEN
    NEW.deleted := true;
    NEW.record := NULL;
  ELSE
    IF jsonb_typeof(NEW.record) <> 'object' THEN
      RAISE EXCEPTION 'tidelog source %: record must be a JSON object, not %', TG_ARGV[1], jsonb_typeof(NEW.record)
        USING HINT = 'write the record as a jsonb object such as {"' || pk || '": "k", ...}';
    END IF;
    IF NEW.key IS NULL THEN
      NEW.key := NEW.record -> pk;
    END IF;
    IF NEW.record ? pk THEN
      IF NEW.record -> pk <> NEW.key THEN
        RAISE EXCEPTION 'tidelog source %: record attribute % is %, but key is %', TG_ARGV[1], pk, NEW.record -> pk, NEW.key
          USING HINT = 'leave key out (it is taken from the record) or make them equal';
      END IF;
    ELSIF NEW.key IS NOT NULL THEN
      NEW.record := NEW.record || jsonb_build_object(pk, NEW.key);
    END IF;
  END IF;
  IF NEW.key IS NULL OR jsonb_typeof(NEW.key) NOT IN ('string', 'number') THEN
    RAISE EXCEPTION 'tidelog source %: key must be a JSON string or integer, got %', TG_ARGV[1], coalesce(NEW.key::text, 'none')
      USING HINT = 'set key, or the record''s ' || pk || ' attribute';
  END IF;
  IF TG_OP = 'INSERT' THEN
    -- Inserting a deleted key revives its tombstone (a later stamp).
    EXECUTE format('UPDATE %s SET record = $2, deleted = $3 WHERE key = $1 AND deleted', TG_RELID::regclass)
      USING NEW.key, NEW.record, NEW.deleted;
    GET DIAGNOSTICS n = ROW_COUNT;
    IF n > 0 THEN RETURN NULL; END IF;
    NEW.stamp_time := wall;
  ELSE
    NEW.stamp_time := greatest(wall, OLD.stamp_time + 1);
  END IF;
  NEW.stamp_node := (SELECT node FROM tidelog_source_node);
  RETURN NEW;
END $$;

-- TG_ARGV[0]: the table's name as the change table files it.
CREATE OR REPLACE FUNCTION tidelog_source_capture_v1() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  IF coalesce(current_setting('tidelog.writer', true), '') = 'sink' THEN
    RETURN NULL;
  END IF;
  INSERT INTO tidelog_changes (pg_table, key, record, deleted, stamp_time, stamp_node)
    VALUES (TG_ARGV[0], NEW.key, NEW.record, NEW.deleted, NEW.stamp_time, NEW.stamp_node);
  PERFORM pg_notify('tidelog_changes', TG_ARGV[0]);
  RETURN NULL;
END $$;
"#;

/// `$1`: [`VERSION`].
pub const SET_VERSION: &str = "INSERT INTO tidelog_source_version (version) VALUES ($1)
  ON CONFLICT (one) DO UPDATE SET version = EXCLUDED.version";

/// The table of pg_layout.md, created if missing (`{t}`: the table).
pub fn create_table(t: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {t} (
  key        jsonb         NOT NULL PRIMARY KEY,
  record     jsonb,
  deleted    boolean       NOT NULL DEFAULT false,
  stamp_time bigint        NOT NULL,
  stamp_node numeric(20,0) NOT NULL
)"
    )
}

/// The three triggers on table `t`; `pk` and `name` are SQL literals.
pub fn create_triggers(t: &str, pk: &str, name: &str) -> String {
    format!(
        "CREATE OR REPLACE TRIGGER tidelog_source_lock BEFORE INSERT OR UPDATE OR DELETE ON {t}
  FOR EACH STATEMENT EXECUTE FUNCTION tidelog_source_lock_v1();
CREATE OR REPLACE TRIGGER tidelog_source_stamp BEFORE INSERT OR UPDATE OR DELETE ON {t}
  FOR EACH ROW EXECUTE FUNCTION tidelog_source_stamp_v1({pk}, {name});
CREATE OR REPLACE TRIGGER tidelog_source_capture AFTER INSERT OR UPDATE ON {t}
  FOR EACH ROW EXECUTE FUNCTION tidelog_source_capture_v1({name});"
    )
}

/// `$1`: a table; its columns and their types, to check against the layout.
pub const COLUMNS: &str = "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod)
  FROM pg_attribute a WHERE a.attrelid = $1::text::regclass AND a.attnum > 0 AND NOT a.attisdropped";

/// `$1`: a table as written; its schema-qualified name, the same for every
/// hub however each spells it.
pub const CANONICAL_NAME: &str = "SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname)
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = $1::text::regclass";

/// Whether every table of [`INSTALL_TABLES`] is there.
pub const SHARED_TABLES_EXIST: &str = "SELECT to_regclass('tidelog_source_version') IS NOT NULL
  AND to_regclass('tidelog_source_node') IS NOT NULL AND to_regclass('tidelog_changes') IS NOT NULL
  AND to_regclass('tidelog_source_progress') IS NOT NULL AND to_regclass('tidelog_source_trim') IS NOT NULL";

/// `$1`: table, `$2`: [`VERSION`], `$3`: the stamp trigger's call as
/// installed for this table. True when nothing needs (re)installing.
pub const INSTALLED: &str = "SELECT coalesce((SELECT version FROM tidelog_source_version), 0) = $2
  AND (SELECT count(*) FROM pg_trigger t WHERE t.tgrelid = $1::text::regclass
         AND t.tgname IN ('tidelog_source_lock', 'tidelog_source_capture')) = 2
  AND EXISTS (SELECT 1 FROM pg_trigger t WHERE t.tgrelid = $1::text::regclass
         AND t.tgname = 'tidelog_source_stamp' AND strpos(pg_get_triggerdef(t.oid), $3) > 0)";

/// `$1`: table, `$2`: after id, `$3`: limit. Ids are handed out in commit
/// order, so what is visible after `$2` is a gapless prefix to read.
pub const READ_CHANGES: &str =
    "SELECT id, key::text, record::text, deleted, stamp_time, stamp_node::text
  FROM tidelog_changes WHERE pg_table = $1 AND id > $2 ORDER BY id LIMIT $3";

/// `$1`: table. The newest change id and how far changes were trimmed.
pub const HEADS: &str =
    "SELECT (SELECT coalesce(max(id), 0) FROM tidelog_changes WHERE pg_table = $1),
  (SELECT coalesce(max(through), 0) FROM tidelog_source_trim WHERE pg_table = $1)";

/// `$1`: hub, `$2`: table, `$3`: applied through.
pub const SAVE_PROGRESS: &str = "INSERT INTO tidelog_source_progress (hub, pg_table, change_id, at)
  VALUES ($1, $2, $3, now())
  ON CONFLICT (hub, pg_table) DO UPDATE SET change_id = EXCLUDED.change_id, at = EXCLUDED.at";

/// `$1`: hub, `$2`: table. This hub's progress at how far changes are
/// trimmed now, before a reload: the changes after its snapshot stay.
pub const HOLD_TRIMS: &str = "INSERT INTO tidelog_source_progress (hub, pg_table, change_id, at)
  SELECT $1, $2, coalesce((SELECT max(through) FROM tidelog_source_trim WHERE pg_table = $2), 0), now()
  ON CONFLICT (hub, pg_table) DO UPDATE SET change_id = EXCLUDED.change_id, at = EXCLUDED.at";

/// `$1`: table, `$2`: max age in seconds, `$3`: max rows. Trims what every
/// hub has applied, and past the caps even what an absent hub has not (it
/// then finds its resume point below `through` and reloads). Returns the
/// number of changes deleted.
pub const TRIM: &str = "WITH cut AS (
  SELECT greatest(
    (SELECT coalesce(min(change_id), 0) FROM tidelog_source_progress WHERE pg_table = $1),
    (SELECT coalesce(max(id), 0) FROM tidelog_changes
       WHERE pg_table = $1 AND at < now() - make_interval(secs => $2::float8)),
    (SELECT coalesce(max(id), 0) - $3 FROM tidelog_changes WHERE pg_table = $1)
  ) AS through
), gone AS (
  DELETE FROM tidelog_changes WHERE pg_table = $1 AND id <= (SELECT through FROM cut) RETURNING id
), marked AS (
  INSERT INTO tidelog_source_trim (pg_table, through)
    SELECT $1, max(id) FROM gone HAVING count(*) > 0
  ON CONFLICT (pg_table) DO UPDATE SET through = greatest(tidelog_source_trim.through, EXCLUDED.through)
)
SELECT count(*) FROM gone";

/// `{t}`: the table. Every row, tombstones too, for a reload.
pub fn load_rows(t: &str) -> String {
    format!("SELECT key::text, record::text, deleted, stamp_time, stamp_node::text FROM {t}")
}
