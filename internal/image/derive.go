package image

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/banger-dev/banger/internal/api"
	"github.com/banger-dev/banger/internal/opstate"
	"github.com/banger-dev/banger/internal/store"
	"github.com/banger-dev/banger/internal/vm"
)

// Stages of a build from an existing image, in order. The build VM's own
// create stages (network, disks, boot, wait-ssh) show up inside build-vm.
const (
	StageBuildVM   = "build-vm"
	StageCopyFiles = "copy-files"
	StageProvision = "provision"
	StageShutdown  = "shutdown"
	StageFlatten   = "flatten"
	StageRegister  = "register"
)

// DeriveStages are the stages of image build --from.
var DeriveStages = []string{StageBuildVM, StageCopyFiles, StageProvision, StageShutdown, StageFlatten, StageRegister}

// PromoteStages are the stages of image promote.
var PromoteStages = []string{StageFlatten, StageRegister}

// Limits on what a build request may carry.
const (
	maxScripts      = 64
	maxScriptBytes  = 1 << 20
	maxFiles        = 256
	guestScriptsDir = "/var/tmp/banger-provision"
)

// derivePlan is a validated build-from request.
type derivePlan struct {
	name    string
	base    store.Image
	scripts []api.ProvisionScript
	files   []api.FileCopy // Src validated and absolute
	sizeMiB int64
}

func (s *Service) validateNewName(ctx context.Context, name string) error {
	if err := vm.ValidateName("image", name); err != nil {
		return err
	}
	if _, err := s.Store.FindImage(ctx, name); err == nil {
		return api.Errorf(api.KindConflict, "an image named %q already exists", name).
			WithHint("choose another name, or delete it first (banger image rm " + name + ")")
	} else if !errors.Is(err, store.ErrNotFound) && !errors.Is(err, store.ErrAmbiguous) {
		return err
	}
	if s.VMs == nil {
		return api.Errorf(api.KindUnavailable, "this daemon cannot run build VMs (no VM service configured)")
	}
	return nil
}

func (s *Service) findBase(ctx context.Context, ref string) (store.Image, error) {
	im, err := s.Store.FindImage(ctx, ref)
	if errors.Is(err, store.ErrNotFound) {
		return store.Image{}, api.NotFound("image", ref).WithHint("list images with: banger image ls")
	}
	return im, err
}

// planDerive validates everything a build-from can be refused for, before
// anything is made.
func (s *Service) planDerive(ctx context.Context, p api.ImageBuildParams) (derivePlan, error) {
	if p.Recipe != "" || p.Force {
		return derivePlan{}, api.Errorf(api.KindInvalidInput, "--recipe and --force build from packages; they do not combine with --from")
	}
	if err := s.validateNewName(ctx, p.Name); err != nil {
		return derivePlan{}, err
	}
	base, err := s.findBase(ctx, p.From)
	if err != nil {
		return derivePlan{}, err
	}
	plan := derivePlan{name: p.Name, base: base, sizeMiB: int64(p.SizeMiB)}
	if len(p.Provision) > maxScripts || len(p.Files) > maxFiles {
		return plan, api.Errorf(api.KindInvalidInput, "at most %d scripts and %d files", maxScripts, maxFiles)
	}
	seen := map[string]bool{}
	for _, sc := range p.Provision {
		name := path.Base(filepath.ToSlash(sc.Name))
		if sc.Name == "" || name == "." || name == "/" || strings.ContainsAny(sc.Name, "\x00\n") {
			return plan, api.Errorf(api.KindInvalidInput, "provisioning script has no usable name (%q)", sc.Name)
		}
		if sc.Content == "" {
			return plan, api.Errorf(api.KindInvalidInput, "provisioning script %s is empty", sc.Name)
		}
		if len(sc.Content) > maxScriptBytes {
			return plan, api.Errorf(api.KindInvalidInput, "provisioning script %s is larger than %d bytes: copy big payloads with --file", sc.Name, maxScriptBytes)
		}
		if seen[name] {
			name = fmt.Sprintf("%s-%d", name, len(seen))
		}
		seen[name] = true
		plan.scripts = append(plan.scripts, api.ProvisionScript{Name: name, Content: sc.Content})
	}
	for _, f := range p.Files {
		src, _, err := ValidateFile("file", f.Src)
		if err != nil {
			return plan, err
		}
		dst := f.Dst
		if !strings.HasPrefix(dst, "/") || strings.ContainsAny(dst, "\x00\n") || path.Clean(dst) != dst || dst == "/" ||
			strings.Contains(dst, "/../") {
			return plan, api.Errorf(api.KindInvalidInput, "--file destination %q must be a clean absolute path in the guest", dst)
		}
		plan.files = append(plan.files, api.FileCopy{Src: src, Dst: dst})
	}
	if plan.sizeMiB < 0 {
		return plan, api.Errorf(api.KindInvalidInput, "--size %d is negative", plan.sizeMiB)
	}
	if plan.sizeMiB > 0 {
		fi, err := readFSInfo(ctx, base.RootFS)
		if err != nil {
			return plan, api.Errorf(api.KindInvalidInput, "cannot size a build from image %s: %v", base.Name, err)
		}
		if plan.sizeMiB<<20 < fi.UsedBytes() {
			return plan, sizeError("the content of image "+base.Name, fi.UsedBytes(), plan.sizeMiB)
		}
	}
	return plan, s.VMs.BuildVMsAvailable()
}

