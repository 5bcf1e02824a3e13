// Package opstate is a registry of long-running asynchronous operations
// (VM create, image build). An operation runs in a goroutine owned by the
// registry, reports its stage, progress and log lines, can be cancelled,
// and can be waited on. Every change is handed to a persistence callback
// so a restarted daemon can show what was interrupted.
package opstate

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"
)

// State is an operation's state.
type State string

const (
	Running   State = "running"
	Succeeded State = "succeeded"
	Failed    State = "failed"
	Cancelled State = "cancelled"
)

// Terminal reports whether the state is final.
func (s State) Terminal() bool { return s != Running }

// LogTailLines bounds the log kept per operation.
const LogTailLines = 200

// Snapshot is a copy of an operation's state at one moment.
type Snapshot struct {
	ID         string
	Kind       string
	Target     string
	State      State
	Stage      string
	Stages     []string
	Progress   float64
	Error      string
	Result     map[string]any
	LogTail    []string
	CreatedAt  time.Time
	UpdatedAt  time.Time
	FinishedAt time.Time
}

// Func is the body of an operation. It returns a result or an error; a
// body that observes ctx cancellation should return ctx.Err() after
// cleaning up what it made.
type Func func(ctx context.Context, op *Op) (map[string]any, error)

// Op is the handle an operation body uses to report.
type Op struct {
	r      *Registry
	id     string
	cancel context.CancelFunc
	done   chan struct{}

	mu      sync.Mutex
	snap    Snapshot
	changed chan struct{} // closed and replaced at every change
}

// Registry owns running operations.
type Registry struct {
	ctx     context.Context
	persist func(Snapshot)
	wg      sync.WaitGroup

	mu  sync.Mutex
	ops map[string]*Op
}

// New returns a registry whose operations stop when ctx ends. persist is
// called (synchronously, keep it short) with every change.
func New(ctx context.Context, persist func(Snapshot)) *Registry {
	if persist == nil {
		persist = func(Snapshot) {}
	}
	return &Registry{ctx: ctx, persist: persist, ops: map[string]*Op{}}
}

// ErrNotFound is returned for an id the registry does not hold.
var ErrNotFound = errors.New("operation not found")

// NewID returns a fresh operation id.
func NewID() string {
	b := make([]byte, 8)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// Begin starts fn and returns its first snapshot.
func (r *Registry) Begin(kind, target string, stages []string, fn Func) Snapshot {
	ctx, cancel := context.WithCancel(r.ctx)
	now := time.Now().UTC()
	op := &Op{r: r, id: NewID(), cancel: cancel, done: make(chan struct{}), changed: make(chan struct{})}
	op.snap = Snapshot{ID: op.id, Kind: kind, Target: target, State: Running,
		Stages: slices.Clone(stages), CreatedAt: now, UpdatedAt: now}
	if len(stages) > 0 {
		op.snap.Stage = stages[0]
	}
	r.mu.Lock()
	r.ops[op.id] = op
	r.mu.Unlock()
	first := op.Snapshot()
	r.persist(first)

	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		defer close(op.done)
		defer cancel()
		result, err := runProtected(ctx, op, fn)
		op.finish(ctx, result, err)
	}()
	return first
}

func runProtected(ctx context.Context, op *Op, fn Func) (res map[string]any, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("internal error: operation panicked: %v", p)
		}
	}()
	return fn(ctx, op)
}

func (op *Op) finish(ctx context.Context, result map[string]any, err error) {
	op.update(func(s *Snapshot) {
		s.FinishedAt = time.Now().UTC()
		switch {
		case err == nil:
			s.State = Succeeded
			s.Progress = 1
			s.Result = result
		case ctx.Err() != nil && errors.Is(err, context.Canceled):
			s.State = Cancelled
			s.Error = "cancelled"
		default:
			s.State = Failed
			s.Error = err.Error()
		}
	})
}

// ID returns the operation id.
func (op *Op) ID() string { return op.id }

// Snapshot returns a copy of the current state.
func (op *Op) Snapshot() Snapshot {
	op.mu.Lock()
	defer op.mu.Unlock()
	return copySnap(op.snap)
}

func copySnap(s Snapshot) Snapshot {
	s.Stages = slices.Clone(s.Stages)
	s.LogTail = slices.Clone(s.LogTail)
	return s
}

