// Package daemon is banger's composition root. It builds every service
// once (store, op registry, VMM drivers, host network, SSH pool, VM
// lifecycle, images, doctor), wires them, owns start-up and shutdown
// order, and maps RPC methods onto the services. Behaviour lives in the
// domain packages, not here.
//
// Start-up order: config -> paths -> single-instance lock -> store (and
// failing operations a previous run left running) -> SSH client key ->
// drivers -> host network -> VM service -> reconcile -> socket -> serve.
// Shutdown reverses it; running VMs are left running.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/banger-dev/banger/internal/api"
	"github.com/banger-dev/banger/internal/api/apirpc"
	"github.com/banger-dev/banger/internal/config"
	"github.com/banger-dev/banger/internal/disk"
	"github.com/banger-dev/banger/internal/doctor"
	"github.com/banger-dev/banger/internal/guest"
	"github.com/banger-dev/banger/internal/hostnet"
	"github.com/banger-dev/banger/internal/image"
	"github.com/banger-dev/banger/internal/image/builder"
	"github.com/banger-dev/banger/internal/opstate"
	"github.com/banger-dev/banger/internal/paths"
	"github.com/banger-dev/banger/internal/rpc"
	"github.com/banger-dev/banger/internal/session"
	"github.com/banger-dev/banger/internal/store"
	"github.com/banger-dev/banger/internal/vm"
	"github.com/banger-dev/banger/internal/vmm"
	"github.com/banger-dev/banger/internal/vmm/firecracker"
	"github.com/banger-dev/banger/internal/vmm/qemu"
	"github.com/banger-dev/banger/internal/web"
	"github.com/banger-dev/banger/internal/workspace"
)

// Options are what the CLI passes to Run.
type Options struct {
	Config  config.Config
	Version string
	Logger  *slog.Logger
	// ExtraDrivers adds VMM drivers; tests use it for the fake driver.
	// Production builds never set it.
	ExtraDrivers map[string]vmm.Driver
	// Ready, when set, is closed once the socket accepts connections.
	Ready chan<- struct{}
}

