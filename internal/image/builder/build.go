package builder

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/banger-dev/banger/internal/api"
)

// Stage names one step of a build.
type Stage string

// The build stages, in the order they run.
const (
	StageDebootstrap Stage = "debootstrap"
	StageKernel      Stage = "kernel"
	StageConfigure   Stage = "configure"
	StageInitramfs   Stage = "initramfs"
	StageVmlinux     Stage = "vmlinux"
	StageFilesystem  Stage = "filesystem"
	StageWorkSeed    Stage = "work-seed"
)

// stageWeights are each stage's rough share of a build's wall time.
var stageWeights = []struct {
	stage  Stage
	weight float64
}{
	{StageDebootstrap, 0.55},
	{StageKernel, 0.08},
	{StageConfigure, 0.04},
	{StageInitramfs, 0.08},
	{StageVmlinux, 0.05},
	{StageFilesystem, 0.17},
	{StageWorkSeed, 0.03},
}

// Stages lists the stage names in build order.
func Stages() []string {
	out := make([]string, len(stageWeights))
	for i, s := range stageWeights {
		out[i] = string(s.stage)
	}
	return out
}

// Progress receives build progress: the current stage, the fraction (0..1)
// of the whole build done, and a log line (may be empty).
type Progress func(stage string, fraction float64, logLine string)

// Artifacts are the files of a built image, all inside Dir.
type Artifacts struct {
	Dir        string
	Kernel     string // bzImage (vmlinuz), for QEMU
	KernelRaw  string // uncompressed ELF vmlinux, for Firecracker
	Initrd     string
	RootFS     string // raw ext4, label banger-root
	WorkSeed   string // raw ext4, label banger-work: the user's home
	KernelArgs string
	User       string
	Key        string
}

// KernelArgs are the kernel command line the default image boots with. The
// VMM adds machine-specific ones (such as tsc_early_khz=). panic=-1 turns a
// guest panic into a reboot, which a VMM run with -no-reboot (or
// Firecracker) turns into an exit: a broken guest fails fast.
// net.ifnames=0 keeps eth0 so udev never renames a NIC that is already up.
const KernelArgs = "console=ttyS0 root=/dev/vda rw panic=-1 net.ifnames=0 quiet"

const (
	manifestName = "manifest.json"
	guestUID     = 1000
	fileKernel   = "vmlinuz"
	fileVmlinux  = "vmlinux"
	fileInitrd   = "initrd.img"
	fileRootFS   = "rootfs.ext4"
	fileWorkSeed = "work-seed.ext4"
)

type manifest struct {
	Key           string    `json:"key"`
	Recipe        Recipe    `json:"recipe"`
	KernelVersion string    `json:"kernel_version"`
	KernelArgs    string    `json:"kernel_args"`
	User          string    `json:"user"`
	BuiltAt       time.Time `json:"built_at"`
}

// Cached returns the artifacts of a complete earlier build of r.
func Cached(r Recipe, cacheDir string) (Artifacts, bool) {
	dir := filepath.Join(cacheDir, r.Key())
	data, err := os.ReadFile(filepath.Join(dir, manifestName))
	if err != nil {
		return Artifacts{}, false
	}
	var m manifest
	if err := json.Unmarshal(data, &m); err != nil || m.Key != r.Key() {
		return Artifacts{}, false
	}
	a := artifactsIn(dir, m)
	for _, f := range []string{a.Kernel, a.KernelRaw, a.Initrd, a.RootFS, a.WorkSeed} {
		if st, err := os.Stat(f); err != nil || !st.Mode().IsRegular() {
			return Artifacts{}, false
		}
	}
	return a, true
}

func artifactsIn(dir string, m manifest) Artifacts {
	return Artifacts{
		Dir:        dir,
		Kernel:     filepath.Join(dir, fileKernel),
		KernelRaw:  filepath.Join(dir, fileVmlinux),
		Initrd:     filepath.Join(dir, fileInitrd),
		RootFS:     filepath.Join(dir, fileRootFS),
		WorkSeed:   filepath.Join(dir, fileWorkSeed),
		KernelArgs: m.KernelArgs,
		User:       m.User,
		Key:        m.Key,
	}
}

