"""SQL of the read-model tables in the ledger's Postgres schema."""

from ledger.store.postgres_schema import APP_ROLE, AUDITOR_ROLE, TENANT_ROWS
from projections.storage.base import Statements

#: The read models' tables.
TABLES = (
    "ledger_projectors",
    "ledger_read_models",
    "ledger_read_model_pages",
    "ledger_generations",
)

#: The owner of the store's tables, whom the read models' tables must belong to too: the
#: owner of a table bypasses its row-level security.
_STORE_OWNER = (
    "(SELECT relowner FROM pg_class WHERE oid = pg_catalog.to_regclass('ledger_events')::oid)"
)

#: True when the tables and their row-level security are all in place already, the
#: tables the store's owner's.
SCHEMA_READY = f"""
SELECT to_regclass('ledger_projectors') IS NOT NULL
   AND NOT EXISTS (SELECT FROM pg_class WHERE relnamespace = current_schema()::regnamespace
                   AND relname IN ({", ".join(f"'{t}'" for t in TABLES)})
                   AND relowner <> {_STORE_OWNER})
   AND (SELECT count(*) FROM pg_policies WHERE schemaname = current_schema()
        AND tablename = 'ledger_read_models') >= 2
   AND EXISTS (SELECT FROM information_schema.columns WHERE table_schema = current_schema()
               AND table_name = 'ledger_projectors' AND column_name = 'skipped')
   AND (SELECT count(*) FROM pg_policies WHERE schemaname = current_schema()
        AND tablename = 'ledger_read_model_pages') >= 2
   AND to_regclass('ledger_generations') IS NOT NULL
"""


#: Whether the login may make the tables (it may act as the owner of the store's), and
#: the tables that exist already but belong to someone else, with their owners.
MAY_MAKE = f"SELECT pg_catalog.pg_has_role(current_user, {_STORE_OWNER}, 'USAGE')"
FOREIGN_TABLES = f"""
SELECT relname, relowner::regrole::text FROM pg_class
WHERE relnamespace = current_schema()::regnamespace
  AND relname = ANY(%(tables)s::text[]) AND relowner <> {_STORE_OWNER}
ORDER BY relname
"""


def _tenant_reads(table: str) -> tuple[str, str]:
    """Isolation in the database (DESIGN.md invariant 4): the app role reads only the
    rows of ``table`` of the tenant of its transaction, the auditor every row; projector
    runners (the owner) write."""
    return (
        f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY",
        f"""
        DO $$ BEGIN
            IF NOT EXISTS (SELECT FROM pg_policies WHERE schemaname = current_schema()
                           AND tablename = '{table}') THEN
                CREATE POLICY {table}_tenant ON {table}
                    FOR SELECT TO {APP_ROLE} USING ({TENANT_ROWS});
                CREATE POLICY {table}_auditor ON {table}
                    FOR SELECT TO {AUDITOR_ROLE} USING (true);
            END IF;
        END $$
        """,
    )


#: Serialises concurrent creation of the tables (CREATE ... IF NOT EXISTS races).
SCHEMA_LOCK = "SELECT pg_advisory_xact_lock(7310582203991437)"

SCHEMA = (
    """
    CREATE TABLE IF NOT EXISTS ledger_projectors (
        name        text PRIMARY KEY,
        version     integer NOT NULL,
        generation  integer NOT NULL,
        tx_id       bigint NOT NULL,
        position    bigint NOT NULL,
        owner       text,
        lease_until timestamptz,
        updated_at  timestamptz
    )
    """,
    # Added after the first release: tables made before it get the column here.
    "ALTER TABLE ledger_projectors ADD COLUMN IF NOT EXISTS skipped bigint NOT NULL DEFAULT 0",
    """
    CREATE TABLE IF NOT EXISTS ledger_read_models (
        user_id    text NOT NULL,
        projection text NOT NULL,
        generation integer NOT NULL,
        key        text NOT NULL,
        doc        bytea NOT NULL,
        PRIMARY KEY (user_id, projection, generation, key)
    )
    """,
    *_tenant_reads("ledger_read_models"),
    # Added after the first release: the pages of items a paged read model moves out of
    # its documents (``projections.projector``).
    """
    CREATE TABLE IF NOT EXISTS ledger_read_model_pages (
        user_id    text NOT NULL,
        projection text NOT NULL,
        generation integer NOT NULL,
        key        text NOT NULL,
        page       integer NOT NULL,
        items      bytea NOT NULL,
        PRIMARY KEY (user_id, projection, generation, key, page)
    )
    """,
    *_tenant_reads("ledger_read_model_pages"),
    # Added after pages: the last generation handed out per read model (NEXT_GENERATION).
    """
    CREATE TABLE IF NOT EXISTS ledger_generations (
        projection text PRIMARY KEY,
        last_generation integer NOT NULL
    )
    """,
    f"""GRANT SELECT ON ledger_read_models, ledger_read_model_pages, ledger_projectors
        TO {APP_ROLE}, {AUDITOR_ROLE}""",
)

