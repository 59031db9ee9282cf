package testenv

import (
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Freezer passes TCP between clients and a server until frozen; then it forwards nothing more
// while keeping every socket open, as a hung process or a paused machine does.
type Freezer struct {
	lis    net.Listener
	target string
	frozen atomic.Bool
	mu     sync.Mutex
	conns  []net.Conn
}

// NewFreezer starts a freezer in front of target; Addr is where to connect instead. It closes
// every connection when t ends.
func NewFreezer(t testing.TB, target string) *Freezer {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &Freezer{lis: lis, target: target}
	go f.serve()
	t.Cleanup(f.close)
	return f
}

// Addr is the address clients connect to.
func (f *Freezer) Addr() string { return f.lis.Addr().String() }

// Freeze stops all forwarding, both ways, for good.
func (f *Freezer) Freeze() { f.frozen.Store(true) }

func (f *Freezer) serve() {
	for {
		c, err := f.lis.Accept()
		if err != nil {
			return
		}
		b, err := net.Dial("tcp", f.target)
		if err != nil {
			_ = c.Close()
			continue
		}
		f.mu.Lock()
		f.conns = append(f.conns, c, b)
		f.mu.Unlock()
		go f.pipe(b, c)
		go f.pipe(c, b)
	}
}

func (f *Freezer) pipe(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		for f.frozen.Load() {
			time.Sleep(20 * time.Millisecond)
		}
		if n > 0 {
			if _, err := dst.Write(buf[:n]); err != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func (f *Freezer) close() {
	_ = f.lis.Close()
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, c := range f.conns {
		_ = c.Close()
	}
}
