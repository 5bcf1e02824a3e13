package firecracker

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// The request and response bodies below follow Firecracker's API
// description (src/firecracker/swagger/firecracker.yaml). Optional
// fields are omitempty so a request carries only what banger sets.

// MachineConfig is PUT /machine-config (vcpu_count and mem_size_mib are
// required; vcpu_count is 1..32).
type MachineConfig struct {
	VCPUCount       int    `json:"vcpu_count"`
	MemSizeMiB      int    `json:"mem_size_mib"`
	SMT             *bool  `json:"smt,omitempty"`
	TrackDirtyPages *bool  `json:"track_dirty_pages,omitempty"`
	HugePages       string `json:"huge_pages,omitempty"`
}

// BootSource is PUT /boot-source (kernel_image_path is required).
type BootSource struct {
	KernelImagePath string `json:"kernel_image_path"`
	BootArgs        string `json:"boot_args,omitempty"`
	InitrdPath      string `json:"initrd_path,omitempty"`
}

// Drive is PUT /drives/{drive_id} for a virtio-block drive (drive_id and
// is_root_device are required; path_on_host and is_read_only are
// required for virtio-block).
type Drive struct {
	DriveID      string `json:"drive_id"`
	PathOnHost   string `json:"path_on_host"`
	IsRootDevice bool   `json:"is_root_device"`
	IsReadOnly   bool   `json:"is_read_only"`
	CacheType    string `json:"cache_type,omitempty"`
	IOEngine     string `json:"io_engine,omitempty"`
}

// NetworkInterface is PUT /network-interfaces/{iface_id} (iface_id and
// host_dev_name are required).
type NetworkInterface struct {
	IfaceID     string `json:"iface_id"`
	HostDevName string `json:"host_dev_name"`
	GuestMAC    string `json:"guest_mac,omitempty"`
}

// Vsock is PUT /vsock (guest_cid >= 3 and uds_path are required).
type Vsock struct {
	GuestCID uint32 `json:"guest_cid"`
	UDSPath  string `json:"uds_path"`
}

// MMDSConfig is PUT /mmds/config (network_interfaces is required).
type MMDSConfig struct {
	NetworkInterfaces []string `json:"network_interfaces"`
	Version           string   `json:"version,omitempty"` // V1 or V2
	IPv4Address       string   `json:"ipv4_address,omitempty"`
}

// Logger is PUT /logger.
type Logger struct {
	LogPath       string `json:"log_path,omitempty"`
	Level         string `json:"level,omitempty"` // Error, Warning, Info, Debug, Trace, Off
	ShowLevel     bool   `json:"show_level,omitempty"`
	ShowLogOrigin bool   `json:"show_log_origin,omitempty"`
}

// Metrics is PUT /metrics (metrics_path is required).
type Metrics struct {
	MetricsPath string `json:"metrics_path"`
}

// Action types of PUT /actions.
const (
	ActionInstanceStart  = "InstanceStart"
	ActionSendCtrlAltDel = "SendCtrlAltDel"
	ActionFlushMetrics   = "FlushMetrics"
)

// VM states of PATCH /vm.
const (
	VMStatePaused  = "Paused"
	VMStateResumed = "Resumed"
)

// Instance states reported by GET /.
const (
	InstanceNotStarted = "Not started"
	InstanceRunning    = "Running"
	InstancePaused     = "Paused"
)

// InstanceInfo is GET /.
type InstanceInfo struct {
	AppName    string `json:"app_name"`
	ID         string `json:"id"`
	State      string `json:"state"`
	VMMVersion string `json:"vmm_version"`
}

// FullVMConfig is GET /vm/config (the parts banger reads).
type FullVMConfig struct {
	BootSource        *BootSource        `json:"boot-source,omitempty"`
	Drives            []Drive            `json:"drives"`
	MachineConfig     *MachineConfig     `json:"machine-config,omitempty"`
	NetworkInterfaces []NetworkInterface `json:"network-interfaces"`
	Logger            *Logger            `json:"logger,omitempty"`
	Metrics           *Metrics           `json:"metrics,omitempty"`
	Vsock             *Vsock             `json:"vsock,omitempty"`
	MMDSConfig        *MMDSConfig        `json:"mmds-config,omitempty"`
}

// SnapshotCreate is PUT /snapshot/create (snapshot_path and
// mem_file_path are required; the VM must be paused).
type SnapshotCreate struct {
	SnapshotType string `json:"snapshot_type,omitempty"` // Full or Diff
	SnapshotPath string `json:"snapshot_path"`
	MemFilePath  string `json:"mem_file_path"`
}

// MemoryBackend selects where a snapshot's memory comes from.
type MemoryBackend struct {
	BackendType string `json:"backend_type"` // File or Uffd
	BackendPath string `json:"backend_path"`
}

// SnapshotLoad is PUT /snapshot/load (snapshot_path and exactly one of
// mem_backend / mem_file_path are required; only on a fresh process).
type SnapshotLoad struct {
	SnapshotPath    string         `json:"snapshot_path"`
	MemBackend      *MemoryBackend `json:"mem_backend,omitempty"`
	TrackDirtyPages bool           `json:"track_dirty_pages,omitempty"`
	ResumeVM        bool           `json:"resume_vm,omitempty"`
}

// APIError is a non-2xx answer of the Firecracker API. FaultMessage is
// Firecracker's own text, shown to users verbatim.
type APIError struct {
	Method       string
	Path         string
	StatusCode   int
	FaultMessage string
}

func (e *APIError) Error() string {
	msg := e.FaultMessage
	if msg == "" {
		msg = "(no fault_message)"
	}
	return fmt.Sprintf("firecracker API %s %s: %d %s: %s", e.Method, e.Path, e.StatusCode, http.StatusText(e.StatusCode), msg)
}