func (r Recipe) validate() error {
	switch {
	case r.Suite == "" || strings.ContainsAny(r.Suite, "/ "):
		return api.Errorf(api.KindInvalidInput, "image recipe: suite %q is not a Debian suite name such as bookworm", r.Suite)
	case !strings.HasPrefix(r.Mirror, "http://") && !strings.HasPrefix(r.Mirror, "https://") && !strings.HasPrefix(r.Mirror, "file:/"):
		return api.Errorf(api.KindInvalidInput, "image recipe: mirror %q is not an http(s) or file URL", r.Mirror)
	case r.KernelPackage == "" || strings.ContainsAny(r.KernelPackage, "/ "):
		return api.Errorf(api.KindInvalidInput, "image recipe: kernel package %q is not a package name", r.KernelPackage)
	case !userPattern.MatchString(r.User):
		return api.Errorf(api.KindInvalidInput, "image recipe: user %q is not a valid user name", r.User)
	case r.WorkSeedSizeMiB < 8:
		return api.Errorf(api.KindInvalidInput, "image recipe: work seed size %d MiB is below the 8 MiB minimum", r.WorkSeedSizeMiB)
	}
	for _, p := range r.Packages {
		if p == "" || strings.ContainsAny(p, ", /") {
			return api.Errorf(api.KindInvalidInput, "image recipe: package %q is not a package name", p)
		}
	}
	return nil
}