// Run runs the daemon until ctx ends.
func Run(ctx context.Context, o Options) (err error) {
	cfg := o.Config
	if err := cfg.Validate(); err != nil {
		return err
	}
	log := o.Logger
	if log == nil {
		log = slog.Default()
	}
	layout, err := paths.New(cfg.StateDir, cfg.RunDir, cfg.Socket)
	if err != nil {
		return err
	}
	for _, d := range []struct {
		path string
		mode os.FileMode
	}{{layout.StateDir, 0o711}, {layout.VMsDir(), 0o700}, {layout.ImagesDir(), 0o755}, {layout.RunDir, 0o750}, {filepath.Dir(layout.Socket), 0o750}} {
		if err := os.MkdirAll(d.path, d.mode); err != nil {
			return fmt.Errorf("create %s: %w (run the daemon as root, or pass --state-dir and --socket you can write)", d.path, err)
		}
	}
	unlockInstance, err := lockInstance(layout.StateDir)
	if err != nil {
		return err
	}
	defer unlockInstance()
	if err := checkSocketFree(ctx, layout.Socket); err != nil {
		return err
	}

	st, err := store.Open(ctx, layout.Database())
	if err != nil {
		return err
	}
	defer st.Close()
	if n, err := st.FailInterruptedOperations(ctx, "interrupted: the daemon stopped while it was running"); err != nil {
		return err
	} else if n > 0 {
		log.Warn("marked operations of the previous daemon run as failed", "count", n)
	}
	_ = st.PruneOperations(ctx, 500)

	clientKey, err := guest.EnsureClientKey(layout.SSHDir())
	if err != nil {
		return fmt.Errorf("SSH client key: %w", err)
	}

	drivers := map[string]vmm.Driver{}
	q := qemu.New(qemu.Options{Binary: cfg.QEMUBinary, Logger: log})
	if err := q.Available(ctx); err == nil {
		drivers["qemu"] = q
		if accel, warn := q.AccelInfo(); warn != "" {
			log.Warn("QEMU acceleration", "accel", accel, "warning", warn)
		}
	} else {
		log.Warn("QEMU backend unavailable", "err", err)
	}
	fcOpts := firecracker.Options{Binary: cfg.FirecrackerBinary,
		RuntimeDirs: firecracker.DefaultRuntimeDirs(layout.StateDir), Logger: log}
	if cfg.Jailer {
		fcOpts.Jailer = &firecracker.JailerOptions{Binary: cfg.JailerBinary, ChrootBaseDir: cfg.JailerChrootBase,
			UID: cfg.JailerUID, GID: cfg.JailerGID, ParentCgroup: cfg.JailerCgroup}
	}
	fc := firecracker.New(fcOpts)
	if err := fc.Available(ctx); err == nil {
		drivers["firecracker"] = fc
	} else {
		log.Info("Firecracker backend unavailable", "err", err)
	}
	for name, d := range o.ExtraDrivers {
		drivers[name] = d
	}

	bgctx, stopBackground := context.WithCancel(context.Background())
	defer stopBackground()

	var network vm.Network
	noNetReason := ""
	var hnet *hostnet.Network
	dnsListen := ""
	if cfg.NoNetwork {
		noNetReason = "disabled by configuration (no_network)"
	} else {
		hcfg := hostnet.DefaultConfig()
		hcfg.Bridge, hcfg.Subnet, hcfg.TAPPrefix, hcfg.SpareTAPs, hcfg.DNSZone = cfg.Bridge, cfg.SubnetPrefix(), cfg.TAPPrefix, cfg.SpareTAPs, cfg.DNSZone
		hcfg.Gateway = cfg.SubnetPrefix().Addr().Next()
		if cfg.DNSListen != "" {
			hcfg.DNSListen = cfg.DNSListen
		} else {
			hcfg.DNSListen = net.JoinHostPort(hcfg.Gateway.String(), "53")
		}
		dnsListen = hcfg.DNSListen
		hnet, err = hostnet.Setup(ctx, hcfg, log)
		if err != nil {
			noNetReason = err.Error()
			log.Error("host network setup failed; VMs cannot start until it is fixed", "err", err)
		} else {
			network = hostNetwork{hnet}
			defer hnet.Close()
		}
	}

	ops := opstate.New(bgctx, (&opPersister{store: st, log: log, last: map[string]persistMark{}}).save)
	pool := guest.NewPool(clientKey, log)
	defer pool.Close()
	vms := vm.NewService(vm.Deps{
		Store: st, Layout: layout, Ops: ops, Drivers: drivers, Network: network, Guests: pool,
		Client: clientKey, DiskHost: disk.ProbeHost(layout.StateDir), Log: log,
		WriteConfig: writeConfigDrive, NoNetworkReason: noNetReason,
		Defaults: vm.Defaults{
			Image: cfg.DefaultImage, VMM: cfg.DefaultVMM, CPUs: cfg.DefaultCPUs, MemoryMiB: cfg.DefaultMemoryMiB,
			DiskSizeMiB: cfg.DefaultDiskMiB, Overlay: cfg.OverlayStrategy, DNSZone: cfg.DNSZone,
			StopTimeout: time.Duration(cfg.StopTimeoutSeconds) * time.Second,
			BootTimeout: time.Duration(cfg.BootTimeoutSeconds) * time.Second,
		},
	})
	defer vms.Close()
	if err := vms.Reconcile(ctx); err != nil {
		return fmt.Errorf("reconcile VMs: %w", err)
	}
	cacheDir := cfg.ImageCache
	if cacheDir == "" {
		cacheDir = layout.ImageCache()
	}
	images := &image.Service{Store: st, Layout: layout, Ops: ops, Log: log, CacheDir: cacheDir,
		Recipes: map[string]builder.Recipe{"default": builder.DefaultRecipe()}, VMs: vms}
	if err := images.Reconcile(ctx); err != nil {
		log.Warn("reconcile images", "err", err)
	}

	h := &handler{
		version: o.Version, startedAt: time.Now().UTC(), stateDir: layout.StateDir, drivers: drivers,
		vms: vms, images: images, ops: &opService{reg: ops, store: st},
		doctor: doctor.New(doctor.Options{StateDir: layout.StateDir, VMM: cfg.DefaultVMM, QEMUBinary: cfg.QEMUBinary,
			FirecrackerBinary: cfg.FirecrackerBinary, Bridge: cfg.Bridge}, doctor.RealHost()),
	}
	h.workspaces = workspace.NewService(st,
		workspace.VMResolver(vms), pool, log)
	srv := rpc.NewServer(rpc.ServerOptions{Logger: log})
	apirpc.Register(srv, h)
	// Guest sessions and auth sync (internal/session): the service, its
	// attach/follow streams, and the auth-sync start hook.
	sessions := session.New(session.Options{VMs: vms, Guests: pool, AuthFiles: cfg.AuthFiles, Log: log})
	vms.RegisterCapability(sessions.AuthCapability())
	sessions.RegisterStreams(srv)
	h.sessions = sessions

	ln, err := listenSocket(layout.Socket, cfg.SocketGroup)
	if err != nil {
		return err
	}
	defer os.Remove(layout.Socket)

	if hnet != nil {
		go func() {
			lookup := func(name string) (netip.Addr, bool) {
				ip, ok := vms.LookupIP(bgctx, name)
				if !ok {
					return netip.Addr{}, false
				}
				a, err := netip.ParseAddr(ip)
				return a, err == nil
			}
			if err := hostnet.ServeDNS(bgctx, dnsListen, cfg.DNSZone, lookup); err != nil && bgctx.Err() == nil {
				log.Warn("DNS server stopped", "err", err)
			}
		}()
		if res, err := hostnet.ConfigureResolved(ctx, cfg.Bridge, hnet.Gateway(), cfg.DNSZone); err != nil {
			log.Warn("systemd-resolved routing", "err", err)
		} else {
			log.Info("systemd-resolved routing", "result", res.String())
		}
	}
	go vms.RunReaper(bgctx, time.Duration(cfg.ReapIntervalSeconds)*time.Second)
	_ = os.Remove(layout.WebAddr()) // a crashed run's address is stale
	if cfg.WebEnabled {
		// The web UI is optional: a taken port must not stop the daemon.
		if _, err := web.Start(bgctx, h, web.StartOptions{Addr: cfg.WebAddr, Version: o.Version,
			TokenFile: layout.WebToken(), AddrFile: layout.WebAddr(), Logger: log}); err != nil {
			log.Warn("web UI not started", "err", err)
		} else {
			defer os.Remove(layout.WebAddr())
		}
	}

	log.Info("banger daemon ready", "socket", layout.Socket, "state_dir", layout.StateDir,
		"backends", len(drivers), "network", network != nil, "version", o.Version)
	if o.Ready != nil {
		close(o.Ready)
	}
	serveErr := srv.Serve(ctx, ln)

	// Shutdown: cancel running operations (they clean up after
	// themselves), stop background work. VMs keep running.
	log.Info("banger daemon stopping")
	sctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	if err := ops.Shutdown(sctx); err != nil {
		log.Warn("operations did not finish cleaning up", "err", err)
	}
	stopBackground()
	if serveErr != nil && !errors.Is(serveErr, context.Canceled) {
		return serveErr
	}
	return nil
}

