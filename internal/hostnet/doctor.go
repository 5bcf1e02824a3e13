package hostnet

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/google/nftables"
	"golang.org/x/sys/unix"
)

// CheckTUN reports whether /dev/net/tun can be opened (TAP devices need it).
func CheckTUN() error {
	f, err := os.OpenFile("/dev/net/tun", os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("open /dev/net/tun: %w (load the tun module: `modprobe tun`; the daemon must run as root)", err)
	}
	return f.Close()
}

// CheckBridgeSupport reports whether the kernel can create bridges: the
// bridge module is loaded, built in, or installed for loading on demand.
// It changes nothing.
func CheckBridgeSupport() error {
	if _, err := os.Stat("/sys/module/bridge"); err == nil {
		return nil
	}
	var uts unix.Utsname
	if err := unix.Uname(&uts); err != nil {
		return fmt.Errorf("bridge support: uname: %w", err)
	}
	modDir := filepath.Join("/lib/modules", unix.ByteSliceToString(uts.Release[:]))
	if moduleListed(filepath.Join(modDir, "modules.builtin"), "bridge") ||
		moduleListed(filepath.Join(modDir, "modules.dep"), "bridge") {
		return nil
	}
	return fmt.Errorf("bridge support: the bridge module is neither loaded nor installed under %s (install your kernel's modules package)", modDir)
}

// moduleListed reports whether a modules.builtin/modules.dep file names
// module (lines such as "kernel/net/bridge/bridge.ko.xz: ...").
func moduleListed(path, module string) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		file, _, _ := strings.Cut(sc.Text(), ":")
		base := filepath.Base(file)
		if name, _, _ := strings.Cut(base, "."); name == module {
			return true
		}
	}
	return false
}

// CheckNftables reports whether nftables can be used over netlink. It only
// asks for banger's own table (absent is fine) and changes nothing.
func CheckNftables() error {
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("nftables: open netlink connection: %w", err)
	}
	_, err = c.ListTableOfFamily(NFTTable, nftables.TableFamilyIPv4)
	if err == nil || errors.Is(err, syscall.ENOENT) {
		return nil
	}
	return fmt.Errorf("nftables: query table ip %s: %w%s", NFTTable, err, nftHint(err))
}
