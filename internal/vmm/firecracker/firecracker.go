// Package firecracker is banger's production VMM backend: it boots
// MachineSpecs with Firecracker (release 1.10 and later), configured
// through Firecracker's HTTP API on a Unix socket, optionally under the
// jailer.
//
// Start runs `firecracker --api-sock <sock> --id banger-<vm>` in its own
// session (stdout is the guest serial console), waits for the API socket,
// sends logger, metrics, machine, boot source, drives and NICs, then
// InstanceStart. Shutdown sends Ctrl-Alt-Del (the guest reboots, and
// Firecracker exits on a guest reset); the daemon kills after its
// timeout. After a daemon restart Adopt re-identifies the process by pid,
// start time and the --id on its command line.
package firecracker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/banger-dev/banger/internal/api"
	"github.com/banger-dev/banger/internal/vmm"
)

// Names of the files Start creates in MachineSpec.RunDir.
const (
	apiSocketName = "firecracker.sock"
	pidFileName   = "firecracker.pid"
	stateFileName = "firecracker.json"
	stderrName    = "firecracker.stderr"
	logName       = "firecracker.log"
	metricsName   = "firecracker.metrics"
)

// Options configure a Driver. The zero value finds firecracker on PATH.
type Options struct {
	// Binary is the configured Firecracker (firecracker_binary /
	// --firecracker-bin): a path or a name on PATH. Empty means: look in
	// RuntimeDirs, then PATH.
	Binary string
	// RuntimeDirs hold bundled binaries (see DefaultRuntimeDirs).
	RuntimeDirs []string
	// Jailer, when set, runs every VM under Firecracker's jailer.
	Jailer *JailerOptions
	// ProbeKVM decides whether hardware KVM can run guests; vmm.ProbeKVM
	// by default.
	ProbeKVM func() vmm.KVMProbe
	// SocketTimeout bounds how long the API socket may take to appear
	// (default 10s).
	SocketTimeout time.Duration
	Logger        *slog.Logger
}

// Driver implements vmm.Driver with Firecracker.
type Driver struct {
	opts Options
	log  *slog.Logger

	mu       sync.Mutex
	probed   map[string]binaryInfo // by resolved path
	children vmm.Children
}

var _ vmm.Driver = (*Driver)(nil)

// New returns a Firecracker driver.
func New(opts Options) *Driver {
	if opts.ProbeKVM == nil {
		opts.ProbeKVM = vmm.ProbeKVM
	}
	if opts.SocketTimeout <= 0 {
		opts.SocketTimeout = 10 * time.Second
	}
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	return &Driver{opts: opts, log: log, probed: map[string]binaryInfo{}}
}

// Name implements vmm.Driver.
func (d *Driver) Name() string { return "firecracker" }

// binaries resolves and version-checks Firecracker (and the jailer when
// configured). Results are cached per path and modification time, so a
// replaced binary is checked again.
func (d *Driver) binaries(ctx context.Context) (fc binaryInfo, jailer binaryInfo, err error) {
	path, err := resolveBinary(d.opts.Binary, DefaultBinary, d.opts.RuntimeDirs)
	if err != nil {
		return fc, jailer, err
	}
	if fc, err = d.probe(ctx, "Firecracker", path); err != nil {
		return fc, jailer, err
	}
	if d.opts.Jailer == nil {
		return fc, jailer, nil
	}
	jpath, err := resolveBinary(d.opts.Jailer.Binary, DefaultJailerBinary, append([]string{filepath.Dir(fc.Path)}, d.opts.RuntimeDirs...))
	if err != nil {
		return fc, jailer, err
	}
	if jailer, err = d.probe(ctx, "Jailer", jpath); err != nil {
		return fc, jailer, err
	}
	if jailer.Version != fc.Version {
		return fc, jailer, fmt.Errorf("%w: jailer %s is version %s but firecracker %s is %s; use the jailer of the same release",
			vmm.ErrUnavailable, jailer.Path, jailer.Version, fc.Path, fc.Version)
	}
	return fc, jailer, nil
}

func (d *Driver) probe(ctx context.Context, program, path string) (binaryInfo, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return binaryInfo{}, fmt.Errorf("%w: %v", vmm.ErrUnavailable, err)
	}
	key := fmt.Sprintf("%s\x00%d\x00%d", path, fi.ModTime().UnixNano(), fi.Size())
	d.mu.Lock()
	info, ok := d.probed[key]
	d.mu.Unlock()
	if ok {
		return info, nil
	}
	info, err = probeBinary(ctx, program, path)
	if err != nil {
		if !isUnavailable(err) {
			err = fmt.Errorf("%w: %v", vmm.ErrUnavailable, err)
		}
		return binaryInfo{}, err
	}
	d.mu.Lock()
	d.probed[key] = info
	d.mu.Unlock()
	return info, nil
}

