"""SQL of the read-model tables in the ledger's Postgres schema."""

from ledger.store.postgres_schema import APP_ROLE, AUDITOR_ROLE, TENANT_SETTING

_TENANT = f"user_id = current_setting('{TENANT_SETTING}', true)"

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
    # Isolation in the database (DESIGN.md invariant 4): the app role reads only the
    # documents of the tenant of its transaction; projector runners (the owner) write.
    "ALTER TABLE ledger_read_models ENABLE ROW LEVEL SECURITY",
    f"""
    DO $$ BEGIN
        IF NOT EXISTS (SELECT FROM pg_policies WHERE schemaname = current_schema()
                       AND tablename = 'ledger_read_models') THEN
            CREATE POLICY ledger_read_models_tenant ON ledger_read_models
                FOR SELECT TO {APP_ROLE} USING ({_TENANT});
            CREATE POLICY ledger_read_models_auditor ON ledger_read_models
                FOR SELECT TO {AUDITOR_ROLE} USING (true);
        END IF;
    END $$
    """,
    f"GRANT SELECT ON ledger_read_models, ledger_projectors TO {APP_ROLE}, {AUDITOR_ROLE}",
)

ROW_COLUMNS = "name, version, generation, tx_id, position, owner, lease_until, updated_at"

SELECT_ROW = f"SELECT {ROW_COLUMNS} FROM ledger_projectors WHERE name = %(name)s"
SELECT_ROWS = f"SELECT {ROW_COLUMNS} FROM ledger_projectors ORDER BY name"

CREATE_ROW = """
INSERT INTO ledger_projectors (name, version, generation, tx_id, position)
VALUES (%(name)s, %(version)s, coalesce(
    (SELECT generation + 1 FROM ledger_projectors WHERE name = %(live)s AND %(live)s <> %(name)s),
    1), 0, 0)
ON CONFLICT (name) DO NOTHING
"""

CLAIM = f"""
UPDATE ledger_projectors
SET owner = %(owner)s, lease_until = clock_timestamp() + %(ttl)s * interval '1 second'
WHERE name = %(name)s
  AND (owner IS NULL OR owner = %(owner)s OR lease_until < clock_timestamp())
RETURNING {ROW_COLUMNS}
"""

RELEASE = """
UPDATE ledger_projectors SET owner = NULL, lease_until = NULL
WHERE name = %(name)s AND owner = %(owner)s
"""

ADVANCE = """
UPDATE ledger_projectors
SET tx_id = %(new_tx)s, position = %(new_pos)s, updated_at = clock_timestamp(),
    lease_until = clock_timestamp() + %(ttl)s * interval '1 second'
WHERE name = %(name)s AND generation = %(generation)s AND owner = %(owner)s
  AND tx_id = %(tx_id)s AND position = %(position)s
"""

UPSERT_DOCS = """
INSERT INTO ledger_read_models (user_id, projection, generation, key, doc)
SELECT u, %(projection)s, %(generation)s, k, d
FROM unnest(%(user_ids)s::text[], %(keys)s::text[], %(docs)s::bytea[]) AS t(u, k, d)
ON CONFLICT (user_id, projection, generation, key) DO UPDATE SET doc = excluded.doc
"""

LOAD_DOCS = """
SELECT d.user_id, d.key, d.doc FROM ledger_read_models d
JOIN unnest(%(user_ids)s::text[], %(keys)s::text[]) AS w(u, k)
  ON d.user_id = w.u AND d.key = w.k
WHERE d.projection = %(projection)s AND d.generation = %(generation)s
"""

SELECT_DOC = """
SELECT d.doc FROM ledger_read_models d
JOIN ledger_projectors p ON p.name = d.projection AND p.generation = d.generation
WHERE d.user_id = %(user_id)s AND d.projection = %(name)s AND d.key = %(key)s
"""

SCAN_DOCS = """
SELECT d.user_id, d.key, d.doc FROM ledger_read_models d
JOIN ledger_projectors p ON p.name = d.projection AND p.generation = d.generation
WHERE d.projection = %(name)s AND (%(user_id)s::text IS NULL OR d.user_id = %(user_id)s)
ORDER BY d.user_id, d.key
"""

SWAP_LIVE = """
INSERT INTO ledger_projectors (name, version, generation, tx_id, position, updated_at)
VALUES (%(name)s, %(version)s, %(generation)s, %(tx_id)s, %(position)s, clock_timestamp())
ON CONFLICT (name) DO UPDATE SET version = excluded.version,
    generation = excluded.generation, tx_id = excluded.tx_id,
    position = excluded.position, updated_at = excluded.updated_at
"""

DELETE_ROW = "DELETE FROM ledger_projectors WHERE name = %(name)s"
DELETE_OTHER_GENERATIONS = """
DELETE FROM ledger_read_models WHERE projection = %(name)s AND generation <> %(generation)s
"""
DELETE_GENERATION = """
DELETE FROM ledger_read_models WHERE projection = %(projection)s AND generation = %(generation)s
"""
