// Package image is banger's image registry: registering kernel, initrd
// and root filesystem files (validated, optionally copied into the state
// dir), listing, finding, deleting (refused while a VM uses the image or
// another image needs its files), building the default image from
// packages, deriving images through a transient build VM (build --from),
// and promoting a stopped VM's disk into an image. Files that builds and
// promotes produce live in a content-addressed store (images/blobs).
package image

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"github.com/banger-dev/banger/internal/api"
	"github.com/banger-dev/banger/internal/disk"
	"github.com/banger-dev/banger/internal/image/builder"
	"github.com/banger-dev/banger/internal/opstate"
	"github.com/banger-dev/banger/internal/paths"
	"github.com/banger-dev/banger/internal/store"
	"github.com/banger-dev/banger/internal/vm"
)

// Service owns images.
type Service struct {
	Store  *store.Store
	Layout paths.Layout
	Ops    *opstate.Registry
	Log    *slog.Logger
	// CacheDir holds built images keyed by recipe.
	CacheDir string
	// Recipes maps a recipe name to its definition; "default" at least.
	Recipes map[string]builder.Recipe
	// VMs runs the transient build VMs of image build --from and holds
	// VMs being promoted. Without it those two are unavailable.
	VMs *vm.Service

	// blobMu serialises adding, referencing and collecting blobs.
	blobMu sync.Mutex
}

// ToWire converts a stored image.
func ToWire(im store.Image, usedBy []string) api.Image {
	return api.Image{
		ID: im.ID, Name: im.Name, Kernel: im.Kernel, KernelRaw: im.KernelRaw, Initrd: im.Initrd,
		RootFS: im.RootFS, WorkSeed: im.WorkSeed, KernelArgs: im.KernelArgs, SizeBytes: im.SizeBytes,
		Managed: im.Managed, Recipe: im.Recipe, CreatedAt: im.CreatedAt, UsedBy: usedBy,
		Description: im.Description,
	}
}

// wire is ToWire plus lineage, children and size on disk.
func (s *Service) wire(ctx context.Context, im store.Image) (api.Image, error) {
	users, err := s.Store.ImageUsers(ctx, im.ID)
	if err != nil {
		return api.Image{}, err
	}
	w := ToWire(im, users)
	if w.Children, err = s.Store.ImageChildren(ctx, im.ID); err != nil {
		return api.Image{}, err
	}
	if len(w.Children) == 0 {
		w.Children = nil
	}
	owned := []string{im.Kernel, im.KernelRaw, im.Initrd, im.RootFS, im.WorkSeed}
	l, err := s.Store.ImageLineage(ctx, im.ID)
	switch {
	case err == nil:
		w.Parent = l.ParentName
		if p, perr := s.Store.GetImage(ctx, l.ParentID); perr == nil {
			w.Parent = p.Name // renamed since
		}
		for _, sc := range l.Scripts {
			w.Scripts = append(w.Scripts, api.ScriptDigest{Name: sc.Name, SHA256: sc.SHA256})
		}
		w.HostKeyFingerprint = l.HostKeyFingerprint
		// A derived image owns its content-addressed files and build log;
		// kernel and initrd are its parent's.
		owned = []string{l.BuildLog}
		for _, f := range []string{im.RootFS, im.WorkSeed} {
			if s.isBlob(f) {
				owned = append(owned, f)
			}
		}
	case !errors.Is(err, store.ErrNotFound):
		return api.Image{}, err
	}
	var files []string
	for _, f := range owned {
		if f != "" {
			files = append(files, f)
		}
	}
	if used, err := disk.Usage(files...); err == nil {
		w.DiskBytes = used
	}
	return w, nil
}

// List returns every image.
func (s *Service) List(ctx context.Context) (api.ImageListResult, error) {
	ims, err := s.Store.ListImages(ctx)
	if err != nil {
		return api.ImageListResult{}, err
	}
	out := api.ImageListResult{Images: make([]api.Image, 0, len(ims))}
	for _, im := range ims {
		w, err := s.wire(ctx, im)
		if err != nil {
			return api.ImageListResult{}, err
		}
		out.Images = append(out.Images, w)
	}
	return out, nil
}

// Show finds one image by name or id prefix.
func (s *Service) Show(ctx context.Context, p api.ImageRef) (api.Image, error) {
	if p.Image == "" {
		return api.Image{}, api.Errorf(api.KindInvalidInput, "no image given")
	}
	im, err := s.Store.FindImage(ctx, p.Image)
	if err != nil {
		return api.Image{}, err
	}
	return s.wire(ctx, im)
}

