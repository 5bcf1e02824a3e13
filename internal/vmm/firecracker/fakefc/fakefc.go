// Package fakefc is a strict stand-in for the Firecracker binary, for
// tests on hosts where Firecracker cannot run. It takes Firecracker's
// command line (--api-sock, --id, --version), serves Firecracker's API on
// the Unix socket with its rules — unknown and missing fields are a 400
// with a fault_message, pre-boot resources are refused after
// InstanceStart, InstanceStart needs a boot source — and answers GETs as
// Firecracker does.
//
// By default the guest is simulated: InstanceStart starts nothing, and
// SendCtrlAltDel makes the process exit as Firecracker does when its
// guest resets. With FAKEFC_BOOT=qemu the accepted configuration is
// booted for real with QEMU (microvm; an uncompressed vmlinux boots there
// through PVH), so a real guest runs behind the Firecracker backend.
//
// Environment:
//
//	FAKEFC_VERSION      version to report (default 1.12.1)
//	FAKEFC_RECORD_DIR   append every request to <dir>/<id>.jsonl
//	FAKEFC_BOOT=qemu    boot the guest with QEMU (FAKEFC_QEMU: binary)
//	FAKEFC_NO_SOCKET=1  never create the API socket (test: socket timeout)
//	FAKEFC_FAIL_START   refuse InstanceStart with this fault_message
//	FAKEFC_DIE_ON_START=1  exit(1) when asked to InstanceStart
package fakefc

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// DefaultVersion is the Firecracker release the fake claims to be.
const DefaultVersion = "1.12.1"

// Request is one recorded API request.
type Request struct {
	Method string          `json:"method"`
	Path   string          `json:"path"`
	Body   json.RawMessage `json:"body,omitempty"`
	Status int             `json:"status"`
}

// Main runs the fake with Firecracker's arguments (without argv[0]) and
// returns the exit status.
func Main(args []string, stdout, stderr io.Writer) int {
	apiSock := "/run/firecracker.socket"
	id := "anonymous-instance"
	version := os.Getenv("FAKEFC_VERSION")
	if version == "" {
		version = DefaultVersion
	}
	for i := 0; i < len(args); i++ {
		a := args[i]
		name, value, hasValue := strings.Cut(a, "=")
		next := func() (string, bool) {
			if hasValue {
				return value, true
			}
			if i+1 < len(args) {
				i++
				return args[i], true
			}
			return "", false
		}
		switch name {
		case "--version", "-V":
			fmt.Fprintf(stdout, "Firecracker v%s\n\nkvm: not required (banger test double; guests boot with QEMU)\n", version)
			return 0
		case "--api-sock", "--id", "--start-time-us", "--start-time-cpu-us", "--parent-cpu-time-us":
			v, ok := next()
			if !ok {
				fmt.Fprintf(stderr, "error: argument %s needs a value\n", name)
				return 1
			}
			switch name {
			case "--api-sock":
				apiSock = v
			case "--id":
				id = v
			}
		default:
			fmt.Fprintf(stderr, "error: unexpected argument %q (the fake knows --api-sock, --id, --version)\n", a)
			return 1
		}
	}
	if os.Getenv("FAKEFC_NO_SOCKET") == "1" {
		select {} // hang like a process that never serves its API
	}
	if _, err := os.Lstat(apiSock); err == nil {
		fmt.Fprintf(stderr, "Failed to open the API socket at %s: Address in use\n", apiSock)
		return 1
	}
	ln, err := net.Listen("unix", apiSock)
	if err != nil {
		fmt.Fprintf(stderr, "Failed to open the API socket at %s: %v\n", apiSock, err)
		return 1
	}
	defer os.Remove(apiSock)

	vm := newMachine(id, version, apiSock, stdout, stderr)
	if dir := os.Getenv("FAKEFC_RECORD_DIR"); dir != "" {
		vm.recordPath = filepath.Join(dir, id+".jsonl")
	}
	srv := &http.Server{Handler: vm, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()

	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	select {
	case code := <-vm.exit:
		vm.stopGuest()
		return code
	case s := <-sigs:
		fmt.Fprintf(stderr, "fakefc: %v: exiting\n", s)
		vm.stopGuest()
		return 0
	}
}

// fault is an API error answer.
type fault struct {
	status int
	msg    string
}

func badRequest(format string, args ...any) *fault {
	return &fault{status: http.StatusBadRequest, msg: fmt.Sprintf(format, args...)}
}

// Firecracker's wording for requests in the wrong phase.
const (
	msgPostBoot = "The requested operation is not supported after starting the microVM."
	msgPreBoot  = "The requested operation is not supported before starting the microVM."
)

// machine is the fake microVM: its accepted configuration and state.
type machine struct {
	id, version, apiSock string
	stdout, stderr       io.Writer
	recordPath           string
	exit                 chan int

	mu       sync.Mutex
	started  bool
	paused   bool
	machine  map[string]any
	boot     map[string]any
	drives   []map[string]any
	nics     []map[string]any
	logger   map[string]any
	metrics  map[string]any
	vsock    map[string]any
	mmdsCfg  map[string]any
	mmds     json.RawMessage
	bootOnly bool // something other than logger/metrics was configured
	guest    *qemuGuest
}

func newMachine(id, version, apiSock string, stdout, stderr io.Writer) *machine {
	return &machine{id: id, version: version, apiSock: apiSock, stdout: stdout, stderr: stderr, exit: make(chan int, 1),
		machine: map[string]any{"vcpu_count": 1, "mem_size_mib": 128, "smt": false, "track_dirty_pages": false, "huge_pages": "None"}}
}

func (m *machine) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	status, out, f := m.handle(r.Method, r.URL.Path, body)
	if f != nil {
		status = f.status
		out = map[string]string{"fault_message": f.msg}
	}
	m.record(Request{Method: r.Method, Path: r.URL.Path, Body: compact(body), Status: status})
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	if out != nil {
		_ = json.NewEncoder(w).Encode(out)
	}
}

