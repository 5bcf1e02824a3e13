package builder

import (
	"archive/tar"
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/banger-dev/banger/internal/api"
)

// ConfigDriveSize is the size of a config drive: the archive padded with zeros.
const ConfigDriveSize = 1 << 20

// ConfigDrive is what a VM learns about itself at boot. The host writes it
// as a raw disk holding a ustar archive whose entries all live under
// banger/ (see guestfiles/apply-config.sh for the guest side).
type ConfigDrive struct {
	Hostname       string
	IP             string // CIDR, e.g. 172.30.0.2/24
	Gateway        string // optional
	MAC            string
	User           string
	SearchDomain   string // optional
	DNS            []string
	AuthorizedKeys []string // OpenSSH authorized_keys lines
	HostKeyPrivate []byte   // OpenSSH PEM private key
	HostKeyPublic  []byte   // authorized_keys-format public key
}

var (
	hostnamePattern = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)
	userPattern     = regexp.MustCompile(`^[a-z_][a-z0-9_-]{0,31}$`)
	domainPattern   = regexp.MustCompile(`^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)
)

// Validate checks every field, so the guest only ever receives well-formed
// single values.
func (c ConfigDrive) Validate() error {
	bad := func(field, format string, args ...any) error {
		return api.Errorf(api.KindInvalidInput, "config drive: %s: "+format, append([]any{field}, args...)...)
	}
	if !hostnamePattern.MatchString(c.Hostname) {
		return bad("hostname", "%q must be 1-63 characters of a-z, 0-9 and '-', not starting or ending with '-'", c.Hostname)
	}
	prefix, err := netip.ParsePrefix(c.IP)
	if err != nil || !prefix.Addr().Is4() {
		return bad("ip", "%q is not an IPv4 address in CIDR form such as 172.30.0.2/24", c.IP)
	}
	if c.Gateway != "" {
		gw, err := netip.ParseAddr(c.Gateway)
		if err != nil || !gw.Is4() {
			return bad("gateway", "%q is not an IPv4 address", c.Gateway)
		}
		if !prefix.Masked().Contains(gw) {
			return bad("gateway", "%s is outside the guest's subnet %s", gw, prefix.Masked())
		}
	}
	if hw, err := net.ParseMAC(c.MAC); err != nil || len(hw) != 6 {
		return bad("mac", "%q is not a MAC address such as 52:54:00:12:34:56", c.MAC)
	}
	if !userPattern.MatchString(c.User) {
		return bad("user", "%q is not a valid user name", c.User)
	}
	if c.SearchDomain != "" && !domainPattern.MatchString(c.SearchDomain) {
		return bad("search", "%q is not a DNS domain name", c.SearchDomain)
	}
	for _, d := range c.DNS {
		if _, err := netip.ParseAddr(d); err != nil {
			return bad("dns", "%q is not an IP address", d)
		}
	}
	if len(c.AuthorizedKeys) == 0 {
		return bad("authorized_keys", "at least one key is needed, or nobody can log in")
	}
	for _, k := range c.AuthorizedKeys {
		if strings.TrimSpace(k) == "" || strings.ContainsAny(k, "\r\n") {
			return bad("authorized_keys", "each key must be one non-empty line")
		}
	}
	if !bytes.Contains(c.HostKeyPrivate, []byte("PRIVATE KEY")) {
		return bad("ssh_host_ed25519_key", "not a PEM private key")
	}
	pub := strings.TrimSpace(string(c.HostKeyPublic))
	if !strings.HasPrefix(pub, "ssh-ed25519 ") || strings.ContainsAny(pub, "\r\n") {
		return bad("ssh_host_ed25519_key.pub", "not a single ssh-ed25519 public key line")
	}
	return nil
}

// WriteConfigDrive validates c and writes it as a config drive image at
// path (mode 0600: it holds the VM's private host key). A failed write
// leaves no file behind.
func WriteConfigDrive(path string, c ConfigDrive) (err error) {
	if err := c.Validate(); err != nil {
		return err
	}
	lines := func(values ...string) []byte { return []byte(strings.Join(values, "\n") + "\n") }
	type entry struct {
		name string
		mode int64
		data []byte
	}
	entries := []entry{
		{"hostname", 0o644, lines(c.Hostname)},
		{"ip", 0o644, lines(c.IP)},
		{"mac", 0o644, lines(strings.ToLower(c.MAC))},
		{"user", 0o644, lines(c.User)},
		{"authorized_keys", 0o644, lines(c.AuthorizedKeys...)},
		{"ssh_host_ed25519_key", 0o600, c.HostKeyPrivate},
		{"ssh_host_ed25519_key.pub", 0o644, lines(strings.TrimSpace(string(c.HostKeyPublic)))},
	}
	if c.Gateway != "" {
		entries = append(entries, entry{"gateway", 0o644, lines(c.Gateway)})
	}
	if len(c.DNS) > 0 {
		entries = append(entries, entry{"dns", 0o644, lines(c.DNS...)})
	}
	if c.SearchDomain != "" {
		entries = append(entries, entry{"search", 0o644, lines(c.SearchDomain)})
	}

	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	mtime := time.Unix(0, 0)
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: "banger/", Mode: 0o755, ModTime: mtime, Format: tar.FormatUSTAR}); err != nil {
		return fmt.Errorf("config drive: %w", err)
	}
	for _, e := range entries {
		hdr := &tar.Header{Typeflag: tar.TypeReg, Name: "banger/" + e.name, Mode: e.mode, Size: int64(len(e.data)), ModTime: mtime, Format: tar.FormatUSTAR}
		if err := tw.WriteHeader(hdr); err != nil {
			return fmt.Errorf("config drive: %s: %w", e.name, err)
		}
		if _, err := tw.Write(e.data); err != nil {
			return fmt.Errorf("config drive: %s: %w", e.name, err)
		}
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("config drive: %w", err)
	}
	if buf.Len() > ConfigDriveSize {
		return api.Errorf(api.KindInvalidInput, "config drive: content is %d bytes, more than the %d-byte drive", buf.Len(), ConfigDriveSize)
	}
	buf.Write(make([]byte, ConfigDriveSize-buf.Len()))

	tmp, err := os.CreateTemp(filepath.Dir(path), ".configdrive-*")
	if err != nil {
		return fmt.Errorf("config drive: %w", err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if err := tmp.Chmod(0o600); err != nil {
		return fmt.Errorf("config drive: %w", err)
	}
	if _, err := tmp.Write(buf.Bytes()); err != nil {
		return fmt.Errorf("config drive: write %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("config drive: write %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("config drive: %w", err)
	}
	return nil
}