func (op *Op) update(f func(*Snapshot)) {
	op.mu.Lock()
	f(&op.snap)
	op.snap.UpdatedAt = time.Now().UTC()
	snap := copySnap(op.snap)
	close(op.changed)
	op.changed = make(chan struct{})
	op.mu.Unlock()
	op.r.persist(snap)
}

// Stage enters a named stage. When the stage is one of the declared
// stages, progress moves to the stage's start.
func (op *Op) Stage(name string) {
	op.update(func(s *Snapshot) {
		s.Stage = name
		if i := slices.Index(s.Stages, name); i >= 0 && len(s.Stages) > 0 {
			s.Progress = max(s.Progress, float64(i)/float64(len(s.Stages)))
		}
		s.LogTail = appendTail(s.LogTail, "==> "+name)
	})
}

// Progress sets overall progress in [0,1]. It never goes backwards.
func (op *Op) Progress(f float64) {
	f = min(max(f, 0), 1)
	op.update(func(s *Snapshot) { s.Progress = max(s.Progress, f) })
}

// Log appends a line to the bounded log tail.
func (op *Op) Log(line string) {
	op.update(func(s *Snapshot) { s.LogTail = appendTail(s.LogTail, line) })
}

// Logf is Log with formatting.
func (op *Op) Logf(format string, args ...any) { op.Log(fmt.Sprintf(format, args...)) }

func appendTail(tail []string, line string) []string {
	tail = append(tail, line)
	if len(tail) > LogTailLines {
		tail = slices.Clone(tail[len(tail)-LogTailLines:])
	}
	return tail
}

// Get returns an operation's snapshot.
func (r *Registry) Get(id string) (Snapshot, error) {
	op, err := r.op(id)
	if err != nil {
		return Snapshot{}, err
	}
	return op.Snapshot(), nil
}

func (r *Registry) op(id string) (*Op, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if op, ok := r.ops[id]; ok {
		return op, nil
	}
	return nil, ErrNotFound
}

// List returns snapshots of every operation the registry holds.
func (r *Registry) List() []Snapshot {
	r.mu.Lock()
	ops := make([]*Op, 0, len(r.ops))
	for _, op := range r.ops {
		ops = append(ops, op)
	}
	r.mu.Unlock()
	out := make([]Snapshot, len(ops))
	for i, op := range ops {
		out[i] = op.Snapshot()
	}
	slices.SortFunc(out, func(a, b Snapshot) int { return a.CreatedAt.Compare(b.CreatedAt) })
	return out
}

// Cancel asks an operation to stop and returns at once. Cancelling a
// finished operation is not an error.
func (r *Registry) Cancel(id string) (Snapshot, error) {
	op, err := r.op(id)
	if err != nil {
		return Snapshot{}, err
	}
	op.cancel()
	return op.Snapshot(), nil
}

// Wait blocks until the operation ends, or (when after is non-zero) until
// it changes after that time, or until ctx ends. It returns the latest
// snapshot; ctx ending is not an error so callers can long-poll.
func (r *Registry) Wait(ctx context.Context, id string, after time.Time) (Snapshot, error) {
	op, err := r.op(id)
	if err != nil {
		return Snapshot{}, err
	}
	for {
		op.mu.Lock()
		snap := copySnap(op.snap)
		changed := op.changed
		op.mu.Unlock()
		if snap.State.Terminal() || (!after.IsZero() && snap.UpdatedAt.After(after)) {
			return snap, nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return snap, nil
		}
	}
}

// Done returns a channel closed when the operation's goroutine returned.
func (r *Registry) Done(id string) (<-chan struct{}, error) {
	op, err := r.op(id)
	if err != nil {
		return nil, err
	}
	return op.done, nil
}

// Forget drops finished operations older than keep from memory (they
// remain in the store).
func (r *Registry) Forget(olderThan time.Duration) {
	cutoff := time.Now().Add(-olderThan)
	r.mu.Lock()
	defer r.mu.Unlock()
	for id, op := range r.ops {
		s := op.Snapshot()
		if s.State.Terminal() && s.FinishedAt.Before(cutoff) {
			delete(r.ops, id)
		}
	}
}

// Shutdown cancels every running operation and waits for their goroutines
// (and their cleanup) to finish, or for ctx to end.
func (r *Registry) Shutdown(ctx context.Context) error {
	r.mu.Lock()
	for _, op := range r.ops {
		op.cancel()
	}
	r.mu.Unlock()
	done := make(chan struct{})
	go func() { r.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