// Available reports whether Firecracker can run here: the binary is found
// and recent enough (and the jailer, when configured), and KVM can run
// ordinary guests.
func (d *Driver) Available(ctx context.Context) error {
	fc, _, err := d.binaries(ctx)
	if err != nil {
		return err
	}
	if !fc.NoKVM {
		if p := d.opts.ProbeKVM(); !p.Usable {
			return fmt.Errorf("%w: firecracker needs hardware KVM that runs ordinary guests: %s", vmm.ErrUnavailable, p.Reason)
		}
	}
	return nil
}

// Info describes the Firecracker in use, for `banger version` and doctor.
func (d *Driver) Info(ctx context.Context) (path string, version string, err error) {
	fc, _, err := d.binaries(ctx)
	if err != nil {
		return "", "", err
	}
	return fc.Path, fc.Version.String(), nil
}

// runState is persisted in the run directory so every later call (and a
// restarted daemon) finds the API socket and the jail, whatever the
// driver's options are now.
type runState struct {
	InstanceID string `json:"instance_id"`
	APISocket  string `json:"api_socket"`
	Binary     string `json:"binary"`
	JailRoot   string `json:"jail_root,omitempty"`
	Cgroup     string `json:"cgroup,omitempty"`
}

func readRunState(runDir string) (runState, error) {
	var st runState
	data, err := os.ReadFile(filepath.Join(runDir, stateFileName))
	if err != nil {
		return st, err
	}
	if err := json.Unmarshal(data, &st); err != nil {
		return st, fmt.Errorf("parse %s: %w", filepath.Join(runDir, stateFileName), err)
	}
	return st, nil
}

