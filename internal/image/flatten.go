package image

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"github.com/banger-dev/banger/internal/api"
)

// Headroom left in a flattened root filesystem beyond its content: enough
// for a VM to install a few packages without the image being padded to
// the base's full size.
const (
	minRootHeadroom = 512 << 20
	minSeedHeadroom = 16 << 20
)

// runTool runs a host tool and returns its output; it dies with ctx. env
// entries are added to the daemon's environment.
func runTool(ctx context.Context, env []string, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), env...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if err != nil && ctx.Err() != nil {
		return out.String(), ctx.Err()
	}
	if err != nil {
		return out.String(), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, lastLines(out.String(), 10))
	}
	return out.String(), nil
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// fsInfo is what dumpe2fs says about an ext4 filesystem.
type fsInfo struct {
	BlockSize, BlockCount, FreeBlocks int64
}

// UsedBytes is the space the content takes.
func (f fsInfo) UsedBytes() int64 { return (f.BlockCount - f.FreeBlocks) * f.BlockSize }

// SizeBytes is the filesystem's size.
func (f fsInfo) SizeBytes() int64 { return f.BlockCount * f.BlockSize }

var dumpe2fsField = regexp.MustCompile(`(?m)^(Block count|Free blocks|Block size):\s+(\d+)\s*$`)

// readFSInfo reads an ext4 image's superblock without changing it.
func readFSInfo(ctx context.Context, path string) (fsInfo, error) {
	out, err := runTool(ctx, nil, "dumpe2fs", "-h", path)
	if err != nil {
		return fsInfo{}, fmt.Errorf("read filesystem of %s: %w", path, err)
	}
	return parseFSInfo(out)
}

func parseFSInfo(out string) (fsInfo, error) {
	var fi fsInfo
	for _, m := range dumpe2fsField.FindAllStringSubmatch(out, -1) {
		v, _ := strconv.ParseInt(m[2], 10, 64)
		switch m[1] {
		case "Block count":
			fi.BlockCount = v
		case "Free blocks":
			fi.FreeBlocks = v
		case "Block size":
			fi.BlockSize = v
		}
	}
	if fi.BlockCount == 0 || fi.BlockSize == 0 {
		return fsInfo{}, errors.New("dumpe2fs output has no block count or block size: not an ext4 image?")
	}
	return fi, nil
}

// flattenDisk writes the whole content of src (a file or block device in
// format "raw" or "qcow2", with any backing chain) to dst as a sparse raw
// image. dst must not exist.
func flattenDisk(ctx context.Context, src, format, dst string) error {
	if format == "" {
		format = "raw"
	}
	if _, err := runTool(ctx, nil, "qemu-img", "convert", "-f", format, "-O", "raw", src, dst); err != nil {
		os.Remove(dst)
		return fmt.Errorf("flatten system disk: %w", err)
	}
	return nil
}

// fitResult is the outcome of fitting a filesystem.
type fitResult struct {
	MinBytes, FinalBytes int64
}

// fitFilesystem checks the ext4 image at path, shrinks it to its content
// and grows it to size(minBytes). The e2fsprogs clock is pinned to
// fakeTime so the same input always gives the same bytes (which is what
// lets the content-addressed store deduplicate a repeated promote).
func fitFilesystem(ctx context.Context, path string, fakeTime int64, size func(minBytes int64) (int64, error)) (fitResult, error) {
	env := pinnedClock(fakeTime)
	if err := fsck(ctx, env, path); err != nil {
		return fitResult{}, err
	}
	if _, err := runTool(ctx, env, "resize2fs", "-M", path); err != nil {
		return fitResult{}, fmt.Errorf("shrink filesystem: %w", err)
	}
	fi, err := readFSInfo(ctx, path)
	if err != nil {
		return fitResult{}, err
	}
	res := fitResult{MinBytes: fi.SizeBytes()}
	final, err := size(res.MinBytes)
	if err != nil {
		return res, err
	}
	final = (final + 1<<20 - 1) &^ (1<<20 - 1) // whole MiB
	if final < res.MinBytes {
		final = res.MinBytes
	}
	if err := os.Truncate(path, final); err != nil {
		return res, fmt.Errorf("size filesystem image: %w", err)
	}
	if final > res.MinBytes {
		if _, err := runTool(ctx, env, "resize2fs", path); err != nil {
			return res, fmt.Errorf("grow filesystem: %w", err)
		}
	}
	res.FinalBytes = final
	return res, nil
}

