package store

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/banger-dev/banger/internal/api"
)

func openTest(t testing.TB) *Store {
	t.Helper()
	s, err := Open(context.Background(), filepath.Join(t.TempDir(), "state", "banger.db"))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// wantErr fails unless err matches the sentinel and carries the api kind.
func wantErr(t testing.TB, err, sentinel error, kind api.ErrorKind) {
	t.Helper()
	if !errors.Is(err, sentinel) {
		t.Fatalf("error = %v, want %v", err, sentinel)
	}
	if !api.IsKind(err, kind) {
		t.Fatalf("error %v: api kind is not %s", err, kind)
	}
}

func TestPragmasOnEveryPooledConnection(t *testing.T) {
	s := openTest(t)
	ctx := context.Background()
	// Hold several connections at once so the pool must open distinct ones.
	for i := range 4 {
		c, err := s.db.Conn(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		var fk, busy int
		var mode string
		if err := c.QueryRowContext(ctx, `PRAGMA foreign_keys`).Scan(&fk); err != nil {
			t.Fatal(err)
		}
		if err := c.QueryRowContext(ctx, `PRAGMA busy_timeout`).Scan(&busy); err != nil {
			t.Fatal(err)
		}
		if err := c.QueryRowContext(ctx, `PRAGMA journal_mode`).Scan(&mode); err != nil {
			t.Fatal(err)
		}
		if fk != 1 || busy != int(busyTimeout.Milliseconds()) || mode != "wal" {
			t.Errorf("conn %d: foreign_keys=%d busy_timeout=%d journal_mode=%s", i, fk, busy, mode)
		}
	}
}

func TestReopenAfterClose(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "banger.db")
	s, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.PutSetting(ctx, "bridge", "banger0"); err != nil {
		t.Fatal(err)
	}
	v := VM{Name: "keep", State: "stopped"}
	if err := s.CreateVM(ctx, &v); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path + "-wal"); err != nil {
		t.Fatalf("WAL file missing while the store is open: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s, err = Open(ctx, path)
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	defer s.Close()
	if got, err := s.GetSetting(ctx, "bridge"); err != nil || got != "banger0" {
		t.Fatalf("setting after reopen = %q, %v", got, err)
	}
	if got, err := s.GetVM(ctx, v.ID); err != nil || got.Name != "keep" {
		t.Fatalf("vm after reopen = %+v, %v", got, err)
	}
	var n int
	if err := s.db.QueryRowContext(ctx, `SELECT count(*) FROM schema_migrations`).Scan(&n); err != nil || n != len(migrations) {
		t.Fatalf("schema_migrations rows after reopen = %d, %v; want %d", n, err, len(migrations))
	}
}

func TestOpenRejectsPathWithQuestionMark(t *testing.T) {
	_, err := Open(context.Background(), filepath.Join(t.TempDir(), "a?b.db"))
	if err == nil || !strings.Contains(err.Error(), "'?'") {
		t.Fatalf("Open = %v, want an error about '?'", err)
	}
}

func TestSettings(t *testing.T) {
	s := openTest(t)
	ctx := context.Background()
	_, err := s.GetSetting(ctx, "missing")
	wantErr(t, err, ErrNotFound, api.KindNotFound)
	for _, val := range []string{"one", "two"} {
		if err := s.PutSetting(ctx, "k", val); err != nil {
			t.Fatal(err)
		}
		if got, err := s.GetSetting(ctx, "k"); err != nil || got != val {
			t.Fatalf("GetSetting = %q, %v; want %q", got, err, val)
		}
	}
}

func TestTimeRoundTrip(t *testing.T) {
	if !fromNanos(toNanos(time.Time{})).IsZero() {
		t.Fatal("zero time does not survive storage")
	}
	local := time.Date(2026, 11, 28, 12, 0, 0, 123456789, time.FixedZone("x", 3600))
	if got := fromNanos(toNanos(local)); !got.Equal(local) || got.Location() != time.UTC {
		t.Fatalf("round trip = %v, want %v in UTC", got, local)
	}
}

// Concurrent writers must queue on the busy timeout, not fail.
func TestConcurrentWriters(t *testing.T) {
	s := openTest(t)
	ctx := context.Background()
	var wg sync.WaitGroup
	errs := make(chan error, 40)
	for i := range 40 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- s.PutSetting(ctx, "k"+string(rune('a'+i%26))+strings.Repeat("x", i/26), "v")
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
}
