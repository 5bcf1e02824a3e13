package vm

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/banger-dev/banger/internal/api"
	"github.com/banger-dev/banger/internal/disk"
	"github.com/banger-dev/banger/internal/guest"
	"github.com/banger-dev/banger/internal/vmm"
)

// Stats reports the VMM process's CPU and memory, disk use and uptime.
func (s *Service) Stats(ctx context.Context, p api.VMRef) (api.VMStats, error) {
	r, err := s.find(ctx, p.VM)
	if err != nil {
		return api.VMStats{}, err
	}
	st := api.VMStats{VM: r.Name, State: api.VMState(r.State)}
	files := []string{s.Layout.VMWorkDisk(r.ID), s.Layout.VMConfigDrive(r.ID)}
	if r.overlay.File != "" {
		files = append(files, r.overlay.File)
	}
	if used, err := disk.Usage(files...); err == nil {
		st.DiskBytes = used
	}
	if !State(r.State).Live() || r.handle.PID == 0 {
		return st, nil
	}
	st.PID = r.handle.PID
	st.UptimeSeconds = time.Since(r.handle.StartedAt).Seconds()
	drv, err := s.driver(r.VMM)
	if err != nil {
		return st, err
	}
	a, err := vmm.ReadStats(drv, r.handle)
	if err != nil {
		return st, nil // the process just went away; the reaper records it
	}
	// CPU% over a short window: a since-start average hides a busy guest.
	const window = 200 * time.Millisecond
	select {
	case <-time.After(window):
	case <-ctx.Done():
		return st, ctx.Err()
	}
	b, err := vmm.ReadStats(drv, r.handle)
	if err != nil {
		b = a
	}
	st.CPUSeconds = b.CPUSeconds
	st.RSSBytes = b.RSSBytes
	st.CPUPercent = (b.CPUSeconds - a.CPUSeconds) / window.Seconds() * 100
	return st, nil
}

func (s *Service) running(ctx context.Context, ref string) (record, guest.Target, error) {
	r, err := s.find(ctx, ref)
	if err != nil {
		return record{}, guest.Target{}, err
	}
	if State(r.State) != Running {
		return r, guest.Target{}, api.Errorf(api.KindConflict, "VM %q is %s, not running", r.Name, r.State).
			WithHint("start it with: banger vm start " + r.Name)
	}
	if s.Network == nil {
		return r, guest.Target{}, api.Errorf(api.KindUnavailable, "guest unreachable: host networking is disabled (%s)", s.NoNetworkReason)
	}
	t, err := s.target(r)
	return r, t, err
}

// Health checks that the guest answers over SSH.
func (s *Service) Health(ctx context.Context, p api.VMRef) (api.VMHealth, error) {
	r, t, err := s.running(ctx, p.VM)
	if err != nil {
		if api.IsKind(err, api.KindNotFound) {
			return api.VMHealth{}, err
		}
		return api.VMHealth{VM: r.Name, Error: err.Error()}, nil
	}
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	lat, err := guest.Ping(pctx, s.Guests, t)
	if err != nil {
		return api.VMHealth{VM: r.Name, Error: err.Error()}, nil
	}
	return api.VMHealth{VM: r.Name, Reachable: true, LatencyMS: float64(lat.Microseconds()) / 1000}, nil
}

// Logs returns the tail of the serial console log.
func (s *Service) Logs(ctx context.Context, p api.VMLogsParams) (api.VMLogsResult, error) {
	r, err := s.find(ctx, p.VM)
	if err != nil {
		return api.VMLogsResult{}, err
	}
	n := p.TailBytes
	if n <= 0 {
		n = 64 << 10
	}
	if n > 8<<20 {
		n = 8 << 20
	}
	path := s.Layout.VMConsoleLog(r.ID)
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return api.VMLogsResult{Path: path}, nil
	}
	if err != nil {
		return api.VMLogsResult{}, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return api.VMLogsResult{}, err
	}
	off := max(fi.Size()-n, 0)
	buf := make([]byte, fi.Size()-off)
	if _, err := f.ReadAt(buf, off); err != nil && err != io.EOF {
		return api.VMLogsResult{}, err
	}
	return api.VMLogsResult{Path: path, Data: strings.ToValidUTF8(string(buf), "\uFFFD")}, nil
}