ROW_COLUMNS = "name, version, generation, tx_id, position, owner, lease_until, updated_at, skipped"

SELECT_ROW = f"SELECT {ROW_COLUMNS} FROM ledger_projectors WHERE name = %(name)s"
SELECT_ROWS = f"SELECT {ROW_COLUMNS} FROM ledger_projectors ORDER BY name"

#: The next generation of a read model: one above any it ever had, live or built (a
#: counter, seeded from the rows of tables made before it existed), so a build killed
#: half-way never shares its generation with a later one, nor with a first live row.
NEXT_GENERATION = """
INSERT INTO ledger_generations AS g (projection, last_generation)
SELECT %(projection)s, coalesce(max(generation), 0) + 1 FROM ledger_projectors
WHERE name IN (%(projection)s, %(build)s)
ON CONFLICT (projection) DO UPDATE
    SET last_generation = greatest(g.last_generation + 1, excluded.last_generation)
RETURNING last_generation
"""

CREATE_ROW = """
INSERT INTO ledger_projectors (name, version, generation, tx_id, position)
VALUES (%(name)s, %(version)s, %(generation)s, 0, 0)
ON CONFLICT (name) DO NOTHING
"""

#: A later release's row (a version above ``version``) is never taken by an earlier one.
CLAIM = f"""
UPDATE ledger_projectors
SET owner = %(owner)s, lease_until = clock_timestamp() + %(ttl)s * interval '1 second'
WHERE name = %(name)s
  AND (owner IS NULL OR owner = %(owner)s OR lease_until < clock_timestamp())
  AND version <= %(version)s
RETURNING {ROW_COLUMNS}
"""

RENEW = """
UPDATE ledger_projectors SET lease_until = clock_timestamp() + %(ttl)s * interval '1 second'
WHERE name = %(name)s AND owner = %(owner)s AND generation = %(generation)s
RETURNING name
"""

RELEASE = """
UPDATE ledger_projectors SET owner = NULL, lease_until = NULL
WHERE name = %(name)s AND owner = %(owner)s
"""

#: Whether the server can compress documents with lz4 (Postgres >= 14, built with it).
HAS_LZ4 = """
SELECT coalesce('lz4' = ANY(enumvals), false) FROM pg_settings
WHERE name = 'default_toast_compression'
"""

#: For the rest of the transaction: documents are compressed with lz4, several times
#: cheaper than the default pglz for the server (and to read back).
USE_LZ4 = "SELECT set_config('default_toast_compression', 'lz4', true)"

#: A commit of several projectors in ONE statement (so one implicit transaction, and
#: every parameter is built before it starts): each projector row moves from its
#: expected cursor to its new one only if it still has that generation, cursor and
#: owner (the fence), and a write's documents go in only if its row moved. Documents
#: refer to their write by ``which`` (1-based). Returns the writes that were applied.
COMMIT_WRITES = """
WITH w AS (
    SELECT * FROM unnest(
        %(names)b::text[], %(projections)b::text[], %(generations)b::integer[],
        %(tx_ids)b::bigint[], %(positions)b::bigint[],
        %(new_tx_ids)b::bigint[], %(new_positions)b::bigint[], %(skipped)b::bigint[]
    ) WITH ORDINALITY
      AS w(name, projection, generation, tx_id, position, new_tx, new_pos, skipped, i)
), moved AS (
    UPDATE ledger_projectors p
    SET tx_id = w.new_tx, position = w.new_pos, updated_at = clock_timestamp(),
        skipped = p.skipped + w.skipped,
        lease_until = clock_timestamp() + %(ttl)s * interval '1 second'
    FROM w
    WHERE p.name = w.name AND p.generation = w.generation AND p.owner = %(owner)s
      AND p.tx_id = w.tx_id AND p.position = w.position
    RETURNING w.i, w.projection, w.generation
), written AS (
    INSERT INTO ledger_read_models (user_id, projection, generation, key, doc)
    SELECT d.user_id, m.projection, m.generation, d.key, d.doc
    FROM unnest(%(which)b::bigint[], %(user_ids)b::text[], %(keys)b::text[], %(docs)b::bytea[])
         AS d(i, user_id, key, doc)
    JOIN moved m USING (i)
    ON CONFLICT (user_id, projection, generation, key) DO UPDATE SET doc = excluded.doc
), paged AS (
    INSERT INTO ledger_read_model_pages (user_id, projection, generation, key, page, items)
    SELECT g.user_id, m.projection, m.generation, g.key, g.page, g.items
    FROM unnest(%(page_which)b::bigint[], %(page_user_ids)b::text[], %(page_keys)b::text[],
                %(page_numbers)b::integer[], %(page_items)b::bytea[])
         AS g(i, user_id, key, page, items)
    JOIN moved m USING (i)
    ON CONFLICT (user_id, projection, generation, key, page) DO UPDATE SET items = excluded.items
)
SELECT i FROM moved
"""

