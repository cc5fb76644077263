"""SQL of the read-model tables in a SQLite ledger file."""

from projections.storage.base import Statements

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
        updated_at  TEXT,
        skipped     INTEGER NOT NULL DEFAULT 0
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
    # The pages of items a paged read model (the conversation) moves out of its
    # documents (``projections.projector``).
    """
    CREATE TABLE IF NOT EXISTS ledger_read_model_pages (
        user_id    TEXT NOT NULL,
        projection TEXT NOT NULL,
        generation INTEGER NOT NULL,
        key        TEXT NOT NULL,
        page       INTEGER NOT NULL,
        items      BLOB NOT NULL,
        PRIMARY KEY (user_id, projection, generation, key, page)
    ) WITHOUT ROWID
    """,
    # The last generation handed out per read model (NEXT_GENERATION).
    """
    CREATE TABLE IF NOT EXISTS ledger_generations (
        projection TEXT PRIMARY KEY,
        last_generation INTEGER NOT NULL
    )
    """,
)

ROW_COLUMNS = "name, version, generation, tx_id, position, owner, lease_until, updated_at, skipped"

#: Tables made before ``skipped`` existed get it here (SQLite has no ADD COLUMN IF NOT
#: EXISTS: run when ``HAS_SKIPPED`` finds none).
HAS_SKIPPED = "SELECT count(*) FROM pragma_table_info('ledger_projectors') WHERE name = 'skipped'"
ADD_SKIPPED = "ALTER TABLE ledger_projectors ADD COLUMN skipped INTEGER NOT NULL DEFAULT 0"

SELECT_ROW = f"SELECT {ROW_COLUMNS} FROM ledger_projectors WHERE name = :name"
SELECT_ROWS = f"SELECT {ROW_COLUMNS} FROM ledger_projectors ORDER BY name"

#: The next generation of a read model: one above any it ever had, live or built (a
#: counter, seeded from the rows of tables made before it existed), so a build killed
#: half-way never shares its generation with a later one, nor with a first live row.
NEXT_GENERATION = """
INSERT INTO ledger_generations AS g (projection, last_generation)
SELECT :projection, coalesce(max(generation), 0) + 1 FROM ledger_projectors
WHERE name IN (:projection, :build)
ON CONFLICT (projection) DO UPDATE
    SET last_generation = max(g.last_generation + 1, excluded.last_generation)
RETURNING last_generation
"""

CREATE_ROW = """
INSERT INTO ledger_projectors (name, version, generation, tx_id, position)
VALUES (:name, :version, :generation, 0, 0)
ON CONFLICT (name) DO NOTHING
"""

#: A later release's row (a version above ``version``) is never taken by an earlier one.
CLAIM = f"""
UPDATE ledger_projectors SET owner = :owner, lease_until = :until
WHERE name = :name AND (owner IS NULL OR owner = :owner OR lease_until < :now)
  AND version <= :version
RETURNING {ROW_COLUMNS}
"""

RENEW = """
UPDATE ledger_projectors SET lease_until = :until
WHERE name = :name AND owner = :owner AND generation = :generation
RETURNING name
"""

RELEASE = """
UPDATE ledger_projectors SET owner = NULL, lease_until = NULL
WHERE name = :name AND owner = :owner
"""

ADVANCE = """
UPDATE ledger_projectors
SET tx_id = :new_tx, position = :new_pos, lease_until = :until, updated_at = :now,
    skipped = skipped + :skipped
WHERE name = :name AND generation = :generation AND owner = :owner
  AND tx_id = :tx_id AND position = :position
"""

UPSERT_DOC = """
INSERT INTO ledger_read_models (user_id, projection, generation, key, doc)
VALUES (?, ?, ?, ?, ?)
ON CONFLICT (user_id, projection, generation, key) DO UPDATE SET doc = excluded.doc
"""

UPSERT_PAGE = """
INSERT INTO ledger_read_model_pages (user_id, projection, generation, key, page, items)
VALUES (?, ?, ?, ?, ?, ?)
ON CONFLICT (user_id, projection, generation, key, page) DO UPDATE SET items = excluded.items
"""