// pinnedClock is the environment that makes e2fsprogs use a fixed time
// for the superblock's write, check and mount times: e2fsck reads
// E2FSCK_TIME, the library E2FSPROGS_FAKE_TIME.
func pinnedClock(unix int64) []string {
	t := strconv.FormatInt(unix, 10)
	return []string{"E2FSCK_TIME=" + t, "E2FSPROGS_FAKE_TIME=" + t}
}

// fsck runs a forced check that repairs what it can. Exit status 1 and 2
// mean "errors corrected"; 4 and above mean the filesystem is damaged.
func fsck(ctx context.Context, env []string, path string) error {
	cmd := exec.CommandContext(ctx, "e2fsck", "-f", "-y", path)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		return ctx.Err()
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) && ee.ExitCode() < 4 {
		return nil
	}
	if err != nil {
		return fmt.Errorf("check filesystem (e2fsck -f -y %s): %w: %s", path, err, lastLines(string(out), 10))
	}
	return nil
}

// safeEntryName is what a directory entry name must look like before it
// is handed to debugfs, whose command language has no quoting.
var safeEntryName = regexp.MustCompile(`^[A-Za-z0-9._@+-]+$`)

// removeFiles deletes the regular files in dir (inside the ext4 image at
// path) whose name starts with prefix, without mounting the image. It
// returns the names removed.
func removeFiles(ctx context.Context, path string, fakeTime int64, dir, prefix string) ([]string, error) {
	out, err := runTool(ctx, nil, "debugfs", "-R", "ls -p "+dir, path)
	if err != nil {
		return nil, fmt.Errorf("list %s in the image: %w", dir, err)
	}
	var names []string
	for _, line := range strings.Split(out, "\n") {
		// /inode/mode/uid/gid/name/size/
		f := strings.Split(strings.TrimSpace(line), "/")
		if len(f) < 7 || !strings.HasPrefix(f[2], "10") { // 10xxxx: regular file
			continue
		}
		name := f[5]
		if strings.HasPrefix(name, prefix) && name != "." && name != ".." {
			if !safeEntryName.MatchString(name) {
				return nil, fmt.Errorf("refusing to handle odd file name %q in %s", name, dir)
			}
			names = append(names, name)
		}
	}
	if len(names) == 0 {
		return nil, nil
	}
	var script strings.Builder
	for _, n := range names {
		fmt.Fprintf(&script, "rm %s/%s\n", strings.TrimRight(dir, "/"), n)
	}
	cmdFile := path + ".debugfs"
	if err := os.WriteFile(cmdFile, []byte(script.String()), 0o600); err != nil {
		return nil, err
	}
	defer os.Remove(cmdFile)
	if _, err := runTool(ctx, pinnedClock(fakeTime), "debugfs", "-w", "-f", cmdFile, path); err != nil {
		return nil, fmt.Errorf("remove %s* from %s in the image: %w", prefix, dir, err)
	}
	return names, nil
}

// scrubRootFS removes what must never ship in an image: SSH host keys
// (every VM gets its own from the daemon) and the authorized keys the
// build VM's config drive installed. It verifies no host key is left.
func scrubRootFS(ctx context.Context, path string, fakeTime int64) ([]string, error) {
	var removed []string
	for _, d := range []struct{ dir, prefix string }{{"/etc/ssh", "ssh_host_"}, {"/etc/ssh/authorized_keys", ""}} {
		names, err := removeFiles(ctx, path, fakeTime, d.dir, d.prefix)
		if err != nil && d.prefix != "" {
			return removed, err
		}
		for _, n := range names {
			removed = append(removed, d.dir+"/"+n)
		}
	}
	if err := resetMachineID(ctx, path, fakeTime); err != nil {
		return removed, err
	}
	left, err := removeFiles(ctx, path, fakeTime, "/etc/ssh", "ssh_host_")
	if err != nil {
		return removed, err
	}
	if len(left) > 0 {
		return removed, fmt.Errorf("SSH host keys still in the image after removal: %v", left)
	}
	return removed, nil
}

