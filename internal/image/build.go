package image

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"

	"github.com/banger-dev/banger/internal/api"
	"github.com/banger-dev/banger/internal/image/builder"
	"github.com/banger-dev/banger/internal/opstate"
	"github.com/banger-dev/banger/internal/store"
	"github.com/banger-dev/banger/internal/vm"
)

var building sync.Map // image name -> struct{}: one build per name at a time

// Build begins building an image from a recipe. The result is cached by
// the recipe's key, so a second build of an unchanged recipe is instant.
func (s *Service) Build(ctx context.Context, p api.ImageBuildParams) (opstate.Snapshot, error) {
	if p.Name == "" {
		p.Name = "default"
	}
	if p.From != "" {
		return s.buildFrom(ctx, p)
	}
	if len(p.Provision) > 0 || len(p.Files) > 0 || p.SizeMiB != 0 {
		return opstate.Snapshot{}, api.Errorf(api.KindInvalidInput, "--provision, --file and --size need --from IMAGE (the image to build on)")
	}
	if err := vm.ValidateName("image", p.Name); err != nil {
		return opstate.Snapshot{}, err
	}
	recipeName := p.Recipe
	if recipeName == "" {
		recipeName = "default"
	}
	recipe, ok := s.Recipes[recipeName]
	if !ok {
		names := make([]string, 0, len(s.Recipes))
		for n := range s.Recipes {
			names = append(names, n)
		}
		slices.Sort(names)
		return opstate.Snapshot{}, api.Errorf(api.KindInvalidInput, "unknown recipe %q (known: %s)", recipeName, strings.Join(names, ", "))
	}
	key := recipe.Key()
	if existing, err := s.Store.FindImage(ctx, p.Name); err == nil && existing.Name == p.Name {
		if existing.Recipe != key {
			users, _ := s.Store.ImageUsers(ctx, existing.ID)
			if len(users) > 0 {
				return opstate.Snapshot{}, api.Errorf(api.KindConflict,
					"image %q was built from another recipe and is used by VM(s) %s", p.Name, strings.Join(users, ", ")).
					WithHint("build under a new name, or delete those VMs first")
			}
			if existing.Recipe == "" {
				return opstate.Snapshot{}, api.Errorf(api.KindConflict, "image %q exists and was registered by hand", p.Name).
					WithHint("choose another name or delete it first (banger image rm " + p.Name + ")")
			}
		}
	}
	if _, busy := building.LoadOrStore(p.Name, struct{}{}); busy {
		return opstate.Snapshot{}, api.Errorf(api.KindBusy, "image %q is already being built", p.Name).
			WithHint("follow it with: banger op ls")
	}
	snap := s.Ops.Begin("image.build", p.Name, builder.Stages(), func(ctx context.Context, op *opstate.Op) (map[string]any, error) {
		defer building.Delete(p.Name)
		return s.build(ctx, op, p.Name, recipe, p.Force)
	})
	return snap, nil
}

func (s *Service) build(ctx context.Context, op *opstate.Op, name string, recipe builder.Recipe, force bool) (map[string]any, error) {
	art, cached := builder.Cached(recipe, s.CacheDir)
	if cached && !force {
		op.Logf("recipe %s is cached in %s", art.Key[:12], art.Dir)
	} else {
		if force && cached {
			if needers, err := s.Store.ImagesReferencing(ctx, "", artifactFiles(art)); err == nil {
				for _, n := range needers {
					if n.Name != name {
						return nil, api.Errorf(api.KindConflict, "--force would remove files image %q uses (it was derived from this recipe's image)", n.Name).
							WithHint("delete the images derived from it first, or build without --force")
					}
				}
			}
			op.Log("--force: rebuilding although the recipe is cached")
			if err := os.RemoveAll(art.Dir); err != nil {
				return nil, err
			}
		}
		last := ""
		var err error
		art, err = builder.Build(ctx, recipe, s.CacheDir, func(stage string, fraction float64, line string) {
			if stage != "" && stage != last {
				op.Stage(stage)
				last = stage
			}
			op.Progress(fraction)
			if line != "" {
				op.Log(line)
			}
		})
		if err != nil {
			return nil, err
		}
	}
	im, err := s.registerBuilt(ctx, name, art)
	if err != nil {
		return nil, err
	}
	return map[string]any{"image": im.Name, "id": im.ID, "dir": art.Dir, "cached": cached && !force}, nil
}

func (s *Service) registerBuilt(ctx context.Context, name string, art builder.Artifacts) (store.Image, error) {
	var size int64
	for _, f := range []string{art.Kernel, art.KernelRaw, art.Initrd, art.RootFS, art.WorkSeed} {
		if f == "" {
			continue
		}
		fi, err := os.Stat(f)
		if err != nil {
			return store.Image{}, fmt.Errorf("built image is incomplete: %w", err)
		}
		size += fi.Size()
	}
	im := store.Image{Name: name, Kernel: art.Kernel, KernelRaw: art.KernelRaw, Initrd: art.Initrd,
		RootFS: art.RootFS, WorkSeed: art.WorkSeed, KernelArgs: art.KernelArgs, SizeBytes: size,
		Managed: true, Recipe: art.Key, Description: "Debian built by banger (recipe " + art.Key[:12] + ")"}
	existing, err := s.Store.FindImage(ctx, name)
	switch {
	case err == nil && existing.Name == name:
		im.ID, im.CreatedAt = existing.ID, existing.CreatedAt
		return im, s.Store.UpdateImage(ctx, &im)
	case err == nil || errors.Is(err, store.ErrNotFound) || errors.Is(err, store.ErrAmbiguous):
		im.ID = store.NewID()
		return im, s.Store.CreateImage(ctx, &im)
	default:
		return store.Image{}, err
	}
}

func artifactFiles(a builder.Artifacts) []string {
	return []string{a.Kernel, a.KernelRaw, a.Initrd, a.RootFS, a.WorkSeed}
}