// buildFrom begins image build --from: a transient build VM provisioned
// by scripts, flattened into a new image.
func (s *Service) buildFrom(ctx context.Context, p api.ImageBuildParams) (opstate.Snapshot, error) {
	plan, err := s.planDerive(ctx, p)
	if err != nil {
		return opstate.Snapshot{}, err
	}
	if _, busy := building.LoadOrStore(plan.name, struct{}{}); busy {
		return opstate.Snapshot{}, api.Errorf(api.KindBusy, "image %q is already being built", plan.name).
			WithHint("follow it with: banger op ls")
	}
	return s.Ops.Begin("image.build", plan.name, DeriveStages, func(ctx context.Context, op *opstate.Op) (map[string]any, error) {
		defer building.Delete(plan.name)
		return s.runDerive(ctx, op, plan)
	}), nil
}

// buildLog writes every line to the op's log and to a file kept with the
// image; it is safe for concurrent writers (a script's stdout and stderr).
type buildLog struct {
	op   *opstate.Op
	mu   sync.Mutex
	file *os.File
	tail []string
}

func (l *buildLog) line(s string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.op.Log(s)
	if l.file != nil {
		fmt.Fprintln(l.file, s)
	}
	l.tail = append(l.tail, s)
	if len(l.tail) > 30 {
		l.tail = l.tail[len(l.tail)-30:]
	}
}

func (l *buildLog) logf(format string, args ...any) { l.line(fmt.Sprintf(format, args...)) }

// lastOutput returns the last n lines logged.
func (l *buildLog) lastOutput(n int) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	t := l.tail
	if len(t) > n {
		t = t[len(t)-n:]
	}
	return strings.Join(t, "\n")
}

// lineWriter splits a stream into log lines with a prefix.
type lineWriter struct {
	log     *buildLog
	prefix  string
	partial []byte
}

func (w *lineWriter) Write(p []byte) (int, error) {
	w.partial = append(w.partial, p...)
	for {
		i := strings.IndexByte(string(w.partial), '\n')
		if i < 0 {
			break
		}
		w.log.line(w.prefix + strings.TrimRight(string(w.partial[:i]), "\r"))
		w.partial = w.partial[i+1:]
	}
	if len(w.partial) > 64<<10 { // a very long line without a newline
		w.Flush()
	}
	return len(p), nil
}

// Flush emits an unterminated last line.
func (w *lineWriter) Flush() {
	if len(w.partial) > 0 {
		w.log.line(w.prefix + string(w.partial))
		w.partial = nil
	}
}

// timings records how long each stage took, for the result and the log.
type timings struct {
	stage string
	at    time.Time
	spent map[string]float64
}

