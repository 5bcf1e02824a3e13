package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// migrations are applied in order; migration i (0-based) brings the schema
// to version i+1. Never edit or reorder a released entry: append a new one.
// DDL is transactional in SQLite, so each runs in its own transaction. A
// migration that rebuilds a table cannot toggle foreign_keys inside that
// transaction; follow SQLite's 12-step ALTER procedure and rely on the
// foreign_key_check run before each commit.
var migrations = []string{
	// 1: images, VMs and their IP allocations.
	`CREATE TABLE images (
		id          TEXT PRIMARY KEY,
		name        TEXT NOT NULL UNIQUE,
		kernel      TEXT NOT NULL DEFAULT '',
		kernel_raw  TEXT NOT NULL DEFAULT '',
		initrd      TEXT NOT NULL DEFAULT '',
		rootfs      TEXT NOT NULL DEFAULT '',
		work_seed   TEXT NOT NULL DEFAULT '',
		kernel_args TEXT NOT NULL DEFAULT '',
		recipe      TEXT NOT NULL DEFAULT '',
		description TEXT NOT NULL DEFAULT '',
		size_bytes  INTEGER NOT NULL DEFAULT 0,
		managed     INTEGER NOT NULL DEFAULT 0,
		dir         TEXT NOT NULL DEFAULT '',
		created_at  INTEGER NOT NULL DEFAULT 0
	) STRICT;

	CREATE TABLE vms (
		id                    TEXT PRIMARY KEY,
		name                  TEXT NOT NULL UNIQUE,
		state                 TEXT NOT NULL,
		state_reason          TEXT NOT NULL DEFAULT '',
		image_id              TEXT REFERENCES images(id) ON DELETE RESTRICT,
		vmm                   TEXT NOT NULL DEFAULT '',
		cpus                  INTEGER NOT NULL DEFAULT 0,
		memory_mib            INTEGER NOT NULL DEFAULT 0,
		disk_size_mib         INTEGER NOT NULL DEFAULT 0,
		pending_cpus          INTEGER NOT NULL DEFAULT 0,
		pending_memory_mib    INTEGER NOT NULL DEFAULT 0,
		pending_disk_size_mib INTEGER NOT NULL DEFAULT 0,
		ip                    TEXT NOT NULL DEFAULT '',
		mac                   TEXT NOT NULL DEFAULT '',
		tap                   TEXT NOT NULL DEFAULT '',
		overlay               TEXT NOT NULL DEFAULT '',
		accel                 TEXT NOT NULL DEFAULT '',
		handle                BLOB,
		capabilities          BLOB,
		created_at            INTEGER NOT NULL DEFAULT 0,
		updated_at            INTEGER NOT NULL DEFAULT 0,
		started_at            INTEGER NOT NULL DEFAULT 0
	) STRICT;
	CREATE INDEX vms_state ON vms(state);
	CREATE INDEX vms_image_id ON vms(image_id);

	CREATE TABLE ip_allocations (
		ip           TEXT PRIMARY KEY,
		vm_id        TEXT NOT NULL UNIQUE REFERENCES vms(id) ON DELETE CASCADE,
		allocated_at INTEGER NOT NULL DEFAULT 0
	) STRICT;`,

	// 2: asynchronous operations (VM create, image build).
	`CREATE TABLE operations (
		id          TEXT PRIMARY KEY,
		kind        TEXT NOT NULL,
		target      TEXT NOT NULL DEFAULT '',
		state       TEXT NOT NULL,
		stage       TEXT NOT NULL DEFAULT '',
		stages      TEXT NOT NULL DEFAULT '[]',
		progress    REAL NOT NULL DEFAULT 0,
		error       TEXT NOT NULL DEFAULT '',
		result      BLOB,
		log_tail    TEXT NOT NULL DEFAULT '[]',
		created_at  INTEGER NOT NULL DEFAULT 0,
		updated_at  INTEGER NOT NULL DEFAULT 0,
		finished_at INTEGER NOT NULL DEFAULT 0
	) STRICT;
	CREATE INDEX operations_state ON operations(state);
	CREATE INDEX operations_created_at ON operations(created_at);`,

	// 3: daemon-level facts.
	`CREATE TABLE kv (
		key   TEXT PRIMARY KEY,
		value TEXT NOT NULL
	) STRICT;`,

	// 4: image lineage (parent, provisioning scripts, build log, the host
	// key fingerprint of the build VM) and the transient VMs that build
	// images, so a restarted daemon can remove the leftovers of a build.
	// parent_id has no foreign key: a parent outlives its record only in
	// name, and image rm checks file users itself.
	`CREATE TABLE image_lineage (
		image_id             TEXT PRIMARY KEY REFERENCES images(id) ON DELETE CASCADE,
		parent_id            TEXT NOT NULL DEFAULT '',
		parent_name          TEXT NOT NULL DEFAULT '',
		source               TEXT NOT NULL DEFAULT '',
		scripts              TEXT NOT NULL DEFAULT '[]',
		build_log            TEXT NOT NULL DEFAULT '',
		host_key_fingerprint TEXT NOT NULL DEFAULT ''
	) STRICT;
	CREATE INDEX image_lineage_parent ON image_lineage(parent_id);

	CREATE TABLE build_vms (
		vm_id      TEXT PRIMARY KEY REFERENCES vms(id) ON DELETE CASCADE,
		image_id   TEXT NOT NULL,
		image_name TEXT NOT NULL,
		created_at INTEGER NOT NULL DEFAULT 0
	) STRICT;`,

	// 5: workspaces: the host repository copied into a VM (one per VM),
	// its base commit and guest path, and the last export.
	`CREATE TABLE workspaces (
		vm_id        TEXT PRIMARY KEY REFERENCES vms(id) ON DELETE CASCADE,
		guest_path   TEXT NOT NULL,
		host_repo    TEXT NOT NULL DEFAULT '',
		repo_name    TEXT NOT NULL DEFAULT '',
		base_commit  TEXT NOT NULL,
		branch       TEXT NOT NULL DEFAULT '',
		pushed_at    INTEGER NOT NULL DEFAULT 0,
		last_export  INTEGER NOT NULL DEFAULT 0,
		exported_to  TEXT NOT NULL DEFAULT '',
		export_head  TEXT NOT NULL DEFAULT ''
	) STRICT;`,
}

