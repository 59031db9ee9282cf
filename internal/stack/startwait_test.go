package stack_test

import (
	"encoding/base64"
	"encoding/binary"
	"io"
	"net"
	"net/url"
	"sync/atomic"
	"testing"
	"time"

	"github.com/handoff-dev/handoff/internal/stack"
	"github.com/handoff-dev/handoff/internal/stacktest"
)

// startingUpPostgres listens in front of the PostgreSQL at real and answers every connection as
// a server starting up does (FATAL 57P03, "the database system is starting up") until up is
// set; then it forwards connections to real.
func startingUpPostgres(t *testing.T, real string, up *atomic.Bool) string {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = lis.Close() })
	go func() {
		for {
			in, err := lis.Accept()
			if err != nil {
				return
			}
			go func() {
				defer in.Close()
				if up.Load() {
					out, err := net.Dial("tcp", real)
					if err != nil {
						return
					}
					defer out.Close()
					go func() { _, _ = io.Copy(out, in) }()
					_, _ = io.Copy(in, out)
					return
				}
				for {
					var hdr [8]byte // a startup packet: its length, then its code
					if _, err := io.ReadFull(in, hdr[:]); err != nil {
						return
					}
					if n := binary.BigEndian.Uint32(hdr[:4]); n > 8 {
						if _, err := io.CopyN(io.Discard, in, int64(n-8)); err != nil {
							return
						}
					}
					if code := binary.BigEndian.Uint32(hdr[4:]); code == 80877103 || code == 80877104 {
						_, _ = in.Write([]byte{'N'}) // no TLS, no GSS encryption
						continue
					}
					var fields []byte
					for _, f := range [][2]string{{"S", "FATAL"}, {"V", "FATAL"}, {"C", "57P03"}, {"M", "the database system is starting up"}} {
						fields = append(append(append(fields, f[0][0]), f[1]...), 0)
					}
					fields = append(fields, 0)
					msg := binary.BigEndian.AppendUint32([]byte{'E'}, uint32(4+len(fields)))
					_, _ = in.Write(append(msg, fields...))
					return
				}
			}()
		}
	}()
	return lis.Addr().String()
}

// A start waits up to -start-wait for a PostgreSQL that answers it is starting up (crash
// recovery after a restart, a standby not yet consistent), as it does for one that does not
// answer yet, instead of failing at once on the pools.
func TestAStartWaitsForAPostgresStartingUp(t *testing.T) {
	cfg := stacktest.Config(t)
	real, err := url.Parse(cfg.DatabaseURL)
	if err != nil {
		t.Fatal(err)
	}
	var up atomic.Bool
	starting := *real
	starting.Host = startingUpPostgres(t, real.Host, &up)
	cfg.Target = stack.TargetCatalog
	cfg.DatabaseURL = starting.String()
	cfg.JWTKeys = "test:" + base64.StdEncoding.EncodeToString([]byte("0123456789abcdef0123456789abcdef"))
	cfg.LoadDemo = false
	cfg.StartWait = time.Minute
	time.AfterFunc(2*time.Second, func() { up.Store(true) }) // recovery done

	_, stop := runUntilReady(t, cfg) // fails the test should the start fail
	stop()
}
