package hostnet

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// dnsTTL is short: VMs come and go, and an address may be reused.
const dnsTTL = 5

// DNSServer answers A queries for VM names in one zone. It is
// authoritative only: names outside the zone are REFUSED, never forwarded.
type DNSServer struct {
	zone   string
	udp    net.PacketConn
	tcp    net.Listener
	lookup func(string) (netip.Addr, bool)
}

// ServeDNS listens on listen (UDP and TCP) and answers for zone until ctx
// is done; then it returns nil. lookup maps a VM name (lower case, without
// the zone) to its address.
func ServeDNS(ctx context.Context, listen, zone string, lookup func(string) (netip.Addr, bool)) error {
	s, err := ListenDNS(listen, zone, lookup)
	if err != nil {
		return err
	}
	return s.Serve(ctx)
}

// ListenDNS binds the UDP and TCP sockets so bind errors surface before
// serving starts. A port of 0 picks one free port for both.
func ListenDNS(listen, zone string, lookup func(string) (netip.Addr, bool)) (*DNSServer, error) {
	z, err := canonicalZone(zone)
	if err != nil {
		return nil, err
	}
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return nil, fmt.Errorf("DNS listen address %q: %w", listen, err)
	}
	for attempt := 0; ; attempt++ {
		udp, err := net.ListenPacket("udp", listen)
		if err != nil {
			return nil, fmt.Errorf("DNS server: listen on udp %s: %w%s", listen, err, bindHint(listen))
		}
		actual := strconv.Itoa(udp.LocalAddr().(*net.UDPAddr).Port)
		tcp, err := net.Listen("tcp", net.JoinHostPort(host, actual))
		if err != nil {
			udp.Close()
			// With port 0 the UDP port may be taken on TCP; try another.
			if port == "0" && attempt < 10 {
				continue
			}
			return nil, fmt.Errorf("DNS server: listen on tcp %s: %w%s", listen, err, bindHint(listen))
		}
		return &DNSServer{zone: z, udp: udp, tcp: tcp, lookup: lookup}, nil
	}
}

func bindHint(listen string) string {
	return fmt.Sprintf(" (is another DNS server using %s, or is the bridge address missing?)", listen)
}

// Addr is the bound address (same port for UDP and TCP).
func (s *DNSServer) Addr() string { return s.udp.LocalAddr().String() }

// Serve answers queries until ctx is done, then closes the sockets. It
// returns nil after ctx ends, or the first serving error.
func (s *DNSServer) Serve(ctx context.Context) error {
	h := dns.HandlerFunc(s.answer)
	servers := []*dns.Server{
		{PacketConn: s.udp, Handler: h},
		{Listener: s.tcp, Handler: h, ReadTimeout: 5 * time.Second},
	}
	errc := make(chan error, len(servers))
	for _, srv := range servers {
		go func() { errc <- srv.ActivateAndServe() }()
	}
	var err error
	pending := len(servers)
	select {
	case <-ctx.Done():
	case err = <-errc:
		pending--
		err = fmt.Errorf("DNS server on %s stopped: %w", s.Addr(), err)
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	for _, srv := range servers {
		_ = srv.ShutdownContext(shutdownCtx)
	}
	// Sockets are closed by shutdown; close again in case a server never
	// started (closing twice only returns an error we ignore).
	_ = s.udp.Close()
	_ = s.tcp.Close()
	for ; pending > 0; pending-- {
		<-errc
	}
	return err
}

func (s *DNSServer) answer(w dns.ResponseWriter, req *dns.Msg) {
	_ = w.WriteMsg(s.reply(req))
}

// reply builds the response to req; pure so tests can call it directly.
func (s *DNSServer) reply(req *dns.Msg) *dns.Msg {
	m := new(dns.Msg)
	switch {
	case req.Opcode != dns.OpcodeQuery:
		return m.SetRcode(req, dns.RcodeNotImplemented)
	case len(req.Question) != 1:
		return m.SetRcode(req, dns.RcodeFormatError)
	}
	m.SetReply(req)
	if req.IsEdns0() != nil {
		m.SetEdns0(1232, false)
	}
	q := req.Question[0]
	qname := strings.ToLower(q.Name)
	if !dns.IsSubDomain(s.zone, qname) || (q.Qclass != dns.ClassINET && q.Qclass != dns.ClassANY) {
		m.Rcode = dns.RcodeRefused
		return m
	}
	m.Authoritative = true
	if qname == s.zone {
		if q.Qtype == dns.TypeSOA {
			m.Answer = append(m.Answer, s.soa())
		} else {
			m.Ns = append(m.Ns, s.soa())
		}
		return m
	}
	label := strings.TrimSuffix(qname, "."+s.zone)
	addr, ok := netip.Addr{}, false
	if !strings.Contains(label, ".") {
		addr, ok = s.lookup(label)
	}
	if !ok || !addr.Is4() {
		m.Rcode = dns.RcodeNameError
		m.Ns = append(m.Ns, s.soa())
		return m
	}
	if q.Qtype == dns.TypeA || q.Qtype == dns.TypeANY {
		m.Answer = append(m.Answer, &dns.A{
			Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: dnsTTL},
			A:   addr.AsSlice(),
		})
		return m
	}
	m.Ns = append(m.Ns, s.soa()) // name exists, no data of this type
	return m
}

// soa is a synthetic SOA so resolvers cache negative answers briefly.
func (s *DNSServer) soa() dns.RR {
	return &dns.SOA{
		Hdr:     dns.RR_Header{Name: s.zone, Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: dnsTTL},
		Ns:      "ns." + s.zone,
		Mbox:    "hostmaster." + s.zone,
		Serial:  1,
		Refresh: 3600, Retry: 600, Expire: 86400,
		Minttl: dnsTTL,
	}
}

// zoneRE accepts host-name style labels (LDH), at least one, fully qualified.
var zoneRE = regexp.MustCompile(`^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+$`)

// canonicalZone lower-cases zone and makes it fully qualified.
func canonicalZone(zone string) (string, error) {
	z := dns.Fqdn(strings.ToLower(zone))
	if !zoneRE.MatchString(z) || len(z) > 253 {
		return "", errors.New("DNS zone " + strconv.Quote(zone) + " is not a domain name such as banger.internal")
	}
	return z, nil
}