func writeConfigDrive(path string, c vm.GuestConfig) error {
	return builder.WriteConfigDrive(path, builder.ConfigDrive{
		Hostname: c.Hostname, IP: c.IP, Gateway: c.Gateway, MAC: c.MAC, User: c.User,
		SearchDomain: c.SearchDomain, DNS: c.DNS, AuthorizedKeys: c.AuthorizedKeys,
		HostKeyPrivate: c.HostKeyPrivate, HostKeyPublic: c.HostKeyPublic,
	})
}

// lockInstance takes an exclusive flock on the state dir so two daemons
// never share one store, whatever sockets they were given.
func lockInstance(stateDir string) (func(), error) {
	path := filepath.Join(stateDir, "daemon.lock")
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return nil, api.Errorf(api.KindBusy, "another banger daemon is using state dir %s", stateDir).
			WithHint("stop it first, or give this one another --state-dir")
	}
	_ = f.Truncate(0)
	_, _ = f.WriteString(strconv.Itoa(os.Getpid()) + "\n")
	return func() { f.Close() }, nil
}

// checkSocketFree refuses a socket a live daemon answers on and removes a
// stale one.
func checkSocketFree(ctx context.Context, path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if fi.Mode()&os.ModeSocket == 0 {
		return fmt.Errorf("%s exists and is not a socket; refusing to replace it", path)
	}
	dctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	var d net.Dialer
	if c, err := d.DialContext(dctx, "unix", path); err == nil {
		c.Close()
		return api.Errorf(api.KindBusy, "a banger daemon is already serving %s", path).
			WithHint("stop it first, or pass another --socket")
	}
	return os.Remove(path)
}

// listenSocket creates the socket with mode 0660 from the first moment
// (umask), then hands it to the configured group.
func listenSocket(path, group string) (net.Listener, error) {
	old := syscall.Umask(0o117)
	ln, err := net.Listen("unix", path)
	syscall.Umask(old)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o660); err != nil {
		ln.Close()
		return nil, err
	}
	if group != "" {
		g, err := user.LookupGroup(group)
		if err != nil {
			ln.Close()
			return nil, fmt.Errorf("socket_group %q: %w", group, err)
		}
		gid, _ := strconv.Atoi(g.Gid)
		if err := os.Chown(path, -1, gid); err != nil {
			ln.Close()
			return nil, fmt.Errorf("chown socket to group %s: %w", group, err)
		}
		_ = os.Chown(filepath.Dir(path), -1, gid)
	}
	return ln, nil
}

// hostNetwork adapts hostnet.Network to what the VM lifecycle needs.
type hostNetwork struct{ *hostnet.Network }

func (hostNetwork) TAPExists(name string) bool {
	_, err := net.InterfaceByName(name)
	return err == nil
}