// Build builds the image r describes into cacheDir/<key>/, or returns the
// cached one. It needs root and debootstrap, apt-get, dpkg-deb, chroot and
// mkfs.ext4 on the host. Cancelling ctx kills every child process and
// removes the partial build.
func Build(ctx context.Context, r Recipe, cacheDir string, progress Progress) (Artifacts, error) {
	if progress == nil {
		progress = func(string, float64, string) {}
	}
	if err := r.validate(); err != nil {
		return Artifacts{}, err
	}
	if a, ok := Cached(r, cacheDir); ok {
		progress(string(StageWorkSeed), 1, "image "+a.Key+" is cached")
		return a, nil
	}
	if os.Geteuid() != 0 {
		return Artifacts{}, api.Errorf(api.KindUnavailable, "building an image needs root (debootstrap, chroot, file ownership)").WithHint("run the build from the banger daemon, which runs as root")
	}
	for _, tool := range []string{"debootstrap", "apt-get", "dpkg-deb", "chroot", "tar", "mkfs.ext4"} {
		if _, err := lookPath(tool); err != nil {
			return Artifacts{}, api.Errorf(api.KindUnavailable, "building an image needs %s, which is not installed", tool).WithHint("apt-get install debootstrap e2fsprogs")
		}
	}
	if err := os.MkdirAll(cacheDir, 0o755); err != nil {
		return Artifacts{}, fmt.Errorf("create image cache %s: %w", cacheDir, err)
	}
	key := r.Key()
	tmp, err := os.MkdirTemp(cacheDir, fmt.Sprintf(".tmp-%s-%08x-", key, rand.Uint32()))
	if err != nil {
		return Artifacts{}, fmt.Errorf("create build directory: %w", err)
	}
	done := false
	defer func() {
		if !done {
			if err := removeBuildDir(tmp); err != nil {
				progress("", 0, "cleanup: "+err.Error())
			}
		}
	}()

	b := &build{recipe: r, dir: tmp, root: filepath.Join(tmp, "root"), progress: progress}
	b.run = &runner{
		env:  []string{"DEBIAN_FRONTEND=noninteractive", "LC_ALL=C", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
		line: func(s string) { b.report(s) },
	}
	steps := map[Stage]func(context.Context) error{
		StageDebootstrap: b.debootstrap,
		StageKernel:      b.kernel,
		StageConfigure:   b.configure,
		StageInitramfs:   b.initramfs,
		StageVmlinux:     b.vmlinux,
		StageFilesystem:  b.filesystem,
		StageWorkSeed:    b.workSeed,
	}
	start := 0.0
	for _, s := range stageWeights {
		b.enter(s.stage, start, s.weight)
		start += s.weight
		if err := steps[s.stage](ctx); err != nil {
			if ctx.Err() != nil {
				return Artifacts{}, api.Errorf(api.KindCancelled, "image build cancelled during %s", s.stage)
			}
			return Artifacts{}, fmt.Errorf("image build: %s: %w", s.stage, err)
		}
	}
	if err := os.RemoveAll(b.root); err != nil {
		return Artifacts{}, fmt.Errorf("image build: remove build root: %w", err)
	}
	m := manifest{Key: key, Recipe: r, KernelVersion: b.kernelVersion, KernelArgs: KernelArgs, User: r.User, BuiltAt: time.Now().UTC()}
	data, _ := json.MarshalIndent(m, "", "  ")
	if err := os.WriteFile(filepath.Join(tmp, manifestName), append(data, '\n'), 0o644); err != nil {
		return Artifacts{}, fmt.Errorf("image build: write manifest: %w", err)
	}
	if err := os.Chmod(tmp, 0o755); err != nil {
		return Artifacts{}, fmt.Errorf("image build: %w", err)
	}
	final := filepath.Join(cacheDir, key)
	if err := os.Rename(tmp, final); err != nil {
		// Another build of the same recipe finished first: use it.
		if a, ok := Cached(r, cacheDir); ok {
			return a, nil
		}
		return Artifacts{}, fmt.Errorf("image build: move into cache: %w", err)
	}
	done = true
	progress(string(StageWorkSeed), 1, "image "+key+" built")
	return artifactsIn(final, m), nil
}

// build is the state of one running build.
type build struct {
	recipe        Recipe
	dir, root     string
	run           *runner
	progress      Progress
	kernelVersion string

	stage      Stage
	stageStart float64
	stageWidth float64
	within     float64 // 0..1 inside the current stage
}

func (b *build) enter(s Stage, start, weight float64) {
	b.stage, b.stageStart, b.stageWidth, b.within = s, start, weight, 0
	b.progress(string(s), b.stageStart, "")
}

// advance moves progress inside the current stage forward (never back).
func (b *build) advance(within float64, line string) {
	if within > b.within && within <= 1 {
		b.within = within
	}
	b.progress(string(b.stage), b.stageStart+b.stageWidth*b.within, line)
}

// debootstrapPhases map debootstrap's log lines to progress inside its stage.
var debootstrapPhases = []struct {
	prefix string
	at     float64
}{
	{"I: Retrieving Release", 0.02},
	{"I: Retrieving Packages", 0.04},
	{"I: Resolving dependencies", 0.06},
	{"I: Retrieving ", 0.08},
	{"I: Extracting ", 0.35},
	{"I: Installing core packages", 0.45},
	{"I: Unpacking ", 0.5},
	{"I: Configuring ", 0.7},
	{"I: Base system installed successfully", 1},
}

func (b *build) report(line string) {
	if b.stage == StageDebootstrap {
		for _, p := range debootstrapPhases {
			if strings.HasPrefix(line, p.prefix) {
				// Creep forward inside long phases that log one line per package.
				b.advance(max(p.at, b.within+0.002), line)
				return
			}
		}
	}
	b.advance(b.within, line)
}

func (b *build) debootstrap(ctx context.Context) error {
	return b.run.run(ctx, "debootstrap", "--variant=minbase", "--components=main",
		"--include="+strings.Join(b.recipe.Packages, ","), b.recipe.Suite, b.root, b.recipe.Mirror)
}

func (b *build) chroot(ctx context.Context, args ...string) error {
	return b.run.run(ctx, "chroot", append([]string{b.root}, args...)...)
}

func lookPath(name string) (string, error) {
	for _, dir := range filepath.SplitList("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:" + os.Getenv("PATH")) {
		p := filepath.Join(dir, name)
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fs.ErrNotExist
}

// removeBuildDir removes a build directory, first detaching anything
// still mounted below it so removal can never reach into /proc or /dev.
func removeBuildDir(dir string) error {
	mounts, err := mountsUnder(dir)
	if err != nil {
		return fmt.Errorf("list mounts: %w (left %s in place)", err, dir)
	}
	for i := len(mounts) - 1; i >= 0; i-- { // deepest last-mounted first
		if err := unix.Unmount(mounts[i], 0); err != nil {
			if err := unix.Unmount(mounts[i], unix.MNT_DETACH); err != nil && !errors.Is(err, syscall.EINVAL) {
				return fmt.Errorf("unmount %s: %w (left %s in place)", mounts[i], err, dir)
			}
		}
	}
	if mounts, _ := mountsUnder(dir); len(mounts) > 0 {
		return fmt.Errorf("%s is still mounted; left %s in place", mounts[0], dir)
	}
	return os.RemoveAll(dir)
}

func mountsUnder(dir string) ([]string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	prefix := filepath.Clean(dir) + "/"
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 4 {
			mp := unescapeMountPath(fields[4])
			if mp == filepath.Clean(dir) || strings.HasPrefix(mp, prefix) {
				out = append(out, mp)
			}
		}
	}
	return out, sc.Err()
}

// unescapeMountPath undoes mountinfo's octal escapes (\040 for space).
func unescapeMountPath(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var sb strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			var v int
			if _, err := fmt.Sscanf(s[i+1:i+4], "%03o", &v); err == nil {
				sb.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		sb.WriteByte(s[i])
	}
	return sb.String()
}