func (t *timings) enter(op *opstate.Op, stage string) error {
	t.close()
	t.stage, t.at = stage, time.Now()
	op.Stage(stage)
	return nil
}

func (t *timings) close() {
	if t.stage != "" {
		t.spent[t.stage] = time.Since(t.at).Round(10 * time.Millisecond).Seconds()
	}
}

func (s *Service) newStaging() (string, error) {
	if err := os.MkdirAll(s.stagingDir(), 0o700); err != nil {
		return "", err
	}
	return os.MkdirTemp(s.stagingDir(), "build-")
}

func (s *Service) runDerive(ctx context.Context, op *opstate.Op, plan derivePlan) (_ map[string]any, err error) {
	tm := &timings{spent: map[string]float64{}}
	start := time.Now()
	staging, err := s.newStaging()
	if err != nil {
		return nil, fmt.Errorf("make staging dir: %w", err)
	}
	defer os.RemoveAll(staging)
	logFile, err := os.Create(filepath.Join(staging, "build.log"))
	if err != nil {
		return nil, err
	}
	defer logFile.Close()
	blog := &buildLog{op: op, file: logFile}
	defer func() {
		if err != nil && ctx.Err() != nil {
			err = ctx.Err() // report a cancel as such, whatever step noticed it
			blog.line("cancelled: removing the build VM and partial files")
		} else if err != nil {
			blog.logf("build failed: %v; removing the build VM and partial files", err)
		}
	}()

	targetID := store.NewID()
	_ = tm.enter(op, StageBuildVM)
	bvm, err := s.VMs.CreateBuildVM(ctx, op, vm.BuildVMParams{Image: plan.base.ID, TargetID: targetID, TargetName: plan.name})
	if err != nil {
		return nil, fmt.Errorf("create build VM: %w", err)
	}
	removed := false
	removeVM := func() {
		if !removed {
			removed = true
			if rerr := bvm.Remove(); rerr != nil {
				s.Log.Warn("remove build VM", "vm", bvm.Name, "err", rerr)
			}
		}
	}
	defer removeVM()
	fingerprint, err := bvm.HostKeyFingerprint()
	if err != nil {
		return nil, err
	}
	blog.logf("build VM %s is up; its host key %s is pinned", bvm.Name, fingerprint)

	_ = tm.enter(op, StageCopyFiles)
	for _, f := range plan.files {
		if err := s.copyIn(ctx, bvm, f); err != nil {
			return nil, err
		}
		blog.logf("copied %s to %s", f.Src, f.Dst)
	}

	_ = tm.enter(op, StageProvision)
	var digests []store.ScriptDigest
	for i, sc := range plan.scripts {
		sum := sha256.Sum256([]byte(sc.Content))
		digests = append(digests, store.ScriptDigest{Name: sc.Name, SHA256: hex.EncodeToString(sum[:])})
		if err := s.runScript(ctx, bvm, blog, i, sc, plan.name); err != nil {
			return nil, err
		}
		op.Progress((float64(slicesIndex(DeriveStages, StageProvision)) + float64(i+1)/float64(len(plan.scripts))) / float64(len(DeriveStages)))
	}
	// Leave no provisioning scripts behind; flush what they wrote.
	if _, err := bvm.Exec(ctx, []string{"sudo", "rm", "-rf", "--", guestScriptsDir}, nil, nil, nil); err != nil {
		return nil, err
	}
	if _, err := bvm.Exec(ctx, []string{"sync"}, nil, nil, nil); err != nil {
		return nil, err
	}

	_ = tm.enter(op, StageShutdown)
	clean, err := bvm.Shutdown(ctx)
	if err != nil {
		return nil, fmt.Errorf("shut the build VM down: %w", err)
	}
	if !clean {
		blog.line("warning: the build VM did not shut down in time and was killed; the filesystem check repairs its journal")
	}

	_ = tm.enter(op, StageFlatten)
	rootfs, seed, err := s.flattenVM(ctx, blog, bvm.HeldVM, staging, plan.sizeMiB, true, plan.base)
	if err != nil {
		return nil, err
	}
	removeVM()

	_ = tm.enter(op, StageRegister)
	blog.logf("stage times so far (s): %v; total %s", tm.spent, time.Since(start).Round(100*time.Millisecond))
	logFile.Close()
	im, err := s.registerDerived(ctx, plan.name, targetID, plan.base, rootfs, seed, filepath.Join(staging, "build.log"),
		store.Lineage{Source: "build", Scripts: digests, HostKeyFingerprint: fingerprint},
		fmt.Sprintf("built from %s with %s", plan.base.Name, scriptNames(plan.scripts)))
	if err != nil {
		return nil, err
	}
	tm.close()
	op.Logf("registered %s in %.1fs; total %s", im.Name, tm.spent[StageRegister], time.Since(start).Round(100*time.Millisecond))
	return map[string]any{"image": im.Name, "id": im.ID, "rootfs": im.RootFS, "size_bytes": im.SizeBytes,
		"stage_seconds": tm.spent, "vm": bvm.Name}, nil
}

