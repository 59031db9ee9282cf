package notify_test

import (
	"fmt"
	"net"
	"net/http"
	"net/textproto"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/handoff-dev/handoff/internal/testenv"
	"github.com/handoff-dev/handoff/services/fulfilment/notify"
)

// faultySMTP is a minimal SMTP server that offers AUTH PLAIN and refuses it (535) while badAuth
// is set, as a mail provider does while the deployment's SMTP password is wrong or being
// rotated, and refuses MAIL FROM (550) while badFrom is set, as one does while the sender
// address is not (yet) allowed; it accepts everything else.
type faultySMTP struct {
	ln       net.Listener
	badAuth  atomic.Bool
	badFrom  atomic.Bool
	mu       sync.Mutex
	accepted int
}

func newFaultySMTP(t *testing.T) *faultySMTP {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &faultySMTP{ln: ln}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go s.serve(c)
		}
	}()
	t.Cleanup(func() { ln.Close() })
	return s
}

func (s *faultySMTP) serve(nc net.Conn) {
	defer nc.Close()
	_ = nc.SetDeadline(time.Now().Add(10 * time.Second))
	c := textproto.NewConn(nc)
	reply := func(l string) { _ = c.PrintfLine("%s", l) }
	reply("220 test ESMTP")
	for {
		line, err := c.ReadLine()
		if err != nil {
			return
		}
		verb, _, _ := strings.Cut(line, " ")
		switch strings.ToUpper(verb) {
		case "EHLO":
			reply("250-test")
			reply("250 AUTH PLAIN")
		case "AUTH":
			if s.badAuth.Load() {
				reply("535 5.7.8 Authentication credentials invalid")
				continue
			}
			reply("235 2.7.0 ok")
		case "MAIL":
			if s.badFrom.Load() {
				reply("550 5.7.1 sender address not allowed")
				continue
			}
			reply("250 ok")
		case "RCPT", "RSET", "NOOP":
			reply("250 ok")
		case "DATA":
			reply("354 go on")
			if _, err := c.ReadDotBytes(); err != nil {
				return
			}
			s.mu.Lock()
			s.accepted++
			s.mu.Unlock()
			reply("250 queued")
		case "QUIT":
			reply("221 bye")
			return
		default:
			reply("502 no")
		}
	}
}

func (s *faultySMTP) count() int { s.mu.Lock(); defer s.mu.Unlock(); return s.accepted }

// A deployment-wide SMTP fault (a wrong or rotated password: 535 at AUTH; a sender address not
// allowed: 550 at MAIL FROM) is not about the message: the emails written meanwhile (order
// confirmed, ready, with the pickup code) are retried and sent once it is fixed, not
// dead-lettered at their first attempt for an operator to replay one by one.
func TestSMTPDeploymentFaultIsRetriedNotDeadLettered(t *testing.T) {
	for _, fault := range []string{"AUTH", "MAIL FROM"} {
		t.Run(fault, func(t *testing.T) {
			pool := newPool(t)
			mta := newFaultySMTP(t)
			bad := &mta.badAuth
			if fault == "MAIL FROM" {
				bad = &mta.badFrom
			}
			bad.Store(true)
			sender, err := notify.NewSMTPSender(notify.SMTPConfig{Addr: mta.ln.Addr().String(), From: "orders@handoff.test",
				Username: "handoff", Password: "old-password", Timeout: 2 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			cfg := fastConfig(sender)
			cfg.InitialBackoff = 300 * time.Millisecond
			cfg.MaxBackoff = 600 * time.Millisecond
			startDispatcher(t, pool, cfg)

			enqueue(t, pool, notify.Message{Kind: notify.KindReady, Order: readyOrder("ord-auth"), Email: "ada@example.com"})
			id := notificationIDs(t, pool, "ord-auth", notify.ChannelEmail)[0]
			// The operator fixes it shortly after (here: the provider accepts again).
			time.Sleep(150 * time.Millisecond)
			bad.Store(false)

			testenv.CheckFor(t, 8*time.Second, 20*time.Millisecond, func() error {
				if s, _ := stateOf(t, pool, id); s == "pending" {
					return fmt.Errorf("still pending")
				}
				return nil
			})
			state, attempts := stateOf(t, pool, id)
			if state != "sent" || mta.count() != 1 {
				t.Fatalf("email after an SMTP %s failure (fixed 150ms later) is %s after %d attempt(s), %d delivered; "+
					"want it retried and sent (MaxAttempts %d): a 5xx at %s is the deployment's fault, not the message's",
					fault, state, attempts, mta.count(), cfg.MaxAttempts, fault)
			}
		})
	}
}

// The same for the webhook: a receiver answering 401 while its signing secret is being rotated
// (or 403, or 404 while its route is not deployed yet) is retried, not dead-lettered at the
// first attempt.
func TestWebhook401DuringSecretRotationIsRetriedNotDeadLettered(t *testing.T) {
	pool := newPool(t)
	rcv := newWebhookReceiver(t, secret)
	rcv.setAnswer(func(_ string, attempt int) int {
		if attempt == 1 {
			return http.StatusUnauthorized
		}
		return http.StatusOK
	})
	startDispatcher(t, pool, fastConfig(webhookSender(t, rcv.srv.URL)))
	enqueue(t, pool, notify.Message{Kind: notify.KindReady, Order: readyOrder("ord-401")})
	id := notificationIDs(t, pool, "ord-401", notify.ChannelWebhook)[0]
	testenv.CheckFor(t, 8*time.Second, 20*time.Millisecond, func() error {
		if s, _ := stateOf(t, pool, id); s == "pending" {
			return fmt.Errorf("still pending")
		}
		return nil
	})
	if s, a := stateOf(t, pool, id); s != "sent" {
		t.Fatalf("webhook answered 401 once is %s after %d attempt(s); want retried and sent", s, a)
	}
}

// A 503 with Retry-After is retried after the wait the receiver asked for, as a 408 or 429 is,
// not at the dispatcher's own (shorter) backoff.
func TestWebhook503RetryAfterIsHonoured(t *testing.T) {
	pool := newPool(t)
	var mu sync.Mutex
	var times []time.Time
	url := newHTTPServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		times = append(times, time.Now())
		n := len(times)
		mu.Unlock()
		if n == 1 {
			w.Header().Set("Retry-After", "3")
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		w.WriteHeader(http.StatusOK)
	}))
	cfg := fastConfig(webhookSender(t, url))
	cfg.MaxBackoff = 10 * time.Second
	startDispatcher(t, pool, cfg)
	enqueue(t, pool, notify.Message{Kind: notify.KindReady, Order: readyOrder("ord-503")})
	id := notificationIDs(t, pool, "ord-503", notify.ChannelWebhook)[0]
	waitForState(t, pool, id, "sent")
	mu.Lock()
	defer mu.Unlock()
	if gap := times[1].Sub(times[0]); gap < 3*time.Second {
		t.Fatalf("503 with Retry-After: 3 was retried after %s; want at least 3s", gap)
	}
}