// maxExecOutput caps what exec buffers per stream.
const maxExecOutput = 16 << 20

// Exec runs argv in the guest over the pooled SSH connection.
func (s *Service) Exec(ctx context.Context, p api.VMExecParams) (api.VMExecResult, error) {
	if len(p.Argv) == 0 {
		return api.VMExecResult{}, api.Errorf(api.KindInvalidInput, "exec needs a command")
	}
	_, t, err := s.running(ctx, p.VM)
	if err != nil {
		return api.VMExecResult{}, err
	}
	if p.TimeoutSeconds > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, time.Duration(p.TimeoutSeconds)*time.Second)
		defer cancel()
	}
	var stdout, stderr limitedBuffer
	stdout.limit, stderr.limit = maxExecOutput, maxExecOutput
	code, err := s.Guests.Exec(ctx, t, p.Argv, strings.NewReader(p.Stdin), &stdout, &stderr)
	if err != nil {
		return api.VMExecResult{}, api.Errorf(api.KindGuest, "exec in %s: %v", p.VM, err)
	}
	return api.VMExecResult{ExitCode: code, Stdout: stdout.String(), Stderr: stderr.String()}, nil
}

type limitedBuffer struct {
	bytes.Buffer
	limit     int
	truncated bool
}

func (b *limitedBuffer) Write(p []byte) (int, error) {
	room := b.limit - b.Len()
	if room <= 0 {
		b.truncated = true
		return len(p), nil
	}
	if len(p) > room {
		b.truncated = true
		b.Buffer.Write(p[:room])
		return len(p), nil
	}
	return b.Buffer.Write(p)
}

func (b *limitedBuffer) String() string {
	if b.truncated {
		return b.Buffer.String() + fmt.Sprintf("\n[banger: output truncated at %d bytes]\n", b.limit)
	}
	return b.Buffer.String()
}

// SSHInfo tells a client how to reach the VM with OpenSSH.
func (s *Service) SSHInfo(ctx context.Context, p api.VMRef) (api.SSHInfo, error) {
	r, err := s.find(ctx, p.VM)
	if err != nil {
		return api.SSHInfo{}, err
	}
	if r.IP == "" {
		return api.SSHInfo{}, api.Errorf(api.KindConflict, "VM %q has no address yet", r.Name)
	}
	return api.SSHInfo{
		VM: r.Name, Host: r.IP, Port: 22, User: s.Defaults.GuestUser,
		IdentityFile: s.Client.PrivatePath, KnownHostsFile: s.Layout.VMKnownHosts(r.ID),
		HostKeyAlias: r.Name + ".banger",
	}, nil
}

// Reconcile brings the store in line with reality after a daemon start:
// live processes are adopted, dead ones recorded as stopped, creates that
// were interrupted are undone, and leaked TAPs return to the pool.
func (s *Service) Reconcile(ctx context.Context) error {
	vms, err := s.Store.ListVMs(ctx, "")
	if err != nil {
		return err
	}
	inUse := map[string]bool{}
	known := map[string]bool{}
	builds, err := s.Store.ListBuildVMs(ctx)
	if err != nil {
		return err
	}
	for _, v := range vms {
		known[v.ID] = true
		r, err := load(v)
		if err != nil {
			s.Log.Error("reconcile: skip VM", "vm", v.Name, "err", err)
			continue
		}
		if b, ok := builds[v.ID]; ok {
			// The build that owned it died with the daemon; its partial
			// image files live in the VM's directory and go with it.
			s.Log.Warn("reconcile: removing the VM of an interrupted image build", "vm", r.Name, "image", b.ImageName)
			s.removeInterrupted(ctx, r)
			continue
		}
		switch st := State(r.State); {
		case st == Creating:
			s.Log.Warn("reconcile: removing VM whose create was interrupted", "vm", r.Name)
			s.removeInterrupted(ctx, r)
			continue
		case st.Live():
			drv, derr := s.driver(r.VMM)
			spec := vmm.MachineSpec{ID: r.ID, Name: r.Name, RunDir: s.Layout.VMRunDir(r.ID)}
			if derr == nil {
				derr = drv.Adopt(ctx, spec, r.handle)
			}
			if derr != nil {
				reason := fmt.Sprintf("VMM process gone while the daemon was down (%v)", derr)
				s.Log.Warn("reconcile: VM not running", "vm", r.Name, "err", derr)
				_ = s.finishStop(r, reason)
			} else {
				s.Log.Info("reconcile: adopted running VM", "vm", r.Name, "pid", r.handle.PID)
				if st == Starting || st == Stopping {
					// The operation that owned the transition died with the daemon.
					_, _ = s.Store.TransitionVM(ctx, r.ID, []string{string(st)}, string(Running), "adopted after daemon restart")
				}
				s.watch(r.ID, drv, r.handle)
			}
		}
		if r.TAP != "" {
			inUse[r.TAP] = true
		}
	}
	if s.Network != nil {
		if err := s.Network.Reconcile(ctx, inUse); err != nil {
			s.Log.Warn("reconcile TAP pool", "err", err)
		}
	}
	s.removeOrphanDirs(known)
	return nil
}