func writeFileAtomic(path string, data []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// Start implements vmm.Driver. It returns once Firecracker accepted the
// configuration and InstanceStart; it does not wait for the guest OS. On
// any failure the process is killed and every file it made is removed.
func (d *Driver) Start(ctx context.Context, spec vmm.MachineSpec) (vmm.Handle, error) {
	if err := validateSpec(spec); err != nil {
		return vmm.Handle{}, err
	}
	fc, jailerBin, err := d.binaries(ctx)
	if err != nil {
		return vmm.Handle{}, err
	}
	if err := os.MkdirAll(spec.RunDir, 0o700); err != nil {
		return vmm.Handle{}, fmt.Errorf("firecracker: create run directory: %w", err)
	}
	if pid, ok := d.runningFromPidFile(spec); ok {
		return vmm.Handle{}, api.Errorf(api.KindConflict, "firecracker: VM %s already runs as pid %d", spec.ID, pid).
			WithHint("stop or kill the VM before starting it again")
	}
	fcID := instanceID(spec.ID)
	st := runState{InstanceID: fcID, Binary: fc.Path, APISocket: filepath.Join(spec.RunDir, apiSocketName)}
	var jl *jail
	if d.opts.Jailer != nil {
		j := newJail(*d.opts.Jailer, fc.Path, fcID)
		jl = &j
		st.APISocket, st.JailRoot, st.Cgroup = j.hostPath(jailAPISocket), j.Root, j.Cgroup
	}
	// Leftovers of an earlier run: Firecracker refuses an existing socket.
	d.removeRunFiles(spec.RunDir, st)

	cleanup := func() { d.removeRunFiles(spec.RunDir, st) }
	paths := hostPaths(spec, spec.RunDir)
	if jl != nil {
		if err := d.prepareJail(*jl, spec); err != nil {
			cleanup()
			return vmm.Handle{}, err
		}
		paths = jailPaths(spec)
	} else {
		for _, f := range []string{paths.Log, paths.Metrics} {
			// Firecracker opens these for appending; they must exist.
			fh, err := os.OpenFile(f, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
			if err != nil {
				cleanup()
				return vmm.Handle{}, fmt.Errorf("firecracker: create %s: %w", f, err)
			}
			fh.Close()
		}
	}
	data, _ := json.Marshal(st)
	if err := writeFileAtomic(filepath.Join(spec.RunDir, stateFileName), data); err != nil {
		cleanup()
		return vmm.Handle{}, fmt.Errorf("firecracker: write run state: %w", err)
	}

	console := os.DevNull
	if spec.ConsoleLog != "" {
		console = spec.ConsoleLog
	}
	// The console may show secrets: private, and appended to across boots.
	stdout, err := os.OpenFile(console, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		cleanup()
		return vmm.Handle{}, fmt.Errorf("firecracker: open console log: %w", err)
	}
	defer stdout.Close()
	stderrPath := filepath.Join(spec.RunDir, stderrName)
	stderr, err := os.OpenFile(stderrPath, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		cleanup()
		return vmm.Handle{}, fmt.Errorf("firecracker: create %s: %w", stderrPath, err)
	}
	defer stderr.Close()

	var cmd *exec.Cmd
	if jl != nil {
		cmd = exec.Command(jailerBin.Path, jailerArgs(*d.opts.Jailer, fc.Path, fcID)...)
	} else {
		cmd = exec.Command(fc.Path, "--api-sock", st.APISocket, "--id", fcID)
	}
	// Not CommandContext: the VM outlives the request that started it.
	cmd.Stdout, cmd.Stderr = stdout, stderr
	cmd.Dir = spec.RunDir
	// Own session: signals to the daemon's group or terminal miss the VM.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	c, err := d.children.Start(cmd)
	if err != nil {
		cleanup()
		return vmm.Handle{}, fmt.Errorf("firecracker: start %s: %w", cmd.Path, err)
	}
	pid := c.PID
	fail := func(err error) (vmm.Handle, error) {
		_ = cmd.Process.Kill()
		<-c.Done()
		cleanup()
		return vmm.Handle{}, err
	}
	startTime, err := vmm.ProcessStartTime(pid)
	if err != nil {
		select {
		case <-c.Done():
			return fail(exitError(c, stderrPath))
		case <-time.After(time.Second):
			return fail(fmt.Errorf("firecracker: read start time of pid %d: %w", pid, err))
		}
	}
	d.children.Register(c, startTime)
	if err := os.WriteFile(filepath.Join(spec.RunDir, pidFileName), []byte(strconv.Itoa(pid)+"\n"), 0o600); err != nil {
		return fail(fmt.Errorf("firecracker: write pid file: %w", err))
	}

	client := NewClient(st.APISocket)
	if err := d.waitSocket(ctx, client, c, stderrPath); err != nil {
		return fail(err)
	}
	if err := d.configure(ctx, client, planBoot(spec, paths), c, stderrPath); err != nil {
		return fail(err)
	}
	accel := "kvm"
	if fc.NoKVM {
		accel = "emulated"
	}
	d.log.Debug("firecracker: VM started", "vm", spec.ID, "pid", pid, "version", fc.Version.String(), "jailed", jl != nil)
	return vmm.Handle{PID: pid, StartTime: startTime, RunDir: spec.RunDir, Accel: accel, StartedAt: time.Now().UTC()}, nil
}

func (d *Driver) prepareJail(j jail, spec vmm.MachineSpec) error {
	if err := j.prepare(); err != nil {
		return err
	}
	if err := j.linkFile(spec.KernelRaw, j.hostPath(jailKernel), false); err != nil {
		return err
	}
	if spec.Initrd != "" {
		if err := j.linkFile(spec.Initrd, j.hostPath(jailInitrd), false); err != nil {
			return err
		}
	}
	for _, dr := range spec.Drives {
		// Drives are per-VM files: the jailed user must be able to open
		// them (read-write unless read-only).
		if err := j.linkFile(dr.Path, j.hostPath(jailDriveDir+"/"+dr.ID), true); err != nil {
			return err
		}
	}
	return nil
}

// waitSocket polls GET / until Firecracker answers, the process exits,
// or SocketTimeout / ctx ends.
func (d *Driver) waitSocket(ctx context.Context, client *Client, c *vmm.Child, stderrPath string) error {
	ctx, cancel := context.WithTimeout(ctx, d.opts.SocketTimeout)
	defer cancel()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	var lastErr error
	for {
		if _, err := os.Stat(client.SocketPath()); err == nil {
			rctx, rcancel := context.WithTimeout(ctx, time.Second)
			_, err := client.InstanceInfo(rctx)
			rcancel()
			if err == nil {
				return nil
			}
			lastErr = err
		}
		select {
		case <-c.Done():
			return exitError(c, stderrPath)
		case <-ctx.Done():
			msg := fmt.Sprintf("firecracker: API socket %s did not answer within %s", client.SocketPath(), d.opts.SocketTimeout)
			if lastErr != nil {
				msg += fmt.Sprintf(" (last error: %v)", lastErr)
			}
			if tail := stderrTail(stderrPath, 1024); tail != "" {
				msg += "; firecracker stderr: " + tail
			}
			return fmt.Errorf("%s: %w", msg, ctx.Err())
		case <-tick.C:
		}
	}
}

// configure sends the boot plan and InstanceStart. A failed request names
// the step; Firecracker's fault_message is kept verbatim. When the process
// died meanwhile, its exit (with stderr) is the better explanation.
func (d *Driver) configure(ctx context.Context, client *Client, plan bootPlan, c *vmm.Child, stderrPath string) error {
	steps := []struct {
		what string
		do   func() error
	}{
		{"configure logger", func() error { return client.PutLogger(ctx, plan.Logger) }},
		{"configure metrics", func() error { return client.PutMetrics(ctx, plan.Metrics) }},
		{"set machine configuration", func() error { return client.PutMachineConfig(ctx, plan.Machine) }},
		{"set boot source", func() error { return client.PutBootSource(ctx, plan.Boot) }},
	}
	for _, dr := range plan.Drives {
		steps = append(steps, struct {
			what string
			do   func() error
		}{"attach drive " + dr.DriveID, func() error { return client.PutDrive(ctx, dr) }})
	}
	for _, n := range plan.NICs {
		steps = append(steps, struct {
			what string
			do   func() error
		}{"attach network interface " + n.IfaceID + " (" + n.HostDevName + ")", func() error { return client.PutNetworkInterface(ctx, n) }})
	}
	steps = append(steps, struct {
		what string
		do   func() error
	}{"start the instance", func() error { return client.Action(ctx, ActionInstanceStart) }})
	for _, s := range steps {
		if err := s.do(); err != nil {
			select {
			case <-c.Done():
				return fmt.Errorf("firecracker: %s: %w", s.what, exitError(c, stderrPath))
			case <-time.After(50 * time.Millisecond):
			}
			if IsAPIError(err) {
				return api.Errorf(api.KindInvalidInput, "firecracker refused to %s: %v", s.what, err)
			}
			return fmt.Errorf("firecracker: %s: %w", s.what, err)
		}
	}
	// A process that dies right after InstanceStart (bad kernel, no KVM
	// access) has not started anything.
	info, err := client.InstanceInfo(ctx)
	if err != nil {
		select {
		case <-c.Done():
			return fmt.Errorf("firecracker: exited after InstanceStart: %w", exitError(c, stderrPath))
		case <-time.After(100 * time.Millisecond):
		}
		return fmt.Errorf("firecracker: read instance state after InstanceStart: %w", err)
	}
	if info.State != InstanceRunning {
		return fmt.Errorf("firecracker: instance is %q after InstanceStart, want %q", info.State, InstanceRunning)
	}
	return nil
}

func exitError(c *vmm.Child, stderrPath string) error {
	tail := stderrTail(stderrPath, 2048)
	if tail == "" {
		tail = "(no output on stderr)"
	}
	return fmt.Errorf("firecracker exited during start (%v): %s", c.Err(), tail)
}

func stderrTail(path string, max int64) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil && fi.Size() > max {
		_, _ = f.Seek(fi.Size()-max, 0)
	}
	buf := make([]byte, max)
	n, _ := f.Read(buf)
	return strings.TrimSpace(string(buf[:n]))
}

// removeRunFiles removes what a run leaves behind: socket, pid and state
// files, and the jail with its cgroup. Logs and the console stay.
func (d *Driver) removeRunFiles(runDir string, st runState) {
	for _, p := range []string{st.APISocket, filepath.Join(runDir, pidFileName), filepath.Join(runDir, stateFileName)} {
		if p == "" {
			continue
		}
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			d.log.Warn("firecracker: remove run file", "path", p, "err", err)
		}
	}
	if st.JailRoot != "" {
		j := jail{Root: st.JailRoot, Cgroup: st.Cgroup}
		if err := j.remove(); err != nil {
			d.log.Warn("firecracker: remove jail", "err", err)
		}
	}
}

