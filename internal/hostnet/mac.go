package hostnet

import (
	"crypto/sha256"
	"fmt"
)

// MACForVM derives a stable MAC address from a VM id, so a VM keeps its
// address (and its DHCP/ARP identity) across restarts.
func MACForVM(vmID string) string { return stableMAC("vm/" + vmID) }

// stableMAC hashes key into a locally administered unicast MAC (02:...).
func stableMAC(key string) string {
	h := sha256.Sum256([]byte(key))
	return fmt.Sprintf("02:%02x:%02x:%02x:%02x:%02x", h[0], h[1], h[2], h[3], h[4])
}
