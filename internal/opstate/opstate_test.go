package opstate

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"
)

type recorder struct {
	mu    sync.Mutex
	snaps []Snapshot
}

func (r *recorder) save(s Snapshot) { r.mu.Lock(); r.snaps = append(r.snaps, s); r.mu.Unlock() }
func (r *recorder) last() Snapshot  { r.mu.Lock(); defer r.mu.Unlock(); return r.snaps[len(r.snaps)-1] }

func TestSuccessReportsStagesAndResult(t *testing.T) {
	rec := &recorder{}
	r := New(context.Background(), rec.save)
	first := r.Begin("vm.create", "dev", []string{"a", "b"}, func(ctx context.Context, op *Op) (map[string]any, error) {
		op.Stage("b")
		op.Log("hello")
		return map[string]any{"vm": "dev"}, nil
	})
	if first.State != Running || first.Stage != "a" {
		t.Fatalf("first: %+v", first)
	}
	s, err := r.Wait(context.Background(), first.ID, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	if s.State != Succeeded || s.Progress != 1 || s.Result["vm"] != "dev" || s.Stage != "b" {
		t.Fatalf("final: %+v", s)
	}
	if rec.last().State != Succeeded {
		t.Fatal("final state not persisted")
	}
	found := false
	for _, l := range s.LogTail {
		found = found || l == "hello"
	}
	if !found {
		t.Fatalf("log tail %v", s.LogTail)
	}
}

func TestFailureAndPanic(t *testing.T) {
	r := New(context.Background(), nil)
	a := r.Begin("k", "t", nil, func(ctx context.Context, op *Op) (map[string]any, error) {
		return nil, errors.New("disk full")
	})
	b := r.Begin("k", "t", nil, func(ctx context.Context, op *Op) (map[string]any, error) {
		panic("boom")
	})
	sa, _ := r.Wait(context.Background(), a.ID, time.Time{})
	sb, _ := r.Wait(context.Background(), b.ID, time.Time{})
	if sa.State != Failed || sa.Error != "disk full" {
		t.Fatalf("a: %+v", sa)
	}
	if sb.State != Failed || sb.Error == "" {
		t.Fatalf("b: %+v", sb)
	}
}

func TestCancelRunsCleanup(t *testing.T) {
	r := New(context.Background(), nil)
	cleaned := make(chan struct{})
	s := r.Begin("k", "t", nil, func(ctx context.Context, op *Op) (map[string]any, error) {
		<-ctx.Done()
		close(cleaned)
		return nil, ctx.Err()
	})
	if _, err := r.Cancel(s.ID); err != nil {
		t.Fatal(err)
	}
	final, _ := r.Wait(context.Background(), s.ID, time.Time{})
	<-cleaned
	if final.State != Cancelled {
		t.Fatalf("state %s", final.State)
	}
	if _, err := r.Cancel("nope"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown id: %v", err)
	}
}

func TestWaitAfterUpdateLongPolls(t *testing.T) {
	r := New(context.Background(), nil)
	step := make(chan struct{})
	s := r.Begin("k", "t", []string{"one", "two"}, func(ctx context.Context, op *Op) (map[string]any, error) {
		<-step
		op.Stage("two")
		<-step
		return nil, nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	got, _ := r.Wait(ctx, s.ID, s.UpdatedAt)
	cancel()
	if got.Stage != "one" || got.State != Running {
		t.Fatalf("timed-out wait returned %+v", got)
	}
	step <- struct{}{}
	got, _ = r.Wait(context.Background(), s.ID, s.UpdatedAt)
	if got.Stage != "two" || got.Progress != 0.5 {
		t.Fatalf("after update: %+v", got)
	}
	close(step)
}

func TestLogTailBounded(t *testing.T) {
	r := New(context.Background(), nil)
	s := r.Begin("k", "t", nil, func(ctx context.Context, op *Op) (map[string]any, error) {
		for i := range LogTailLines * 2 {
			op.Log(fmt.Sprint(i))
		}
		return nil, nil
	})
	f, _ := r.Wait(context.Background(), s.ID, time.Time{})
	if len(f.LogTail) != LogTailLines || f.LogTail[len(f.LogTail)-1] != fmt.Sprint(LogTailLines*2-1) {
		t.Fatalf("tail len %d last %q", len(f.LogTail), f.LogTail[len(f.LogTail)-1])
	}
}

func TestShutdownCancelsAndWaits(t *testing.T) {
	r := New(context.Background(), nil)
	var cleaned bool
	r.Begin("k", "t", nil, func(ctx context.Context, op *Op) (map[string]any, error) {
		<-ctx.Done()
		time.Sleep(10 * time.Millisecond)
		cleaned = true
		return nil, ctx.Err()
	})
	if err := r.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if !cleaned {
		t.Fatal("shutdown returned before the op cleaned up")
	}
}