func slicesIndex(list []string, v string) int {
	for i, s := range list {
		if s == v {
			return i
		}
	}
	return 0
}

func scriptNames(scripts []api.ProvisionScript) string {
	if len(scripts) == 0 {
		return "no scripts"
	}
	names := make([]string, len(scripts))
	for i, s := range scripts {
		names[i] = s.Name
	}
	return strings.Join(names, ", ")
}

// uploadScript is the guest-side writer of copied files. It gets the
// destination and mode as arguments, the content on stdin.
const uploadScript = `set -eu
mkdir -p -- "$(dirname -- "$1")"
cat > "$1"
chmod "$2" -- "$1"`

func upload(ctx context.Context, bvm *vm.BuildVM, content *os.File, dst string, mode os.FileMode) error {
	var stderr strings.Builder
	code, err := bvm.Exec(ctx, []string{"sudo", "sh", "-c", uploadScript, "banger-upload", dst, fmt.Sprintf("%o", mode.Perm())},
		content, nil, &stderr)
	if err != nil {
		return err
	}
	if code != 0 {
		return api.Errorf(api.KindGuest, "write %s in the build VM: exit status %d: %s", dst, code, strings.TrimSpace(stderr.String()))
	}
	return nil
}

func (s *Service) copyIn(ctx context.Context, bvm *vm.BuildVM, f api.FileCopy) error {
	// Validate again: the file may have changed since the request.
	src, _, err := ValidateFile("file", f.Src)
	if err != nil {
		return err
	}
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	fi, err := in.Stat()
	if err != nil {
		return err
	}
	return upload(ctx, bvm, in, f.Dst, fi.Mode())
}

func (s *Service) runScript(ctx context.Context, bvm *vm.BuildVM, blog *buildLog, i int, sc api.ProvisionScript, image string) error {
	tmp, err := os.CreateTemp("", "banger-script-")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	if _, err := tmp.WriteString(sc.Content); err != nil {
		return err
	}
	if _, err := tmp.Seek(0, 0); err != nil {
		return err
	}
	guestPath := fmt.Sprintf("%s/%02d-%s", guestScriptsDir, i+1, sc.Name)
	if err := upload(ctx, bvm, tmp, guestPath, 0o755); err != nil {
		return err
	}
	argv := []string{"sudo", "env", "DEBIAN_FRONTEND=noninteractive", "BANGER_IMAGE=" + image}
	if !strings.HasPrefix(sc.Content, "#!") {
		argv = append(argv, "/bin/sh")
	}
	argv = append(argv, guestPath)
	blog.logf("running %s as root", sc.Name)
	t0 := time.Now()
	out := &lineWriter{log: blog, prefix: sc.Name + ": "}
	code, err := bvm.Exec(ctx, argv, nil, out, out)
	out.Flush()
	if err != nil {
		return fmt.Errorf("run %s: %w", sc.Name, err)
	}
	if code != 0 {
		return api.Errorf(api.KindGuest, "provisioning script %s failed with exit status %d; last output:\n%s",
			sc.Name, code, blog.lastOutput(15))
	}
	blog.logf("%s finished in %s", sc.Name, time.Since(t0).Round(100*time.Millisecond))
	return nil
}

