// Package store is banger's persistent state: VMs, images, asynchronous
// operations, IP allocations and a few daemon-level settings, kept in one
// SQLite database (pure-Go driver modernc.org/sqlite, WAL journal).
//
// Conventions:
//   - Every connection of the pool gets foreign_keys, busy_timeout and WAL
//     through the DSN's _pragma parameters; transactions begin IMMEDIATE so
//     concurrent writers queue on the busy timeout instead of failing on a
//     lock upgrade.
//   - Times are stored as INTEGER unix nanoseconds in UTC; 0 means the zero
//     time.Time and reads back as the zero value. Returned times are UTC.
//   - Empty strings are stored as empty text, not NULL, except an empty
//     vms.image_id, which is NULL so the foreign key to images does not apply.
//   - Store types are independent of the wire types in internal/api.
//
// Errors: domain failures match one of the sentinels below with errors.Is,
// and also wrap an *api.Error of a fitting kind so the RPC layer can map them
// without knowing the store.
package store

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/banger-dev/banger/internal/api"
)

// Sentinel errors. Match with errors.Is.
var (
	ErrNotFound  = errors.New("not found")
	ErrConflict  = errors.New("already exists")
	ErrInUse     = errors.New("in use")
	ErrAmbiguous = errors.New("ambiguous reference")
	ErrStale     = errors.New("state changed concurrently")
	ErrExhausted = errors.New("address pool exhausted")
)

// busyTimeout is how long a connection waits for another writer. Writes are
// small, so reaching it means something is wedged.
const busyTimeout = 5 * time.Second

// Store is a handle on the state database. It is safe for concurrent use.
type Store struct {
	db   *sql.DB
	path string
	now  func() time.Time // replaced in tests only
}

// Open opens (creating if needed) the database at path and migrates it to the
// latest schema. It refuses a database written by a newer banger.
func Open(ctx context.Context, path string) (*Store, error) {
	if path == "" {
		return nil, errors.New("open state database: empty path")
	}
	// Without a "file:" prefix the driver cuts the DSN at the first '?'.
	if strings.ContainsRune(path, '?') {
		return nil, fmt.Errorf("open state database %s: the path must not contain '?'; choose another state directory", path)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("open state database: create its directory: %w", err)
	}
	db, err := sql.Open("sqlite", dsn(path))
	if err != nil {
		return nil, fmt.Errorf("open state database %s: %w", path, err)
	}
	// WAL allows readers alongside the one writer; a handful of connections
	// is plenty for a single daemon.
	db.SetMaxOpenConns(8)
	db.SetMaxIdleConns(4)
	s := &Store{db: db, path: path, now: time.Now}
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("open state database %s: %w (check that the file is a SQLite database and writable)", path, err)
	}
	if err := migrate(ctx, db, len(migrations)); err != nil {
		db.Close()
		return nil, fmt.Errorf("open state database %s: %w", path, err)
	}
	return s, nil
}

func dsn(path string) string {
	return path + "?_txlock=immediate" +
		"&_pragma=busy_timeout(" + fmt.Sprint(busyTimeout.Milliseconds()) + ")" +
		"&_pragma=journal_mode(WAL)" +
		"&_pragma=foreign_keys(1)" +
		// NORMAL is durable across application crashes in WAL mode; only an
		// OS crash can lose the last transactions.
		"&_pragma=synchronous(NORMAL)"
}

// Close closes the database. Pending WAL content is checkpointed by SQLite.
func (s *Store) Close() error {
	return s.db.Close()
}

// Path returns the database file path.
func (s *Store) Path() string { return s.path }

// NewID returns a fresh random identifier (32 lowercase hex digits), the
// form the store generates when a record is created without an ID.
func NewID() string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic("store: crypto/rand failed: " + err.Error())
	}
	return hex.EncodeToString(b[:])
}

// storeError carries a sentinel for store callers and an *api.Error for the
// RPC layer; its message is the api error's.
type storeError struct {
	sentinel error
	wire     *api.Error
}

func (e *storeError) Error() string   { return e.wire.Error() }
func (e *storeError) Unwrap() []error { return []error{e.sentinel, e.wire} }

