// Package doctor diagnoses whether this host can run banger: privileges,
// the state directory, KVM, networking kernel features, disk tooling and
// the VMM binaries. Each finding carries a concrete fix.
//
// Checks run concurrently, each under its own timeout, and the report
// lists them in a fixed order. All host access goes through Host, so tests
// drive every branch with a fake.
package doctor

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/banger-dev/banger/internal/api"
	"github.com/banger-dev/banger/internal/paths"
	"github.com/banger-dev/banger/internal/vmm"
)

// Defaults applied by New to zero Options fields.
const (
	DefaultMinFreeBytes      int64 = 10 << 30
	DefaultCheckTimeout            = 10 * time.Second
	DefaultQEMUBinary              = "qemu-system-x86_64"
	DefaultFirecrackerBinary       = "firecracker"
	// failFreeBytes is the free space below which VM disks cannot be
	// expected to fit at all.
	failFreeBytes int64 = 2 << 30
)

// Options says what to check against. Zero values take the defaults.
type Options struct {
	StateDir string
	// MinFreeBytes is the free space in the state dir below which doctor
	// warns (default 10 GiB). Below 2 GiB (or MinFreeBytes, if smaller)
	// it fails.
	MinFreeBytes int64
	// VMM is the configured backend: "qemu", "firecracker", or "" / "auto".
	// A backend named here that cannot run is a failure, not a warning.
	VMM               string
	QEMUBinary        string
	FirecrackerBinary string
	// Bridge is the name of banger's host bridge, if configured.
	Bridge string
	// CheckTimeout bounds each check (default 10s).
	CheckTimeout time.Duration
}

// Checker runs the host checks.
type Checker struct {
	opts   Options
	host   Host
	checks []check
}

// check is one named diagnosis. run returns the outcome without a name;
// the framework fills it in.
type check struct {
	name string
	run  func(ctx context.Context, e *env) api.Check
}

// env is the per-run context shared by checks: options, host, and probes
// that several checks need, computed at most once.
type env struct {
	opts         Options
	host         Host
	kvm          func() vmm.KVMProbe
	kernelConfig func() kernelConfig
}

// New returns a Checker for opts using host.
func New(opts Options, host Host) *Checker {
	if opts.StateDir == "" {
		opts.StateDir = paths.DefaultStateDir
	}
	if opts.MinFreeBytes <= 0 {
		opts.MinFreeBytes = DefaultMinFreeBytes
	}
	if opts.QEMUBinary == "" {
		opts.QEMUBinary = DefaultQEMUBinary
	}
	if opts.FirecrackerBinary == "" {
		opts.FirecrackerBinary = DefaultFirecrackerBinary
	}
	if opts.CheckTimeout <= 0 {
		opts.CheckTimeout = DefaultCheckTimeout
	}
	return &Checker{opts: opts, host: host, checks: allChecks()}
}

// Names lists the check names in report order.
func (c *Checker) Names() []string {
	names := make([]string, len(c.checks))
	for i, ch := range c.checks {
		names[i] = ch.name
	}
	return names
}

// Run runs every check concurrently and returns the report in the fixed
// check order. A check that does not finish within the per-check timeout
// is reported as failed; its goroutine is left to finish on its own (a
// blocked stat cannot be interrupted) and its late result is discarded.
func (c *Checker) Run(ctx context.Context) api.DoctorReport {
	e := &env{
		opts:         c.opts,
		host:         c.host,
		kvm:          sync.OnceValue(c.host.ProbeKVM),
		kernelConfig: sync.OnceValue(func() kernelConfig { return readKernelConfig(c.host) }),
	}
	results := make([]api.Check, len(c.checks))
	var wg sync.WaitGroup
	for i, ch := range c.checks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i] = c.runOne(ctx, e, ch)
		}()
	}
	wg.Wait()
	return api.DoctorReport{Checks: results}
}

func (c *Checker) runOne(ctx context.Context, e *env, ch check) api.Check {
	cctx, cancel := context.WithTimeout(ctx, c.opts.CheckTimeout)
	defer cancel()
	done := make(chan api.Check, 1) // buffered: a late result never blocks
	go func() {
		defer func() {
			if p := recover(); p != nil {
				done <- api.Check{Status: api.CheckFail, Message: fmt.Sprintf("check crashed: %v", p),
					Fix: "this is a bug in banger doctor; please report it"}
			}
		}()
		done <- ch.run(cctx, e)
	}()
	var res api.Check
	select {
	case res = <-done:
	case <-cctx.Done():
		res = api.Check{Status: api.CheckFail}
		if ctx.Err() != nil {
			res.Message = "check cancelled before it finished"
			res.Fix = "run `banger doctor` again"
		} else {
			res.Message = fmt.Sprintf("check timed out after %s", c.opts.CheckTimeout)
			res.Fix = "the host is slow or a device/file system is hanging; look for stuck mounts or processes (`ps -eo stat,cmd | grep '^D'`)"
		}
	}
	res.Name = ch.name
	return res
}

// Summary counts the checks by status. A status other than ok or warn
// counts as a failure.
func Summary(r api.DoctorReport) (ok, warn, fail int) {
	for _, ch := range r.Checks {
		switch ch.Status {
		case api.CheckOK:
			ok++
		case api.CheckWarn:
			warn++
		default:
			fail++
		}
	}
	return ok, warn, fail
}

// ExitCode is the CLI's exit status for a report: 0 when nothing failed
// (warnings included), 1 when any check failed.
func ExitCode(r api.DoctorReport) int {
	if _, _, fail := Summary(r); fail > 0 {
		return 1
	}
	return 0
}