// cleanupAfterExit removes run files once the process is gone.
func (d *Driver) cleanupAfterExit(h vmm.Handle) {
	st, err := readRunState(h.RunDir)
	if err != nil {
		st = runState{APISocket: filepath.Join(h.RunDir, apiSocketName)}
	}
	d.removeRunFiles(h.RunDir, st)
}

// client returns the API client of a running VM.
func (d *Driver) client(h vmm.Handle) *Client {
	st, err := readRunState(h.RunDir)
	if err != nil || st.APISocket == "" {
		return NewClient(filepath.Join(h.RunDir, apiSocketName))
	}
	return NewClient(st.APISocket)
}

func notRunning(h vmm.Handle) error {
	return fmt.Errorf("firecracker pid %d: %w", h.PID, vmm.ErrNotRunning)
}

// call runs one API call on a live process; a process that is gone turns
// into vmm.ErrNotRunning.
func (d *Driver) call(h vmm.Handle, fn func(*Client) error) error {
	if !vmm.ProcessAlive(h.PID, h.StartTime) {
		return notRunning(h)
	}
	err := fn(d.client(h))
	if err != nil && !vmm.ProcessAlive(h.PID, h.StartTime) {
		return notRunning(h)
	}
	return err
}

// Shutdown sends Ctrl-Alt-Del and waits for Firecracker to exit: the
// guest's init reboots on it, and Firecracker exits on the reset (boot
// argument reboot=k). It does not kill; the daemon does after its timeout.
func (d *Driver) Shutdown(ctx context.Context, h vmm.Handle) error {
	err := d.call(h, func(c *Client) error { return c.Action(ctx, ActionSendCtrlAltDel) })
	switch {
	case errors.Is(err, vmm.ErrNotRunning):
		d.cleanupAfterExit(h)
		return nil
	case err != nil:
		return fmt.Errorf("firecracker: send Ctrl-Alt-Del: %w", err)
	}
	if err := d.Wait(ctx, h); err != nil {
		return fmt.Errorf("firecracker: guest did not shut down: %w", err)
	}
	d.cleanupAfterExit(h)
	return nil
}