// Client talks to one Firecracker process over its API socket. Each
// request has its own deadline from ctx.
type Client struct {
	socket string
	http   *http.Client
}

// NewClient returns a client of the API socket at socketPath.
func NewClient(socketPath string) *Client {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socketPath)
		},
		// Firecracker serves one connection at a time well; keep none
		// idle so a process restart never sees a stale connection.
		DisableKeepAlives: true,
	}
	return &Client{socket: socketPath, http: &http.Client{Transport: tr, Timeout: 30 * time.Second}}
}

// SocketPath is the API socket this client talks to.
func (c *Client) SocketPath() string { return c.socket }

func (c *Client) do(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		data, err := json.Marshal(body)
		if err != nil {
			return fmt.Errorf("encode %s %s: %w", method, path, err)
		}
		rd = bytes.NewReader(data)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://localhost"+path, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("firecracker API %s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return fmt.Errorf("firecracker API %s %s: read answer: %w", method, path, err)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		var fault struct {
			FaultMessage string `json:"fault_message"`
		}
		if json.Unmarshal(data, &fault) != nil || fault.FaultMessage == "" {
			fault.FaultMessage = strings.TrimSpace(string(data))
		}
		return &APIError{Method: method, Path: path, StatusCode: resp.StatusCode, FaultMessage: fault.FaultMessage}
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("firecracker API %s %s: decode answer: %w", method, path, err)
		}
	}
	return nil
}

// IsAPIError reports whether err is an answer of the API (as opposed to a
// transport failure).
func IsAPIError(err error) bool {
	var e *APIError
	return errors.As(err, &e)
}

// PutMachineConfig sets vCPUs and memory (pre-boot).
func (c *Client) PutMachineConfig(ctx context.Context, m MachineConfig) error {
	return c.do(ctx, http.MethodPut, "/machine-config", m, nil)
}

// PutBootSource sets kernel, initrd and boot arguments (pre-boot).
func (c *Client) PutBootSource(ctx context.Context, b BootSource) error {
	return c.do(ctx, http.MethodPut, "/boot-source", b, nil)
}

// PutDrive adds or replaces a drive (pre-boot).
func (c *Client) PutDrive(ctx context.Context, d Drive) error {
	return c.do(ctx, http.MethodPut, "/drives/"+url.PathEscape(d.DriveID), d, nil)
}

// PutNetworkInterface adds a network interface (pre-boot).
func (c *Client) PutNetworkInterface(ctx context.Context, n NetworkInterface) error {
	return c.do(ctx, http.MethodPut, "/network-interfaces/"+url.PathEscape(n.IfaceID), n, nil)
}

// PutVsock adds the vsock device (pre-boot).
func (c *Client) PutVsock(ctx context.Context, v Vsock) error {
	return c.do(ctx, http.MethodPut, "/vsock", v, nil)
}

// PutMMDSConfig configures the metadata service (pre-boot).
func (c *Client) PutMMDSConfig(ctx context.Context, m MMDSConfig) error {
	return c.do(ctx, http.MethodPut, "/mmds/config", m, nil)
}

// PutMMDS replaces the metadata store contents.
func (c *Client) PutMMDS(ctx context.Context, data any) error {
	return c.do(ctx, http.MethodPut, "/mmds", data, nil)
}

// GetMMDS reads the metadata store into out.
func (c *Client) GetMMDS(ctx context.Context, out any) error {
	return c.do(ctx, http.MethodGet, "/mmds", nil, out)
}

// PutLogger configures Firecracker's own log.
func (c *Client) PutLogger(ctx context.Context, l Logger) error {
	return c.do(ctx, http.MethodPut, "/logger", l, nil)
}

// PutMetrics configures the metrics file.
func (c *Client) PutMetrics(ctx context.Context, m Metrics) error {
	return c.do(ctx, http.MethodPut, "/metrics", m, nil)
}

// Action runs one of the Action* actions.
func (c *Client) Action(ctx context.Context, actionType string) error {
	return c.do(ctx, http.MethodPut, "/actions", map[string]string{"action_type": actionType}, nil)
}

// PatchVM pauses (VMStatePaused) or resumes (VMStateResumed) the vCPUs.
func (c *Client) PatchVM(ctx context.Context, state string) error {
	return c.do(ctx, http.MethodPatch, "/vm", map[string]string{"state": state}, nil)
}

// InstanceInfo is GET /.
func (c *Client) InstanceInfo(ctx context.Context) (InstanceInfo, error) {
	var info InstanceInfo
	err := c.do(ctx, http.MethodGet, "/", nil, &info)
	return info, err
}

// VMConfig is GET /vm/config.
func (c *Client) VMConfig(ctx context.Context) (FullVMConfig, error) {
	var cfg FullVMConfig
	err := c.do(ctx, http.MethodGet, "/vm/config", nil, &cfg)
	return cfg, err
}

// Version is GET /version's firecracker_version.
func (c *Client) Version(ctx context.Context) (string, error) {
	var v struct {
		FirecrackerVersion string `json:"firecracker_version"`
	}
	err := c.do(ctx, http.MethodGet, "/version", nil, &v)
	return v.FirecrackerVersion, err
}

// CreateSnapshot writes the paused VM's state and memory to files.
func (c *Client) CreateSnapshot(ctx context.Context, s SnapshotCreate) error {
	return c.do(ctx, http.MethodPut, "/snapshot/create", s, nil)
}

// LoadSnapshot restores a snapshot into a fresh process.
func (c *Client) LoadSnapshot(ctx context.Context, s SnapshotLoad) error {
	return c.do(ctx, http.MethodPut, "/snapshot/load", s, nil)
}
