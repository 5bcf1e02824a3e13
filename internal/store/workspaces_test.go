package store

import (
	"context"
	"reflect"
	"testing"
	"time"

	"github.com/banger-dev/banger/internal/api"
)

func TestWorkspaceRecord(t *testing.T) {
	s := openTest(t)
	ctx := context.Background()
	_, err := s.GetWorkspace(ctx, "nope")
	wantErr(t, err, ErrNotFound, api.KindNotFound)
	wantErr(t, s.PutWorkspace(ctx, &Workspace{VMID: "missing", GuestPath: "/p", BaseCommit: "abc"}), ErrNotFound, api.KindNotFound)

	v := VM{Name: "ws", State: "running"}
	if err := s.CreateVM(ctx, &v); err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)
	w := Workspace{VMID: v.ID, GuestPath: "/home/banger/work/r", HostRepo: "/src/r", RepoName: "r",
		BaseCommit: "abc", Branch: "main", PushedAt: t0}
	if err := s.PutWorkspace(ctx, &w); err != nil {
		t.Fatal(err)
	}
	got, err := s.GetWorkspace(ctx, v.ID)
	if err != nil || !reflect.DeepEqual(got, w) {
		t.Fatalf("GetWorkspace = %+v, %v; want %+v", got, err, w)
	}
	if err := s.RecordWorkspaceExport(ctx, v.ID, "banger/ws", "def", t0.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	got, _ = s.GetWorkspace(ctx, v.ID)
	if !got.LastExport.Equal(t0.Add(time.Hour)) || got.ExportedTo != "banger/ws" || got.ExportHead != "def" || got.BaseCommit != "abc" {
		t.Fatalf("after export: %+v", got)
	}
	// A new push replaces the record, export history included.
	w2 := Workspace{VMID: v.ID, GuestPath: "/other", BaseCommit: "fed"}
	if err := s.PutWorkspace(ctx, &w2); err != nil {
		t.Fatal(err)
	}
	got, _ = s.GetWorkspace(ctx, v.ID)
	if got.GuestPath != "/other" || got.BaseCommit != "fed" || !got.LastExport.IsZero() || got.PushedAt.IsZero() {
		t.Fatalf("after re-push: %+v", got)
	}
	wantErr(t, s.RecordWorkspaceExport(ctx, "nope", "x", "y", t0), ErrNotFound, api.KindNotFound)
	// Deleting the VM deletes its workspace.
	if err := s.DeleteVM(ctx, v.ID); err != nil {
		t.Fatal(err)
	}
	_, err = s.GetWorkspace(ctx, v.ID)
	wantErr(t, err, ErrNotFound, api.KindNotFound)
}
