package guest

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"

	"golang.org/x/crypto/ssh"
)

// testServer is a minimal sshd on 127.0.0.1: it accepts one client key,
// runs "exec" requests with /bin/sh -c locally and records what clients ask.
type testServer struct {
	t       *testing.T
	ln      net.Listener
	hostKey ssh.Signer
	config  *ssh.ServerConfig

	accepts    atomic.Int32
	keepalives atomic.Int32

	mu            sync.Mutex
	conns         []*ssh.ServerConn
	ptyReqs       []ptyReqMsg
	windowChanges []windowChangeMsg
	signals       []string
	commands      []string
	wg            sync.WaitGroup
}

type ptyReqMsg struct {
	Term          string
	Columns, Rows uint32
	Width, Height uint32
	Modes         string
}

type windowChangeMsg struct {
	Columns, Rows uint32
	Width, Height uint32
}

func newTestSigner(t *testing.T) ssh.Signer {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	s, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// startTestServer serves on addr ("127.0.0.1:0" for any port) with the
// given host key, accepting only clientKey.
func startTestServer(t *testing.T, addr string, hostKey ssh.Signer, clientKey ssh.PublicKey) *testServer {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	s := &testServer{t: t, ln: ln, hostKey: hostKey}
	s.config = &ssh.ServerConfig{
		PublicKeyCallback: func(_ ssh.ConnMetadata, k ssh.PublicKey) (*ssh.Permissions, error) {
			if bytes.Equal(k.Marshal(), clientKey.Marshal()) {
				return nil, nil
			}
			return nil, errors.New("unknown key")
		},
	}
	s.config.AddHostKey(hostKey)
	s.wg.Add(1)
	go s.acceptLoop()
	t.Cleanup(s.stop)
	return s
}

func (s *testServer) addr() string { return s.ln.Addr().String() }

func (s *testServer) stop() {
	s.ln.Close()
	s.dropAll()
	s.wg.Wait()
}

// dropAll closes every connection, as a rebooting guest would.
func (s *testServer) dropAll() {
	s.mu.Lock()
	conns := s.conns
	s.conns = nil
	s.mu.Unlock()
	for _, c := range conns {
		c.Close()
	}
}

func (s *testServer) acceptLoop() {
	defer s.wg.Done()
	for {
		nc, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.accepts.Add(1)
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.serveConn(nc)
		}()
	}
}

func (s *testServer) serveConn(nc net.Conn) {
	conn, chans, reqs, err := ssh.NewServerConn(nc, s.config)
	if err != nil {
		nc.Close()
		return
	}
	s.mu.Lock()
	s.conns = append(s.conns, conn)
	s.mu.Unlock()
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for r := range reqs {
			if r.Type == "keepalive@openssh.com" {
				s.keepalives.Add(1)
			}
			if r.WantReply {
				r.Reply(false, nil) // like OpenSSH for unknown global requests
			}
		}
	}()
	for nch := range chans {
		if nch.ChannelType() != "session" {
			nch.Reject(ssh.UnknownChannelType, "only sessions")
			continue
		}
		ch, chReqs, err := nch.Accept()
		if err != nil {
			continue
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.serveSession(ch, chReqs)
		}()
	}
}

func (s *testServer) serveSession(ch ssh.Channel, reqs <-chan *ssh.Request) {
	defer ch.Close()
	var proc *os.Process
	var procMu sync.Mutex
	exited := make(chan uint32, 1)
	for r := range reqs {
		switch r.Type {
		case "pty-req":
			var m ptyReqMsg
			ok := ssh.Unmarshal(r.Payload, &m) == nil
			s.mu.Lock()
			s.ptyReqs = append(s.ptyReqs, m)
			s.mu.Unlock()
			r.Reply(ok, nil)
		case "window-change":
			var m windowChangeMsg
			if ssh.Unmarshal(r.Payload, &m) == nil {
				s.mu.Lock()
				s.windowChanges = append(s.windowChanges, m)
				s.mu.Unlock()
			}
		case "signal":
			var m struct{ Signal string }
			ssh.Unmarshal(r.Payload, &m)
			s.mu.Lock()
			s.signals = append(s.signals, m.Signal)
			s.mu.Unlock()
			procMu.Lock()
			if proc != nil && m.Signal == "KILL" {
				proc.Signal(syscall.SIGKILL)
			}
			procMu.Unlock()
		case "exec", "shell":
			var m struct{ Command string }
			if r.Type == "exec" && ssh.Unmarshal(r.Payload, &m) != nil {
				r.Reply(false, nil)
				continue
			}
			if r.Type == "shell" {
				m.Command = "exec /bin/sh"
			}
			s.mu.Lock()
			s.commands = append(s.commands, m.Command)
			s.mu.Unlock()
			cmd := exec.Command("/bin/sh", "-c", m.Command)
			cmd.Stdout = ch
			cmd.Stderr = ch.Stderr()
			stdin, err := cmd.StdinPipe()
			if err == nil {
				err = cmd.Start()
			}
			if err != nil {
				r.Reply(false, nil)
				return
			}
			procMu.Lock()
			proc = cmd.Process
			procMu.Unlock()
			r.Reply(true, nil)
			go func() {
				io.Copy(stdin, ch) // ends at the client's EOF or channel close
				stdin.Close()
			}()
			go func() {
				code := uint32(0)
				if err := cmd.Wait(); err != nil {
					var ee *exec.ExitError
					if errors.As(err, &ee) {
						if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
							code = 128 + uint32(ws.Signal())
						} else {
							code = uint32(ee.ExitCode())
						}
					} else {
						code = 255
					}
				}
				exited <- code
			}()
			go func() {
				code := <-exited
				ch.SendRequest("exit-status", false, ssh.Marshal(struct{ Status uint32 }{code}))
				ch.Close()
			}()
		default:
			if r.WantReply {
				r.Reply(false, nil)
			}
		}
	}
	// The client closed the channel: do not leave the command running.
	procMu.Lock()
	if proc != nil {
		proc.Kill()
	}
	procMu.Unlock()
}

func (s *testServer) recorded() (ptys []ptyReqMsg, wins []windowChangeMsg, sigs, cmds []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]ptyReqMsg(nil), s.ptyReqs...), append([]windowChangeMsg(nil), s.windowChanges...),
		append([]string(nil), s.signals...), append([]string(nil), s.commands...)
}