#: Stored documents of several loads at once; keys refer to their load by ``which``.
LOAD_DOCS = """
WITH l AS (
    SELECT * FROM unnest(%(projections)b::text[], %(generations)b::integer[])
        WITH ORDINALITY AS l(projection, generation, i)
)
SELECT k.i, k.user_id, k.key, d.doc
FROM unnest(%(which)b::bigint[], %(user_ids)b::text[], %(keys)b::text[]) AS k(i, user_id, key)
JOIN l USING (i)
JOIN ledger_read_models d
  ON d.user_id = k.user_id AND d.projection = l.projection
 AND d.generation = l.generation AND d.key = k.key
"""

#: A document's head (page -1), then its last ``pages`` pages (NULL: all) in order: one
#: statement, one snapshot.
SELECT_DOC = """
SELECT -1 AS page, d.doc FROM ledger_read_models d
JOIN ledger_projectors p ON p.name = d.projection AND p.generation = d.generation
WHERE d.user_id = %(user_id)s AND d.projection = %(name)s AND d.key = %(key)s
UNION ALL
(SELECT g.page, g.items FROM ledger_read_model_pages g
 JOIN ledger_projectors p ON p.name = g.projection AND p.generation = g.generation
 WHERE g.user_id = %(user_id)s AND g.projection = %(name)s AND g.key = %(key)s
 ORDER BY g.page DESC LIMIT %(pages)s::integer)
ORDER BY page
"""

SCAN_DOCS = """
SELECT d.user_id, d.key, -1 AS page, d.doc FROM ledger_read_models d
JOIN ledger_projectors p ON p.name = d.projection AND p.generation = d.generation
WHERE d.projection = %(name)s AND (%(user_id)s::text IS NULL OR d.user_id = %(user_id)s)
UNION ALL
SELECT g.user_id, g.key, g.page, g.items FROM ledger_read_model_pages g
JOIN ledger_projectors p ON p.name = g.projection AND p.generation = g.generation
WHERE g.projection = %(name)s AND (%(user_id)s::text IS NULL OR g.user_id = %(user_id)s)
ORDER BY 1, 2, 3
"""

SELECT_PAGES = """
SELECT page, items FROM ledger_read_model_pages
WHERE user_id = %(user_id)s AND projection = %(name)s AND generation = %(generation)s
  AND key = %(key)s AND page = ANY(%(pages)s::integer[])
"""

#: Never down: a live row of a later version (swapped in by a later release meanwhile)
#: is left as it is, and nothing is returned.
SWAP_LIVE = """
INSERT INTO ledger_projectors (name, version, generation, tx_id, position, updated_at, skipped)
VALUES (%(name)s, %(version)s, %(generation)s, %(tx_id)s, %(position)s, clock_timestamp(),
    coalesce((SELECT skipped FROM ledger_projectors WHERE name = %(build)s), 0))
ON CONFLICT (name) DO UPDATE SET version = excluded.version,
    generation = excluded.generation, tx_id = excluded.tx_id,
    position = excluded.position, updated_at = excluded.updated_at,
    skipped = excluded.skipped
WHERE ledger_projectors.version <= excluded.version
RETURNING name
"""

DELETE_ROW = "DELETE FROM ledger_projectors WHERE name = %(name)s"
#: After a swap: the generations before it (never a later build's).
DELETE_OLDER_GENERATIONS = """
DELETE FROM ledger_read_models WHERE projection = %(name)s AND generation < %(generation)s
"""
DELETE_GENERATION = """
DELETE FROM ledger_read_models WHERE projection = %(projection)s AND generation = %(generation)s
"""
DELETE_OLDER_PAGES = """
DELETE FROM ledger_read_model_pages WHERE projection = %(name)s AND generation < %(generation)s
"""
DELETE_GENERATION_PAGES = """
DELETE FROM ledger_read_model_pages
WHERE projection = %(projection)s AND generation = %(generation)s
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
