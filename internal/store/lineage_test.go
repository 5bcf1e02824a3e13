package store

import (
	"context"
	"errors"
	"testing"
)

func TestDerivedImageLineageAndChildren(t *testing.T) {
	s := openTest(t)
	ctx := context.Background()
	parent := Image{Name: "base", Kernel: "/k", RootFS: "/r"}
	if err := s.CreateImage(ctx, &parent); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ImageLineage(ctx, parent.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("lineage of a base image: %v", err)
	}
	child := Image{Name: "child", Kernel: "/k", RootFS: "/blobs/1.ext4"}
	l := Lineage{ParentID: parent.ID, ParentName: "base", Source: "build", BuildLog: "/log",
		HostKeyFingerprint: "SHA256:x", Scripts: []ScriptDigest{{Name: "a.sh", SHA256: "aa"}, {Name: "b.sh", SHA256: "bb"}}}
	if err := s.CreateDerivedImage(ctx, &child, l); err != nil {
		t.Fatal(err)
	}
	got, err := s.ImageLineage(ctx, child.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.ParentID != parent.ID || got.Source != "build" || len(got.Scripts) != 2 || got.Scripts[1].SHA256 != "bb" || got.HostKeyFingerprint != "SHA256:x" {
		t.Fatalf("lineage = %+v", got)
	}
	if kids, err := s.ImageChildren(ctx, parent.ID); err != nil || len(kids) != 1 || kids[0] != "child" {
		t.Fatalf("children = %v, %v", kids, err)
	}
	refs, err := s.ImagesReferencing(ctx, parent.ID, []string{"/k", "/r"})
	if err != nil || len(refs) != 1 || refs[0].Name != "child" {
		t.Fatalf("images referencing the parent's files = %v, %v", refs, err)
	}
	// A name clash rolls the whole registration back: no orphan lineage.
	dup := Image{Name: "child", RootFS: "/x"}
	if err := s.CreateDerivedImage(ctx, &dup, Lineage{ParentID: parent.ID}); !errors.Is(err, ErrConflict) {
		t.Fatalf("duplicate name: %v", err)
	}
	if kids, _ := s.ImageChildren(ctx, parent.ID); len(kids) != 1 {
		t.Fatalf("children after a failed create = %v", kids)
	}
	if err := s.DeleteImage(ctx, child.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ImageLineage(ctx, child.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("lineage outlived its image: %v", err)
	}
}

func TestBuildVMMarkGoesWithTheVM(t *testing.T) {
	s := openTest(t)
	ctx := context.Background()
	if err := s.AddBuildVM(ctx, BuildVM{VMID: "nope", ImageID: "i", ImageName: "n"}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("mark of a missing VM: %v", err)
	}
	v := VM{Name: "build-x", State: "creating"}
	if err := s.CreateVM(ctx, &v); err != nil {
		t.Fatal(err)
	}
	if err := s.AddBuildVM(ctx, BuildVM{VMID: v.ID, ImageID: "img", ImageName: "x"}); err != nil {
		t.Fatal(err)
	}
	builds, err := s.ListBuildVMs(ctx)
	if err != nil || builds[v.ID].ImageName != "x" || builds[v.ID].CreatedAt.IsZero() {
		t.Fatalf("build VMs = %v, %v", builds, err)
	}
	if err := s.DeleteVM(ctx, v.ID); err != nil {
		t.Fatal(err)
	}
	if builds, _ := s.ListBuildVMs(ctx); len(builds) != 0 {
		t.Fatalf("mark outlived its VM: %v", builds)
	}
}