// Register validates the files and records a new image.
func (s *Service) Register(ctx context.Context, p api.ImageRegisterParams) (api.Image, error) {
	if err := vm.ValidateName("image", p.Name); err != nil {
		return api.Image{}, err
	}
	if _, err := s.Store.FindImage(ctx, p.Name); err == nil {
		return api.Image{}, api.Errorf(api.KindConflict, "an image named %q already exists", p.Name)
	}
	if p.Kernel == "" || p.RootFS == "" {
		return api.Image{}, api.Errorf(api.KindInvalidInput, "an image needs at least --kernel and --rootfs")
	}
	if strings.ContainsAny(p.KernelArgs, "\n\x00") {
		return api.Image{}, api.Errorf(api.KindInvalidInput, "kernel args must be a single line")
	}
	files := []struct {
		role string
		path *string
	}{{"kernel", &p.Kernel}, {"kernel_raw", &p.KernelRaw}, {"initrd", &p.Initrd}, {"rootfs", &p.RootFS}, {"work_seed", &p.WorkSeed}}
	var total int64
	for _, f := range files {
		if *f.path == "" {
			continue
		}
		clean, size, err := ValidateFile(f.role, *f.path)
		if err != nil {
			return api.Image{}, err
		}
		*f.path = clean
		total += size
	}
	im := store.Image{ID: store.NewID(), Name: p.Name, Kernel: p.Kernel, KernelRaw: p.KernelRaw, Initrd: p.Initrd,
		RootFS: p.RootFS, WorkSeed: p.WorkSeed, KernelArgs: p.KernelArgs, SizeBytes: total}
	if p.Copy {
		dir := s.Layout.ImageDir(im.ID)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return api.Image{}, err
		}
		for _, f := range files {
			if *f.path == "" {
				continue
			}
			dst := filepath.Join(dir, f.role)
			if err := copyFile(ctx, *f.path, dst); err != nil {
				os.RemoveAll(dir)
				return api.Image{}, fmt.Errorf("copy %s into the image store: %w", f.role, err)
			}
			*f.path = dst
		}
		im.Kernel, im.KernelRaw, im.Initrd, im.RootFS, im.WorkSeed = p.Kernel, p.KernelRaw, p.Initrd, p.RootFS, p.WorkSeed
		im.Dir, im.Managed = dir, true
	}
	if err := s.Store.CreateImage(ctx, &im); err != nil {
		if im.Dir != "" {
			os.RemoveAll(im.Dir)
		}
		return api.Image{}, err
	}
	return ToWire(im, nil), nil
}

// ValidateFile checks one image file: an absolute or relative path without
// ".." components, naming a readable regular file that is not a symlink.
// It returns the cleaned absolute path and the file's size.
func ValidateFile(role, path string) (string, int64, error) {
	bad := func(format string, args ...any) (string, int64, error) {
		return "", 0, api.Errorf(api.KindInvalidInput, "%s %q: %s", role, path, fmt.Sprintf(format, args...))
	}
	if strings.ContainsRune(path, 0) {
		return bad("contains a NUL byte")
	}
	if slices.Contains(strings.Split(filepath.ToSlash(path), "/"), "..") {
		return bad("path traversal ('..') is not allowed")
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return bad("%v", err)
	}
	fi, err := os.Lstat(abs)
	if err != nil {
		return bad("%v", errors.Unwrap(err))
	}
	if fi.Mode()&os.ModeSymlink != 0 {
		return bad("is a symlink; give the real file")
	}
	if !fi.Mode().IsRegular() {
		return bad("not a regular file")
	}
	// A parent directory that is a symlink is allowed, but the resolved
	// file must be the same one that was checked.
	real, err := filepath.EvalSymlinks(abs)
	if err != nil {
		return bad("%v", err)
	}
	if rfi, err := os.Stat(real); err != nil || !os.SameFile(fi, rfi) {
		return bad("changed while being checked")
	}
	f, err := os.Open(real)
	if err != nil {
		return bad("not readable: %v", errors.Unwrap(err))
	}
	f.Close()
	if fi.Size() == 0 {
		return bad("is empty")
	}
	return real, fi.Size(), nil
}

func copyFile(ctx context.Context, src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	_, err = io.Copy(out, ctxReader{ctx, in})
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(dst)
	}
	return err
}

type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// Delete removes an image; refused while a VM uses it. Files banger owns
// are removed; files registered in place are left alone.
func (s *Service) Delete(ctx context.Context, p api.ImageRef) (api.Empty, error) {
	if p.Image == "" {
		return api.Empty{}, api.Errorf(api.KindInvalidInput, "no image given")
	}
	im, err := s.Store.FindImage(ctx, p.Image)
	if err != nil {
		return api.Empty{}, err
	}
	users, err := s.Store.ImageUsers(ctx, im.ID)
	if err != nil {
		return api.Empty{}, err
	}
	if len(users) > 0 {
		return api.Empty{}, api.Errorf(api.KindConflict, "image %q is used by VM(s): %s", im.Name, strings.Join(users, ", ")).
			WithHint("delete those VMs first")
	}
	s.blobMu.Lock()
	defer s.blobMu.Unlock()
	// Images derived from this one use its kernel and initrd in place.
	// Content-addressed files are shared by design and do not count.
	// A derived image's other files are an ancestor's, not its own.
	var own []string
	files := []string{im.Kernel, im.KernelRaw, im.Initrd, im.RootFS, im.WorkSeed}
	_, lerr := s.Store.ImageLineage(ctx, im.ID)
	if lerr != nil && !errors.Is(lerr, store.ErrNotFound) {
		return api.Empty{}, lerr
	}
	for _, f := range files {
		if f != "" && !s.isBlob(f) && lerr != nil {
			own = append(own, f)
		}
	}
	needers, err := s.Store.ImagesReferencing(ctx, im.ID, own)
	if err != nil {
		return api.Empty{}, err
	}
	if len(needers) > 0 {
		names := make([]string, len(needers))
		for i, n := range needers {
			names[i] = n.Name
		}
		return api.Empty{}, api.Errorf(api.KindConflict, "image %q is needed by image(s) %s, which use its files (kernel, initrd or work seed)",
			im.Name, strings.Join(names, ", ")).WithHint("delete those images first")
	}
	if err := s.Store.DeleteImage(ctx, im.ID); err != nil {
		return api.Empty{}, err
	}
	s.gcBlobs(ctx, files)
	if im.Dir != "" && strings.HasPrefix(im.Dir, s.Layout.ImagesDir()+"/") {
		if err := os.RemoveAll(im.Dir); err != nil {
			s.Log.Warn("remove image files", "image", im.Name, "err", err)
		}
	}
	return api.Empty{}, nil
}
