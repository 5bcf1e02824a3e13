package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/banger-dev/banger/internal/api"
	"github.com/banger-dev/banger/internal/opstate"
	"github.com/banger-dev/banger/internal/store"
)

// opPersister writes operation snapshots to the store. Log lines can
// arrive hundreds per second during an image build, so intermediate
// snapshots are written at most once a second per op; stage and state
// changes are always written.
type opPersister struct {
	store *store.Store
	log   *slog.Logger

	mu   sync.Mutex
	last map[string]persistMark
}

type persistMark struct {
	at    time.Time
	stage string
}

func (p *opPersister) save(s opstate.Snapshot) {
	p.mu.Lock()
	m := p.last[s.ID]
	due := s.State.Terminal() || s.Stage != m.stage || time.Since(m.at) > time.Second
	if due {
		p.last[s.ID] = persistMark{at: time.Now(), stage: s.Stage}
		if s.State.Terminal() {
			delete(p.last, s.ID)
		}
	}
	p.mu.Unlock()
	if !due {
		return
	}
	op := snapToStore(s)
	if err := p.store.PutOperation(context.Background(), &op); err != nil {
		p.log.Warn("persist operation", "op", s.ID, "err", err)
	}
}

func snapToStore(s opstate.Snapshot) store.Operation {
	res, _ := json.Marshal(s.Result)
	if s.Result == nil {
		res = nil
	}
	return store.Operation{ID: s.ID, Kind: s.Kind, Target: s.Target, State: string(s.State), Stage: s.Stage,
		Error: s.Error, Stages: s.Stages, Progress: s.Progress, Result: res, LogTail: s.LogTail,
		CreatedAt: s.CreatedAt, UpdatedAt: s.UpdatedAt, FinishedAt: s.FinishedAt}
}

func snapToWire(s opstate.Snapshot) api.Operation {
	return api.Operation{ID: s.ID, Kind: s.Kind, Target: s.Target, State: api.OpState(s.State), Stage: s.Stage,
		Stages: s.Stages, Progress: s.Progress, Error: s.Error, Result: s.Result, LogTail: s.LogTail,
		CreatedAt: s.CreatedAt, UpdatedAt: s.UpdatedAt, FinishedAt: s.FinishedAt}
}

func storeToWire(o store.Operation) api.Operation {
	var res map[string]any
	if len(o.Result) > 0 {
		_ = json.Unmarshal(o.Result, &res)
	}
	return api.Operation{ID: o.ID, Kind: o.Kind, Target: o.Target, State: api.OpState(o.State), Stage: o.Stage,
		Stages: o.Stages, Progress: o.Progress, Error: o.Error, Result: res, LogTail: o.LogTail,
		CreatedAt: o.CreatedAt, UpdatedAt: o.UpdatedAt, FinishedAt: o.FinishedAt}
}

// opService answers op.* from the live registry, falling back to the
// store for operations of earlier daemon runs.
type opService struct {
	reg   *opstate.Registry
	store *store.Store
}

// resolve maps a (possibly abbreviated) id to a full one.
func (o *opService) resolve(ctx context.Context, ref string) (string, error) {
	if ref == "" {
		return "", api.Errorf(api.KindInvalidInput, "no operation given")
	}
	if _, err := o.reg.Get(ref); err == nil {
		return ref, nil
	}
	for _, s := range o.reg.List() {
		if len(ref) >= 4 && len(s.ID) > len(ref) && s.ID[:len(ref)] == ref {
			return s.ID, nil
		}
	}
	op, err := o.store.FindOperation(ctx, ref)
	if err != nil {
		return "", err
	}
	return op.ID, nil
}

func (o *opService) List(ctx context.Context, p api.OpListParams) (api.OpListResult, error) {
	limit := 50
	if p.All {
		limit = 0
	}
	stored, err := o.store.ListOperations(ctx, limit)
	if err != nil {
		return api.OpListResult{}, err
	}
	live := map[string]opstate.Snapshot{}
	for _, s := range o.reg.List() {
		live[s.ID] = s
	}
	out := api.OpListResult{Ops: []api.Operation{}}
	seen := map[string]bool{}
	for _, so := range stored {
		if s, ok := live[so.ID]; ok {
			out.Ops = append(out.Ops, snapToWire(s))
		} else {
			out.Ops = append(out.Ops, storeToWire(so))
		}
		seen[so.ID] = true
	}
	for id, s := range live {
		if !seen[id] {
			out.Ops = append(out.Ops, snapToWire(s))
		}
	}
	return out, nil
}

func (o *opService) Status(ctx context.Context, p api.OpRef) (api.Operation, error) {
	id, err := o.resolve(ctx, p.Op)
	if err != nil {
		return api.Operation{}, err
	}
	if s, err := o.reg.Get(id); err == nil {
		return snapToWire(s), nil
	}
	so, err := o.store.GetOperation(ctx, id)
	if err != nil {
		return api.Operation{}, err
	}
	return storeToWire(so), nil
}

func (o *opService) Wait(ctx context.Context, p api.OpWaitParams) (api.Operation, error) {
	id, err := o.resolve(ctx, p.Op)
	if err != nil {
		return api.Operation{}, err
	}
	if p.TimeoutSeconds > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, time.Duration(p.TimeoutSeconds)*time.Second)
		defer cancel()
	}
	s, err := o.reg.Wait(ctx, id, p.AfterUpdate)
	if errors.Is(err, opstate.ErrNotFound) {
		return o.Status(ctx, api.OpRef{Op: id}) // finished in an earlier run: terminal
	}
	if err != nil {
		return api.Operation{}, err
	}
	return snapToWire(s), nil
}

func (o *opService) Cancel(ctx context.Context, p api.OpRef) (api.Operation, error) {
	id, err := o.resolve(ctx, p.Op)
	if err != nil {
		return api.Operation{}, err
	}
	if _, err := o.reg.Cancel(id); err != nil {
		return o.Status(ctx, api.OpRef{Op: id})
	}
	// Cancellation is asynchronous, but callers expect the cleanup to be
	// done when cancel returns: wait for the op's goroutine, bounded.
	if done, err := o.reg.Done(id); err == nil {
		select {
		case <-done:
		case <-time.After(2 * time.Minute):
		case <-ctx.Done():
		}
	}
	return o.Status(ctx, api.OpRef{Op: id})
}