func compact(b []byte) json.RawMessage {
	var v any
	if len(b) == 0 || json.Unmarshal(b, &v) != nil {
		if len(b) == 0 {
			return nil
		}
		s, _ := json.Marshal(string(b))
		return s
	}
	out, _ := json.Marshal(v)
	return out
}

func (m *machine) record(r Request) {
	if m.recordPath == "" {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	f, err := os.OpenFile(m.recordPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		fmt.Fprintf(m.stderr, "fakefc: record: %v\n", err)
		return
	}
	defer f.Close()
	line, _ := json.Marshal(r)
	_, _ = f.Write(append(line, '\n'))
}

func decodeInto(fields map[string]json.RawMessage) map[string]any {
	out := map[string]any{}
	for k, v := range fields {
		var x any
		_ = json.Unmarshal(v, &x)
		out[k] = x
	}
	return out
}

func str(m map[string]any, k string) string { s, _ := m[k].(string); return s }
func boolean(m map[string]any, k string) bool {
	b, _ := m[k].(bool)
	return b
}
func integer(m map[string]any, k string) int { f, _ := m[k].(float64); return int(f) }

// handle dispatches one request. It returns the status and body of a
// success, or a fault.
func (m *machine) handle(method, path string, body []byte) (int, any, *fault) {
	m.mu.Lock()
	defer m.mu.Unlock()
	noContent := http.StatusNoContent
	// preBoot validates a pre-boot-only PUT.
	preBoot := func(s schema) (map[string]any, *fault) {
		fields, err := s.validate(body)
		if err != nil {
			return nil, badRequest("%v", err)
		}
		if m.started {
			return nil, badRequest(msgPostBoot)
		}
		return decodeInto(fields), nil
	}
	switch {
	case method == http.MethodGet && path == "/":
		state := "Not started"
		if m.started {
			state = "Running"
			if m.paused {
				state = "Paused"
			}
		}
		return http.StatusOK, map[string]any{"app_name": "Firecracker", "id": m.id, "state": state, "vmm_version": m.version}, nil
	case method == http.MethodGet && path == "/version":
		return http.StatusOK, map[string]any{"firecracker_version": m.version}, nil
	case method == http.MethodGet && path == "/machine-config":
		return http.StatusOK, m.machine, nil
	case method == http.MethodGet && path == "/vm/config":
		return http.StatusOK, m.fullConfig(), nil
	case method == http.MethodPut && path == "/machine-config":
		v, f := preBoot(schemaMachineConfig)
		if f != nil {
			return 0, nil, f
		}
		if n := integer(v, "vcpu_count"); n < 1 || n > 32 {
			return 0, nil, badRequest("The vCPU number is invalid! The vCPU number can only be 1 or an even number when SMT is enabled.")
		}
		if integer(v, "mem_size_mib") < 1 {
			return 0, nil, badRequest("The memory size (MiB) is either 0, or not a multiple of the configured page size.")
		}
		for k, def := range map[string]any{"smt": false, "track_dirty_pages": false, "huge_pages": "None"} {
			if _, ok := v[k]; !ok {
				v[k] = def
			}
		}
		m.machine, m.bootOnly = v, true
		return noContent, nil, nil
	case method == http.MethodPut && path == "/boot-source":
		v, f := preBoot(schemaBootSource)
		if f != nil {
			return 0, nil, f
		}
		if err := readable(str(v, "kernel_image_path")); err != nil {
			return 0, nil, badRequest("The kernel file cannot be opened: %v", err)
		}
		if p := str(v, "initrd_path"); p != "" {
			if err := readable(p); err != nil {
				return 0, nil, badRequest("The initrd file cannot be opened due to invalid permissions or missing file: %v", err)
			}
		}
		m.boot, m.bootOnly = v, true
		return noContent, nil, nil
	case method == http.MethodPut && strings.HasPrefix(path, "/drives/"):
		v, f := preBoot(schemaDrive)
		if f != nil {
			return 0, nil, f
		}
		if f := samePathID(path, "/drives/", str(v, "drive_id")); f != nil {
			return 0, nil, f
		}
		if _, ok := v["socket"]; !ok {
			if _, ok := v["path_on_host"]; !ok {
				return 0, nil, badRequest("Unable to create the virtio-block device: path_on_host is required for a virtio-block drive")
			}
			if err := readable(str(v, "path_on_host")); err != nil {
				return 0, nil, badRequest("Unable to create the virtio-block device: BackingFile(%v)", err)
			}
		}
		if boolean(v, "is_root_device") {
			for _, d := range m.drives {
				if boolean(d, "is_root_device") && str(d, "drive_id") != str(v, "drive_id") {
					return 0, nil, badRequest("A root block device already exists!")
				}
			}
		}
		m.drives = upsert(m.drives, "drive_id", v)
		m.bootOnly = true
		return noContent, nil, nil
	case method == http.MethodPut && strings.HasPrefix(path, "/network-interfaces/"):
		v, f := preBoot(schemaNetworkInterface)
		if f != nil {
			return 0, nil, f
		}
		if f := samePathID(path, "/network-interfaces/", str(v, "iface_id")); f != nil {
			return 0, nil, f
		}
		if mac, ok := v["guest_mac"].(string); ok {
			if _, err := net.ParseMAC(mac); err != nil || len(mac) != 17 {
				return 0, nil, badRequest("An error occurred when deserializing the json body of a request: invalid MAC address %q", mac)
			}
		}
		for _, n := range m.nics {
			if str(n, "host_dev_name") == str(v, "host_dev_name") && str(n, "iface_id") != str(v, "iface_id") {
				return 0, nil, badRequest("The host device name %s is already in use.", str(v, "host_dev_name"))
			}
		}
		m.nics = upsert(m.nics, "iface_id", v)
		m.bootOnly = true
		return noContent, nil, nil
	case method == http.MethodPut && path == "/vsock":
		v, f := preBoot(schemaVsock)
		if f != nil {
			return 0, nil, f
		}
		if integer(v, "guest_cid") < 3 {
			return 0, nil, badRequest("Cannot create vsock device: invalid guest CID %d (must be >= 3)", integer(v, "guest_cid"))
		}
		m.vsock, m.bootOnly = v, true
		return noContent, nil, nil
	case method == http.MethodPut && path == "/mmds/config":
		v, f := preBoot(schemaMMDSConfig)
		if f != nil {
			return 0, nil, f
		}
		ifaces, _ := v["network_interfaces"].([]any)
		if len(ifaces) == 0 {
			return 0, nil, badRequest("The list of network interface IDs that allow forwarding MMDS requests is empty.")
		}
		for _, id := range ifaces {
			found := false
			for _, n := range m.nics {
				found = found || str(n, "iface_id") == id
			}
			if !found {
				return 0, nil, badRequest("The list of network interface IDs provided contains at least one ID that does not correspond to any existing network interface.")
			}
		}
		m.mmdsCfg, m.bootOnly = v, true
		return noContent, nil, nil
	case path == "/mmds" && (method == http.MethodPut || method == http.MethodPatch):
		var obj map[string]any
		if err := json.Unmarshal(body, &obj); err != nil || obj == nil {
			return 0, nil, badRequest("An error occurred when deserializing the json body of a request: expected a JSON object")
		}
		if method == http.MethodPatch && m.mmds == nil {
			return 0, nil, badRequest("The MMDS data store is not initialized.")
		}
		m.mmds = compact(body)
		return noContent, nil, nil
	case method == http.MethodGet && path == "/mmds":
		if m.mmds == nil {
			return 0, nil, &fault{status: http.StatusNotFound, msg: "The MMDS data store is not initialized."}
		}
		return http.StatusOK, m.mmds, nil
	case method == http.MethodPut && path == "/logger":
		fields, err := schemaLogger.validate(body)
		if err != nil {
			return 0, nil, badRequest("%v", err)
		}
		v := decodeInto(fields)
		if p := str(v, "log_path"); p != "" {
			if err := writable(p); err != nil {
				return 0, nil, badRequest("Failed to open target file: %v", err)
			}
		}
		m.logger = v
		return noContent, nil, nil
	case method == http.MethodPut && path == "/metrics":
		fields, err := schemaMetrics.validate(body)
		if err != nil {
			return 0, nil, badRequest("%v", err)
		}
		if m.metrics != nil {
			return 0, nil, badRequest("Reinitialization of metrics not allowed.")
		}
		v := decodeInto(fields)
		if err := writable(str(v, "metrics_path")); err != nil {
			return 0, nil, badRequest("Failed to open target file: %v", err)
		}
		m.metrics = v
		return noContent, nil, nil
	case method == http.MethodPut && path == "/actions":
		fields, err := schemaAction.validate(body)
		if err != nil {
			return 0, nil, badRequest("%v", err)
		}
		return m.action(str(decodeInto(fields), "action_type"))
	case method == http.MethodPatch && path == "/vm":
		fields, err := schemaVM.validate(body)
		if err != nil {
			return 0, nil, badRequest("%v", err)
		}
		if !m.started {
			return 0, nil, badRequest(msgPreBoot)
		}
		pause := str(decodeInto(fields), "state") == "Paused"
		if m.guest != nil {
			if err := m.guest.setPaused(pause); err != nil {
				return 0, nil, &fault{status: http.StatusInternalServerError, msg: err.Error()}
			}
		}
		m.paused = pause
		return noContent, nil, nil
	case method == http.MethodPut && path == "/snapshot/create":
		fields, err := schemaSnapshotCreate.validate(body)
		if err != nil {
			return 0, nil, badRequest("%v", err)
		}
		if !m.started {
			return 0, nil, badRequest(msgPreBoot)
		}
		if !m.paused {
			return 0, nil, badRequest("Cannot create a snapshot of a running microVM: pause it first.")
		}
		v := decodeInto(fields)
		for _, p := range []string{str(v, "snapshot_path"), str(v, "mem_file_path")} {
			if err := os.WriteFile(p, []byte("fakefc snapshot of "+m.id+"\n"), 0o600); err != nil {
				return 0, nil, badRequest("Cannot create snapshot file: %v", err)
			}
		}
		return noContent, nil, nil
	case method == http.MethodPut && path == "/snapshot/load":
		fields, err := schemaSnapshotLoad.validate(body)
		if err != nil {
			return 0, nil, badRequest("%v", err)
		}
		_, hasFile := fields["mem_file_path"]
		_, hasBackend := fields["mem_backend"]
		if hasFile == hasBackend {
			return 0, nil, badRequest("An error occurred when deserializing the json body of a request: exactly one of mem_file_path and mem_backend must be given")
		}
		if m.started || m.bootOnly {
			return 0, nil, badRequest("Loading a microVM snapshot not allowed after configuring boot-specific resources.")
		}
		if err := readable(str(decodeInto(fields), "snapshot_path")); err != nil {
			return 0, nil, badRequest("Cannot open snapshot file: %v", err)
		}
		if m.guest == nil && os.Getenv("FAKEFC_BOOT") == "qemu" {
			return 0, nil, badRequest("fakefc: snapshots cannot be restored with the QEMU guest")
		}
		m.started, m.paused = true, !boolean(decodeInto(fields), "resume_vm")
		return noContent, nil, nil
	}
	return 0, nil, &fault{status: http.StatusBadRequest, msg: fmt.Sprintf("Invalid request method and/or path: %s %s.", method, path)}
}

func (m *machine) action(kind string) (int, any, *fault) {
	switch kind {
	case "InstanceStart":
		if m.started {
			return 0, nil, badRequest(msgPostBoot)
		}
		if m.boot == nil {
			return 0, nil, badRequest("Start microvm error: Cannot start microvm without kernel configuration.")
		}
		if msg := os.Getenv("FAKEFC_FAIL_START"); msg != "" {
			return 0, nil, badRequest("%s", msg)
		}
		if os.Getenv("FAKEFC_DIE_ON_START") == "1" {
			fmt.Fprintln(m.stderr, "fakefc: dying on InstanceStart as asked (FAKEFC_DIE_ON_START)")
			os.Exit(1)
		}
		if os.Getenv("FAKEFC_BOOT") == "qemu" {
			g, err := startQEMU(m)
			if err != nil {
				return 0, nil, badRequest("Start microvm error: %v", err)
			}
			m.guest = g
			go func() {
				<-g.done
				// Firecracker exits when its guest powers off or resets.
				m.quit(0)
			}()
		}
		m.started = true
		return http.StatusNoContent, nil, nil
	case "SendCtrlAltDel":
		if !m.started {
			return 0, nil, badRequest(msgPreBoot)
		}
		if m.guest != nil {
			if err := m.guest.ctrlAltDel(); err != nil {
				return 0, nil, &fault{status: http.StatusInternalServerError, msg: err.Error()}
			}
		} else {
			// The simulated guest reboots at once; Firecracker exits.
			time.AfterFunc(50*time.Millisecond, func() { m.quit(0) })
		}
		return http.StatusNoContent, nil, nil
	case "FlushMetrics":
		if m.metrics == nil {
			return 0, nil, badRequest("Flushing metrics failed: the metrics system is not initialized.")
		}
		line := fmt.Sprintf("{\"utc_timestamp_ms\":%d}\n", time.Now().UnixMilli())
		if f, err := os.OpenFile(str(m.metrics, "metrics_path"), os.O_WRONLY|os.O_APPEND, 0); err == nil {
			_, _ = f.WriteString(line)
			f.Close()
		}
		return http.StatusNoContent, nil, nil
	}
	return 0, nil, badRequest("unknown action %q", kind)
}

func (m *machine) fullConfig() map[string]any {
	orNil := func(v map[string]any) any {
		if v == nil {
			return nil
		}
		return v
	}
	drives := m.drives
	if drives == nil {
		drives = []map[string]any{}
	}
	nics := m.nics
	if nics == nil {
		nics = []map[string]any{}
	}
	return map[string]any{
		"balloon": nil, "drives": drives, "boot-source": orNil(m.boot), "cpu-config": nil,
		"logger": orNil(m.logger), "machine-config": m.machine, "metrics": orNil(m.metrics),
		"mmds-config": orNil(m.mmdsCfg), "network-interfaces": nics, "vsock": orNil(m.vsock), "entropy": nil,
	}
}

// quit ends Main with code; only the first call counts.
func (m *machine) quit(code int) {
	select {
	case m.exit <- code:
	default:
	}
}

func (m *machine) stopGuest() {
	m.mu.Lock()
	g := m.guest
	m.mu.Unlock()
	if g != nil {
		g.kill()
	}
}

func samePathID(path, prefix, bodyID string) *fault {
	if id := strings.TrimPrefix(path, prefix); id != bodyID {
		return badRequest("The id from the path [%s] does not match the id from the body [%s]!", id, bodyID)
	}
	return nil
}

func upsert(list []map[string]any, key string, v map[string]any) []map[string]any {
	for i, x := range list {
		if str(x, key) == str(v, key) {
			list[i] = v
			return list
		}
	}
	return append(list, v)
}

func readable(path string) error {
	if path == "" {
		return errors.New("empty path")
	}
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	return f.Close()
}

func writable(path string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return err
	}
	return f.Close()
}
