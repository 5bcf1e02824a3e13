package vm

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/banger-dev/banger/internal/api"
	"github.com/banger-dev/banger/internal/opstate"
	"github.com/banger-dev/banger/internal/store"
)

func TestBuildVMName(t *testing.T) {
	id := store.NewID()
	for _, image := range []string{"web", strings.Repeat("a", 63), "x-" + strings.Repeat("b", 60)} {
		name := BuildVMName(image, id)
		if err := ValidateName("VM", name); err != nil || !strings.HasPrefix(name, "build-") || !strings.HasSuffix(name, id[:6]) {
			t.Errorf("BuildVMName(%q) = %q: %v", image, name, err)
		}
	}
}

// A daemon that died mid-build leaves a marked VM; Reconcile removes it
// and its directory, whatever its state.
func TestReconcileRemovesBuildVMs(t *testing.T) {
	h := newHarness(t, true)
	ctx := context.Background()
	snap, err := h.svc.Create(ctx, api.VMCreateParams{Name: "keep", NoStart: true})
	if err != nil {
		t.Fatal(err)
	}
	if final, _ := h.ops.Wait(ctx, snap.ID, time.Time{}); final.State != opstate.Succeeded {
		t.Fatalf("create keep: %s %s", final.State, final.Error)
	}
	snap, err = h.svc.Create(ctx, api.VMCreateParams{Name: "build-img-abcdef", NoStart: true})
	if err != nil {
		t.Fatal(err)
	}
	if final, _ := h.ops.Wait(ctx, snap.ID, time.Time{}); final.State != opstate.Succeeded {
		t.Fatalf("create build VM: %s %s", final.State, final.Error)
	}
	b, err := h.st.FindVM(ctx, "build-img-abcdef")
	if err != nil {
		t.Fatal(err)
	}
	if err := h.st.AddBuildVM(ctx, store.BuildVM{VMID: b.ID, ImageID: store.NewID(), ImageName: "img2"}); err != nil {
		t.Fatal(err)
	}
	partial := h.lay.VMDir(b.ID) + "/rootfs.partial"
	if err := os.WriteFile(partial, []byte("half"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := h.svc.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := h.st.FindVM(ctx, "build-img-abcdef"); err == nil {
		t.Fatal("build VM record survived reconcile")
	}
	if _, err := os.Stat(h.lay.VMDir(b.ID)); !os.IsNotExist(err) {
		t.Fatalf("build VM dir survived reconcile: %v", err)
	}
	if _, err := h.st.FindVM(ctx, "keep"); err != nil {
		t.Fatalf("an ordinary VM was removed: %v", err)
	}
	if builds, _ := h.st.ListBuildVMs(ctx); len(builds) != 0 {
		t.Fatalf("build marks left: %v", builds)
	}
}

// Cancelling a build VM's creation at every stage leaves nothing, mark
// included.
func TestCreateBuildVMCancelledLeavesNothing(t *testing.T) {
	for _, stage := range []string{StageNetwork, StageDisks, StageBoot} {
		t.Run(stage, func(t *testing.T) {
			h := newHarness(t, true)
			h.svc.AfterStage = func(ctx context.Context, s string) {
				if s == stage {
					<-ctx.Done()
				}
			}
			snap := h.ops.Begin("image.build", "img2", nil, func(ctx context.Context, op *opstate.Op) (map[string]any, error) {
				b, err := h.svc.CreateBuildVM(ctx, op, BuildVMParams{Image: "img", TargetID: store.NewID(), TargetName: "img2"})
				if err == nil {
					b.Remove()
					t.Error("build VM created despite the cancel")
				}
				return nil, err
			})
			// Wait until the op reaches the stage, then cancel.
			deadline := time.Now().Add(10 * time.Second)
			for {
				s, _ := h.ops.Get(snap.ID)
				if s.Stage == stage {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("stage %s never reached (at %s)", stage, s.Stage)
				}
				time.Sleep(5 * time.Millisecond)
			}
			h.ops.Cancel(snap.ID)
			final, _ := h.ops.Wait(context.Background(), snap.ID, time.Time{})
			if final.State != opstate.Cancelled {
				t.Fatalf("op %s (%s)", final.State, final.Error)
			}
			h.assertNothingLeft(t)
			if builds, _ := h.st.ListBuildVMs(context.Background()); len(builds) != 0 {
				t.Fatalf("build marks left: %v", builds)
			}
		})
	}
}

func TestHoldStoppedRefusesOtherStatesAndLocks(t *testing.T) {
	h := newHarness(t, true)
	ctx := context.Background()
	snap, err := h.svc.Create(ctx, api.VMCreateParams{Name: "dev", NoStart: true})
	if err != nil {
		t.Fatal(err)
	}
	h.ops.Wait(ctx, snap.ID, time.Time{})
	held, err := h.svc.HoldStopped(ctx, "dev", "promote")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.svc.Start(ctx, api.VMRef{VM: "dev"}); !api.IsKind(err, api.KindBusy) {
		t.Fatalf("start while promoting: %v", err)
	}
	path, format, release, err := held.SystemDisk(ctx)
	if err != nil || path == "" || format == "" {
		t.Fatalf("system disk: %q %q %v", path, format, err)
	}
	release()
	held.Release()
	v, _ := h.st.FindVM(ctx, "dev")
	if _, err := h.st.TransitionVM(ctx, v.ID, []string{string(Stopped)}, string(Error), "test"); err != nil {
		t.Fatal(err)
	}
	if _, err := h.svc.HoldStopped(ctx, "dev", "promote"); !api.IsKind(err, api.KindConflict) {
		t.Fatalf("hold of a VM in error: %v", err)
	}
}