// Kill sends SIGKILL, waits until the process is gone and removes its run
// files, jail and cgroup. A process that is gone already is not an error.
func (d *Driver) Kill(ctx context.Context, h vmm.Handle) error {
	if err := vmm.SignalProcess(h.PID, h.StartTime, syscall.SIGKILL); err != nil && !errors.Is(err, vmm.ErrNotRunning) {
		return fmt.Errorf("firecracker: kill: %w", err)
	}
	if err := d.Wait(ctx, h); err != nil {
		return fmt.Errorf("firecracker: kill: %w", err)
	}
	d.cleanupAfterExit(h)
	return nil
}

// Pause pauses the vCPUs (PATCH /vm Paused).
func (d *Driver) Pause(ctx context.Context, h vmm.Handle) error {
	if err := d.call(h, func(c *Client) error { return c.PatchVM(ctx, VMStatePaused) }); err != nil {
		return fmt.Errorf("firecracker: pause: %w", err)
	}
	return nil
}

// Resume resumes the vCPUs (PATCH /vm Resumed).
func (d *Driver) Resume(ctx context.Context, h vmm.Handle) error {
	if err := d.call(h, func(c *Client) error { return c.PatchVM(ctx, VMStateResumed) }); err != nil {
		return fmt.Errorf("firecracker: resume: %w", err)
	}
	return nil
}

// FlushMetrics asks Firecracker to write its metrics file now.
func (d *Driver) FlushMetrics(ctx context.Context, h vmm.Handle) error {
	return d.call(h, func(c *Client) error { return c.Action(ctx, ActionFlushMetrics) })
}

// Client returns the API client of the VM h names, for callers that need
// more than the Driver interface (snapshots, MMDS).
func (d *Driver) Client(h vmm.Handle) *Client { return d.client(h) }

// Status reads GET / (state Running or Paused).
func (d *Driver) Status(ctx context.Context, h vmm.Handle) (vmm.Status, error) {
	var info InstanceInfo
	err := d.call(h, func(c *Client) error {
		var err error
		info, err = c.InstanceInfo(ctx)
		return err
	})
	if err != nil {
		if errors.Is(err, vmm.ErrNotRunning) {
			return vmm.Status{}, err
		}
		return vmm.Status{}, fmt.Errorf("firecracker: status: %w", err)
	}
	switch info.State {
	case InstanceRunning:
		return vmm.Status{Running: true}, nil
	case InstancePaused:
		return vmm.Status{Running: true, Paused: true}, nil
	}
	return vmm.Status{}, nil
}