// flattenVM turns a stopped VM's system disk (and, with newSeed, its work
// disk) into files in staging: root filesystem shrunk to its content plus
// headroom (or to sizeMiB), host keys removed.
func (s *Service) flattenVM(ctx context.Context, blog *buildLog, h *vm.HeldVM, staging string, sizeMiB int64, newSeed bool, base store.Image) (rootfs, seed string, err error) {
	src, format, release, err := h.SystemDisk(ctx)
	if err != nil {
		return "", "", err
	}
	// A fixed clock for e2fsprogs: the same disk always flattens to the
	// same bytes.
	fakeTime := int64(1)
	if fi, err := os.Stat(src); err == nil {
		fakeTime = fi.ModTime().Unix()
	}
	rootfs = filepath.Join(staging, "rootfs.ext4")
	t0 := time.Now()
	err = flattenDisk(ctx, src, format, rootfs)
	release()
	if err != nil {
		return "", "", err
	}
	blog.logf("flattened the %s system disk in %s", format, time.Since(t0).Round(100*time.Millisecond))
	t0 = time.Now()
	fit, err := fitFilesystem(ctx, rootfs, fakeTime, func(minBytes int64) (int64, error) {
		if sizeMiB > 0 {
			if sizeMiB<<20 < minBytes {
				return 0, sizeError("the built root filesystem", minBytes, sizeMiB)
			}
			return sizeMiB << 20, nil
		}
		return minBytes + max(minRootHeadroom, minBytes/4), nil
	})
	if err != nil {
		return "", "", err
	}
	blog.logf("root filesystem: content %d MiB, image %d MiB (%s)", fit.MinBytes>>20, fit.FinalBytes>>20, time.Since(t0).Round(100*time.Millisecond))
	removed, err := scrubRootFS(ctx, rootfs, fakeTime)
	if err != nil {
		return "", "", err
	}
	if len(removed) > 0 {
		blog.logf("removed from the image: %s", strings.Join(removed, ", "))
	}
	if !newSeed {
		return rootfs, "", nil
	}
	seed = filepath.Join(staging, "work-seed.ext4")
	if err := flattenDisk(ctx, h.WorkDisk(), "raw", seed); err != nil {
		return "", "", err
	}
	baseSeed := int64(0)
	if fi, err := os.Stat(base.WorkSeed); err == nil && base.WorkSeed != "" {
		baseSeed = fi.Size()
	}
	sfit, err := fitFilesystem(ctx, seed, fakeTime, func(minBytes int64) (int64, error) {
		return max(baseSeed, minBytes+max(minSeedHeadroom, minBytes/10)), nil
	})
	if err != nil {
		return "", "", fmt.Errorf("work seed: %w", err)
	}
	blog.logf("work seed (the build VM's home directory): content %d MiB, image %d MiB", sfit.MinBytes>>20, sfit.FinalBytes>>20)
	return rootfs, seed, nil
}

