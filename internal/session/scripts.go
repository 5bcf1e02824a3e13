package session

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"io/fs"
	"path"
	"strconv"
)

//go:embed scripts/*.sh
var scriptFS embed.FS

// Script names, as installed in the guest.
const (
	scriptRunner  = "runner.sh"
	scriptInspect = "inspect.sh"
	scriptSignal  = "signal.sh"
	scriptIO      = "io.sh"
	scriptAuth    = "auth.sh"
)

// scriptsHash identifies this binary's scripts, so a guest keeps one
// directory per version and an upgraded daemon never runs stale scripts.
var scriptsHash = func() string {
	h := sha256.New()
	entries, _ := fs.ReadDir(scriptFS, "scripts")
	for _, e := range entries {
		b, _ := scriptFS.ReadFile("scripts/" + e.Name())
		h.Write([]byte(e.Name() + "\x00"))
		h.Write(b)
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil))[:12]
}()

// layout is where things live in a guest.
type layout struct {
	root string // e.g. /var/lib/banger
}

func (l layout) libDir() string      { return path.Join(l.root, "lib", scriptsHash) }
func (l layout) sessionsDir() string { return path.Join(l.root, "sessions") }
func (l layout) sessionDir(name string) string {
	return path.Join(l.sessionsDir(), name)
}

// invocation is the argv that runs script with args in the guest.
func (l layout) invocation(script string, args ...string) []string {
	return append([]string{"/bin/bash", path.Join(l.libDir(), script)}, args...)
}

// startArgs renders runner.sh start.
func (l layout) startArgs(name string, pty bool, cols, rows int, cwd string, env, argv []string) []string {
	args := []string{"start", l.sessionDir(name), boolFlag(pty), strconv.Itoa(cols), strconv.Itoa(rows), cwd,
		strconv.Itoa(len(env))}
	args = append(args, env...)
	args = append(args, argv...)
	return l.invocation(scriptRunner, args...)
}

func boolFlag(b bool) string {
	if b {
		return "1"
	}
	return "0"
}

// installScript creates the script and session directories and unpacks
// the scripts (a tar on stdin). Run with sudo; $1 is the guest user who
// owns the sessions, $2 the script dir, $3 the sessions dir. Constant
// text: the data are its arguments.
const installScript = `set -e
install -d -m 0755 "$2"
install -d -m 0755 -o "$1" -g "$(id -gn "$1")" "$3"
tar -x -o -C "$2" -f -
chmod 0755 "$2"/*.sh`

// scriptsTar is the tar installScript unpacks.
func scriptsTar() []byte {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	entries, _ := fs.ReadDir(scriptFS, "scripts")
	for _, e := range entries {
		b, _ := scriptFS.ReadFile("scripts/" + e.Name())
		_ = tw.WriteHeader(&tar.Header{Name: e.Name(), Mode: 0o755, Size: int64(len(b)), Typeflag: tar.TypeReg})
		_, _ = tw.Write(b)
	}
	_ = tw.Close()
	return buf.Bytes()
}