func newError(sentinel error, wire *api.Error) error {
	return &storeError{sentinel: sentinel, wire: wire}
}

func notFound(resource, ref string) error {
	return newError(ErrNotFound, api.NotFound(resource, ref))
}

func conflict(format string, args ...any) error {
	return newError(ErrConflict, api.Errorf(api.KindConflict, format, args...))
}

// constraintCode returns the extended SQLite result code of a constraint
// violation, or 0 when err is not one.
func constraintCode(err error) int {
	var se *sqlite.Error
	if errors.As(err, &se) && se.Code()&0xff == sqlite3.SQLITE_CONSTRAINT {
		return se.Code()
	}
	return 0
}

func isUniqueViolation(err error) bool {
	c := constraintCode(err)
	return c == sqlite3.SQLITE_CONSTRAINT_UNIQUE || c == sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY
}

func isForeignKeyViolation(err error) bool {
	switch constraintCode(err) {
	case sqlite3.SQLITE_CONSTRAINT_FOREIGNKEY:
		return true
	case sqlite3.SQLITE_CONSTRAINT_TRIGGER:
		// SQLite reports an ON DELETE RESTRICT refusal with the trigger
		// code; only the message tells it apart from a user trigger.
		return strings.Contains(err.Error(), "FOREIGN KEY constraint failed")
	}
	return false
}

// toNanos converts a time for storage; the zero time becomes 0.
func toNanos(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

// fromNanos is the inverse of toNanos.
func fromNanos(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n).UTC()
}

// nowUTC is the store's clock, truncated to what survives a round trip.
func (s *Store) nowUTC() time.Time {
	return s.now().UTC().Round(0)
}

func nullString(v string) any {
	if v == "" {
		return nil
	}
	return v
}

func nullBytes(b []byte) any {
	if b == nil {
		return nil
	}
	return b
}

// scanner is satisfied by *sql.Row and *sql.Rows.
type scanner interface {
	Scan(dest ...any) error
}

// minPrefix is the shortest ID prefix accepted by the Find methods; shorter
// ones match too much to be a deliberate reference.
const minPrefix = 4

// resolveID turns a reference into an ID: an exact name (when the table has a
// name column), an exact ID, else a unique ID prefix of at least minPrefix.
func (s *Store) resolveID(ctx context.Context, table, resource, ref string, hasName bool) (string, error) {
	if ref == "" {
		return "", notFound(resource, ref)
	}
	nameMatch := "0"
	if hasName {
		nameMatch = "name = ?1"
	}
	// Exact matches sort first; LIMIT 2 is enough to tell a unique prefix
	// from an ambiguous one.
	q := fmt.Sprintf(`SELECT id, %[2]s AS by_name, id = ?1 AS by_id FROM %[1]s
		WHERE %[2]s OR id = ?1 OR (length(?1) >= %[3]d AND substr(id, 1, length(?1)) = ?1)
		ORDER BY by_name DESC, by_id DESC, id LIMIT 2`, table, nameMatch, minPrefix)
	rows, err := s.db.QueryContext(ctx, q, ref)
	if err != nil {
		return "", fmt.Errorf("find %s %q: %w", resource, ref, err)
	}
	defer rows.Close()
	var ids []string
	exact := false
	for rows.Next() {
		var id string
		var byName, byID bool
		if err := rows.Scan(&id, &byName, &byID); err != nil {
			return "", fmt.Errorf("find %s %q: %w", resource, ref, err)
		}
		if len(ids) == 0 && (byName || byID) {
			exact = true
		}
		ids = append(ids, id)
	}
	if err := rows.Err(); err != nil {
		return "", fmt.Errorf("find %s %q: %w", resource, ref, err)
	}
	switch {
	case len(ids) == 0:
		return "", notFound(resource, ref)
	case exact || len(ids) == 1:
		return ids[0], nil
	default:
		return "", newError(ErrAmbiguous, api.Errorf(api.KindInvalidInput,
			"%s id prefix %q matches more than one %s", resource, ref, resource).
			WithHint("give more characters of the id, or the name"))
	}
}