#: Stored documents among wanted ``(user_id, key)`` pairs: ``{pairs}`` is
#: ``(?, ?), (?, ?), ...``, followed by the projection and generation. The wanted keys
#: drive the join, so each is one primary-key lookup.
LOAD_DOCS = """
WITH k(user_id, key) AS (VALUES {pairs})
SELECT k.user_id, k.key, d.doc FROM k
JOIN ledger_read_models d ON d.user_id = k.user_id AND d.key = k.key
WHERE d.projection = ? AND d.generation = ?
"""

#: A document's head (page -1), then its last ``:pages`` pages (-1: all) in order: one
#: statement, one snapshot.
SELECT_DOC = """
SELECT -1 AS page, d.doc FROM ledger_read_models d
JOIN ledger_projectors p ON p.name = d.projection AND p.generation = d.generation
WHERE d.user_id = :user_id AND d.projection = :name AND d.key = :key
UNION ALL
SELECT * FROM (
    SELECT g.page, g.items FROM ledger_read_model_pages g
    JOIN ledger_projectors p ON p.name = g.projection AND p.generation = g.generation
    WHERE g.user_id = :user_id AND g.projection = :name AND g.key = :key
    ORDER BY g.page DESC LIMIT :pages
)
ORDER BY page
"""

SCAN_DOCS = """
SELECT d.user_id, d.key, -1 AS page, d.doc FROM ledger_read_models d
JOIN ledger_projectors p ON p.name = d.projection AND p.generation = d.generation
WHERE d.projection = :name AND (:user_id IS NULL OR d.user_id = :user_id)
UNION ALL
SELECT g.user_id, g.key, g.page, g.items FROM ledger_read_model_pages g
JOIN ledger_projectors p ON p.name = g.projection AND p.generation = g.generation
WHERE g.projection = :name AND (:user_id IS NULL OR g.user_id = :user_id)
ORDER BY 1, 2, 3
"""

#: ``:pages`` is a JSON array of page numbers.
SELECT_PAGES = """
SELECT page, items FROM ledger_read_model_pages
WHERE user_id = :user_id AND projection = :name AND generation = :generation
  AND key = :key AND page IN (SELECT value FROM json_each(:pages))
"""

#: Never down: a live row of a later version (swapped in by a later release meanwhile)
#: is left as it is, and nothing is returned.
SWAP_LIVE = """
INSERT INTO ledger_projectors (name, version, generation, tx_id, position, updated_at, skipped)
VALUES (:name, :version, :generation, :tx_id, :position, :now,
    coalesce((SELECT skipped FROM ledger_projectors WHERE name = :build), 0))
ON CONFLICT (name) DO UPDATE SET version = excluded.version,
    generation = excluded.generation, tx_id = excluded.tx_id,
    position = excluded.position, updated_at = excluded.updated_at,
    skipped = excluded.skipped
WHERE ledger_projectors.version <= excluded.version
RETURNING name
"""

DELETE_ROW = "DELETE FROM ledger_projectors WHERE name = :name"
#: After a swap: the generations before it (never a later build's).
DELETE_OLDER_GENERATIONS = """
DELETE FROM ledger_read_models WHERE projection = :name AND generation < :generation
"""
DELETE_GENERATION = """
DELETE FROM ledger_read_models WHERE projection = :projection AND generation = :generation
"""
DELETE_OLDER_PAGES = """
DELETE FROM ledger_read_model_pages WHERE projection = :name AND generation < :generation
"""
DELETE_GENERATION_PAGES = """
DELETE FROM ledger_read_model_pages WHERE projection = :projection AND generation = :generation
"""

STATEMENTS = Statements(
    select_row=SELECT_ROW,
    select_rows=SELECT_ROWS,
    next_generation=NEXT_GENERATION,
    create_row=CREATE_ROW,
    claim=CLAIM,
    renew=RENEW,
    release=RELEASE,
    select_doc=SELECT_DOC,
    scan_docs=SCAN_DOCS,
    select_pages=SELECT_PAGES,
    swap_live=SWAP_LIVE,
    delete_row=DELETE_ROW,
    delete_older_generations=DELETE_OLDER_GENERATIONS,
    delete_generation=DELETE_GENERATION,
    delete_older_pages=DELETE_OLDER_PAGES,
    delete_generation_pages=DELETE_GENERATION_PAGES,
)
