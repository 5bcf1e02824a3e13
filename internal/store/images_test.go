package store

import (
	"context"
	"reflect"
	"strings"
	"testing"

	"github.com/banger-dev/banger/internal/api"
)

func TestImageCRUD(t *testing.T) {
	s := openTest(t)
	ctx := context.Background()
	im := Image{Name: "debian", Kernel: "/k", KernelRaw: "/vmlinux", Initrd: "/i", RootFS: "/r",
		WorkSeed: "/w", KernelArgs: "console=ttyS0", Recipe: "default", Description: "d",
		SizeBytes: 1 << 30, Managed: true, Dir: "/var/lib/banger/images/x"}
	if err := s.CreateImage(ctx, &im); err != nil {
		t.Fatal(err)
	}
	if im.ID == "" || im.CreatedAt.IsZero() {
		t.Fatalf("CreateImage did not fill ID/CreatedAt: %+v", im)
	}
	got, err := s.GetImage(ctx, im.ID)
	if err != nil {
		t.Fatal(err)
	}
	got.CreatedAt, im.CreatedAt = got.CreatedAt.UTC(), im.CreatedAt.UTC()
	if !reflect.DeepEqual(got, im) {
		t.Fatalf("GetImage = %+v, want %+v", got, im)
	}

	im.WorkSeed, im.Managed, im.Dir = "/w2", false, ""
	if err := s.UpdateImage(ctx, &im); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.FindImage(ctx, "debian"); got.WorkSeed != "/w2" || got.Managed || got.Dir != "" {
		t.Fatalf("after update: %+v", got)
	}
	if got, err := s.FindImage(ctx, im.ID[:6]); err != nil || got.ID != im.ID {
		t.Fatalf("FindImage by prefix = %+v, %v", got, err)
	}

	other := mustImage(t, s, "alpine")
	dup := Image{Name: "debian"}
	wantErr(t, s.CreateImage(ctx, &dup), ErrConflict, api.KindConflict)
	other.Name = "debian"
	wantErr(t, s.UpdateImage(ctx, &other), ErrConflict, api.KindConflict)
	list, err := s.ListImages(ctx)
	if err != nil || len(list) != 2 || list[0].Name != "alpine" || list[1].Name != "debian" {
		t.Fatalf("ListImages = %+v, %v", list, err)
	}

	if err := s.DeleteImage(ctx, im.ID); err != nil {
		t.Fatal(err)
	}
	_, err = s.GetImage(ctx, im.ID)
	wantErr(t, err, ErrNotFound, api.KindNotFound)
	wantErr(t, s.DeleteImage(ctx, im.ID), ErrNotFound, api.KindNotFound)
}

func TestDeleteImageInUse(t *testing.T) {
	s := openTest(t)
	ctx := context.Background()
	im := mustImage(t, s, "debian")
	v1 := mustVM(t, s, VM{Name: "zeta", ImageID: im.ID})
	v2 := mustVM(t, s, VM{Name: "alpha", ImageID: im.ID})
	mustVM(t, s, VM{Name: "unrelated"})

	users, err := s.ImageUsers(ctx, im.ID)
	if err != nil || !reflect.DeepEqual(users, []string{"alpha", "zeta"}) {
		t.Fatalf("ImageUsers = %v, %v", users, err)
	}
	err = s.DeleteImage(ctx, im.ID)
	wantErr(t, err, ErrInUse, api.KindBusy)
	if !strings.Contains(err.Error(), "alpha, zeta") {
		t.Fatalf("in-use error does not name the users: %v", err)
	}
	if _, err := s.GetImage(ctx, im.ID); err != nil {
		t.Fatalf("image gone after refused delete: %v", err)
	}

	for _, v := range []VM{v1, v2} {
		if err := s.DeleteVM(ctx, v.ID); err != nil {
			t.Fatal(err)
		}
	}
	if users, err := s.ImageUsers(ctx, im.ID); err != nil || len(users) != 0 {
		t.Fatalf("ImageUsers after deleting VMs = %v, %v", users, err)
	}
	if err := s.DeleteImage(ctx, im.ID); err != nil {
		t.Fatalf("DeleteImage once unused: %v", err)
	}
}