// Wait blocks until the process exits or ctx ends (pidfd-based for
// processes another daemon instance started).
func (d *Driver) Wait(ctx context.Context, h vmm.Handle) error {
	return d.children.Wait(ctx, h, "firecracker")
}

// Adopt checks that h (or, without a pid, the pid file) still names the
// Firecracker of spec's VM, and that its API answers.
func (d *Driver) Adopt(ctx context.Context, spec vmm.MachineSpec, h vmm.Handle) error {
	if h.RunDir == "" {
		h.RunDir = spec.RunDir
	}
	if h.PID <= 0 {
		pid, err := readPidFile(h.RunDir)
		if err != nil {
			return fmt.Errorf("firecracker: no pid in the handle or %s: %w", filepath.Join(h.RunDir, pidFileName), vmm.ErrNotRunning)
		}
		h.PID = pid
	}
	if !vmm.ProcessAlive(h.PID, h.StartTime) {
		return notRunning(h)
	}
	argv, err := vmm.ProcessCmdline(h.PID)
	if err != nil {
		return fmt.Errorf("firecracker: adopt pid %d: %w", h.PID, err)
	}
	if err := matchCmdline(argv, instanceID(spec.ID)); err != nil {
		return fmt.Errorf("firecracker: pid %d is not VM %s's firecracker (%v): %w", h.PID, spec.ID, err, vmm.ErrNotRunning)
	}
	if _, err := d.Status(ctx, h); err != nil {
		if errors.Is(err, vmm.ErrNotRunning) {
			return err
		}
		return api.Errorf(api.KindUnavailable, "firecracker: VM %s (pid %d) runs but its API socket does not answer: %v", spec.ID, h.PID, err).
			WithHint("kill the VM and start it again")
	}
	return nil
}

func readPidFile(runDir string) (int, error) {
	data, err := os.ReadFile(filepath.Join(runDir, pidFileName))
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(strings.TrimSpace(string(data)))
}

// matchCmdline checks that argv runs a firecracker binary with --id fcID
// (as "--id X" from banger or "--id=X" from the jailer).
func matchCmdline(argv []string, fcID string) error {
	if len(argv) == 0 {
		return errors.New("empty command line")
	}
	if !strings.Contains(filepath.Base(argv[0]), "firecracker") {
		return fmt.Errorf("runs %s, not firecracker", filepath.Base(argv[0]))
	}
	if i := slices.Index(argv, "--id"); i >= 0 && i+1 < len(argv) {
		if argv[i+1] == fcID {
			return nil
		}
		return fmt.Errorf("--id is %q, want %q", argv[i+1], fcID)
	}
	for _, a := range argv {
		if v, ok := strings.CutPrefix(a, "--id="); ok {
			if v == fcID {
				return nil
			}
			return fmt.Errorf("--id is %q, want %q", v, fcID)
		}
	}
	return errors.New("no --id argument")
}

// runningFromPidFile reports whether the pid file names a live
// Firecracker of this VM, which Start must not clobber.
func (d *Driver) runningFromPidFile(spec vmm.MachineSpec) (int, bool) {
	pid, err := readPidFile(spec.RunDir)
	if err != nil || !vmm.ProcessAlive(pid, 0) {
		return 0, false
	}
	argv, err := vmm.ProcessCmdline(pid)
	if err != nil || matchCmdline(argv, instanceID(spec.ID)) != nil {
		return 0, false
	}
	return pid, true
}

// Stats returns the CPU time and resident memory of the Firecracker
// process and its child processes. Real Firecracker has none (the guest
// runs in its threads); a Firecracker-compatible binary that runs the
// guest in a child (banger's test double) is then measured faithfully.
func (d *Driver) Stats(h vmm.Handle) (vmm.ProcessStats, error) {
	if !vmm.ProcessAlive(h.PID, h.StartTime) {
		return vmm.ProcessStats{}, notRunning(h)
	}
	total, err := vmm.ReadProcessStats(h.PID)
	if err != nil {
		return total, err
	}
	// Each thread lists the children it forked.
	var kids []string
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", h.PID))
	for _, t := range tasks {
		data, _ := os.ReadFile(t)
		kids = append(kids, strings.Fields(string(data))...)
	}
	for _, f := range kids {
		pid, err := strconv.Atoi(f)
		if err != nil {
			continue
		}
		if c, err := vmm.ReadProcessStats(pid); err == nil {
			total.CPUSeconds += c.CPUSeconds
			total.RSSBytes += c.RSSBytes
		}
	}
	return total, nil
}
