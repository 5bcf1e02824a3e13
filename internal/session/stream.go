package session

import (
	"context"
	"errors"
	"io"
	"strconv"
	"sync"

	"github.com/banger-dev/banger/internal/api"
	"github.com/banger-dev/banger/internal/rpc"
	"github.com/banger-dev/banger/internal/vm"
)

// scrollbackBytes is how much of the log an attach replays first.
const scrollbackBytes = 64 << 10

// RegisterStreams registers the attach and follow stream methods.
func (s *Service) RegisterStreams(srv *rpc.Server) {
	rpc.RegisterStream(srv, api.StreamSessionAttach, s.Attach)
	rpc.RegisterStream(srv, api.StreamSessionFollow, s.Follow)
}

// follow copies the log from offset to w until the session ends or ctx
// is cancelled.
func (s *Service) follow(ctx context.Context, g vm.Guest, name string, offset int64, w io.Writer) error {
	res, err := s.run(ctx, g, s.lay.invocation(scriptIO, "follow", s.lay.sessionDir(name), strconv.FormatInt(offset, 10)), nil, w)
	if err != nil {
		return err
	}
	if res.code != 0 {
		return guestErr(g, "following the log", res)
	}
	return nil
}

// Follow streams the session log from p.Offset until the session ends
// (the server then closes the stream) or the client disconnects. The
// stream's result is the session as it was when following began.
func (s *Service) Follow(ctx context.Context, p api.SessionFollowParams, st *rpc.Stream) error {
	g, err := s.guestAndName(ctx, p.VM, p.Session)
	if err != nil {
		return err
	}
	sess, err := s.inspect(ctx, g, p.Session)
	if err != nil {
		return err
	}
	if p.Offset < 0 {
		p.Offset = max(sess.LogBytes+p.Offset, 0)
	}
	if err := st.Accept(sess); err != nil {
		return err
	}
	defer st.Close()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		// The client sends nothing; end of input means it went away.
		_, _ = io.Copy(io.Discard, st)
		cancel()
	}()
	return s.follow(ctx, g, p.Session, p.Offset, st)
}

// Attach connects a client to the session: it replays the end of the
// log, then streams output live, while the client's frames (see
// api.StreamFrame) feed input and resizes. Detaching leaves the session
// running. Any number of clients may attach at once.
func (s *Service) Attach(ctx context.Context, p api.SessionAttachParams, st *rpc.Stream) error {
	g, err := s.guestAndName(ctx, p.VM, p.Session)
	if err != nil {
		return err
	}
	sess, err := s.inspect(ctx, g, p.Session)
	if err != nil {
		return err
	}
	running := sess.State == api.SessionRunning
	if running && sess.PTY && p.Rows > 0 && p.Cols > 0 {
		s.resize(ctx, g, p.Session, p.Rows, p.Cols)
	}
	if err := st.Accept(sess); err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// Closing the stream is what unblocks the frame reader below once the
	// output ended (the session finished) or the server stops.
	stopClose := context.AfterFunc(ctx, func() { st.Close() })
	defer stopClose()

	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() {
		defer cancel()
		if err := s.follow(ctx, g, p.Session, max(sess.LogBytes-scrollbackBytes, 0), st); err != nil && ctx.Err() == nil {
			s.log.Debug("session attach: output ended", "vm", g.Name, "session", p.Session, "err", err)
		}
	})

	input, inputW := io.Pipe()
	defer inputW.Close()
	if running {
		wg.Go(func() {
			defer input.Close()
			// Scripts are installed: inspect ran them above.
			_, _ = s.guests.Exec(ctx, g.Target, s.lay.invocation(scriptIO, "input", s.lay.sessionDir(p.Session)),
				input, io.Discard, io.Discard)
		})
	}
	for {
		t, payload, err := ReadFrame(st)
		if err != nil {
			return nil // client went away or the stream was closed: detach
		}
		switch t {
		case api.FrameInput:
			if !running {
				continue
			}
			if _, err := inputW.Write(payload); err != nil {
				continue // the session ended; output will end the attach
			}
		case api.FrameResize:
			if rows, cols, err := parseResize(payload); err == nil && rows > 0 && cols > 0 && running {
				s.resize(ctx, g, p.Session, rows, cols)
			}
		case api.FrameDetach:
			return nil
		}
	}
}

// resize sets a PTY session's terminal size; failures only get logged
// (the session may have just ended).
func (s *Service) resize(ctx context.Context, g vm.Guest, name string, rows, cols int) {
	res, err := s.run(ctx, g, s.lay.invocation(scriptIO, "resize", s.lay.sessionDir(name), strconv.Itoa(rows), strconv.Itoa(cols)), nil, nil)
	if err == nil && res.code != 0 && res.code != exitNotRunning {
		err = guestErr(g, "resize", res)
	}
	if err != nil && !errors.Is(err, context.Canceled) {
		s.log.Debug("session resize failed", "vm", g.Name, "session", name, "err", err)
	}
}