// registerDerived stores the files content-addressed and records the
// image with its lineage. Unchanged files (kernel, initrd, and the work
// seed of a promote) are the parent's, referenced in place: image rm of
// the parent is refused while a child uses them.
func (s *Service) registerDerived(ctx context.Context, name, id string, parent store.Image, rootfs, seed, logPath string,
	l store.Lineage, description string) (store.Image, error) {
	s.blobMu.Lock()
	defer s.blobMu.Unlock()
	im := store.Image{ID: id, Name: name, Kernel: parent.Kernel, KernelRaw: parent.KernelRaw, Initrd: parent.Initrd,
		WorkSeed: parent.WorkSeed, KernelArgs: parent.KernelArgs, Managed: true, Description: description,
		Dir: s.Layout.ImageDir(id)}
	var made []string
	fail := func(err error) (store.Image, error) {
		s.gcBlobs(context.Background(), made)
		os.RemoveAll(im.Dir)
		return store.Image{}, err
	}
	p, _, reused, err := s.storeBlob(ctx, rootfs)
	if err != nil {
		return fail(err)
	}
	im.RootFS = p
	if !reused {
		made = append(made, p)
	}
	if seed != "" {
		p, _, reused, err := s.storeBlob(ctx, seed)
		if err != nil {
			return fail(err)
		}
		im.WorkSeed = p
		if !reused {
			made = append(made, p)
		}
	}
	if err := os.MkdirAll(im.Dir, 0o755); err != nil {
		return fail(err)
	}
	if logPath != "" {
		l.BuildLog = filepath.Join(im.Dir, "build.log")
		if err := os.Rename(logPath, l.BuildLog); err != nil {
			return fail(err)
		}
	}
	for _, f := range []string{im.Kernel, im.KernelRaw, im.Initrd, im.RootFS, im.WorkSeed} {
		if fi, err := os.Stat(f); err == nil && f != "" {
			im.SizeBytes += fi.Size()
		}
	}
	l.ParentID, l.ParentName = parent.ID, parent.Name
	if err := s.Store.CreateDerivedImage(ctx, &im, l); err != nil {
		return fail(err)
	}
	return im, nil
}

// Promote begins turning a stopped VM's system disk into a new image. The
// VM's work disk is not taken: it holds the VM's own work and synced
// credentials, so the promoted image keeps its parent's work seed.
func (s *Service) Promote(ctx context.Context, p api.ImagePromoteParams) (opstate.Snapshot, error) {
	if err := s.validateNewName(ctx, p.Name); err != nil {
		return opstate.Snapshot{}, err
	}
	held, err := s.VMs.HoldStopped(ctx, p.VM, "promote")
	if err != nil {
		return opstate.Snapshot{}, err
	}
	parent, err := s.Store.GetImage(ctx, held.ImageID)
	if err != nil {
		held.Release()
		return opstate.Snapshot{}, fmt.Errorf("image of VM %s: %w", held.Name, err)
	}
	if _, busy := building.LoadOrStore(p.Name, struct{}{}); busy {
		held.Release()
		return opstate.Snapshot{}, api.Errorf(api.KindBusy, "image %q is already being built", p.Name)
	}
	return s.Ops.Begin("image.promote", p.Name, PromoteStages, func(ctx context.Context, op *opstate.Op) (_ map[string]any, err error) {
		defer building.Delete(p.Name)
		defer held.Release()
		defer func() {
			if err != nil && ctx.Err() != nil {
				err = ctx.Err()
			}
		}()
		tm := &timings{spent: map[string]float64{}}
		staging, err := s.newStaging()
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(staging)
		blog := &buildLog{op: op}
		_ = tm.enter(op, StageFlatten)
		rootfs, _, err := s.flattenVM(ctx, blog, held, staging, 0, false, parent)
		if err != nil {
			return nil, err
		}
		_ = tm.enter(op, StageRegister)
		im, err := s.registerDerived(ctx, p.Name, store.NewID(), parent, rootfs, "", "",
			store.Lineage{Source: "promote"}, fmt.Sprintf("promoted from VM %s (image %s)", held.Name, parent.Name))
		tm.close()
		if err != nil {
			return nil, err
		}
		return map[string]any{"image": im.Name, "id": im.ID, "rootfs": im.RootFS, "size_bytes": im.SizeBytes,
			"stage_seconds": tm.spent, "vm": held.Name}, nil
	}), nil
}

// Reconcile removes what interrupted builds and promotes left: staging
// files, and content-addressed files no image references. Call it at
// daemon start, before any operation runs.
func (s *Service) Reconcile(ctx context.Context) error {
	s.blobMu.Lock()
	defer s.blobMu.Unlock()
	if err := os.RemoveAll(s.stagingDir()); err != nil {
		return err
	}
	entries, err := os.ReadDir(s.blobsDir())
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var blobs []string
	for _, e := range entries {
		blobs = append(blobs, filepath.Join(s.blobsDir(), e.Name()))
	}
	s.gcBlobs(ctx, blobs)
	return nil
}
