"""SQL of the read-model tables in a SQLite ledger file."""

SCHEMA = (
    """
    CREATE TABLE IF NOT EXISTS ledger_projectors (
        name        TEXT PRIMARY KEY,
        version     INTEGER NOT NULL,
        generation  INTEGER NOT NULL,
        tx_id       INTEGER NOT NULL,
        position    INTEGER NOT NULL,
        owner       TEXT,
        lease_until TEXT,
        updated_at  TEXT
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS ledger_read_models (
        user_id    TEXT NOT NULL,
        projection TEXT NOT NULL,
        generation INTEGER NOT NULL,
        key        TEXT NOT NULL,
        doc        BLOB NOT NULL,
        PRIMARY KEY (user_id, projection, generation, key)
    ) WITHOUT ROWID
    """,
)

ROW_COLUMNS = "name, version, generation, tx_id, position, owner, lease_until, updated_at"

SELECT_ROW = f"SELECT {ROW_COLUMNS} FROM ledger_projectors WHERE name = ?"
SELECT_ROWS = f"SELECT {ROW_COLUMNS} FROM ledger_projectors ORDER BY name"

CREATE_ROW = """
INSERT INTO ledger_projectors (name, version, generation, tx_id, position)
VALUES (?, ?, ?, 0, 0) ON CONFLICT (name) DO NOTHING
"""

CLAIM = """
UPDATE ledger_projectors SET owner = :owner, lease_until = :until
WHERE name = :name AND (owner IS NULL OR owner = :owner OR lease_until < :now)
"""

RELEASE = """
UPDATE ledger_projectors SET owner = NULL, lease_until = NULL WHERE name = ? AND owner = ?
"""

ADVANCE = """
UPDATE ledger_projectors
SET tx_id = :new_tx, position = :new_pos, lease_until = :until, updated_at = :now
WHERE name = :name AND generation = :generation AND owner = :owner
  AND tx_id = :tx_id AND position = :position
"""

UPSERT_DOC = """
INSERT INTO ledger_read_models (user_id, projection, generation, key, doc)
VALUES (?, ?, ?, ?, ?)
ON CONFLICT (user_id, projection, generation, key) DO UPDATE SET doc = excluded.doc
"""

#: Followed by "(?, ?), (?, ?), ..." - the (user_id, key) pairs wanted.
LOAD_DOCS = """
SELECT user_id, key, doc FROM ledger_read_models
WHERE projection = ? AND generation = ? AND (user_id, key) IN (VALUES"""

SELECT_DOC = """
SELECT d.doc FROM ledger_read_models d
JOIN ledger_projectors p ON p.name = d.projection AND p.generation = d.generation
WHERE d.user_id = ? AND d.projection = ? AND d.key = ?
"""

SCAN_DOCS = """
SELECT d.user_id, d.key, d.doc FROM ledger_read_models d
JOIN ledger_projectors p ON p.name = d.projection AND p.generation = d.generation
WHERE d.projection = :name AND (:user_id IS NULL OR d.user_id = :user_id)
ORDER BY d.user_id, d.key
"""

SWAP_LIVE = """
INSERT INTO ledger_projectors (name, version, generation, tx_id, position, updated_at)
VALUES (:name, :version, :generation, :tx_id, :position, :now)
ON CONFLICT (name) DO UPDATE SET version = excluded.version,
    generation = excluded.generation, tx_id = excluded.tx_id,
    position = excluded.position, updated_at = excluded.updated_at
"""

DELETE_ROW = "DELETE FROM ledger_projectors WHERE name = ?"
DELETE_OTHER_GENERATIONS = """
DELETE FROM ledger_read_models WHERE projection = ? AND generation <> ?
"""
DELETE_GENERATION = "DELETE FROM ledger_read_models WHERE projection = ? AND generation = ?"