// sha256File returns the hex SHA-256 of a file.
func sha256File(ctx context.Context, path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, bufio.NewReaderSize(ctxReader{ctx, f}, 1<<20)); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// blobsDir is the content-addressed store of the files builds and
// promotes produce: <sha256>.ext4, shared by every image with that content.
func (s *Service) blobsDir() string { return filepath.Join(s.Layout.ImagesDir(), "blobs") }

// stagingDir holds the partial files of running builds and promotes.
func (s *Service) stagingDir() string { return filepath.Join(s.Layout.ImagesDir(), ".staging") }

func (s *Service) isBlob(path string) bool {
	return path != "" && filepath.Dir(path) == s.blobsDir()
}

// storeBlob moves file into the content-addressed store. When a blob with
// the same content exists it is reused and file removed, so identical
// results (a VM promoted twice) take the disk space once. The caller holds
// s.blobMu until the image referencing the blob is recorded.
func (s *Service) storeBlob(ctx context.Context, file string) (path, digest string, reused bool, err error) {
	digest, err = sha256File(ctx, file)
	if err != nil {
		return "", "", false, fmt.Errorf("hash %s: %w", filepath.Base(file), err)
	}
	if err := os.MkdirAll(s.blobsDir(), 0o755); err != nil {
		return "", "", false, err
	}
	path = filepath.Join(s.blobsDir(), digest+".ext4")
	if _, err := os.Stat(path); err == nil {
		return path, digest, true, os.Remove(file)
	}
	if err := os.Chmod(file, 0o644); err != nil {
		return "", "", false, err
	}
	if err := os.Rename(file, path); err != nil {
		return "", "", false, fmt.Errorf("store image file: %w", err)
	}
	return path, digest, false, nil
}

// gcBlobs removes the given blobs that no image references any more.
// The caller holds s.blobMu.
func (s *Service) gcBlobs(ctx context.Context, candidates []string) {
	for _, p := range candidates {
		if !s.isBlob(p) {
			continue
		}
		refs, err := s.Store.ImagesReferencing(ctx, "", []string{p})
		if err != nil || len(refs) > 0 {
			continue
		}
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			s.Log.Warn("remove unused image file", "path", p, "err", err)
		}
	}
}

// sizeError is the "disk too small" refusal.
func sizeError(what string, needBytes, haveMiB int64) error {
	return api.Errorf(api.KindInvalidInput, "%s needs at least %d MiB but --size is %d MiB", what,
		(needBytes+1<<20-1)>>20, haveMiB).WithHint(fmt.Sprintf("give --size %d or more, or leave it out to size the image to its content", (needBytes+1<<20-1)>>20))
}

// resetMachineID empties /etc/machine-id, as the base image ships it: each
// VM then gets its own id at first boot instead of all sharing the build
// VM's (which also confuses first-boot logic in systemd and udev).
func resetMachineID(ctx context.Context, path string, fakeTime int64) error {
	empty := path + ".empty"
	if err := os.WriteFile(empty, nil, 0o444); err != nil {
		return err
	}
	defer os.Remove(empty)
	cmdFile := path + ".machine-id.debugfs"
	script := "cd /etc\nrm machine-id\nwrite " + empty + " machine-id\nsif machine-id mode 0100444\n"
	if err := os.WriteFile(cmdFile, []byte(script), 0o600); err != nil {
		return err
	}
	defer os.Remove(cmdFile)
	if _, err := runTool(ctx, pinnedClock(fakeTime), "debugfs", "-w", "-f", cmdFile, path); err != nil {
		return fmt.Errorf("reset /etc/machine-id in the image: %w", err)
	}
	return nil
}