func (s *Service) removeInterrupted(ctx context.Context, r record) {
	if r.handle.PID != 0 {
		if drv, err := s.driver(r.VMM); err == nil {
			_ = drv.Kill(ctx, r.handle)
		}
	}
	// The daemon may have died after the VMM started but before its
	// handle was recorded: find it by the pid files in its run dir.
	killByPidFiles(s.Layout.VMRunDir(r.ID), r.ID, s.Log)
	_ = r.overlay.Remove(ctx)
	if r.TAP != "" && s.Network != nil {
		_ = s.Network.ReleaseTAP(ctx, r.TAP)
	}
	_ = os.RemoveAll(s.Layout.VMDir(r.ID))
	_ = os.RemoveAll(s.Layout.VMRunDir(r.ID))
	_ = s.Store.DeleteVM(ctx, r.ID)
}

// removeOrphanDirs deletes VM directories no record owns: leftovers of a
// daemon killed between making files and recording them.
func (s *Service) removeOrphanDirs(known map[string]bool) {
	for _, dir := range []string{s.Layout.VMsDir(), s.Layout.RunDir + "/vms"} {
		entries, _ := os.ReadDir(dir)
		for _, e := range entries {
			if e.IsDir() && !known[e.Name()] {
				s.Log.Warn("removing orphaned VM directory", "dir", dir+"/"+e.Name())
				_ = os.RemoveAll(dir + "/" + e.Name())
			}
		}
	}
}

// Reap finds live VMs whose process died and records them stopped. It
// skips VMs busy with another operation.
func (s *Service) Reap(ctx context.Context) {
	vms, err := s.Store.ListVMs(ctx, "")
	if err != nil {
		return
	}
	for _, v := range vms {
		if !State(v.State).Live() {
			continue
		}
		r, err := load(v)
		if err != nil || vmm.ProcessAlive(r.handle.PID, r.handle.StartTime) {
			continue
		}
		unlock, err := s.locks.TryLock(r.ID, r.Name, "reap")
		if err != nil {
			continue
		}
		s.markExited(ctx, r.ID, r.handle, "VMM process found dead by the reaper (see banger vm logs)")
		unlock()
	}
}

// RunReaper runs Reap every interval until ctx ends.
func (s *Service) RunReaper(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.Reap(ctx)
		}
	}
}

// LookupIP resolves a VM name to its address, for the DNS server.
func (s *Service) LookupIP(ctx context.Context, name string) (string, bool) {
	v, err := s.Store.FindVM(ctx, name)
	if err != nil || v.Name != name || v.IP == "" {
		return "", false
	}
	return v.IP, true
}

// killByPidFiles kills processes named by *.pid files in runDir whose
// command line mentions the VM id (so a reused pid is never hit).
func killByPidFiles(runDir, vmID string, log *slog.Logger) {
	files, _ := filepath.Glob(filepath.Join(runDir, "*.pid"))
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil || pid <= 1 {
			continue
		}
		argv, err := vmm.ProcessCmdline(pid)
		if err != nil || !strings.Contains(strings.Join(argv, " "), vmID) {
			continue
		}
		st, _ := vmm.ProcessStartTime(pid)
		log.Warn("killing VMM process of an interrupted create", "pid", pid)
		if vmm.SignalProcess(pid, st, syscall.SIGKILL) == nil {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			_ = vmm.WaitProcessExit(ctx, pid, st)
			cancel()
		}
	}
}
