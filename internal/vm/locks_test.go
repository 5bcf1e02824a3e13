package vm

import (
	"testing"

	"github.com/banger-dev/banger/internal/api"
)

func TestLocksConflict(t *testing.T) {
	l := NewLocks()
	unlock, err := l.TryLock("id1", "dev", "start")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.TryLock("id1", "dev", "stop"); !api.IsKind(err, api.KindBusy) {
		t.Fatalf("second lock: %v", err)
	}
	if _, err := l.TryLock("id2", "other", "stop"); err != nil {
		t.Fatalf("other VM must not conflict: %v", err)
	}
	unlock()
	unlock() // idempotent
	if _, err := l.TryLock("id1", "dev", "stop"); err != nil {
		t.Fatalf("after unlock: %v", err)
	}
}
