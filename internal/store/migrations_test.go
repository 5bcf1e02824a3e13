package store

import (
	"context"
	"database/sql"
	"fmt"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"
)

func openRaw(t *testing.T) *sql.DB {
	t.Helper()
	db, err := sql.Open("sqlite", dsn(filepath.Join(t.TempDir(), "raw.db")))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// migrationFixtures[v-1] writes rows into the tables of schema version v and
// checks them after the database has been migrated to the latest version.
// Every migration must have one.
var migrationFixtures = []struct {
	seed  []string
	check string // returns one row: the expected value is "ok"
}{
	{
		seed: []string{
			`INSERT INTO images(id, name, rootfs, size_bytes, managed, created_at) VALUES ('img1', 'debian', '/r', 42, 1, 7)`,
			`INSERT INTO vms(id, name, state, image_id, cpus, handle, created_at) VALUES ('vm1', 'one', 'stopped', 'img1', 2, x'7b7d', 9)`,
			`INSERT INTO ip_allocations(ip, vm_id) VALUES ('10.0.0.2', 'vm1')`,
		},
		check: `SELECT CASE WHEN
			(SELECT name || size_bytes || managed || created_at FROM images WHERE id = 'img1') = 'debian4217'
			AND (SELECT name || state || image_id || cpus || CAST(handle AS TEXT) || created_at FROM vms WHERE id = 'vm1') = 'onestoppedimg12{}9'
			AND (SELECT vm_id FROM ip_allocations WHERE ip = '10.0.0.2') = 'vm1'
			THEN 'ok' ELSE 'lost' END`,
	},
	{
		seed: []string{
			`INSERT INTO operations(id, kind, state, stages, progress, created_at) VALUES ('op1', 'vm.create', 'running', '["a","b"]', 0.5, 3)`,
		},
		check: `SELECT CASE WHEN (SELECT kind || state || stages || progress || created_at FROM operations WHERE id = 'op1')
			= 'vm.createrunning["a","b"]0.53' THEN 'ok' ELSE 'lost' END`,
	},
	{
		seed:  []string{`INSERT INTO kv(key, value) VALUES ('bridge', 'banger0')`},
		check: `SELECT CASE WHEN (SELECT value FROM kv WHERE key = 'bridge') = 'banger0' THEN 'ok' ELSE 'lost' END`,
	},
	{
		seed: []string{
			`INSERT INTO images(id, name) VALUES ('img4', 'derived')`,
			`INSERT INTO image_lineage(image_id, parent_id, parent_name, source, scripts) VALUES ('img4', 'img1', 'debian', 'build', '[{"name":"a.sh"}]')`,
			`INSERT INTO vms(id, name, state, image_id) VALUES ('vm4', 'build-derived', 'creating', 'img4')`,
			`INSERT INTO build_vms(vm_id, image_id, image_name, created_at) VALUES ('vm4', 'img5', 'next', 11)`,
		},
		check: `SELECT CASE WHEN
			(SELECT parent_id || parent_name || source || scripts FROM image_lineage WHERE image_id = 'img4') = 'img1debianbuild[{"name":"a.sh"}]'
			AND (SELECT image_id || image_name || created_at FROM build_vms WHERE vm_id = 'vm4') = 'img5next11'
			THEN 'ok' ELSE 'lost' END`,
	},
	{
		seed: []string{
			`INSERT INTO vms(id, name, state) VALUES ('vm5', 'ws', 'running')`,
			`INSERT INTO workspaces(vm_id, guest_path, host_repo, repo_name, base_commit, branch, pushed_at, last_export, exported_to, export_head)
				VALUES ('vm5', '/home/banger/work/r', '/src/r', 'r', 'abc', 'main', 12, 13, 'banger/ws', 'def')`,
		},
		check: `SELECT CASE WHEN (SELECT guest_path || host_repo || repo_name || base_commit || branch || pushed_at || last_export || exported_to || export_head
			FROM workspaces WHERE vm_id = 'vm5') = '/home/banger/work/r/src/rrabcmain1213banger/wsdef' THEN 'ok' ELSE 'lost' END`,
	},
}

func TestEveryMigrationHasAFixture(t *testing.T) {
	if len(migrationFixtures) != len(migrations) {
		t.Fatalf("%d migrations but %d fixtures: add a fixture for each new migration", len(migrations), len(migrationFixtures))
	}
}

// For each k: apply migrations 1..k on a fresh database, write data valid at
// version k, migrate to the latest, and check all of it survived.
func TestMigrationsStepwise(t *testing.T) {
	ctx := context.Background()
	for k := 1; k <= len(migrations); k++ {
		t.Run(fmt.Sprintf("from_%d", k), func(t *testing.T) {
			db := openRaw(t)
			if err := migrate(ctx, db, k); err != nil {
				t.Fatalf("migrate to %d: %v", k, err)
			}
			if v, err := currentVersion(ctx, db); err != nil || v != k {
				t.Fatalf("version after migrating to %d = %d, %v", k, v, err)
			}
			for v := 1; v <= k && v <= len(migrationFixtures); v++ {
				for _, q := range migrationFixtures[v-1].seed {
					if _, err := db.ExecContext(ctx, q); err != nil {
						t.Fatalf("seed for version %d at version %d: %v", v, k, err)
					}
				}
			}
			if err := migrate(ctx, db, len(migrations)); err != nil {
				t.Fatalf("migrate %d -> latest: %v", k, err)
			}
			if v, err := currentVersion(ctx, db); err != nil || v != len(migrations) {
				t.Fatalf("version after full migration = %d, %v", v, err)
			}
			for v := 1; v <= k && v <= len(migrationFixtures); v++ {
				var got string
				if err := db.QueryRowContext(ctx, migrationFixtures[v-1].check).Scan(&got); err != nil || got != "ok" {
					t.Fatalf("data of version %d after migrating from %d: %q, %v", v, k, got, err)
				}
			}
		})
	}
}

func TestOpenRefusesNewerSchema(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "banger.db")
	s, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.db.ExecContext(ctx, `INSERT INTO schema_migrations(version, applied_at) VALUES (?, 0)`, len(migrations)+1); err != nil {
		t.Fatal(err)
	}
	s.Close()
	_, err = Open(ctx, path)
	if err == nil || !strings.Contains(err.Error(), "newer than this banger") {
		t.Fatalf("Open of a newer database = %v, want a 'newer' error", err)
	}
}