// SchemaVersion is the schema version this binary writes.
func SchemaVersion() int { return len(migrations) }

const createMigrationsTable = `CREATE TABLE IF NOT EXISTS schema_migrations (
	version    INTEGER PRIMARY KEY,
	applied_at INTEGER NOT NULL
) STRICT`

// currentVersion returns the highest applied migration, 0 for a new database.
func currentVersion(ctx context.Context, q interface {
	QueryRowContext(context.Context, string, ...any) *sql.Row
}) (int, error) {
	var v int
	err := q.QueryRowContext(ctx, `SELECT coalesce(max(version), 0) FROM schema_migrations`).Scan(&v)
	return v, err
}

// migrate brings db to schema version target (tests use targets below the
// latest). It refuses a database that is already newer than the binary.
func migrate(ctx context.Context, db *sql.DB, target int) error {
	if _, err := db.ExecContext(ctx, createMigrationsTable); err != nil {
		return fmt.Errorf("create schema_migrations: %w", err)
	}
	have, err := currentVersion(ctx, db)
	if err != nil {
		return fmt.Errorf("read schema version: %w", err)
	}
	if have > len(migrations) {
		return fmt.Errorf("database schema version %d is newer than this banger understands (%d): "+
			"run the banger release that wrote it, or move the state directory aside", have, len(migrations))
	}
	for v := have + 1; v <= target; v++ {
		if err := applyMigration(ctx, db, v); err != nil {
			return err
		}
	}
	return nil
}

func applyMigration(ctx context.Context, db *sql.DB, version int) (err error) {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("migration %d: begin: %w", version, err)
	}
	defer func() {
		if err != nil {
			tx.Rollback()
		}
	}()
	// Another process may have migrated between our read and this
	// (IMMEDIATE, hence exclusive-writer) transaction.
	have, err := currentVersion(ctx, tx)
	if err != nil {
		return fmt.Errorf("migration %d: read schema version: %w", version, err)
	}
	if have >= version {
		return tx.Commit()
	}
	if _, err := tx.ExecContext(ctx, migrations[version-1]); err != nil {
		return fmt.Errorf("migration %d: %w", version, err)
	}
	if err := foreignKeyCheck(ctx, tx); err != nil {
		return fmt.Errorf("migration %d: %w", version, err)
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO schema_migrations(version, applied_at) VALUES (?, ?)`,
		version, time.Now().UnixNano()); err != nil {
		return fmt.Errorf("migration %d: record: %w", version, err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("migration %d: commit: %w", version, err)
	}
	return nil
}

func foreignKeyCheck(ctx context.Context, tx *sql.Tx) error {
	rows, err := tx.QueryContext(ctx, `PRAGMA foreign_key_check`)
	if err != nil {
		return fmt.Errorf("foreign key check: %w", err)
	}
	defer rows.Close()
	if rows.Next() {
		return errors.New("foreign key check: the migration left rows that reference missing parents")
	}
	return rows.Err()
}
