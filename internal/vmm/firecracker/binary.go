package firecracker

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/banger-dev/banger/internal/vmm"
)

// DefaultBinary and DefaultJailerBinary are looked up in the runtime
// directories and then on PATH when no path is configured.
const (
	DefaultBinary       = "firecracker"
	DefaultJailerBinary = "jailer"
)

// MinVersion is the oldest Firecracker release banger drives: 1.10 has
// every endpoint banger uses with today's field names, and ACPI device
// discovery (1.8+) for guest kernels without virtio-mmio command-line
// devices.
var MinVersion = Version{Major: 1, Minor: 10}

// SupportedRange describes MinVersion for messages and doctor.
func SupportedRange() string {
	return fmt.Sprintf("%d.%d and later", MinVersion.Major, MinVersion.Minor)
}

// Version is a Firecracker release number.
type Version struct{ Major, Minor, Patch int }

func (v Version) String() string { return fmt.Sprintf("%d.%d.%d", v.Major, v.Minor, v.Patch) }

// Less reports whether v is older than o.
func (v Version) Less(o Version) bool {
	if v.Major != o.Major {
		return v.Major < o.Major
	}
	if v.Minor != o.Minor {
		return v.Minor < o.Minor
	}
	return v.Patch < o.Patch
}

var versionLine = regexp.MustCompile(`^(Firecracker|Jailer) v(\d+)\.(\d+)\.(\d+)`)

// ParseVersion reads `firecracker --version` (or `jailer --version`)
// output: the first line is "Firecracker v1.10.1" ("Jailer v1.10.1"),
// optionally followed by a pre-release suffix. program is "Firecracker"
// or "Jailer".
func ParseVersion(program, output string) (Version, error) {
	first, _, _ := strings.Cut(strings.TrimSpace(output), "\n")
	m := versionLine.FindStringSubmatch(strings.TrimSpace(first))
	if m == nil || m[1] != program {
		return Version{}, fmt.Errorf("unrecognised --version output %q (want %q followed by vX.Y.Z)", first, program)
	}
	var v Version
	v.Major, _ = strconv.Atoi(m[2])
	v.Minor, _ = strconv.Atoi(m[3])
	v.Patch, _ = strconv.Atoi(m[4])
	return v, nil
}

// noKVMMarker is a line a Firecracker-compatible binary may print in its
// --version output to say it does not use /dev/kvm. banger's test double
// (which boots guests with QEMU) prints it; real Firecracker never does.
const noKVMMarker = "kvm: not required"

// binaryInfo is what banger learned from one binary's --version.
type binaryInfo struct {
	Path    string
	Version Version
	NoKVM   bool
}

// probeBinary runs path --version and checks the version.
func probeBinary(ctx context.Context, program, path string) (binaryInfo, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, path, "--version").CombinedOutput()
	if err != nil {
		return binaryInfo{}, fmt.Errorf("%s --version failed: %v: %s", path, err, strings.TrimSpace(string(out)))
	}
	v, err := ParseVersion(program, string(out))
	if err != nil {
		return binaryInfo{}, fmt.Errorf("%s: %w", path, err)
	}
	if v.Less(MinVersion) {
		return binaryInfo{}, fmt.Errorf("%w: %s is %s %s; banger supports %s %s: install a newer release (https://github.com/firecracker-microvm/firecracker/releases)",
			vmm.ErrUnavailable, path, program, v, program, SupportedRange())
	}
	return binaryInfo{Path: path, Version: v, NoKVM: strings.Contains(string(out), noKVMMarker)}, nil
}

// resolveBinary finds a binary: an explicitly configured path or name
// (which must exist: no silent fallback), else name in each runtime
// directory, else name on PATH.
func resolveBinary(configured, name string, runtimeDirs []string) (string, error) {
	if configured != "" {
		p, err := exec.LookPath(configured)
		if err != nil {
			return "", fmt.Errorf("%w: configured %s binary %q not found: %v (fix firecracker_binary / --firecracker-bin)", vmm.ErrUnavailable, name, configured, err)
		}
		return absPath(p), nil
	}
	for _, dir := range runtimeDirs {
		if dir == "" {
			continue
		}
		p := filepath.Join(dir, name)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	p, err := exec.LookPath(name)
	if err != nil {
		where := "PATH"
		if len(runtimeDirs) > 0 {
			where = strings.Join(runtimeDirs, ", ") + " or PATH"
		}
		return "", fmt.Errorf("%w: %s not found in %s: install the release binary (https://github.com/firecracker-microvm/firecracker/releases) or set firecracker_binary / --firecracker-bin",
			vmm.ErrUnavailable, name, where)
	}
	return absPath(p), nil
}

func absPath(p string) string {
	if a, err := filepath.Abs(p); err == nil {
		return a
	}
	return p
}

// DefaultRuntimeDirs are where a bundled Firecracker is looked for:
// <stateDir>/runtime, then next to the running banger binary.
func DefaultRuntimeDirs(stateDir string) []string {
	var dirs []string
	if stateDir != "" {
		dirs = append(dirs, filepath.Join(stateDir, "runtime"))
	}
	if exe, err := os.Executable(); err == nil {
		dirs = append(dirs, filepath.Dir(exe))
	}
	return dirs
}

// isUnavailable reports whether err says the backend cannot run here.
func isUnavailable(err error) bool { return errors.Is(err, vmm.ErrUnavailable) }
