package notify_test

import (
	"fmt"
	"log/slog"
	"net"
	"net/textproto"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/handoff-dev/handoff/internal/testenv"
	fulfilmentv1 "github.com/handoff-dev/handoff/proto/handoff/fulfilment/v1"
	"github.com/handoff-dev/handoff/services/fulfilment/notify"
)

// scanningSMTP is a minimal SMTP server that, like one running a content filter at the end of
// DATA (a milter, a virus scan), takes a while to answer the final "." of some messages
// (slow(data) says which) and records the messages in the order it queued them.
type scanningSMTP struct {
	ln   net.Listener
	slow func(data []byte) time.Duration

	mu       sync.Mutex
	started  []string // subjects whose DATA was read, in order
	accepted []string // subjects queued (250 after DATA), in order
	wg       sync.WaitGroup
}

func newScanningSMTP(t *testing.T, slow func(data []byte) time.Duration) *scanningSMTP {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &scanningSMTP{ln: ln, slow: slow}
	s.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.wg.Go(func() { s.serve(t, c) })
		}
	})
	t.Cleanup(func() { ln.Close(); s.wg.Wait() })
	return s
}

func (s *scanningSMTP) serve(t *testing.T, nc net.Conn) {
	defer nc.Close()
	_ = nc.SetDeadline(time.Now().Add(20 * time.Second))
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
			reply("250 8BITMIME")
		case "MAIL", "RCPT", "RSET", "NOOP", "HELO":
			reply("250 ok")
		case "DATA":
			reply("354 go on")
			data, err := c.ReadDotBytes()
			if err != nil {
				return
			}
			subject := parseMail(t, data).Subject
			s.mu.Lock()
			s.started = append(s.started, subject)
			s.mu.Unlock()
			time.Sleep(s.slow(data))
			s.mu.Lock()
			s.accepted = append(s.accepted, subject)
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

func (s *scanningSMTP) lists() (started, accepted []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.started...), append([]string(nil), s.accepted...)
}

// The shopper cancels right after checking out, while the "confirmed" email (with the pickup
// code) is still with the mail server, which takes a couple of seconds to scan it. The
// "cancelled" email, written meanwhile, must not overtake it: the shopper would read "your
// order has been cancelled" and then "your order is confirmed ... Pickup code: 4821 (show it at
// the counter)" for an order that is gone. The stale check runs before a send only, and looks
// only for later emails: an earlier one already in flight does not hold a later one back.
func TestALaterEmailDoesNotOvertakeAnEarlierOneStillBeingSent(t *testing.T) {
	pool := newPool(t)
	mta := newScanningSMTP(t, func(data []byte) time.Duration {
		if strings.Contains(string(data), "is confirmed") {
			return time.Second
		}
		return 0
	})
	cfg := fastConfig(smtpSender(t, mta.ln.Addr().String()))
	cfg.PickupCode = func(string) string { return "4821" }
	startDispatcher(t, pool, cfg)

	confirmed := readyOrder("ord-quick-cancel")
	confirmed.Version, confirmed.State, confirmed.PickupDeadline = 2, fulfilmentv1.OrderState_ORDER_STATE_CONFIRMED, nil
	enqueue(t, pool, notify.Message{Kind: notify.KindConfirmed, Order: confirmed, Email: "ada@example.com"})
	testenv.CheckFor(t, 5*time.Second, 5*time.Millisecond, func() error {
		if started, _ := mta.lists(); len(started) == 0 {
			return fmt.Errorf("the confirmed email has not reached the mail server yet")
		}
		return nil
	})

	cancelled := readyOrder("ord-quick-cancel")
	cancelled.Version, cancelled.State, cancelled.PickupDeadline = 3, fulfilmentv1.OrderState_ORDER_STATE_CANCELLED, nil
	cancelled.Reason = "cancelled by the shopper"
	enqueue(t, pool, notify.Message{Kind: notify.KindCancelled, Order: cancelled, Email: "ada@example.com"})

	for _, id := range notificationIDs(t, pool, "ord-quick-cancel", notify.ChannelEmail) {
		testenv.CheckFor(t, 15*time.Second, 10*time.Millisecond, func() error {
			if s, _ := stateOf(t, pool, id); s == "pending" {
				return fmt.Errorf("notification %s still pending", id)
			}
			return nil
		})
	}
	_, accepted := mta.lists()
	if len(accepted) == 0 || !strings.Contains(accepted[len(accepted)-1], "has been cancelled") {
		t.Fatalf("the mail server queued the shopper's emails in the order %q: the last one the shopper reads is not the cancellation", accepted)
	}
}

// A mail server's refusal commonly quotes the recipient ("550 5.1.1 <ada@example.com>:
// Recipient address rejected: User unknown", Postfix's wording; greylisting's 450 likewise).
// The dispatcher logs the sender's error with the dead letter (warn) and each retry (debug), so
// the shopper's email address lands in the service's logs, which the notifications' own log
// lines otherwise keep free of it (order and notification ids only).
func TestAnSMTPRefusalQuotingTheRecipientDoesNotLogTheShoppersAddress(t *testing.T) {
	pool := newPool(t)
	mta := newSMTPServer(t)
	mta.rcptReply = func(to string, attempt int) string {
		if attempt == 1 {
			return "450 4.2.0 <" + to + ">: Recipient address rejected: Greylisted, see https://example.net/greylist"
		}
		return "550 5.1.1 <" + to + ">: Recipient address rejected: User unknown in virtual mailbox table"
	}
	var logs testenv.LockedBuffer
	cfg := fastConfig(smtpSender(t, mta.addr()))
	cfg.Logger = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	startDispatcher(t, pool, cfg)

	const address = "ada.lovelace@example.com"
	enqueue(t, pool, notify.Message{Kind: notify.KindConfirmed, Order: readyOrder("ord-pii"), Email: address})
	waitForState(t, pool, notificationIDs(t, pool, "ord-pii", notify.ChannelEmail)[0], "dead")
	time.Sleep(100 * time.Millisecond) // the dead letter's log line
	for _, line := range strings.Split(logs.String(), "\n") {
		if strings.Contains(strings.ToLower(line), address) {
			t.Errorf("the shopper's email address is logged:\n%s", line)
		}
	}
}
