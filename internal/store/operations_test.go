package store

import (
	"context"
	"reflect"
	"testing"
	"time"

	"github.com/banger-dev/banger/internal/api"
)

var t0 = time.Date(2026, 11, 28, 10, 0, 0, 0, time.UTC)

func putOp(t *testing.T, s *Store, op Operation) Operation {
	t.Helper()
	if err := s.PutOperation(context.Background(), &op); err != nil {
		t.Fatalf("PutOperation %s: %v", op.ID, err)
	}
	return op
}

func TestOperationRoundTripAndUpsert(t *testing.T) {
	s := openTest(t)
	ctx := context.Background()
	s.now = func() time.Time { return t0 }
	op := putOp(t, s, Operation{Kind: "vm.create", Target: "web", State: OpRunning, Stage: "disk",
		Stages: []string{"disk", "boot", "ssh"}, Progress: 0.25, LogTail: []string{"creating overlay"}})
	if op.ID == "" || !op.CreatedAt.Equal(t0) || !op.UpdatedAt.Equal(t0) {
		t.Fatalf("PutOperation did not fill ID/timestamps: %+v", op)
	}
	got, err := s.GetOperation(ctx, op.ID)
	if err != nil || !reflect.DeepEqual(got, op) {
		t.Fatalf("GetOperation = %+v, %v\nwant %+v", got, err, op)
	}

	// Replace: CreatedAt is kept from the stored row even if the caller
	// sends another; UpdatedAt moves.
	s.now = func() time.Time { return t0.Add(time.Minute) }
	upd := op
	upd.CreatedAt = t0.Add(time.Hour)
	upd.State, upd.Progress, upd.Result, upd.FinishedAt = "succeeded", 1, []byte(`{"vm":"abc"}`), t0.Add(time.Minute)
	upd.LogTail = nil
	if err := s.PutOperation(ctx, &upd); err != nil {
		t.Fatal(err)
	}
	if !upd.CreatedAt.Equal(t0) || !upd.UpdatedAt.Equal(t0.Add(time.Minute)) {
		t.Fatalf("upsert timestamps: created %v updated %v", upd.CreatedAt, upd.UpdatedAt)
	}
	got, err = s.GetOperation(ctx, op.ID)
	if err != nil || !reflect.DeepEqual(got, upd) {
		t.Fatalf("after upsert GetOperation = %+v, %v\nwant %+v", got, err, upd)
	}
	_, err = s.GetOperation(ctx, "missing")
	wantErr(t, err, ErrNotFound, api.KindNotFound)
	if err := s.PutOperation(ctx, &Operation{ID: "x"}); err == nil {
		t.Fatal("PutOperation without kind/state succeeded")
	}
}

func TestFindAndListOperations(t *testing.T) {
	s := openTest(t)
	ctx := context.Background()
	for i, id := range []string{"aaaa0001", "aaaa0002", "bbbb0001"} {
		putOp(t, s, Operation{ID: id, Kind: "image.build", State: "succeeded", CreatedAt: t0.Add(time.Duration(i) * time.Second)})
	}
	if got, err := s.FindOperation(ctx, "bbbb"); err != nil || got.ID != "bbbb0001" {
		t.Fatalf("FindOperation(bbbb) = %s, %v", got.ID, err)
	}
	if got, err := s.FindOperation(ctx, "aaaa0002"); err != nil || got.ID != "aaaa0002" {
		t.Fatalf("FindOperation(exact) = %s, %v", got.ID, err)
	}
	_, err := s.FindOperation(ctx, "aaaa")
	wantErr(t, err, ErrAmbiguous, api.KindInvalidInput)
	_, err = s.FindOperation(ctx, "aaa")
	wantErr(t, err, ErrNotFound, api.KindNotFound)

	ops, err := s.ListOperations(ctx, 0)
	if err != nil || len(ops) != 3 || ops[0].ID != "bbbb0001" || ops[2].ID != "aaaa0001" {
		t.Fatalf("ListOperations(0) = %v, %v", ops, err)
	}
	ops, err = s.ListOperations(ctx, 2)
	if err != nil || len(ops) != 2 || ops[1].ID != "aaaa0002" {
		t.Fatalf("ListOperations(2) = %v, %v", ops, err)
	}
}

func TestFailInterruptedOperations(t *testing.T) {
	s := openTest(t)
	ctx := context.Background()
	r1 := putOp(t, s, Operation{Kind: "vm.create", State: OpRunning})
	r2 := putOp(t, s, Operation{Kind: "image.build", State: OpRunning})
	done := putOp(t, s, Operation{Kind: "vm.create", State: "succeeded", FinishedAt: t0})

	later := t0.Add(time.Hour)
	s.now = func() time.Time { return later }
	n, err := s.FailInterruptedOperations(ctx, "daemon restarted")
	if err != nil || n != 2 {
		t.Fatalf("FailInterruptedOperations = %d, %v; want 2", n, err)
	}
	for _, id := range []string{r1.ID, r2.ID} {
		op, _ := s.GetOperation(ctx, id)
		if op.State != OpFailed || op.Error != "daemon restarted" || !op.FinishedAt.Equal(later) || !op.UpdatedAt.Equal(later) {
			t.Fatalf("interrupted op = %+v", op)
		}
	}
	if op, _ := s.GetOperation(ctx, done.ID); op.State != "succeeded" || op.Error != "" || !op.FinishedAt.Equal(t0) {
		t.Fatalf("finished op was touched: %+v", op)
	}
	if n, err := s.FailInterruptedOperations(ctx, "again"); err != nil || n != 0 {
		t.Fatalf("second call = %d, %v; want 0", n, err)
	}
}

func TestPruneOperations(t *testing.T) {
	s := openTest(t)
	ctx := context.Background()
	var ids []string
	for i := range 6 {
		state := "succeeded"
		if i == 0 {
			state = OpRunning // the oldest, but running: never pruned
		}
		ids = append(ids, putOp(t, s, Operation{Kind: "k", State: state, CreatedAt: t0.Add(time.Duration(i) * time.Second)}).ID)
	}
	if err := s.PruneOperations(ctx, 2); err != nil {
		t.Fatal(err)
	}
	ops, err := s.ListOperations(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, op := range ops {
		got = append(got, op.ID)
	}
	want := []string{ids[5], ids[4], ids[0]}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("after prune: %v, want %v", got, want)
	}
	if err := s.PruneOperations(ctx, 0); err != nil {
		t.Fatal(err)
	}
	if ops, _ := s.ListOperations(ctx, 0); len(ops) != 1 || ops[0].ID != ids[0] {
		t.Fatalf("after prune to 0: %v", ops)
	}
}