func TestFailedMigrationRollsBack(t *testing.T) {
	ctx := context.Background()
	db := openRaw(t)
	saved := migrations
	t.Cleanup(func() { migrations = saved })
	migrations = append(append([]string{}, saved...), `CREATE TABLE half(x INTEGER); SELECT no_such_function()`)
	if err := migrate(ctx, db, len(migrations)); err == nil {
		t.Fatal("a broken migration succeeded")
	}
	if v, err := currentVersion(ctx, db); err != nil || v != len(saved) {
		t.Fatalf("version after failed migration = %d, %v; want %d", v, err, len(saved))
	}
	var n int
	if err := db.QueryRowContext(ctx, `SELECT count(*) FROM sqlite_schema WHERE name = 'half'`).Scan(&n); err != nil || n != 0 {
		t.Fatalf("failed migration left its table behind (count %d, %v)", n, err)
	}
}

func TestLatestSchema(t *testing.T) {
	s := openTest(t)
	ctx := context.Background()
	want := map[string][]string{
		"schema_migrations": {"applied_at", "version"},
		"images": {"created_at", "description", "dir", "id", "initrd", "kernel", "kernel_args", "kernel_raw",
			"managed", "name", "recipe", "rootfs", "size_bytes", "work_seed"},
		"vms": {"accel", "capabilities", "cpus", "created_at", "disk_size_mib", "handle", "id", "image_id", "ip",
			"mac", "memory_mib", "name", "overlay", "pending_cpus", "pending_disk_size_mib", "pending_memory_mib",
			"started_at", "state", "state_reason", "tap", "updated_at", "vmm"},
		"ip_allocations": {"allocated_at", "ip", "vm_id"},
		"operations": {"created_at", "error", "finished_at", "id", "kind", "log_tail", "progress", "result",
			"stage", "stages", "state", "target", "updated_at"},
		"kv":            {"key", "value"},
		"image_lineage": {"build_log", "host_key_fingerprint", "image_id", "parent_id", "parent_name", "scripts", "source"},
		"build_vms":     {"created_at", "image_id", "image_name", "vm_id"},
		"workspaces": {"base_commit", "branch", "export_head", "exported_to", "guest_path", "host_repo", "last_export",
			"pushed_at", "repo_name", "vm_id"},
	}
	rows, err := s.db.QueryContext(ctx, `SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%'`)
	if err != nil {
		t.Fatal(err)
	}
	var tables []string
	for rows.Next() {
		var n string
		rows.Scan(&n)
		tables = append(tables, n)
	}
	rows.Close()
	sort.Strings(tables)
	var wantTables []string
	for n := range want {
		wantTables = append(wantTables, n)
	}
	sort.Strings(wantTables)
	if !reflect.DeepEqual(tables, wantTables) {
		t.Fatalf("tables = %v, want %v", tables, wantTables)
	}
	for table, cols := range want {
		got := columnNames(t, s.db, table)
		if !reflect.DeepEqual(got, cols) {
			t.Errorf("%s columns = %v, want %v", table, got, cols)
		}
	}

	type fk struct{ table, from, parent, to, onDelete string }
	var fks []fk
	for table := range want {
		rows, err := s.db.QueryContext(ctx, `SELECT "table", "from", "to", on_delete FROM pragma_foreign_key_list(?)`, table)
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			f := fk{table: table}
			if err := rows.Scan(&f.parent, &f.from, &f.to, &f.onDelete); err != nil {
				t.Fatal(err)
			}
			fks = append(fks, f)
		}
		rows.Close()
	}
	sort.Slice(fks, func(i, j int) bool { return fks[i].table < fks[j].table })
	wantFKs := []fk{
		{"build_vms", "vm_id", "vms", "id", "CASCADE"},
		{"image_lineage", "image_id", "images", "id", "CASCADE"},
		{"ip_allocations", "vm_id", "vms", "id", "CASCADE"},
		{"vms", "image_id", "images", "id", "RESTRICT"},
		{"workspaces", "vm_id", "vms", "id", "CASCADE"},
	}
	if !reflect.DeepEqual(fks, wantFKs) {
		t.Fatalf("foreign keys = %+v, want %+v", fks, wantFKs)
	}
}

func columnNames(t *testing.T, db *sql.DB, table string) []string {
	t.Helper()
	rows, err := db.Query(`SELECT name FROM pragma_table_info(?) ORDER BY name`, table)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var cols []string
	for rows.Next() {
		var c string
		if err := rows.Scan(&c); err != nil {
			t.Fatal(err)
		}
		cols = append(cols, c)
	}
	return cols
}
