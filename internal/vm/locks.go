package vm

import (
	"sync"

	"github.com/banger-dev/banger/internal/api"
)

// Locks is the per-VM lock set. Every operation that changes one VM holds
// its lock for the whole operation; a second conflicting operation fails
// fast with a busy error instead of queueing behind a minutes-long boot.
//
// Lock order (see ARCHITECTURE.md): a VM lock is taken before any
// subsystem lock (TAP pool, store transaction, op registry) and at most
// one VM lock is held at a time.
type Locks struct {
	mu   sync.Mutex
	held map[string]string // vm id -> what holds it
}

// NewLocks returns an empty lock set.
func NewLocks() *Locks { return &Locks{held: map[string]string{}} }

// TryLock takes the lock for id on behalf of op, or returns a busy error
// naming the operation that holds it. The returned func releases it.
func (l *Locks) TryLock(id, name, op string) (func(), error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if holder, ok := l.held[id]; ok {
		return nil, api.Errorf(api.KindBusy, "VM %q is busy: %s in progress", name, holder).
			WithHint("wait for it to finish (banger op ls) and retry")
	}
	l.held[id] = op
	var once sync.Once
	return func() {
		once.Do(func() {
			l.mu.Lock()
			delete(l.held, id)
			l.mu.Unlock()
		})
	}, nil
}

// Holder returns the operation holding id's lock, if any.
func (l *Locks) Holder(id string) (string, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	h, ok := l.held[id]
	return h, ok
}
